//! The X-Ray daemon port: segment documents over UDP are relayed to X-Ray (moto's server) byte
//! for byte; hostile datagrams are counted by reason; a flood is fully accounted for.

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::process::{aws_env, env_refs, moto, spawn_agent, xray_client};
use serde_json::Value;

const HEADER: &str = "{\"format\": \"json\", \"version\": 1}\n";

fn trace_id(n: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "1-{now:08x}-{:016x}{n:08x}",
        u64::from(std::process::id()) << 20
    )
}

fn send(to: &str, datagram: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(datagram, to).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_reach_xray_unchanged_and_hostile_datagrams_are_counted() {
    let env = aws_env(moto());
    let agent = spawn_agent(
        &["--exporters", "xray", "--set", "xray.idle_flush=100ms"],
        &env_refs(&env),
    );
    let tid = trace_id(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let segment = format!(
        r#"{{"trace_id":"{tid}","id":"70de5b6f19ff9a0a","name":"checkout","start_time":{now},"end_time":{},"annotations":{{"tenant":"ünïcode ✓","n":7}},"metadata":{{"default":{{"note":"日本語"}}}},"subsegments":[{{"id":"70de5b6f19ff9a0b","name":"db","start_time":{now},"end_time":{},"namespace":"remote","sql":{{"url":"db:5432","sanitized_query":"SELECT 1"}}}}],"fault":true,"cause":{{"exceptions":[{{"id":"70de5b6f19ff9a0c","message":"boom","type":"ValueError"}}]}}}}"#,
        now + 0.05,
        now + 0.01
    );
    send(&agent.xray_udp, format!("{HEADER}{segment}").as_bytes());
    let hostile: Vec<Vec<u8>> = vec![
        b"no header".to_vec(),
        b"{\"format\":\"json\",\"version\":9}\n{\"id\":\"a\",\"trace_id\":\"b\"}".to_vec(),
        format!("{HEADER}{{\"id\":\"a\",\"trace_id\"").into_bytes(),
        [HEADER.as_bytes(), b"{\"id\":\"\xff\",\"trace_id\":\"b\"}"].concat(),
        format!(
            "{HEADER}{{\"m\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        )
        .into_bytes(),
        format!("{HEADER}{{\"name\":\"no ids\"}}").into_bytes(),
        // The largest UDP payload over IPv4: over X-Ray's 64 kB document limit.
        {
            let head =
                format!("{HEADER}{{\"id\":\"70de5b6f19ff9a01\",\"trace_id\":\"{tid}\",\"m\":\"");
            format!("{head}{}\"}}", "x".repeat(65_507 - head.len() - 2)).into_bytes()
        },
        format!("{HEADER}{{\"id\":\"70de5b6f19ff9a01\",\"trace_id\":\"b\"}}").into_bytes(),
    ];
    for d in &hostile {
        send(&agent.xray_udp, d);
    }

    // Read back from moto: the document X-Ray stored is the one the SDK sent, key for key.
    let client = xray_client(moto());
    let t = Instant::now();
    let stored = loop {
        let out = client
            .batch_get_traces()
            .trace_ids(&tid)
            .send()
            .await
            .unwrap();
        let docs: Vec<Value> = out
            .traces()
            .iter()
            .flat_map(|t| t.segments())
            .map(|s| serde_json::from_str(s.document().unwrap()).unwrap())
            .collect();
        if let Some(d) = docs.into_iter().find(|d| d["id"] == "70de5b6f19ff9a0a") {
            break d;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "segment never reached X-Ray"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sent: Value = serde_json::from_str(&segment).unwrap();
    assert_eq!(stored, sent);

    let t = Instant::now();
    let total = |agent: &common::process::Running| {
        let m = |r: &str| {
            agent.metric(&format!(
                "sidetrace_xray_udp_segments_rejected_total{{reason=\"{r}\"}}"
            ))
        };
        (
            m("missing_header"),
            m("invalid_header"),
            m("invalid_document"),
            m("missing_id"),
            m("too_large"),
            m("invalid_id"),
        )
    };
    while total(&agent) != (1.0, 1.0, 3.0, 1.0, 1.0, 1.0) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "rejections by reason: {:?}",
            total(&agent)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        agent.metric("sidetrace_xray_udp_segments_accepted_total"),
        1.0
    );
    assert_eq!(
        agent.metric("sidetrace_xray_udp_segments_received_total"),
        9.0
    );
    // Span metrics count the segment and its subsegment, from their span views.
    assert_eq!(
        agent.metric("sidetrace_receiver_spans_accepted_total{protocol=\"xray_udp\"}"),
        2.0
    );
    assert_eq!(
        agent.metric("sidetrace_exporter_sent_spans_total{exporter=\"xray\"}"),
        1.0,
        "the relayed document counts as sent once X-Ray took it"
    );
}

/// A flood from one sender, in local mode (span views into the pipeline, no X-Ray): every
/// datagram the kernel delivered is accounted for as accepted, rejected or spilled, the agent
/// stays responsive and its memory bounded.
#[test]
fn a_flood_is_accounted_for() {
    let mut agent = spawn_agent(&["--exporters", "local"], &[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tid = trace_id(2);
    let pad = "p".repeat(900);
    const SENT: u64 = 200_000;
    let mut failed = 0u64;
    for i in 0..SENT {
        let d = if i % 10 == 0 {
            b"bad".to_vec()
        } else {
            format!(
                "{HEADER}{{\"id\":\"{i:016x}\",\"trace_id\":\"{tid}\",\"name\":\"flood\",\"start_time\":1.0,\"end_time\":1.5,\"metadata\":{{\"default\":{{\"pad\":\"{pad}\"}}}}}}"
            )
            .into_bytes()
        };
        failed += u64::from(s.send_to(&d, &agent.xray_udp).is_err());
    }
    let t = Instant::now();
    let counts = |agent: &common::process::Running| {
        let m = |name: &str| agent.metric(name);
        (
            m("sidetrace_xray_udp_segments_received_total"),
            m("sidetrace_xray_udp_segments_accepted_total"),
            m("sidetrace_xray_udp_segments_rejected_total{reason=\"missing_header\"}"),
            m("sidetrace_xray_udp_segments_spilled_total{reason=\"pipeline_full\"}"),
        )
    };
    // The receiver may still be reading what the kernel holds: wait until the counts settle.
    let mut last = counts(&agent);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = counts(&agent);
        if now == last {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never settled: {now:?}"
        );
        last = now;
    }
    let (received, accepted, rejected, spilled) = last;
    let kernel = agent.metric("sidetrace_xray_udp_kernel_dropped_total");
    eprintln!(
        "flood: sent {SENT}, failed sends {failed}, kernel drops {kernel}, (received, accepted, rejected, spilled) = {last:?}"
    );
    // What the kernel did not deliver it counted: on loopback that is (nearly) all of the rest.
    assert!(received + kernel + failed as f64 <= SENT as f64);
    assert!(
        received + kernel + failed as f64 >= 0.99 * SENT as f64,
        "the kernel's drop count is exposed"
    );
    assert!(received > 0.0 && received <= SENT as f64, "{received}");
    assert_eq!(
        accepted + rejected + spilled,
        received,
        "every datagram read is counted once: {last:?}"
    );
    assert!(rejected >= 1.0);
    let rss = agent.metric("sidetrace_memory_resident_peak_bytes");
    assert!(rss < 200e6, "memory stays bounded: {rss}");
    assert!(common::process::http_get(&agent.admin, "/readyz").starts_with("ready"));
    assert_eq!(agent.terminate(Duration::from_secs(10)).code(), Some(0));
}

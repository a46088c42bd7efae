//! Shared helpers for integration tests: an in-process agent on ephemeral loopback ports.

#![allow(dead_code)]

use std::time::Duration;

use sidetrace::agent::Agent;
use sidetrace::agent::Config;
use sidetrace::exporters::ExporterKind;

/// A config with every listener on 127.0.0.1:0.
pub fn test_config() -> Config {
    let mut c = Config::default();
    for key in [
        "otlp_grpc_addr",
        "otlp_http_addr",
        "xray_udp_addr",
        "admin_addr",
    ] {
        c.set(key, "127.0.0.1:0").unwrap();
    }
    c.pipeline.drain_timeout = Duration::from_secs(5);
    c
}

/// Starts an in-process agent in local mode (no console output in tests).
pub async fn start_local(tweak: impl FnOnce(&mut Config)) -> Agent {
    let mut c = test_config();
    tweak(&mut c);
    Agent::start(&c, &[ExporterKind::Local])
        .await
        .expect("agent starts")
}

/// GETs a JSON document from the admin port.
pub async fn get_json(agent: &Agent, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}{path}", agent.addrs.admin))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Polls `/api/traces/{id}` until it holds `spans` spans (the dispatcher runs behind the queue).
pub async fn wait_for_trace(agent: &Agent, trace_id: &str, spans: usize) -> serde_json::Value {
    for _ in 0..200 {
        let (status, body) = get_json(agent, &format!("/api/traces/{trace_id}")).await;
        if status == 200 && body["spans"].as_array().is_some_and(|a| a.len() >= spans) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("trace {trace_id} never reached {spans} spans");
}

/// Reads one counter line of `/metrics` by its full series name.
pub async fn metric(agent: &Agent, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", agent.addrs.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in /metrics"))
        .parse()
        .unwrap()
}

pub mod process;

//! The real binary: --version, config check/default, healthcheck, and a SIGTERM drain that
//! delivers what was accepted and exits 0.

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::process::{BIN, spawn_agent};

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("sidetrace-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("sidetrace {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_default_is_valid_and_check_lists_every_problem() {
    let out = Command::new(BIN)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let default = temp_file("default.toml", &String::from_utf8(out.stdout).unwrap());
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&default)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let bad = temp_file(
        "bad.toml",
        "otlp_grpc_addr = \"localhost\"\nqueue_max_spans = 0\ntypo_key = 1\n[local]\nmax_bytes = \"lots\"\n",
    );
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("4 problem(s)"), "{text}");
    for key in [
        "otlp_grpc_addr",
        "queue_max_spans",
        "typo_key",
        "local.max_bytes",
    ] {
        assert!(text.contains(key), "{key} not reported in {text}");
    }
    let out = Command::new(BIN)
        .env("SIDETRACE_QUEUE_MAX_SPANS", "many")
        .arg("healthcheck")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "a bad env value is a config error too"
    );
    std::fs::remove_file(default).unwrap();
    std::fs::remove_file(bad).unwrap();
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["healthcheck", "--admin-addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A minimal blocking HTTP/1.1 POST; returns the status line.
fn post_json(addr: &str, body: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().next().unwrap_or("").to_string()
}

#[test]
fn healthcheck_passes_against_a_running_agent_and_sigterm_drains() {
    let mut agent = spawn_agent(&[], &[]);
    assert!(
        agent.log.contains("keeping traces locally"),
        "startup log says local mode and why: {}",
        agent.log
    );
    assert!(!agent.grpc.is_empty());
    let out = Command::new(BIN)
        .args(["healthcheck", "--admin-addr", &agent.admin])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Send one trace over OTLP/HTTP JSON with a blocking client, then SIGTERM at once.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"shop"}}}}]}},"scopeSpans":[{{"spans":[
        {{"traceId":"{trace}","spanId":"00f067aa0ba902b7","name":"GET /basket","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000012300000"}},
        {{"traceId":"{trace}","spanId":"00f067aa0ba902b8","parentSpanId":"00f067aa0ba902b7","name":"SELECT","kind":3,"startTimeUnixNano":"1700000000001000000","endTimeUnixNano":"1700000000002000000","status":{{"code":2}}}}]}}]}}]}}"#
    );
    let status = post_json(&agent.http, &body);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let exit = agent.terminate(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0));
    let mut stdout = String::new();
    agent
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        stdout.contains(&format!(
            "{trace}  shop  GET /basket  12.3ms  2 spans  ERROR"
        )),
        "console line for the accepted trace: {stdout:?}"
    );
}

#[test]
fn a_memory_limit_is_reported_with_the_resident_size() {
    let mut agent = spawn_agent(&["--memory-limit", "48MiB"], &[]);
    assert!(
        agent
            .log
            .contains("Memory limit 48 MiB, set by memory_limit")
            && agent.log.contains("queue_max_bytes=12582912"),
        "the start-up log names the limit and the budgets it set: {}",
        agent.log
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        agent.metric("sidetrace_memory_limit_bytes"),
        (48 << 20) as f64
    );
    let reported = agent.metric("sidetrace_memory_resident_bytes");
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let actual_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let ratio = reported / (actual_kb * 1024.0);
    assert!(
        (0.5..2.0).contains(&ratio),
        "reported {reported}, VmRSS {actual_kb} kB"
    );
    assert_eq!(
        agent.metric("sidetrace_queue_capacity_bytes"),
        (12 << 20) as f64,
        "the queue budget is a quarter of the limit"
    );
    assert_eq!(agent.terminate(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn help_lists_every_config_key_and_flag_from_its_declaration() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for key in sidetrace::agent::Config::keys() {
        let env = sidetrace::config::env_name(key.name);
        assert!(
            help.contains(&format!("  {} = {}  [env: {env}]", key.name, key.default)),
            "--help does not list {}",
            key.name
        );
        if key.flag {
            let flag = format!("--{}", sidetrace::config::flag_name(key.name));
            assert!(help.contains(&flag), "--help lacks {flag}");
        }
    }
}

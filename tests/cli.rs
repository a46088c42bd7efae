//! The real binary: --version, config check/default, healthcheck, and a SIGTERM drain that
//! delivers what was accepted and exits 0.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");

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

struct Running {
    child: Child,
    grpc: String,
    http: String,
    admin: String,
}

/// A failed assertion must not leave the agent running.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on ephemeral ports and reads the bound addresses from its startup log.
fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut running = Running {
        child,
        grpc: String::new(),
        http: String::new(),
        admin: String::new(),
    };
    let mut lines = BufReader::new(stderr).lines();
    let (mut grpc, mut http, mut admin) = (None, None, None);
    let mut log = String::new();
    while admin.is_none() {
        let line = lines.next().expect("log line").unwrap();
        log.push_str(&line);
        log.push('\n');
        let addr = line
            .split("addr=")
            .nth(1)
            .map(|a| a.split_whitespace().next().unwrap().to_string());
        if line.contains("listener=\"otlp_grpc\"") {
            grpc = addr;
        } else if line.contains("listener=\"otlp_http\"") {
            http = addr;
        } else if line.contains("listener=\"admin\"") {
            admin = addr;
        }
    }
    assert!(
        log.contains("keeping traces locally"),
        "startup log says local mode and why: {log}"
    );
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    running.grpc = grpc.unwrap();
    running.http = http.unwrap();
    running.admin = admin.unwrap();
    running
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

fn sigterm(child: &Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < limit, "agent did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn healthcheck_passes_against_a_running_agent_and_sigterm_drains() {
    let mut agent = start(&[]);
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

    sigterm(&agent.child);
    let exit = wait_exit(&mut agent.child, Duration::from_secs(10));
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

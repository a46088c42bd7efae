//! Spawning the real binary and a moto server (AWS emulator) for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");

/// A running agent binary; killed when dropped so a failed assertion leaves nothing behind.
pub struct Running {
    pub child: Child,
    pub grpc: String,
    pub http: String,
    /// UDP: the X-Ray daemon port.
    pub xray_udp: String,
    /// TCP: the X-Ray sampling proxy.
    pub xray_proxy: String,
    pub admin: String,
    pub log: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        assert!(
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < limit, "agent did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics_text(&self) -> String {
        http_get(&self.admin, "/metrics")
    }

    /// One series' value from `/metrics` (0 when the series is absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

/// A blocking GET returning the body (HTTP/1.0, so the server closes the connection).
/// POSTs an OTLP/HTTP protobuf request to `http_addr` and expects 200.
pub async fn post_protobuf(http_addr: &str, body: Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("http://{http_addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Starts the binary on ephemeral loopback ports with the given flags and environment, and
/// reads the bound addresses from its startup log.
pub fn spawn_agent(args: &[&str], env: &[(&str, &str)]) -> Running {
    spawn_agent_under(&[], args, env)
}

/// [`spawn_agent`] run by `wrapper` (a command that ends by running the rest of its arguments).
/// A listener flag in `args` replaces its ephemeral default.
pub fn spawn_agent_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    for flag in [
        "--otlp-grpc-addr",
        "--otlp-http-addr",
        "--admin-addr",
        "--xray-udp-addr",
    ] {
        if !args.contains(&flag) {
            cmd.args([flag, "127.0.0.1:0"]);
        }
    }
    cmd.args(args)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_ENDPOINT_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut running = Running {
        child,
        grpc: String::new(),
        http: String::new(),
        xray_udp: String::new(),
        xray_proxy: String::new(),
        admin: String::new(),
        log: String::new(),
    };
    let mut lines = BufReader::new(stderr).lines();
    while running.admin.is_empty() {
        let Some(Ok(line)) = lines.next() else {
            panic!("agent exited before listening:\n{}", running.log);
        };
        running.log.push_str(&line);
        running.log.push('\n');
        let addr = line
            .split("addr=")
            .nth(1)
            .map(|a| a.split_whitespace().next().unwrap().to_string());
        if line.contains("listener=\"otlp_grpc\"") {
            running.grpc = addr.unwrap();
        } else if line.contains("listener=\"otlp_http\"") {
            running.http = addr.unwrap();
        } else if line.contains("listener=\"xray_udp\"") {
            running.xray_udp = addr.unwrap();
        } else if line.contains("listener=\"xray_proxy\"")
            && let Some(addr) = addr
        {
            running.xray_proxy = addr;
        } else if line.contains("listener=\"admin\"") {
            running.admin = addr.unwrap();
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe; echo it for failing tests.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("[agent] {line}");
        }
    });
    running
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The URL of a moto server (the AWS emulator from PyPI): `SIDETRACE_TEST_MOTO` when the test
/// script started one, else one started here from `.venv` (created by `./scripts/test`). It is
/// stopped by a watcher when this test process exits.
// The watcher shell outlives nothing it should: it exits right after this process does.
#[allow(clippy::zombie_processes)]
pub fn moto() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("SIDETRACE_TEST_MOTO") {
            return url;
        }
        let server = repo_root().join(".venv/bin/moto_server");
        assert!(server.exists(), "moto is not installed: run ./scripts/test once (it creates .venv with moto[server])");
        let port = free_port();
        // The shell watcher kills moto once this test process is gone.
        let script = format!(
            "{} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $m",
            server.display(),
            std::process::id()
        );
        Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "moto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        url
    })
}

/// An aws-sdk-xray client for reading back what the agent sent (explicit endpoint and fake keys).
pub fn xray_client(endpoint: &str) -> aws_sdk_xray::Client {
    let creds = aws_sdk_xray::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_xray::Config::builder()
        .behavior_version(aws_sdk_xray::config::BehaviorVersion::latest())
        .region(aws_sdk_xray::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_xray::Client::from_conf(conf)
}

/// Borrows an owned environment list in the form `spawn_agent` takes.
pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Environment that points the agent's AWS SDK at an endpoint with fake credentials.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

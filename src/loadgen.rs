//! `sidetrace loadgen`: realistic OTLP trace load over gRPC or HTTP, closed loop (N streams at
//! saturation) or open loop (a fixed span rate), with request latency percentiles; or X-Ray SDK
//! segment documents over UDP (`xray-udp`), one ~1 KB segment per datagram.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use prost::Message;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::proto::ExportTraceServiceResponse;
use crate::workload::{Rng, Shape, request};

/// Distinct requests generated up front; trace IDs are still made unique per send.
const POOL: usize = 32;

/// What to send and how.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `grpc` or `http` (OTLP/HTTP protobuf).
    pub protocol: String,
    /// `127.0.0.1:4317` style address.
    pub target: String,
    pub spans_per_request: usize,
    pub spans_per_trace: usize,
    /// Concurrent streams in closed loop.
    pub streams: usize,
    /// Spans per second in open loop; `None` = closed loop.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Stop after this many requests, if set.
    pub max_requests: Option<u64>,
    pub error_ratio: f64,
    pub error_mix: crate::workload::ErrorMix,
    pub extra_attributes: usize,
    pub xray_ids: bool,
    pub gzip: bool,
    /// Sends the header a forwarding sidetrace sends (its span metrics recorded): the agent
    /// under load then works as a gateway does.
    pub metrics_recorded: bool,
    pub topology: crate::workload::Topology,
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub protocol: String,
    pub mode: &'static str,
    pub duration_s: f64,
    pub requests_ok: u64,
    pub spans_ok: u64,
    pub spans_per_sec: f64,
    pub failures: BTreeMap<String, u64>,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub latency_max_ms: f64,
}

impl Report {
    /// A run's counts, latency not measured (UDP has no answers; the OTLP run adds its own).
    fn new(
        spec: &LoadSpec,
        duration_s: f64,
        requests_ok: u64,
        spans_ok: u64,
        failures: BTreeMap<String, u64>,
    ) -> Report {
        Report {
            protocol: spec.protocol.clone(),
            mode: if spec.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            duration_s,
            requests_ok,
            spans_ok,
            spans_per_sec: spans_ok as f64 / duration_s.max(1e-9),
            failures,
            latency_p50_ms: 0.0,
            latency_p99_ms: 0.0,
            latency_p999_ms: 0.0,
            latency_max_ms: 0.0,
        }
    }
}

/// A pre-encoded request and where its trace IDs sit, so each send can make them unique.
struct Template {
    bytes: Vec<u8>,
    trace_id_offsets: Vec<usize>,
    /// Where span start and end times and event times sit (little-endian fixed64).
    time_offsets: Vec<usize>,
    /// The time the template's timestamps were made at.
    made_unix_nano: u64,
}

fn templates(spec: &LoadSpec) -> Vec<Template> {
    let mut rng = Rng::new(0x5eed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let shape = Shape {
        spans: spec.spans_per_request,
        error_ratio: spec.error_ratio,
        error_mix: spec.error_mix,
        spans_per_trace: spec.spans_per_trace.max(1),
        xray_ids: spec.xray_ids,
        extra_attributes: spec.extra_attributes,
        now_unix_nano: now,
        topology: spec.topology,
    };
    (0..POOL)
        .map(|_| {
            let req = request(&mut rng, &shape);
            let bytes = req.encode_to_vec();
            let mut ids: Vec<[u8; 16]> = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| s.trace_id[..].try_into().unwrap_or([0; 16]))
                .collect();
            ids.sort();
            ids.dedup();
            // A trace ID field is the tag 0x0a, length 16, then the ID.
            let trace_id_offsets = (0..bytes.len().saturating_sub(18))
                .filter(|&i| {
                    bytes[i] == 0x0a
                        && bytes[i + 1] == 16
                        && ids
                            .binary_search(&bytes[i + 2..i + 18].try_into().unwrap_or([0; 16]))
                            .is_ok()
                })
                .map(|i| i + 2)
                .collect();
            let mut times: Vec<u64> = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .flat_map(|s| {
                    [s.start_time_unix_nano, s.end_time_unix_nano]
                        .into_iter()
                        .chain(s.events.iter().map(|e| e.time_unix_nano))
                })
                .collect();
            times.sort_unstable();
            times.dedup();
            // Span fields 7 and 8 and Event field 1 are fixed64 (keys 0x39, 0x41, 0x09); a key
            // byte followed by one of the trace's own timestamps is one of them.
            let time_offsets = (0..bytes.len().saturating_sub(9))
                .filter(|&i| {
                    matches!(bytes[i], 0x39 | 0x41 | 0x09)
                        && times
                            .binary_search(&u64::from_le_bytes(
                                bytes[i + 1..i + 9].try_into().unwrap_or([0; 8]),
                            ))
                            .is_ok()
                })
                .map(|i| i + 1)
                .collect();
            Template {
                bytes,
                trace_id_offsets,
                time_offsets,
                made_unix_nano: now,
            }
        })
        .collect()
}

/// A copy of the template with every trace ID made unique to this send (bytes 8..12 are
/// random in both W3C and X-Ray IDs; the rest, including the X-Ray epoch part, stays), and its
/// timestamps moved to `now` so a long run's traces start when they are sent.
fn instantiate(t: &Template, seq: u64, now_unix_nano: u64) -> Vec<u8> {
    let mut b = t.bytes.clone();
    let salt = (seq as u32).to_be_bytes();
    for &o in &t.trace_id_offsets {
        for (k, s) in salt.iter().enumerate() {
            b[o + 8 + k] ^= s;
        }
    }
    let shift = now_unix_nano.saturating_sub(t.made_unix_nano);
    if shift > 0 {
        for &o in &t.time_offsets {
            let at = u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
            b[o..o + 8].copy_from_slice(&at.wrapping_add(shift).to_le_bytes());
        }
    }
    b
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

#[derive(Clone)]
enum Client {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http(
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
        String,
    ),
}

#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;
#[derive(Debug)]
struct RawEncoder;
#[derive(Debug)]
struct RespDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = RespDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RespDecoder {
        RespDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RespDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        let b = buf.copy_to_bytes(buf.remaining());
        ExportTraceServiceResponse::decode(b)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Client {
    async fn connect(spec: &LoadSpec) -> Result<Client, String> {
        match spec.protocol.as_str() {
            "grpc" => {
                let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", spec.target))
                    .map_err(|e| e.to_string())?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", spec.target))?;
                let mut g = tonic::client::Grpc::new(ch).max_encoding_message_size(64 << 20);
                if spec.gzip {
                    g = g.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Ok(Client::Grpc(g))
            }
            "http" => {
                let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
                conn.set_nodelay(true);
                let c = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build(conn);
                Ok(Client::Http(c, format!("http://{}/v1/traces", spec.target)))
            }
            p => Err(format!("unknown protocol {p:?} (grpc or http)")),
        }
    }

    /// One export; `Err` carries a bounded failure label (gRPC code or HTTP status).
    async fn send(&mut self, body: Vec<u8>, gzip_body: bool, recorded: bool) -> Result<(), String> {
        match self {
            Client::Grpc(g) => {
                g.ready().await.map_err(|e| format!("connect: {e}"))?;
                let path =
                    http::uri::PathAndQuery::from_static(crate::receivers::otlp_grpc::EXPORT_PATH);
                let mut req = tonic::Request::new(Bytes::from(body));
                if recorded {
                    req.metadata_mut().insert(
                        crate::model::SPAN_METRICS_HEADER,
                        tonic::metadata::MetadataValue::from_static("recorded"),
                    );
                }
                g.unary(req, path, RawCodec)
                    .await
                    .map(drop)
                    .map_err(|s| format!("grpc_{:?}", s.code()))
            }
            Client::Http(c, url) => {
                let mut req = http::Request::post(url.as_str())
                    .header("content-type", "application/x-protobuf");
                if recorded {
                    req = req.header(crate::model::SPAN_METRICS_HEADER, "recorded");
                }
                let body = if gzip_body {
                    req = req.header("content-encoding", "gzip");
                    gzip(&body)
                } else {
                    body
                };
                let req = req
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let resp = c.request(req).await.map_err(|_| "connection".to_string())?;
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("http_{status}"))
                }
            }
        }
    }
}

struct Shared {
    templates: Vec<Template>,
    spec: LoadSpec,
    seq: AtomicU64,
    spans_ok: AtomicU64,
    requests_ok: AtomicU64,
    stop: AtomicBool,
    failures: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Shared {
    fn next(&self) -> Option<(Vec<u8>, usize)> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if self.stop.load(Ordering::Relaxed) || self.spec.max_requests.is_some_and(|m| seq >= m) {
            return None;
        }
        let t = &self.templates[seq as usize % self.templates.len()];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Some((instantiate(t, seq, now), self.spec.spans_per_request))
    }

    async fn one(&self, client: &mut Client, body: Vec<u8>, spans: usize) {
        let t = Instant::now();
        let r = client
            .send(body, self.spec.gzip, self.spec.metrics_recorded)
            .await;
        let us = t.elapsed().as_micros() as u64;
        match r {
            Ok(()) => {
                self.spans_ok.fetch_add(spans as u64, Ordering::Relaxed);
                self.requests_ok.fetch_add(1, Ordering::Relaxed);
                let _ = self.latency.lock().await.record(us.max(1));
            }
            Err(label) => *self.failures.lock().await.entry(label).or_default() += 1,
        }
    }
}

/// Runs the load and returns the report.
pub async fn run(spec: LoadSpec) -> Result<Report, String> {
    if spec.protocol == "xray-udp" {
        return tokio::task::spawn_blocking(move || run_udp(&spec))
            .await
            .map_err(|e| e.to_string())?;
    }
    let client = Client::connect(&spec).await?;
    let shared = Arc::new(Shared {
        templates: templates(&spec),
        spec: spec.clone(),
        seq: AtomicU64::new(0),
        spans_ok: AtomicU64::new(0),
        requests_ok: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failures: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(
            hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| e.to_string())?,
        ),
    });
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    match spec.rate {
        None => {
            for _ in 0..spec.streams.max(1) {
                let (shared, mut client) = (shared.clone(), client.clone());
                tasks.spawn(async move {
                    while let Some((body, spans)) = shared.next() {
                        shared.one(&mut client, body, spans).await;
                    }
                });
            }
        }
        Some(rate) => {
            // Open loop: requests leave on a fixed schedule whatever the answers' latency.
            let per_sec = (rate / spec.spans_per_request as f64).max(0.001);
            let shared2 = shared.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut inflight = tokio::task::JoinSet::new();
                loop {
                    tick.tick().await;
                    let Some((body, spans)) = shared2.next() else {
                        break;
                    };
                    let (s, mut c) = (shared2.clone(), client.clone());
                    inflight.spawn(async move { s.one(&mut c, body, spans).await });
                    while inflight.try_join_next().is_some() {}
                }
                while inflight.join_next().await.is_some() {}
            });
        }
    }
    let deadline = start + spec.duration;
    loop {
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                shared.stop.store(true, Ordering::Relaxed);
                while tasks.join_next().await.is_some() {}
                break;
            }
            done = tasks.join_next() => {
                if done.is_none() {
                    break;
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let h = shared.latency.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let spans_ok = shared.spans_ok.load(Ordering::Relaxed);
    Ok(Report {
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        latency_p999_ms: ms(0.999),
        latency_max_ms: h.max() as f64 / 1000.0,
        ..Report::new(
            &spec,
            elapsed,
            shared.requests_ok.load(Ordering::Relaxed),
            spans_ok,
            shared.failures.lock().await.clone(),
        )
    })
}

/// One X-Ray SDK segment datagram (header line + document) of about 1 KB, with `seq` in its
/// trace and span IDs so that every send is a distinct segment.
pub fn udp_segment(seq: u64, error: bool) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let epoch = now as u64;
    let fault = if error { "true" } else { "false" };
    let status = if error { 500 } else { 200 };
    format!(
        concat!(
            "{{\"format\":\"json\",\"version\":1}}\n",
            r#"{{"trace_id":"1-{epoch:08x}-{seq:024x}","id":"{seq:016x}","name":"loadgen-xray","#,
            r#""start_time":{start:.6},"end_time":{now:.6},"fault":{fault},"origin":"AWS::ECS::Container","#,
            r#""http":{{"request":{{"method":"GET","url":"http://checkout.internal/api/cart/{seq}","#,
            r#""client_ip":"10.0.12.7","user_agent":"loadgen/1.0"}},"response":{{"status":{status},"content_length":512}}}},"#,
            r#""aws":{{"ecs":{{"container":"checkout-7f9c"}},"xray":{{"sdk":"X-Ray for Java","sdk_version":"2.18.1"}}}},"#,
            r#""annotations":{{"tenant":"acme","region_cell":"cell-3"}},"#,
            r#""metadata":{{"default":{{"cart_items":3,"note":"generated by sidetrace loadgen for the X-Ray daemon port"}}}},"#,
            r#""subsegments":[{{"id":"{sub1:016x}","name":"DynamoDB","namespace":"aws","start_time":{start:.6},"end_time":{mid:.6},"#,
            r#""aws":{{"operation":"GetItem","region":"us-east-1","table_name":"carts","request_id":"7BQ6P1TD3M7GJ8CVR1PJN4V7VRVV4KQNSO5AEMVJF66Q9ASUAAJG"}},"#,
            r#""http":{{"response":{{"status":200}}}}}},"#,
            r#"{{"id":"{sub2:016x}","name":"pricing.internal","namespace":"remote","start_time":{mid:.6},"end_time":{now:.6},"#,
            r#""http":{{"request":{{"method":"POST","url":"http://pricing.internal/quote"}},"response":{{"status":200}}}}}}]}}"#
        ),
        epoch = epoch,
        seq = seq,
        start = now - 0.020,
        mid = now - 0.010,
        now = now,
        fault = fault,
        status = status,
        sub1 = seq.wrapping_mul(2) | 1 << 62,
        sub2 = seq.wrapping_mul(2).wrapping_add(1) | 1 << 62,
    )
    .into_bytes()
}

/// UDP load: as fast as one socket can send (closed loop), or at `rate` datagrams per second.
/// UDP has no answer, so a send that the kernel took counts as ok; refusals are failures.
fn run_udp(spec: &LoadSpec) -> Result<Report, String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.connect(&spec.target).map_err(|e| e.to_string())?;
    let start = std::time::SystemTime::now();
    let elapsed = || start.elapsed().unwrap_or_default();
    let (mut ok, mut seq) = (0u64, 0u64);
    let mut failures = BTreeMap::new();
    let mut rng = Rng::new(0x5eed);
    while elapsed() < spec.duration && spec.max_requests.is_none_or(|m| seq < m) {
        if let Some(rate) = spec.rate {
            let ahead = seq as f64 / rate - elapsed().as_secs_f64();
            if ahead > 0.0 {
                // A blocking-pool thread, not a runtime worker: sleeping leaves the core to the
                // agent and the fake endpoint instead of spinning.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_secs_f64(ahead.min(0.01)));
                continue;
            }
        }
        seq += 1;
        let error = (rng.below(1_000_000) as f64) < spec.error_ratio * 1e6;
        match socket.send(&udp_segment(seq, error)) {
            Ok(_) => ok += 1,
            Err(e) => {
                *failures.entry(e.kind().to_string()).or_insert(0) += 1;
            }
        }
    }
    let secs = elapsed().as_secs_f64();
    Ok(Report::new(spec, secs, ok, ok, failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_send_gets_unique_trace_ids_that_still_decode() {
        let spec = LoadSpec {
            protocol: "grpc".into(),
            target: String::new(),
            spans_per_request: 64,
            spans_per_trace: 8,
            streams: 1,
            rate: None,
            duration: Duration::from_secs(1),
            max_requests: None,
            error_ratio: 0.0,
            error_mix: crate::workload::ErrorMix::Uniform,
            extra_attributes: 1,
            xray_ids: true,
            gzip: false,
            metrics_recorded: false,
            topology: crate::workload::Topology::Services,
        };
        let t = &templates(&spec)[0];
        assert_eq!(t.trace_id_offsets.len(), 64, "every span's trace ID found");
        let ids = |b: Vec<u8>| {
            let d =
                crate::receivers::decode::decode_request(b.into(), crate::model::Protocol::Grpc)
                    .unwrap();
            assert_eq!(d.batch.spans.len(), 64);
            d.batch
                .spans
                .iter()
                .map(|s| s.trace_id)
                .collect::<std::collections::HashSet<_>>()
        };
        let (a, b) = (ids(instantiate(t, 1, 0)), ids(instantiate(t, 2, 0)));
        assert_eq!(a.len(), 10, "traces of 7 spans, the last one cut short");
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn each_send_moves_every_timestamp_to_when_it_is_sent() {
        let spec = LoadSpec {
            protocol: "grpc".into(),
            target: String::new(),
            spans_per_request: 700,
            spans_per_trace: 8,
            streams: 1,
            rate: None,
            duration: Duration::from_secs(1),
            max_requests: None,
            error_ratio: 0.5,
            error_mix: crate::workload::ErrorMix::Realistic,
            extra_attributes: 1,
            xray_ids: true,
            gzip: false,
            metrics_recorded: false,
            topology: crate::workload::Topology::Services,
        };
        let t = &templates(&spec)[0];
        let decode = |b: Vec<u8>| crate::proto::ExportTraceServiceRequest::decode(&b[..]).unwrap();
        let (before, after) = (
            decode(t.bytes.clone()),
            decode(instantiate(t, 0, t.made_unix_nano + 60_000_000_000)),
        );
        let spans = |r: &crate::proto::ExportTraceServiceRequest| {
            r.resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| s.spans.clone())
                .collect::<Vec<_>>()
        };
        let (b, a) = (spans(&before), spans(&after));
        assert_eq!(b.len(), 700);
        for (b, a) in b.iter().zip(&a) {
            assert_eq!(
                a.start_time_unix_nano - b.start_time_unix_nano,
                60_000_000_000
            );
            assert_eq!(a.end_time_unix_nano - b.end_time_unix_nano, 60_000_000_000);
            for (eb, ea) in b.events.iter().zip(&a.events) {
                assert_eq!(ea.time_unix_nano - eb.time_unix_nano, 60_000_000_000);
            }
            assert_eq!((&a.name, &a.attributes), (&b.name, &b.attributes));
        }
        assert!(
            b.iter().any(|s| !s.events.is_empty()),
            "some spans carry exceptions"
        );
    }
}

//! Sampler tests: ratio statistics and consistency, keep-what-matters, holds and their caps.

use super::*;
use crate::model::Protocol;
use crate::proto::{ExportTraceServiceRequest, KeyValue, ResourceSpans, ScopeSpans, Status};
use crate::receivers::decode::decode_request;
use crate::workload::Rng;
use prost::Message;

fn tid(rng: &mut Rng) -> TraceId {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    t[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    t
}

struct SpanSpec {
    trace: TraceId,
    id: u8,
    parent: Option<u8>,
    kind: i32,
    dur_ms: u64,
    error: bool,
}

fn batch(specs: &[SpanSpec]) -> Batch {
    let spans = specs
        .iter()
        .map(|s| Span {
            trace_id: s.trace.to_vec().into(),
            span_id: vec![s.id; 8].into(),
            parent_span_id: s.parent.map(|p| vec![p; 8].into()).unwrap_or_default(),
            name: format!("op{}", s.id),
            kind: s.kind,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + s.dur_ms * 1_000_000,
            status: Some(Status {
                code: if s.error { 2 } else { 0 },
                message: String::new(),
            }),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: None,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(crate::workload::resource("svc")),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    decode_request(req.encode_to_vec().into(), Protocol::Grpc)
        .unwrap()
        .batch
}

/// A CLIENT span (id 2) under an entry span (id 1) that is not in the batch.
fn child(trace: TraceId, error: bool) -> SpanSpec {
    SpanSpec {
        trace,
        id: 2,
        parent: Some(1),
        kind: 3,
        dur_ms: 1,
        error,
    }
}

/// A trace: an entry SERVER span (id 1) and `children` client spans.
fn trace(t: TraceId, children: u8, dur_ms: u64, error_in_child: bool) -> Vec<SpanSpec> {
    let mut v: Vec<SpanSpec> = (0..children)
        .map(|c| SpanSpec {
            trace: t,
            id: 2 + c,
            parent: Some(1),
            kind: 3,
            dur_ms: 1,
            error: error_in_child && c == 0,
        })
        .collect();
    v.push(SpanSpec {
        trace: t,
        id: 1,
        parent: None,
        kind: 2,
        dur_ms,
        error: false,
    });
    v
}

fn cfg(head: Head) -> Policies {
    Policies {
        head,
        ..Policies::keep_all()
    }
}

fn count(out: &[Batch]) -> usize {
    out.iter().map(|b| b.spans.len()).sum()
}

#[test]
fn ratio_keeps_the_right_fraction_of_a_million_ids() {
    let mut rng = Rng::new(99);
    for ratio in [0.01, 0.1, 0.5] {
        let t = threshold(ratio);
        let kept = (0..1_000_000)
            .filter(|_| ratio_keeps(&tid(&mut rng), "", t))
            .count();
        let frac = kept as f64 / 1e6;
        assert!((frac - ratio).abs() < 0.005, "ratio {ratio}: kept {frac}");
    }
    assert!(!ratio_keeps(&[0xff; 16], "", threshold(0.0)));
    assert!(ratio_keeps(&[0; 16], "", threshold(1.0)));
}

#[test]
fn tracestate_thresholds_and_randomness_are_honoured() {
    // th:8 = half the space: a trace with randomness below 0x80000000000000 is dropped even at ratio 1.
    let mut low = [0u8; 16];
    low[9] = 0x10;
    let mut high = [0u8; 16];
    high[9] = 0xf0;
    assert!(!ratio_keeps(&low, "ot=th:8", threshold(1.0)));
    assert!(ratio_keeps(
        &high,
        "vendor=x,ot=th:8;rv:ffffffffffffff",
        threshold(1.0)
    ));
    assert_eq!(incoming_threshold("ot=th:8"), Some(0x80_0000_0000_0000));
    assert_eq!(incoming_threshold("ot=th:c"), Some(0xc0_0000_0000_0000));
    assert_eq!(randomness(&low, "ot=rv:00000000000001"), 1);
    assert_eq!(incoming_threshold("ot=th:zz"), None);
}

#[tokio::test(start_paused = true)]
async fn two_samplers_keep_exactly_the_same_traces() {
    let mut rng = Rng::new(5);
    let specs: Vec<SpanSpec> = (0..2000)
        .flat_map(|_| trace(tid(&mut rng), 1, 5, false))
        .collect();
    let run = || {
        let mut cfg = cfg(Head::Ratio(0.1));
        cfg.config.keep_errors = false;
        let mut s = Sampler::new(cfg, Arc::default());
        let out = s.admit(batch(&specs), Instant::now());
        let mut ids: Vec<TraceId> = out
            .iter()
            .flat_map(|b| b.spans.iter().map(|s| s.trace_id))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert!(
        (150..250).contains(&a.len()),
        "{} of 2000 kept at 10%",
        a.len()
    );
}

#[tokio::test(start_paused = true)]
async fn errors_and_slow_entries_are_kept_whole_at_one_percent() {
    let mut cfg = cfg(Head::Ratio(0.01));
    cfg.slow.default = Some(Duration::from_millis(500));
    let stats = Arc::new(SamplingStats::default());
    let mut s = Sampler::new(cfg, stats.clone());
    let mut rng = Rng::new(11);
    let (mut errors, mut slow, mut plain) = (vec![], vec![], vec![]);
    for i in 0..300 {
        let t = tid(&mut rng);
        match i % 3 {
            0 => errors.push(t),
            1 => slow.push(t),
            _ => plain.push(t),
        }
    }
    // Children arrive in one request, the entry spans in a later one (as SDK batching does).
    let children: Vec<SpanSpec> = errors
        .iter()
        .map(|t| trace(*t, 3, 10, true))
        .chain(slow.iter().map(|t| trace(*t, 3, 900, false)))
        .chain(plain.iter().map(|t| trace(*t, 3, 10, false)))
        .flat_map(|mut v| {
            v.pop();
            v
        })
        .collect();
    let entries: Vec<SpanSpec> = errors
        .iter()
        .map(|t| (t, 10))
        .chain(slow.iter().map(|t| (t, 900)))
        .chain(plain.iter().map(|t| (t, 10)))
        .map(|(t, d)| SpanSpec {
            trace: *t,
            id: 1,
            parent: None,
            kind: 2,
            dur_ms: d,
            error: false,
        })
        .collect();
    let mut out = s.admit(batch(&children), Instant::now());
    out.extend(s.admit(batch(&entries), Instant::now()));
    tokio::time::advance(Duration::from_secs(3)).await;
    out.extend(s.tick(Instant::now()));
    let mut per_trace: HashMap<TraceId, usize> = HashMap::new();
    for b in &out {
        for sp in &b.spans {
            *per_trace.entry(sp.trace_id).or_default() += 1;
            // Rebuilt batches must still decode.
            b.decode_span(sp).unwrap();
            assert_eq!(b.service_name(sp), "svc");
        }
    }
    for t in errors.iter().chain(&slow) {
        assert_eq!(per_trace.get(t), Some(&4), "error/slow trace kept whole");
    }
    let plain_kept = plain.iter().filter(|t| per_trace.contains_key(*t)).count();
    assert!(plain_kept <= 5, "{plain_kept} plain traces kept at 1%");
    // A trace the 1% ratio keeps anyway is counted under "ratio", not "error"/"slow".
    let by_ratio = stats.traces(true, Policy::Ratio);
    assert_eq!(
        stats.traces(true, Policy::Error) + stats.traces(true, Policy::Slow) + by_ratio,
        200 + plain_kept as u64
    );
    assert!(stats.traces(true, Policy::Error) >= 95 && stats.traces(true, Policy::Slow) >= 95);
    assert_eq!(s.open.len(), 0);
    assert_eq!(s.held_bytes, 0);
    // A late span follows its trace's decision.
    let late = s.admit(
        batch(&[SpanSpec {
            trace: errors[0],
            id: 9,
            parent: Some(1),
            kind: 3,
            dur_ms: 1,
            error: false,
        }]),
        Instant::now(),
    );
    assert_eq!(count(&late), 1);
    let late = s.admit(
        batch(&[SpanSpec {
            trace: plain[0],
            id: 9,
            parent: Some(1),
            kind: 3,
            dur_ms: 1,
            error: false,
        }]),
        Instant::now(),
    );
    assert_eq!(count(&late), usize::from(per_trace.contains_key(&plain[0])));
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_open_traces_stay_within_the_byte_cap() {
    let mut cfg = cfg(Head::Ratio(0.0));
    cfg.config.max_open_traces = 200_000;
    cfg.config.max_held_bytes = 8 << 20;
    let stats = Arc::new(SamplingStats::default());
    let mut s = Sampler::new(cfg, stats.clone());
    let mut rng = Rng::new(3);
    let mut max_held = 0;
    for _ in 0..100 {
        // 1,000 traces per request, children only: every trace stays open.
        let specs: Vec<SpanSpec> = (0..1000).map(|_| child(tid(&mut rng), false)).collect();
        s.admit(batch(&specs), Instant::now());
        max_held = max_held.max(s.held_bytes);
        assert!(s.held_bytes <= 8 << 20);
    }
    assert!(
        stats.early.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "pressure decided some traces early"
    );
    assert!(max_held > 4 << 20, "the cap, not luck, bounded it");
    let kept = s.flush_all();
    assert_eq!(count(&kept), 0);
    assert_eq!(s.held_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn traces_without_entry_span_are_decided_after_max_wait() {
    let mut cfg = cfg(Head::Ratio(0.0));
    cfg.config.max_wait = Duration::from_secs(5);
    let mut s = Sampler::new(cfg, Arc::default());
    let t = tid(&mut Rng::new(8));
    let out = s.admit(batch(&[child(t, true)]), Instant::now());
    // An error: kept at once, no need to wait.
    assert_eq!(count(&out), 1);
    let t2 = tid(&mut Rng::new(9));
    assert_eq!(
        count(&s.admit(batch(&[child(t2, false)]), Instant::now())),
        0
    );
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(s.tick(Instant::now()).is_empty());
    assert_eq!(s.open.len(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(s.tick(Instant::now()).is_empty(), "dropped by the ratio");
    assert_eq!(s.open.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_caps_kept_traces_per_service() {
    let mut cfg = cfg(Head::Ratio(1.0));
    cfg.config.rate_limit = Some(5.0);
    let stats = Arc::new(SamplingStats::default());
    let mut s = Sampler::new(cfg, stats.clone());
    let mut rng = Rng::new(1);
    let specs: Vec<SpanSpec> = (0..50)
        .flat_map(|_| trace(tid(&mut rng), 0, 1, false))
        .collect();
    assert_eq!(count(&s.admit(batch(&specs), Instant::now())), 5);
    assert_eq!(stats.traces(false, Policy::RateLimit), 45);
    tokio::time::advance(Duration::from_secs(1)).await;
    let specs: Vec<SpanSpec> = (0..50)
        .flat_map(|_| trace(tid(&mut rng), 0, 1, false))
        .collect();
    assert_eq!(count(&s.admit(batch(&specs), Instant::now())), 5);
}

#[tokio::test(start_paused = true)]
async fn rules_decide_on_the_entry_span() {
    use crate::exporters::xray::rules::Rule;
    let mut rules = Rules::fallback(Instant::now());
    rules.set_rules(vec![Rule {
        name: "svc-all".into(),
        priority: 1,
        fixed_rate: 1.0,
        reservoir_size: 0,
        service_name: "svc".into(),
        ..Rule::default_rule()
    }]);
    let mut cfg = cfg(Head::Rules(Arc::new(Mutex::new(rules))));
    cfg.config.keep_errors = false;
    let mut s = Sampler::new(cfg, Arc::default());
    let mut rng = Rng::new(2);
    let t = tid(&mut rng);
    // Children first: held until the entry span arrives, then all kept by the rule.
    let mut specs = trace(t, 2, 1, false);
    let entry = specs.pop().unwrap();
    assert_eq!(count(&s.admit(batch(&specs), Instant::now())), 0);
    assert_eq!(count(&s.admit(batch(&[entry]), Instant::now())), 3);
}

#[tokio::test(start_paused = true)]
async fn decided_traces_do_not_pile_up_behind_a_long_open_one() {
    // Rules decide at the entry span; a trace whose entry span never comes stays open for an
    // hour at the front of `order` while 5,000 others are decided at once behind it.
    let mut c = cfg(Head::Rules(Arc::new(Mutex::new(Rules::fallback(
        Instant::now(),
    )))));
    c.config.keep_errors = false;
    c.config.max_wait = Duration::from_secs(3600);
    let mut s = Sampler::new(c, Arc::default());
    let mut rng = Rng::new(21);
    s.admit(batch(&[child(tid(&mut rng), false)]), Instant::now());
    for _ in 0..50 {
        let specs: Vec<SpanSpec> = (0..100)
            .flat_map(|_| trace(tid(&mut rng), 0, 1, false))
            .collect();
        s.admit(batch(&specs), Instant::now());
    }
    assert_eq!(s.open.len(), 1);
    assert!(
        s.order.len() <= 1024 + 2 + 100,
        "{} order entries for 1 open trace",
        s.order.len()
    );
}

#[tokio::test(start_paused = true)]
async fn held_spans_keep_their_name_and_http_ranges_when_rebuilt() {
    // The ranges a held span carries (name, trace state, HTTP attributes) must point at the
    // same text in the rebuilt batch as in the request it came in.
    let t = [7u8; 16];
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(crate::proto::AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let span = |id: u8, parent: Option<u8>, kind: i32, error: bool| Span {
        trace_id: t.to_vec().into(),
        span_id: vec![id; 8].into(),
        parent_span_id: parent.map(|p| vec![p; 8].into()).unwrap_or_default(),
        name: format!("GET /r/{{id}} #{id}"),
        kind,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_002_000,
        status: Some(Status {
            code: if error { 2 } else { 0 },
            message: String::new(),
        }),
        attributes: vec![
            kv("http.request.method", "GET"),
            kv("http.route", "/r/{id}"),
            kv("url.path", &format!("/r/{id}")),
        ],
        ..Default::default()
    };
    let req = |spans: Vec<Span>| {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(crate::workload::resource("svc")),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        decode_request(req.encode_to_vec().into(), Protocol::Grpc)
            .unwrap()
            .batch
    };
    let mut s = Sampler::new(cfg(Head::Ratio(0.0)), Arc::default());
    // Held first (no error yet), then an error decides the trace: the held spans are rebuilt.
    let mut out = s.admit(req(vec![span(3, Some(1), 3, false)]), Instant::now());
    out.extend(s.admit(req(vec![span(1, None, 2, false)]), Instant::now()));
    assert!(out.is_empty(), "held");
    out.extend(s.admit(req(vec![span(2, Some(1), 3, true)]), Instant::now()));
    tokio::time::advance(Duration::from_secs(3)).await;
    out.extend(s.tick(Instant::now()));
    let text = |b: &Batch, r: &Range<u32>| {
        std::str::from_utf8(&b.buf[r.start as usize..r.end as usize])
            .unwrap()
            .to_owned()
    };
    let mut seen = 0;
    for b in &out {
        for sp in &b.spans {
            let id = sp.span_id[0];
            assert_eq!(text(b, &sp.name), format!("GET /r/{{id}} #{id}"));
            assert_eq!(text(b, &sp.http.route), "/r/{id}");
            assert_eq!(text(b, &sp.http.method), "GET");
            assert_eq!(text(b, &sp.http.path), format!("/r/{id}"));
            seen += 1;
        }
    }
    assert_eq!(seen, 3, "the error trace is kept whole");
}

#[tokio::test(start_paused = true)]
async fn a_held_request_is_freed_when_its_last_open_trace_is_decided() {
    // Held spans point into the request they came in: it must stay while any of its traces is
    // open, count against the hold once, and go when the last one is decided.
    let mut s = Sampler::new(cfg(Head::Ratio(0.0)), Arc::default());
    let mut rng = Rng::new(11);
    let (quick, long) = (tid(&mut rng), tid(&mut rng));
    // `quick` has its entry span (decided after the grace period); `long` only a child.
    let mut first = trace(quick, 2, 1, false);
    first.push(child(long, false));
    let b = batch(&first);
    let request_bytes =
        b.size_bytes() + (b.spans.capacity() - b.spans.len()) * std::mem::size_of::<SpanInfo>();
    assert!(s.admit(b, Instant::now()).is_empty());
    assert_eq!(s.held.len(), 1);
    assert_eq!(s.held_bytes, request_bytes + 2 * OPEN_TRACE_OVERHEAD_BYTES);

    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(
        s.tick(Instant::now()).is_empty(),
        "quick: dropped by the ratio"
    );
    assert_eq!(s.open.len(), 1);
    assert_eq!(s.held.len(), 1, "long still points into the request");
    assert_eq!(s.held_bytes, request_bytes + OPEN_TRACE_OVERHEAD_BYTES);

    // An error in a second request keeps `long` whole: its span from each request.
    let out = s.admit(batch(&[child(long, true)]), Instant::now());
    assert_eq!(count(&out), 2);
    assert!(
        out.iter()
            .flat_map(|b| &b.spans)
            .all(|sp| sp.trace_id == long)
    );
    assert!(s.held.is_empty(), "both requests freed");
    assert_eq!(s.held_bytes, 0);
    assert_eq!(s.held_base, 1, "the second request was never held");
}

#[tokio::test(start_paused = true)]
async fn freed_slots_behind_a_long_open_trace_count_against_the_hold() {
    // One trace without an entry span pins the oldest held request; every later request is
    // decided at its (zero) grace and freed, but its slot stays behind the pinned one.
    let mut cfg = cfg(Head::Ratio(0.0));
    cfg.config.grace = Duration::ZERO;
    cfg.config.max_held_bytes = 64 << 10;
    let stats = Arc::new(SamplingStats::default());
    let mut s = Sampler::new(cfg, stats.clone());
    let mut rng = Rng::new(12);
    let pinned = tid(&mut rng);
    s.admit(batch(&[child(pinned, false)]), Instant::now());
    let early = || stats.early.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..2000 {
        let before = early();
        s.admit(batch(&trace(tid(&mut rng), 1, 1, false)), Instant::now());
        // Deciding the pinned trace frees the slots behind it: the new trace stays open.
        assert!(
            early() - before <= 1,
            "{} decided early at once",
            early() - before
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        s.tick(Instant::now());
    }
    let slot = std::mem::size_of::<Option<HeldBatch>>();
    assert!(
        s.held.len() <= (64 << 10) / slot + 2,
        "{} slots of {slot} bytes under a 64 KiB hold",
        s.held.len()
    );
    assert!(!s.open.contains_key(&pinned), "decided early to free them");
    assert_eq!(early(), 1, "only the pinned trace was decided early");
}

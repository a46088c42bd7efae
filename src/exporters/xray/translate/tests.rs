//! Unit tests of the translator's limits and edge cases that golden files cannot show well.

use super::blocks::url_host;
use super::json::Writer;
use super::plan::Name;
use super::write::write_name;
use super::*;
use crate::exporters::xray::validate::validate_document;
use crate::proto::{AnyValue, ArrayValue, KeyValue, Status, any_value::Value, span};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_owned()))
}

fn base_span(kind: i32) -> Span {
    Span {
        trace_id: vec![0x65, 0x53, 0xf1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].into(),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8].into(),
        parent_span_id: Default::default(),
        name: "op".into(),
        kind,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        ..Span::default()
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![text("service.name", "svc")],
        ..Resource::default()
    }
}

fn translate(span: &Span, opts: &TranslateOptions) -> (Vec<u8>, Translated) {
    let mut out = Vec::new();
    let t = to_segment(
        span,
        &resource(),
        &InstrumentationScope::default(),
        opts,
        &mut out,
    )
    .expect("translates");
    (out, t)
}

fn assert_valid(doc: &[u8], limit: usize) {
    assert!(doc.len() <= limit, "{} bytes > {limit}", doc.len());
    let problems = validate_document(doc);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A span with every kind of large content: it must still fit the real 64 kB limit.
#[test]
fn a_huge_span_is_trimmed_under_64_kb_and_stays_valid() {
    let mut span = base_span(2);
    for i in 0..200 {
        span.attributes
            .push(text(&format!("meta.{i}"), &"m".repeat(2_000)));
    }
    for i in 0..60 {
        span.attributes
            .push(text(&format!("idx.{i}"), &"é".repeat(1_500)));
    }
    span.attributes.push(text(
        "http.url",
        &format!("https://x/{}", "u".repeat(100_000)),
    ));
    span.attributes.push(text("http.method", "GET"));
    span.attributes.push(text("db.system", "mysql"));
    span.attributes
        .push(text("db.statement", &"SELECT 1 ".repeat(20_000)));
    let frames: String = (0..5_000)
        .map(|i| format!("\tat a.B.c{i}(B.java:{i})\n"))
        .collect();
    span.events.push(span::Event {
        name: "exception".into(),
        attributes: vec![
            text("exception.type", "E"),
            text("exception.message", &"x".repeat(50_000)),
            text("exception.stacktrace", &format!("E: x\n{frames}")),
        ],
        ..span::Event::default()
    });
    for i in 0..2_000u32 {
        let mut trace = vec![0x65u8, 0x53, 0xf1, 0];
        trace.extend_from_slice(&[1; 8]);
        trace.extend_from_slice(&i.to_be_bytes());
        span.links.push(span::Link {
            trace_id: trace.into(),
            span_id: vec![9; 8].into(),
            attributes: vec![text("k", &"l".repeat(100))],
            ..span::Link::default()
        });
    }
    let opts = TranslateOptions {
        index_all_attributes: true,
        ..TranslateOptions::default()
    };
    let mut out = Vec::new();
    let t = to_segment(
        &span,
        &resource(),
        &InstrumentationScope::default(),
        &opts,
        &mut out,
    )
    .expect("translates");
    assert_valid(&out, MAX_DOCUMENT_BYTES);
    let trim = t.trim.expect("trimmed");
    assert!(trim.original_bytes > 1_000_000, "{trim:?}");
    assert!(
        trim.metadata_dropped > 0 && trim.strings_truncated > 0,
        "{trim:?}"
    );
    assert_eq!(t.annotations_over_cap, 200 + 60 + 1 - 50);
    assert_eq!(t.annotation_values_truncated, 50);
    let doc: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    // The core survives any trimming.
    assert_eq!(doc["name"], "svc");
    assert_eq!(doc["http"]["request"]["method"], "GET");
    assert_eq!(doc["fault"], false);
}

#[test]
fn documents_only_over_the_limit_are_trimmed() {
    let mut span = base_span(2);
    span.attributes.push(text("a", &"a".repeat(10_000)));
    let (out, t) = translate(&span, &TranslateOptions::default());
    assert!(t.trim.is_none());
    assert_valid(&out, MAX_DOCUMENT_BYTES);
    let opts = TranslateOptions {
        max_document_bytes: 5_000,
        ..TranslateOptions::default()
    };
    let (out, t) = translate(&span, &opts);
    assert_valid(&out, 5_000);
    assert_eq!(t.trim.map(|t| t.metadata_dropped), Some(1));
}

#[test]
fn a_limit_below_the_core_is_a_typed_error_and_leaves_the_buffer() {
    let opts = TranslateOptions {
        max_document_bytes: 100,
        ..TranslateOptions::default()
    };
    let mut out = b"kept".to_vec();
    let err = to_segment(
        &base_span(2),
        &resource(),
        &InstrumentationScope::default(),
        &opts,
        &mut out,
    );
    assert!(
        matches!(
            err,
            Err(TranslateError::TooLarge {
                limit_bytes: 100,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(out, b"kept");
}

#[test]
fn invalid_ids_are_typed_errors() {
    let opts = TranslateOptions::default();
    let mut out = Vec::new();
    let scope = InstrumentationScope::default();
    let mut s = base_span(2);
    s.trace_id = vec![0; 16].into();
    assert_eq!(
        to_segment(&s, &resource(), &scope, &opts, &mut out),
        Err(TranslateError::InvalidTraceId)
    );
    let mut s = base_span(2);
    s.span_id = vec![1; 4].into();
    assert_eq!(
        to_segment(&s, &resource(), &scope, &opts, &mut out),
        Err(TranslateError::InvalidSpanId)
    );
    let mut s = base_span(2);
    s.parent_span_id = vec![1; 3].into();
    assert_eq!(
        to_segment(&s, &resource(), &scope, &opts, &mut out),
        Err(TranslateError::InvalidParentSpanId)
    );
    assert_eq!(TranslateError::InvalidTraceId.reason(), "invalid_trace_id");
    assert!(out.is_empty());
}

#[test]
fn documents_are_appended_after_existing_bytes() {
    let mut out = b"[".to_vec();
    let opts = TranslateOptions::default();
    let scope = InstrumentationScope::default();
    let first = to_segment(&base_span(2), &resource(), &scope, &opts, &mut out).expect("ok");
    let second = to_segment(&base_span(3), &resource(), &scope, &opts, &mut out).expect("ok");
    let (a, b) = (first.documents()[0].clone(), second.documents()[0].clone());
    assert_eq!(a.start, 1);
    assert_eq!(b.start, a.end);
    assert_eq!(b.end, out.len());
    assert_valid(&out[a], MAX_DOCUMENT_BYTES);
    assert_valid(&out[b], MAX_DOCUMENT_BYTES);
}

#[test]
fn unfinished_and_backwards_spans_keep_valid_times() {
    let mut s = base_span(2);
    s.end_time_unix_nano = 0;
    let (out, _) = translate(&s, &TranslateOptions::default());
    assert_valid(&out, MAX_DOCUMENT_BYTES);
    assert!(out.windows(18).any(|w| w == b"\"in_progress\":true"));
    let mut s = base_span(2);
    s.end_time_unix_nano = s.start_time_unix_nano - 5;
    let (out, _) = translate(&s, &TranslateOptions::default());
    assert_valid(&out, MAX_DOCUMENT_BYTES);
}

#[test]
fn trace_id_epoch_window_is_28_days_back_and_5_minutes_ahead() {
    let epoch = 0x6553_f100u64;
    let s = base_span(2);
    let at = |now| TranslateOptions {
        trace_id_policy: TraceIdPolicy::RequireRecentEpoch,
        now_unix_secs: now,
        ..TranslateOptions::default()
    };
    let mut out = Vec::new();
    let scope = InstrumentationScope::default();
    let check =
        |now: u64, out: &mut Vec<u8>| to_segment(&s, &resource(), &scope, &at(now), out).is_ok();
    assert!(check(epoch + MAX_TRACE_ID_AGE.as_secs(), &mut out));
    assert!(!check(epoch + MAX_TRACE_ID_AGE.as_secs() + 1, &mut out));
    assert!(check(epoch - MAX_TRACE_ID_SKEW.as_secs(), &mut out));
    assert!(!check(epoch - MAX_TRACE_ID_SKEW.as_secs() - 1, &mut out));
}

#[test]
fn name_sanitising_keeps_the_x_ray_set_and_counts_characters() {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out, usize::MAX, false, usize::MAX);
    write_name(
        &mut w,
        Name {
            main: "a\\b\t\"c\"",
            host: Some("h:1"),
        },
    );
    assert_eq!(String::from_utf8(out).unwrap(), r#""a\\bc@h:1""#);
    assert_eq!(
        xray_trace_id(&[0xab; 16]),
        "1-abababab-abababababababababababab"
    );
}

#[test]
fn url_hosts_are_found_like_go_url_parse() {
    assert_eq!(
        url_host("mysql://u:p@db.example:3306/x"),
        Some("db.example")
    );
    assert_eq!(url_host("postgresql://[::1]:5432"), Some("::1"));
    assert_eq!(url_host("//cache:11211"), Some("cache"));
    assert_eq!(url_host("Server=x;Database=y"), None);
    assert_eq!(url_host("file:///tmp/db"), None);
}

#[test]
fn status_error_without_message_has_fault_but_no_cause() {
    let mut s = base_span(1);
    s.status = Some(Status {
        message: String::new(),
        code: STATUS_ERROR,
    });
    s.attributes
        .push(kv("list", Value::ArrayValue(ArrayValue { values: vec![] })));
    let (out, _) = translate(&s, &TranslateOptions::default());
    assert_valid(&out, MAX_DOCUMENT_BYTES);
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["fault"], true);
    assert!(doc.get("cause").is_none());
    assert_eq!(doc["metadata"]["default"]["list"], serde_json::json!([]));
}

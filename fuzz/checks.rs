//! What each fuzz target asserts of one input: shared by the cargo-fuzz targets (`fuzz_targets/`)
//! and the stable replay in CI (`tests/fuzz_replay.rs`), so both check exactly the same things.

use bytes::Bytes;
use prost::Message;
use sidetrace::model::Protocol;
use sidetrace::proto::{ExportTraceServiceRequest, Span};
use sidetrace::receivers::decode::{DecodeError, decode_request};

/// The cap the gzip target inflates under (the receivers use `max_request_bytes`).
pub const GZIP_CAP: usize = 64 * 1024;

/// The rules the walk applies per span (and prost does not): such spans are rejected, not errors.
fn walk_keeps(s: &Span) -> bool {
    s.trace_id.len() == 16
        && s.trace_id.iter().any(|b| *b != 0)
        && s.span_id.len() == 8
        && s.span_id.iter().any(|b| *b != 0)
        && (s.parent_span_id.is_empty() || s.parent_span_id.len() == 8)
        && s.end_time_unix_nano >= s.start_time_unix_nano
}

/// OTLP protobuf: the zero-copy walk and prost agree on accept or reject, and where both accept,
/// the walk's index says what prost decoded (IDs, names, times, kinds, status, services).
pub fn otlp_protobuf(data: &[u8]) {
    let walk = decode_request(Bytes::copy_from_slice(data), Protocol::Grpc);
    let prost = ExportTraceServiceRequest::decode(data);
    let decoded = match (walk, prost) {
        (Ok(w), Ok(p)) => (w, p),
        (Err(_), Err(_)) => return,
        // The walk's one extra rule: attribute values nested deeper than prost needs to care.
        (Err(DecodeError::TooDeep), Ok(_)) => return,
        (Ok(_), Err(e)) => panic!("the walk accepted what prost rejects: {e}"),
        (Err(e), Ok(_)) => panic!("the walk rejected what prost accepts: {e}"),
    };
    let (w, p) = decoded;
    let mut want = Vec::new();
    for rs in &p.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .rev()
                    .find(|kv| kv.key == "service.name")
                    .and_then(
                        |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(sidetrace::proto::any_value::Value::StringValue(s)) => {
                                Some(s.as_str())
                            }
                            _ => None,
                        },
                    )
            })
            .unwrap_or("");
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                want.push((s, service));
            }
        }
    }
    let kept: Vec<_> = want.iter().filter(|(s, _)| walk_keeps(s)).collect();
    assert_eq!(
        w.rejected.total() as usize,
        want.len() - kept.len(),
        "rejected spans"
    );
    assert_eq!(w.batch.spans.len(), kept.len(), "indexed spans");
    for (info, (s, service)) in w.batch.spans.iter().zip(kept) {
        assert_eq!(&info.trace_id[..], &s.trace_id[..]);
        assert_eq!(&info.span_id[..], &s.span_id[..]);
        let parent: &[u8] = if s.parent_span_id.is_empty() {
            &[0; 8]
        } else {
            &s.parent_span_id
        };
        assert_eq!(&info.parent_span_id[..], parent);
        assert_eq!(w.batch.span_name(info), s.name);
        assert_eq!(
            (info.start_unix_nano, info.end_unix_nano, info.kind),
            (s.start_time_unix_nano, s.end_time_unix_nano, s.kind)
        );
        assert_eq!(info.status_code, s.status.as_ref().map_or(0, |st| st.code));
        assert_eq!(w.batch.service_name(info), *service, "service.name");
        let again = w.batch.decode_span(info).expect("an indexed span decodes");
        assert_eq!(&again, *s, "the indexed bytes are the span");
    }
}

/// OTLP/JSON: never a panic; what it accepts becomes protobuf that prost and the walk accept.
pub fn otlp_json(data: &[u8]) {
    if let Ok(pb) = sidetrace::receivers::otlp_json::json_to_protobuf(data) {
        ExportTraceServiceRequest::decode(&pb[..]).expect("the JSON's protobuf decodes");
        otlp_protobuf(&pb);
    }
}

/// gzip: never more than the cap out, and data within the cap comes back as it went in.
pub fn gzip(data: &[u8]) {
    use std::io::Write;
    if let Ok(out) = sidetrace::receivers::gunzip_capped(data, GZIP_CAP) {
        assert!(out.len() <= GZIP_CAP);
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("writes to a Vec");
    let zipped = e.finish().expect("writes to a Vec");
    match sidetrace::receivers::gunzip_capped(&zipped, GZIP_CAP) {
        Ok(out) => assert_eq!(out, data),
        Err(_) => assert!(data.len() > GZIP_CAP, "{} bytes refused", data.len()),
    }
}

/// The config file (`config check`'s path): never a panic, whatever the bytes.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sidetrace::agent::config::Config::parse_toml(text, "fuzz");
}

/// An X-Ray daemon datagram (header line + segment document) through the parser and the span
/// view: never a panic, and what passes is relayed byte for byte and decodes as OTLP.
pub fn xray_datagram(data: &[u8]) {
    use sidetrace::receivers::xray_udp::datagram;
    use sidetrace::receivers::xray_udp::span_view::SpanViews;
    if let Ok(doc) = datagram::parse(data) {
        let body = std::str::from_utf8(data).expect("an accepted datagram is UTF-8");
        assert!(
            body.contains(doc.json),
            "the relayed document is a slice of the datagram"
        );
        let mut views = SpanViews::default();
        views.add(&doc.segment, None);
        if !views.is_empty() {
            let encoded = views.take_encoded();
            decode_request(encoded.clone().into(), Protocol::XrayUdp).expect("a span view decodes");
            otlp_protobuf(&encoded);
        }
    }
}

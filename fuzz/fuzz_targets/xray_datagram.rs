//! An X-Ray daemon datagram (header line + segment document) through the parser and the span
//! view: never a panic, and what passes is relayed byte for byte and decodes as OTLP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidetrace::model::Protocol;
use sidetrace::receivers::decode::decode_request;
use sidetrace::receivers::xray_udp::datagram;
use sidetrace::receivers::xray_udp::span_view::SpanViews;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = datagram::parse(data) {
        let body = std::str::from_utf8(data).expect("an accepted datagram is UTF-8");
        assert!(body.contains(doc.json), "the relayed document is a slice of the datagram");
        let mut views = SpanViews::default();
        views.add(&doc.segment, None);
        if !views.is_empty() {
            decode_request(views.take_encoded().into(), Protocol::XrayUdp)
                .expect("a span view decodes");
        }
    }
});

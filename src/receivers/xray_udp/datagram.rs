//! One X-Ray daemon datagram: the header line `{"format": "json", "version": 1}`, a newline, and
//! one segment or subsegment document, which is relayed byte for byte. The daemon checks only
//! the header (aws-xray-daemon tracesegment.go); we also refuse bodies X-Ray would reject
//! whole (not JSON, no `id` or `trace_id`), so that each is counted here by reason.

use std::borrow::Cow;

use serde::Deserialize;

use crate::exporters::xray::translate::MAX_DOCUMENT_BYTES;

/// The largest datagram read: a UDP payload's maximum, what the SDKs cap a send at.
pub const MAX_DATAGRAM_BYTES: usize = 65_535;
/// Nesting accepted in a document (serde_json's own recursion limit is 128).
pub const MAX_DEPTH: usize = 100;

/// Why a datagram was not relayed (a bounded label of `sidetrace_xray_udp_segments_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No newline, or nothing after it (the daemon's "Missing header or segment").
    MissingHeader,
    /// A header that is not `{"format": "json", "version": 1}` (the daemon's "Invalid header").
    InvalidHeader,
    /// Over X-Ray's 64 kB document limit (a relayed document cannot be trimmed: it is sent as
    /// it came), or larger than a UDP payload can be.
    TooLarge,
    /// Not UTF-8, not a JSON object, nested deeper than [`MAX_DEPTH`], or a field of the wrong
    /// type (X-Ray refuses such a document whole).
    InvalidDocument,
    /// A document without an `id` or `trace_id`.
    MissingId,
    /// An `id`, `parent_id` or `trace_id` not in X-Ray's format (16 hex digits; `1-` + 8 + 24).
    InvalidId,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::MissingHeader,
        Reject::InvalidHeader,
        Reject::TooLarge,
        Reject::InvalidDocument,
        Reject::MissingId,
        Reject::InvalidId,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::MissingHeader => "missing_header",
            Reject::InvalidHeader => "invalid_header",
            Reject::TooLarge => "too_large",
            Reject::InvalidDocument => "invalid_document",
            Reject::MissingId => "missing_id",
            Reject::InvalidId => "invalid_id",
        }
    }
}

/// A document that passed: its text (byte for byte as sent) and its parsed fields.
#[derive(Debug)]
pub struct Document<'a> {
    pub json: &'a str,
    pub segment: Segment<'a>,
}

impl Document<'_> {
    pub fn id(&self) -> &str {
        self.segment.id.as_deref().unwrap_or("")
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    format: Cow<'a, str>,
    version: i64,
}

// The fields the span view reads (the X-Ray segment document schema); everything else is
// skipped without being kept. A known field of the wrong type fails the parse, as X-Ray would.
// Strings are borrowed unless they hold escapes (`Option<Cow>` does not borrow through serde).

/// A segment, or a subsegment (nested, or sent on its own with `type: "subsegment"`).
#[derive(Debug, Default, Deserialize)]
pub struct Segment<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub parent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default)]
    pub start_time: Option<f64>,
    #[serde(default)]
    pub end_time: Option<f64>,
    #[serde(default)]
    pub in_progress: Option<bool>,
    #[serde(default)]
    pub fault: Option<bool>,
    #[serde(default)]
    pub error: Option<bool>,
    #[serde(default)]
    pub throttle: Option<bool>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub origin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub http: Option<Http<'a>>,
    #[serde(borrow, default)]
    pub sql: Option<Sql<'a>>,
    #[serde(borrow, default)]
    pub aws: Option<Aws<'a>>,
    /// Key → value, sorted by key.
    #[serde(borrow, default)]
    pub annotations: Option<std::collections::BTreeMap<Cow<'a, str>, Annotation<'a>>>,
    /// Namespace → its JSON text, unparsed (metadata is free-form and can be most of a document).
    #[serde(borrow, default)]
    pub metadata: Option<std::collections::BTreeMap<Cow<'a, str>, &'a serde_json::value::RawValue>>,
    #[serde(default)]
    pub cause: Option<serde_json::Value>,
    #[serde(borrow, default)]
    pub service: Block<ServiceBlock<'a>>,
    #[serde(borrow, default)]
    pub subsegments: Option<Vec<Segment<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Http<'a> {
    #[serde(borrow, default)]
    pub request: Option<HttpRequest<'a>>,
    #[serde(default)]
    pub response: Option<HttpResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HttpRequest<'a> {
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub client_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub user_agent: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HttpResponse {
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    /// A number, or a string from some SDKs (the Collector's testdata has both).
    #[serde(default)]
    pub content_length: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Sql<'a> {
    #[serde(borrow, default)]
    pub url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub sanitized_query: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub database_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub user: Option<Cow<'a, str>>,
}

/// The `aws` block: free-form, read for the fields the span view names. Its leaves are
/// [`Text`], and its other keys are skipped, so that a block X-Ray takes is never refused here.
/// (Typed and borrowed: as a JSON map of values it cost a dozen allocations per document.)
#[derive(Debug, Default, Deserialize)]
pub struct Aws<'a> {
    #[serde(borrow, default)]
    pub account_id: Text<'a>,
    #[serde(borrow, default)]
    pub operation: Text<'a>,
    #[serde(borrow, default)]
    pub region: Text<'a>,
    #[serde(borrow, default)]
    pub request_id: Text<'a>,
    #[serde(borrow, default)]
    pub queue_url: Text<'a>,
    #[serde(borrow, default)]
    pub table_name: Text<'a>,
    #[serde(borrow, default)]
    pub ec2: Block<AwsEc2<'a>>,
    #[serde(borrow, default)]
    pub ecs: Block<AwsEcs<'a>>,
    #[serde(borrow, default)]
    pub xray: Block<AwsXray<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AwsEc2<'a> {
    #[serde(borrow, default)]
    pub instance_id: Text<'a>,
    #[serde(borrow, default)]
    pub availability_zone: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AwsEcs<'a> {
    #[serde(borrow, default)]
    pub container: Text<'a>,
    #[serde(borrow, default)]
    pub container_id: Text<'a>,
    #[serde(borrow, default)]
    pub cluster_arn: Text<'a>,
    #[serde(borrow, default)]
    pub task_arn: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AwsXray<'a> {
    #[serde(borrow, default)]
    pub sdk: Text<'a>,
    #[serde(borrow, default)]
    pub sdk_version: Text<'a>,
}

/// The `service` block.
#[derive(Debug, Default, Deserialize)]
pub struct ServiceBlock<'a> {
    #[serde(borrow, default)]
    pub version: Text<'a>,
}

/// An object read as `T`; any other JSON value is skipped and reads as `None` (a free-form
/// block is not refused for holding something else).
#[derive(Debug)]
pub struct Block<T>(pub Option<T>);

impl<T> Default for Block<T> {
    fn default() -> Self {
        Block(None)
    }
}

impl<T> Block<T> {
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Block<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, value::MapAccessDeserializer};
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Object<T> {
            type Value = Block<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(a)).map(|t| Block(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Block(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Block(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Block(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Block(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Block(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Block(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Block(None))
            }
        }
        d.deserialize_any(Object(std::marker::PhantomData))
    }
}

/// A free-form value kept when it is a string; any other JSON value is skipped and reads as
/// `None`.
#[derive(Debug, Default)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl Text<'_> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// An annotation's value: a string, number or boolean (anything else is skipped: `Other`).
#[derive(Debug, Clone, PartialEq)]
pub enum Annotation<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Annotation::deserialize(d)? {
            Annotation::Str(s) => Text(Some(s)),
            _ => Text(None),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Annotation<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IgnoredAny, MapAccess, SeqAccess};
        struct Scalar<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> de::Visitor<'de> for Scalar<'a> {
            type Value = Annotation<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Annotation::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Annotation::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Annotation::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Annotation::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Annotation::Double(v as f64), Annotation::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Annotation::Double(v))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Annotation::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Annotation::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Annotation::Other)
            }
        }
        d.deserialize_any(Scalar(std::marker::PhantomData))
    }
}

/// Deepest `[`/`{` nesting outside strings: checked before parsing (serde_json skips unknown
/// fields without a depth limit), so a 10,000-deep document is refused whatever field holds it.
fn depth(json: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `1-` + 8 hex digits (epoch seconds) + `-` + 24 hex digits.
pub fn is_trace_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 35
        && b.starts_with(b"1-")
        && b[10] == b'-'
        && b[2..10].iter().chain(&b[11..]).all(u8::is_ascii_hexdigit)
}

/// 16 hex digits.
pub fn is_span_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_ids(seg: &Segment<'_>, top: bool) -> Result<(), Reject> {
    let id = seg.id.as_deref().filter(|s| !s.is_empty());
    let Some(id) = id else {
        return Err(Reject::MissingId);
    };
    if top {
        let trace = seg.trace_id.as_deref().filter(|s| !s.is_empty());
        let Some(trace) = trace else {
            return Err(Reject::MissingId);
        };
        if !is_trace_id(trace) {
            return Err(Reject::InvalidId);
        }
    }
    if !is_span_id(id) || seg.parent_id.as_deref().is_some_and(|p| !is_span_id(p)) {
        return Err(Reject::InvalidId);
    }
    for sub in seg.subsegments.iter().flatten() {
        check_ids(sub, false)?;
    }
    Ok(())
}

/// Splits and checks one datagram.
pub fn parse<'a>(datagram: &'a [u8]) -> Result<Document<'a>, Reject> {
    if datagram.len() > MAX_DATAGRAM_BYTES {
        return Err(Reject::TooLarge);
    }
    let newline = datagram
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(Reject::MissingHeader)?;
    let (header, body) = (&datagram[..newline], &datagram[newline + 1..]);
    let body = body.trim_ascii();
    if body.is_empty() {
        return Err(Reject::MissingHeader);
    }
    // The SDKs write one of these two spellings; anything else is parsed.
    let usual = header == br#"{"format": "json", "version": 1}"#
        || header == br#"{"format":"json","version":1}"#;
    if !usual {
        let h: Header<'_> = serde_json::from_slice(header).map_err(|_| Reject::InvalidHeader)?;
        if !h.format.eq_ignore_ascii_case("json") || h.version != 1 {
            return Err(Reject::InvalidHeader);
        }
    }
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(Reject::TooLarge);
    }
    let json = std::str::from_utf8(body).map_err(|_| Reject::InvalidDocument)?;
    // Nesting cannot exceed the number of opening brackets: a vectorised count spares nearly
    // every document the byte-by-byte scan (which cost 10 % of the receiver's CPU).
    let opening = body.iter().filter(|b| matches!(b, b'{' | b'[')).count();
    if !json.starts_with('{') || (opening > MAX_DEPTH && depth(body) > MAX_DEPTH) {
        return Err(Reject::InvalidDocument);
    }
    let segment: Segment<'a> = serde_json::from_str(json).map_err(|_| Reject::InvalidDocument)?;
    check_ids(&segment, true)?;
    Ok(Document { json, segment })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "{\"format\": \"json\", \"version\": 1}\n";
    const TRACE: &str = "1-5f84c7a8-0123456789abcdef01234567";

    fn datagram(body: &str) -> Vec<u8> {
        format!("{HEADER}{body}").into_bytes()
    }

    /// A minimal valid document with `extra` fields after the IDs.
    fn doc(extra: &str) -> String {
        format!(r#"{{"trace_id":"{TRACE}","id":"70de5b6f19ff9a0a"{extra}}}"#)
    }

    #[test]
    fn a_segment_passes_byte_for_byte() {
        let body = format!(
            r#"{{"trace_id":"{TRACE}","id":"70de5b6f19ff9a0a","name":"caf\u00e9 ☕","start_time":1.5,"in_progress":true,"annotations":{{"k":"v"}},"subsegments":[{{"id":"70de5b6f19ff9a0b","name":"db","start_time":1.6,"end_time":1.7}}]}}"#
        );
        let d = datagram(&body);
        let doc = parse(&d).unwrap();
        assert_eq!(doc.json, body);
        assert_eq!(doc.id(), "70de5b6f19ff9a0a");
        assert_eq!(doc.segment.trace_id.as_deref(), Some(TRACE));
        assert_eq!(doc.segment.name.as_deref(), Some("café ☕"));
        assert_eq!(doc.segment.in_progress, Some(true));
        assert_eq!(doc.segment.subsegments.as_ref().unwrap().len(), 1);
        let lax = format!("{{\"format\":\"JSON\",\"version\":1}}\n{body}\n");
        assert_eq!(
            parse(lax.as_bytes()).unwrap().json,
            body,
            "format ignores case; trailing newline trimmed"
        );
    }

    #[test]
    fn hostile_datagrams_are_rejected_by_reason() {
        let cases: Vec<(Vec<u8>, Reject)> = vec![
            (b"no newline at all".to_vec(), Reject::MissingHeader),
            (HEADER.as_bytes().to_vec(), Reject::MissingHeader),
            (
                format!("{{\"format\":\"json\",\"version\":2}}\n{}", doc("")).into_bytes(),
                Reject::InvalidHeader,
            ),
            (
                b"{\"format\":\"xml\",\"version\":1}\n{}".to_vec(),
                Reject::InvalidHeader,
            ),
            (
                format!("garbage\n{}", doc("")).into_bytes(),
                Reject::InvalidHeader,
            ),
            (datagram(&doc("")[..40]), Reject::InvalidDocument),
            (
                [
                    HEADER.as_bytes(),
                    b"{\"id\":\"\xff\xfe\",\"trace_id\":\"b\"}",
                ]
                .concat(),
                Reject::InvalidDocument,
            ),
            (
                datagram(&doc(&format!(
                    ",\"m\":{}{}",
                    "[".repeat(10_000),
                    "]".repeat(10_000)
                ))),
                Reject::InvalidDocument,
            ),
            (datagram("[1,2]"), Reject::InvalidDocument),
            (
                datagram(&doc(",\"start_time\":\"yesterday\"")),
                Reject::InvalidDocument,
            ),
            (
                datagram(&format!(r#"{{"trace_id":"{TRACE}","name":"x"}}"#)),
                Reject::MissingId,
            ),
            (datagram(r#"{"id":"70de5b6f19ff9a0a"}"#), Reject::MissingId),
            (
                datagram(&doc(r#","subsegments":[{"name":"no id"}]"#)),
                Reject::MissingId,
            ),
            (
                datagram(r#"{"id":"70de5b6f19ff9a0a","trace_id":"b"}"#),
                Reject::InvalidId,
            ),
            (
                datagram(&format!(r#"{{"id":"nothex","trace_id":"{TRACE}"}}"#)),
                Reject::InvalidId,
            ),
            (
                datagram(&doc(r#","parent_id":"7"#)),
                Reject::InvalidDocument,
            ),
            (datagram(&doc(r#","parent_id":"7""#)), Reject::InvalidId),
            (
                datagram(&format!(r#"{{"id":7,"trace_id":"{TRACE}"}}"#)),
                Reject::InvalidDocument,
            ),
            (vec![b'x'; MAX_DATAGRAM_BYTES + 1], Reject::TooLarge),
        ];
        for (d, want) in cases {
            assert_eq!(
                parse(&d).map(|_| ()),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(&d[..d.len().min(80)])
            );
        }
        // A document at X-Ray's limit passes; one byte more is refused, not sent to be rejected.
        let sized = |len: usize| {
            let pad = len - doc(r#","m":"""#).len();
            datagram(&doc(&format!(r#","m":"{}""#, "x".repeat(pad))))
        };
        assert!(parse(&sized(MAX_DOCUMENT_BYTES)).is_ok());
        assert_eq!(
            parse(&sized(MAX_DOCUMENT_BYTES + 1)).map(|_| ()),
            Err(Reject::TooLarge)
        );
    }

    /// The fuzz target's invariants (fuzz/fuzz_targets/xray_datagram.rs) over 20,000 seeded
    /// mutations of valid datagrams, so `cargo test` exercises them without a fuzzer.
    #[test]
    fn mutated_datagrams_never_panic_and_what_passes_is_relayed_as_sent() {
        let seeds = [
            datagram(&doc(
                r#","name":"a","start_time":1.0,"end_time":2.0,"subsegments":[{"id":"70de5b6f19ff9a0b","start_time":1.1,"end_time":1.2,"sql":{"url":"x"}}]"#,
            )),
            datagram(&doc(
                r#","type":"subsegment","parent_id":"70de5b6f19ff9a0c","http":{"response":{"status":"404","content_length":"7"}},"cause":{"exceptions":[{"stack":[{"line":1}]}]}"#,
            )),
            datagram(&doc(
                r#","annotations":{"k":1.5,"b":true},"metadata":{"d":{"x":[1,{"y":null}]}},"aws":{"ec2":{"instance_id":"i-1"}}"#,
            )),
        ];
        let mut rng = crate::workload::Rng::new(7);
        let mut passed = 0;
        for i in 0..20_000 {
            let mut d = seeds[i % seeds.len()].clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(d.len() as u64) as usize;
                match rng.below(3) {
                    0 => d[at] = rng.below(256) as u8,
                    1 => {
                        d.remove(at);
                    }
                    _ => {
                        let tokens = b"{}[]\",:0e-";
                        d.insert(at, tokens[rng.below(tokens.len() as u64) as usize]);
                    }
                }
            }
            if let Ok(doc) = parse(&d) {
                passed += 1;
                let text = std::str::from_utf8(&d).unwrap();
                assert!(text.contains(doc.json));
                let mut views = super::super::span_view::SpanViews::default();
                views.add(&doc.segment, None);
                if !views.is_empty() {
                    crate::receivers::decode::decode_request(
                        views.take_encoded().into(),
                        crate::model::Protocol::XrayUdp,
                    )
                    .unwrap();
                }
            }
        }
        assert!(passed > 100, "some mutations stay valid ({passed})");
    }

    /// Free-form blocks are read for what the span view needs; a value of another kind than it
    /// expects is skipped, never a reason to refuse the document.
    #[test]
    fn free_form_blocks_holding_other_values_pass() {
        let d = datagram(&doc(
            r#","aws":{"operation":5,"region":"eu-west-1","ecs":"web","ec2":[1,{"a":2}],"xray":{"sdk":{"n":1},"sdk_version":"2"},"other":{"x":[]}},"service":"v1","annotations":{"s":"ü\n","i":-3,"u":18446744073709551615,"f":0.5,"b":false,"n":null,"o":{"k":1},"a":[1]}"#,
        ));
        let seg = parse(&d).unwrap().segment;
        let aws = seg.aws.as_ref().unwrap();
        assert_eq!(aws.operation.get(), None);
        assert_eq!(aws.region.get(), Some("eu-west-1"));
        assert!(aws.ecs.get().is_none() && aws.ec2.get().is_none());
        let xray = aws.xray.get().unwrap();
        assert_eq!((xray.sdk.get(), xray.sdk_version.get()), (None, Some("2")));
        assert!(seg.service.get().is_none());
        let a = seg.annotations.unwrap();
        assert_eq!(a["s"], Annotation::Str("ü\n".into()));
        assert_eq!(a["i"], Annotation::Int(-3));
        assert_eq!(a["u"], Annotation::Double(18446744073709551615.0));
        assert_eq!(a["f"], Annotation::Double(0.5));
        assert_eq!(a["b"], Annotation::Bool(false));
        for k in ["n", "o", "a"] {
            assert_eq!(a[k], Annotation::Other, "{k}");
        }
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(depth(br#"{"a":"[[[{{{","b":[{"c":"\"]"}]}"#), 3);
    }
}

//! How a span is labelled for span metrics: its operation name (route, else method + templated
//! path, else span name), its kind and its status class, all without allocating.

use crate::model::{Batch, SpanInfo};

/// Longest operation label kept, in bytes (cut at a character boundary); CloudWatch allows
/// 1,024 characters per dimension value, Prometheus has no limit but dashboards do.
pub const MAX_OPERATION_BYTES: usize = 256;
/// Path segments longer than this are treated as identifiers.
const MAX_LITERAL_SEGMENT_BYTES: usize = 64;
/// What replaces an identifier segment in a templated path.
pub const ID_PLACEHOLDER: &[u8] = b"{id}";
/// OTel HTTP semantic conventions: the known methods; any other is reported as `_OTHER`.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The outcome class of a span, as X-Ray defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusClass {
    Ok,
    /// A 4xx answer other than 429.
    Error,
    /// A 5xx answer, or an ERROR status without a 4xx code.
    Fault,
    /// HTTP 429.
    Throttle,
}

impl StatusClass {
    pub const ALL: [StatusClass; 4] = [
        StatusClass::Ok,
        StatusClass::Error,
        StatusClass::Fault,
        StatusClass::Throttle,
    ];

    /// The rule of the X-Ray translator (and the Collector's `cause.go`): the HTTP status code
    /// decides; without a 4xx/5xx code, an ERROR span status is a fault.
    pub fn of(span: &SpanInfo) -> StatusClass {
        match span.http.status_code {
            429 => StatusClass::Throttle,
            400..=499 => StatusClass::Error,
            500..=599 => StatusClass::Fault,
            _ if span.is_error() => StatusClass::Fault,
            _ => StatusClass::Ok,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StatusClass::Ok => "ok",
            StatusClass::Error => "error",
            StatusClass::Fault => "fault",
            StatusClass::Throttle => "throttle",
        }
    }
}

/// [`method_code`] of a method outside [`KNOWN_METHODS`].
pub const OTHER_METHOD: u8 = KNOWN_METHODS.len() as u8 + 1;

/// A method as a small number: 0 when absent, 1… for the known methods, [`OTHER_METHOD`] for
/// any other (which the label shows as `_OTHER`).
#[inline]
pub fn method_code(method: &[u8]) -> u8 {
    // A match on the bytes compiles to a length switch and word compares (no memcmp calls).
    match method {
        b"" => 0,
        b"GET" => 1,
        b"HEAD" => 2,
        b"POST" => 3,
        b"PUT" => 4,
        b"DELETE" => 5,
        b"CONNECT" => 6,
        b"OPTIONS" => 7,
        b"TRACE" => 8,
        b"PATCH" => 9,
        _ => OTHER_METHOD,
    }
}

fn bytes<'a>(batch: &'a Batch, r: &std::ops::Range<u32>) -> &'a [u8] {
    batch
        .buf
        .get(r.start as usize..r.end as usize)
        .unwrap_or_default()
}

/// Appends the span's operation to `out`: `METHOD route` when `http.route` is set, else
/// `METHOD /templated/{id}/path` from `url.path` (or `http.target`), else the span name. The
/// bytes come from validated UTF-8 and are cut at character boundaries, so they stay UTF-8.
pub fn write_operation(batch: &Batch, span: &SpanInfo, out: &mut Vec<u8>) {
    let start = out.len();
    let http = &span.http;
    let method = bytes(batch, &http.method);
    let method: &[u8] = match method_code(method) {
        0 => b"",
        OTHER_METHOD => b"_OTHER",
        _ => method,
    };
    let route = bytes(batch, &http.route);
    let path = bytes(batch, &http.path);
    if !route.is_empty() || !path.is_empty() {
        if !method.is_empty() {
            out.extend_from_slice(method);
            out.push(b' ');
        }
        if route.is_empty() {
            template_path(path, out);
        } else {
            out.extend_from_slice(route);
        }
    } else {
        out.extend_from_slice(bytes(batch, &span.name));
    }
    truncate_utf8(out, start + MAX_OPERATION_BYTES);
}

/// Cuts `out` to at most `len` bytes without splitting a UTF-8 character.
pub fn truncate_utf8(out: &mut Vec<u8>, len: usize) {
    if out.len() <= len {
        return;
    }
    let mut cut = len;
    while cut > 0 && (out[cut] & 0b1100_0000) == 0b1000_0000 {
        cut -= 1;
    }
    out.truncate(cut);
}

/// Writes a URL path with its query and fragment removed and every identifier-like segment
/// replaced by `{id}`: `/users/42/orders/5f0c…` → `/users/{id}/orders/{id}`.
pub fn template_path(path: &[u8], out: &mut Vec<u8>) {
    let end = path
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(path.len());
    let path = &path[..end];
    if path.first() != Some(&b'/') {
        out.push(b'/');
    }
    for (n, segment) in path.split(|b| *b == b'/').enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        if is_identifier(segment) {
            out.extend_from_slice(ID_PLACEHOLDER);
        } else {
            out.extend_from_slice(segment);
        }
    }
}

/// Whether a path segment looks like an identifier rather than a route literal: numbers, UUIDs,
/// hex of 8+ digits, long opaque tokens (ULIDs, base64), digit-heavy values (dates) and
/// anything longer than 64 bytes.
pub fn is_identifier(seg: &[u8]) -> bool {
    if seg.is_empty() {
        return false;
    }
    if seg.len() > MAX_LITERAL_SEGMENT_BYTES {
        return true;
    }
    let digits = seg.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == seg.len() {
        return true;
    }
    let hex = seg.iter().all(u8::is_ascii_hexdigit);
    if hex && seg.len() >= 8 && digits > 0 {
        return true;
    }
    if is_uuid(seg) {
        return true;
    }
    let token = seg
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if token && seg.len() >= 16 && digits > 0 && digits < seg.len() {
        return true;
    }
    digits >= 4 && digits * 2 >= seg.len()
}

fn is_uuid(seg: &[u8]) -> bool {
    seg.len() == 36
        && seg.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SpanKind;

    #[test]
    fn method_codes_follow_the_known_methods() {
        for (i, m) in KNOWN_METHODS.iter().enumerate() {
            assert_eq!(method_code(m.as_bytes()), i as u8 + 1, "{m}");
        }
        for m in ["get", "FOO", "GETS", "PROPFIND"] {
            assert_eq!(method_code(m.as_bytes()), OTHER_METHOD, "{m}");
        }
        assert_eq!(method_code(b""), 0);
    }

    fn templated(path: &str) -> String {
        let mut out = Vec::new();
        template_path(path.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn identifiers_collapse_and_literals_stay() {
        for (path, want) in [
            ("/users/42/orders", "/users/{id}/orders"),
            (
                "/orders/123e4567-e89b-12d3-a456-426614174000",
                "/orders/{id}",
            ),
            ("/blobs/5f0c9a3b2e1d", "/blobs/{id}"),
            ("/o/01ARZ3NDEKTSV4RRFFQ69G5FAV/items", "/o/{id}/items"),
            ("/reports/2024-01-31", "/reports/{id}"),
            ("/api/v1/cart?session=abc#top", "/api/v1/cart"),
            ("/static/deadbeef/app.js", "/static/deadbeef/app.js"),
            ("/health", "/health"),
            ("/", "/"),
            ("cart/7", "/cart/{id}"),
            ("/a//b/", "/a//b/"),
        ] {
            assert_eq!(templated(path), want, "{path}");
        }
        let long = format!("/x/{}", "a".repeat(65));
        assert_eq!(templated(&long), "/x/{id}");
    }

    #[test]
    fn truncation_keeps_utf8() {
        let mut v = "é".repeat(200).into_bytes();
        truncate_utf8(&mut v, 255);
        assert_eq!(v.len(), 254);
        assert!(std::str::from_utf8(&v).is_ok());
    }

    #[test]
    fn kinds_and_classes() {
        assert_eq!(SpanKind::from_otlp(2), SpanKind::Server);
        assert_eq!(SpanKind::from_otlp(9), SpanKind::Unspecified);
        assert_eq!(SpanKind::from_otlp(-1), SpanKind::Unspecified);
    }
}

//! JSON output primitives for the translator: escaping, numbers, base64, UTF-8-safe truncation and rollback.

use crate::proto::{AnyValue, any_value::Value};

/// Bytes kept free for closing brackets when deciding whether an optional member still fits.
const CLOSE_RESERVE_BYTES: usize = 32;
/// Nesting depth past which attribute values are written as `null` (recursion guard).
const MAX_VALUE_DEPTH: usize = 32;

/// Writes one document into the caller's buffer and keeps the budget used for trimming.
///
/// In escaped mode the document is written as the contents of a JSON string (what a
/// PutTraceSegments body carries), so it goes into the request body in the one pass that
/// translates it: structural quotes come out as `\"`, string contents escaped twice.
pub(super) struct Writer<'o> {
    out: &'o mut Vec<u8>,
    escaped: bool,
    start: usize,
    limit: usize,
    /// Budget mode: every optional member is checked against `limit` and rolled back if it overflows.
    pub greedy_all: bool,
    str_cap: usize,
    pub strings_truncated: u32,
}

impl<'o> Writer<'o> {
    pub fn new(out: &'o mut Vec<u8>, limit: usize, greedy_all: bool, str_cap: usize) -> Self {
        let start = out.len();
        Writer {
            out,
            escaped: false,
            start,
            limit,
            greedy_all,
            str_cap,
            strings_truncated: 0,
        }
    }

    /// A writer of the document as the contents of a JSON string (no budget: see `write_document`).
    pub fn escaped(out: &'o mut Vec<u8>) -> Self {
        let mut w = Writer::new(out, usize::MAX, false, usize::MAX);
        w.escaped = true;
        w
    }

    /// Bytes written so far (in escaped mode, of the escaped text).
    pub fn len(&self) -> usize {
        self.out.len() - self.start
    }

    pub fn mark(&self) -> usize {
        self.out.len()
    }

    pub fn rollback(&mut self, mark: usize) {
        self.out.truncate(mark);
    }

    /// Whether what has been written so far leaves room to close the document.
    pub fn fits(&self) -> bool {
        self.len() + CLOSE_RESERVE_BYTES <= self.limit
    }

    /// JSON text that needs no escaping as JSON (literals, numbers, sanitised names).
    pub fn raw(&mut self, bytes: &[u8]) {
        if self.escaped {
            escape_text_into(self.out, bytes);
        } else {
            self.out.extend_from_slice(bytes);
        }
    }

    pub fn byte(&mut self, b: u8) {
        if self.escaped && (b == b'"' || b == b'\\') {
            self.out.push(b'\\');
        }
        self.out.push(b);
    }

    /// A structural quote.
    fn quote(&mut self) {
        if self.escaped {
            self.out.extend_from_slice(b"\\\"");
        } else {
            self.out.push(b'"');
        }
    }

    /// The contents of a JSON string: escaped once, or twice in escaped mode.
    pub fn escape(&mut self, s: &str) {
        if self.escaped {
            escape_twice_into(self.out, s);
        } else {
            escape_into(self.out, s);
        }
    }

    /// Any serde value, as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        if self.escaped {
            let text = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
            escape_text_into(self.out, &text);
        } else if serde_json::to_writer(&mut *self.out, v).is_err() {
            self.out.extend_from_slice(b"null");
        }
    }

    /// An X-Ray trace ID (`1-…-…`), quoted.
    pub fn trace_id(&mut self, trace_id: &[u8; 16]) {
        self.quote();
        push_trace_id(self.out, trace_id);
        self.quote();
    }

    /// Writes `,"key":` (no comma for the first member). `key` must need no escaping.
    pub fn key(&mut self, first: &mut bool, key: &str) {
        if !*first {
            self.out.push(b',');
        }
        *first = false;
        self.quote();
        self.out.extend_from_slice(key.as_bytes());
        self.quote();
        self.out.push(b':');
    }

    /// Like [`Writer::key`] for keys that come from the span (escaped, never truncated).
    pub fn key_escaped(&mut self, first: &mut bool, key: &str) {
        if !*first {
            self.out.push(b',');
        }
        *first = false;
        self.str(key);
        self.out.push(b':');
    }

    /// A whole string, escaped.
    pub fn str(&mut self, s: &str) {
        self.quote();
        self.escape(s);
        self.quote();
    }

    /// A string cut to the current cap (only set while trimming), counted when cut.
    pub fn str_capped(&mut self, s: &str) {
        self.str_max(s, self.str_cap);
    }

    /// A string cut to at most `max_chars` characters (and the current cap), counted when cut.
    pub fn str_max(&mut self, s: &str, max_chars: usize) {
        let (kept, cut) = truncate_chars(s, max_chars.min(self.str_cap));
        if cut {
            self.strings_truncated += 1;
        }
        self.str(kept);
    }

    /// One string made of several pieces, cut as a whole to the current cap.
    pub fn str_parts(&mut self, parts: &[&str]) {
        let mut left = self.str_cap;
        let mut cut = false;
        self.quote();
        for part in parts {
            let (kept, c) = truncate_chars(part, left);
            self.escape(kept);
            if c {
                cut = true;
                break;
            }
            left -= if kept.is_ascii() {
                kept.len()
            } else {
                kept.chars().count()
            };
        }
        self.quote();
        if cut {
            self.strings_truncated += 1;
        }
    }

    pub fn int(&mut self, v: i64) {
        self.raw(itoa::Buffer::new().format(v).as_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.raw(if v { b"true" } else { b"false" });
    }

    /// A double; JSON has no NaN or infinities, so those become the strings proto3 JSON uses.
    pub fn float(&mut self, v: f64) {
        if v.is_finite() {
            self.raw(ryu::Buffer::new().format_finite(v).as_bytes());
        } else if v.is_nan() {
            self.raw(b"\"NaN\"");
        } else if v > 0.0 {
            self.raw(b"\"Infinity\"");
        } else {
            self.raw(b"\"-Infinity\"");
        }
    }

    /// Epoch seconds with microsecond resolution (X-Ray devguide), printed exactly from the nanoseconds.
    pub fn time(&mut self, unix_nanos: u64) {
        let secs = unix_nanos / 1_000_000_000;
        let micros = (unix_nanos % 1_000_000_000) / 1_000;
        self.raw(itoa::Buffer::new().format(secs).as_bytes());
        let mut frac = *b".000000";
        let mut rest = micros;
        for slot in frac[1..].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        self.raw(&frac);
    }

    /// 16 lower-case hex digits of an 8-byte ID, quoted.
    pub fn hex_id(&mut self, id: &[u8]) {
        self.quote();
        push_hex(self.out, id);
        self.quote();
    }

    /// An attribute value as plain JSON (what the Collector's `AsRaw` marshals to).
    pub fn any_value(&mut self, v: &AnyValue) {
        self.value_at(v, 0);
    }

    fn value_at(&mut self, v: &AnyValue, depth: usize) {
        if depth > MAX_VALUE_DEPTH {
            self.raw(b"null");
            return;
        }
        match &v.value {
            Some(Value::StringValue(s)) => self.str_capped(s),
            Some(Value::BoolValue(b)) => self.bool(*b),
            Some(Value::IntValue(i)) => self.int(*i),
            Some(Value::DoubleValue(d)) => self.float(*d),
            Some(Value::BytesValue(b)) => {
                self.quote();
                push_base64(self.out, b);
                self.quote();
            }
            Some(Value::ArrayValue(a)) => {
                self.out.push(b'[');
                for (i, item) in a.values.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.value_at(item, depth + 1);
                }
                self.out.push(b']');
            }
            Some(Value::KvlistValue(kv)) => {
                let mut first = true;
                self.out.push(b'{');
                for item in &kv.values {
                    self.key_escaped(&mut first, &item.key);
                    match &item.value {
                        Some(v) => self.value_at(v, depth + 1),
                        None => self.raw(b"null"),
                    }
                }
                self.out.push(b'}');
            }
            Some(Value::StringValueStrindex(_)) | None => self.raw(b"null"),
        }
    }
}

/// Escapes `s` for a JSON string body (RFC 8259 section 7): quote, backslash and control characters.
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    escape::<false>(out, s);
}

/// Escapes `s` as [`escape_into`] does, then escapes that result again: the contents of a JSON
/// string inside a document that is itself a JSON string.
pub(crate) fn escape_twice_into(out: &mut Vec<u8>, s: &str) {
    escape::<true>(out, s);
}

/// Bytes that need an escape: quote, backslash and the control characters.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// One escape loop for both depths (a constant, so each copy is as fast as a loop of its own):
/// escaped twice, every backslash of the first escape is itself escaped. Bytes are written by
/// index into room made up front (each grows to at most four): 1.7x faster than copying the
/// runs between quotes, which in JSON are a few bytes long. A control character (rare: JSON
/// text holds them only as whitespace) sends the rest to [`escape_general`].
fn escape<const TWICE: bool>(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Most values (names, URLs, IDs) need no escape: a check the compiler vectorises, then one
    // copy (3x faster on such strings than the loop below).
    let dirty = bytes
        .iter()
        .fold(false, |a, &b| a | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !dirty {
        out.extend_from_slice(bytes);
        return;
    }
    let grow = if TWICE { 4 } else { 2 };
    let base = out.len();
    out.resize(base + bytes.len() * grow, 0);
    let buf = &mut out[base..];
    let mut j = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[b as usize] {
            buf[j] = b;
            j += 1;
        } else if b < 0x20 {
            out.truncate(base + j);
            escape_general::<TWICE>(out, &bytes[i..]);
            return;
        } else if TWICE {
            // A quote or backslash escaped twice: its own backslash also escaped.
            buf[j..j + 4].copy_from_slice(&[b'\\', b'\\', b'\\', b]);
            j += 4;
        } else {
            buf[j] = b'\\';
            buf[j + 1] = b;
            j += 2;
        }
    }
    out.truncate(base + j);
}

/// [`escape`] of any text, control characters included (`\n`, `\u001f`, ...).
fn escape_general<const TWICE: bool>(out: &mut Vec<u8>, bytes: &[u8]) {
    let slash: &[u8] = if TWICE { b"\\\\" } else { b"\\" };
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        out.extend_from_slice(slash);
        match b {
            b'"' | b'\\' if TWICE => {
                out.extend_from_slice(b"\\");
                out.push(b);
            }
            b'"' | b'\\' => out.push(b),
            b'\n' => out.push(b'n'),
            b'\r' => out.push(b'r'),
            b'\t' => out.push(b't'),
            0x08 => out.push(b'b'),
            0x0c => out.push(b'f'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
    }
    out.extend_from_slice(&bytes[run..]);
}

/// Escapes JSON text (structural quotes and the backslashes of its escapes) to sit inside a
/// JSON string.
fn escape_text_into(out: &mut Vec<u8>, text: &[u8]) {
    let mut run = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'"' || b == b'\\' {
            out.extend_from_slice(&text[run..i]);
            out.push(b'\\');
            run = i;
        }
    }
    out.extend_from_slice(&text[run..]);
}

/// The longest prefix of `s` with at most `max_chars` characters, cut on a character boundary.
pub(super) fn truncate_chars(s: &str, max_chars: usize) -> (&str, bool) {
    if s.len() <= max_chars {
        return (s, false);
    }
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => (&s[..at], true),
        None => (s, false),
    }
}

pub(super) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.push(ALPHABET[(n >> 18) as usize & 63]);
        out.push(ALPHABET[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63]
        } else {
            b'='
        });
    }
}

/// `1-` + 8 hex (the time part) + `-` + 24 hex, as X-Ray writes trace IDs.
pub(super) fn push_trace_id(out: &mut Vec<u8>, trace_id: &[u8; 16]) {
    out.extend_from_slice(b"1-");
    push_hex(out, &trace_id[..4]);
    out.push(b'-');
    push_hex(out, &trace_id[4..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        escape_into(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"b\\\\c\\nd\\u0001é");
    }

    /// Both depths, with the first control character at every position (where the fast loop
    /// hands over), match serde_json's escaping applied once or twice.
    #[test]
    fn escapes_match_serde_json_at_both_depths() {
        let quoted = |s: &str| serde_json::to_string(s).unwrap();
        let inner = |s: &str| quoted(s)[1..quoted(s).len() - 1].to_owned();
        let base = "é\"x\\y\u{7f}日\t\"\\";
        for cut in 0..=base.chars().count() {
            let (head, tail): (String, String) = (
                base.chars().take(cut).collect(),
                base.chars().skip(cut).collect(),
            );
            for s in [
                format!("{head}{tail}"),
                format!("{head}\n\u{1}{tail}"),
                head.clone(),
            ] {
                let mut once = b"prefix".to_vec();
                escape_into(&mut once, &s);
                assert_eq!(once, format!("prefix{}", inner(&s)).into_bytes(), "{s:?}");
                let mut twice = Vec::new();
                escape_twice_into(&mut twice, &s);
                assert_eq!(twice, inner(&inner(&s)).into_bytes(), "{s:?}");
            }
        }
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), ("hé", true));
        assert_eq!(truncate_chars("日本語", 5), ("日本語", false));
        assert_eq!(truncate_chars("日本語", 1), ("日", true));
    }

    #[test]
    fn times_are_exact_microseconds() {
        let mut out = Vec::new();
        Writer::new(&mut out, usize::MAX, false, usize::MAX).time(1_700_000_000_012_345_999);
        assert_eq!(out, b"1700000000.012345");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        for (input, want) in [
            (&b"f"[..], "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"\xff\xfe", "//4="),
        ] {
            let mut out = Vec::new();
            push_base64(&mut out, input);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}

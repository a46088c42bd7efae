//! Checks a segment document against the X-Ray segment-document rules and reports every violation.
//
// Rules: X-Ray developer guide "Segment documents" (reference/aws.md §1.2). moto accepts almost
// anything, so this is how tests know a document would pass X-Ray.

use std::fmt;

use serde_json::{Map, Value};

use super::translate::{
    MAX_ANNOTATION_KEY_CHARS, MAX_ANNOTATION_VALUE_CHARS, MAX_ANNOTATIONS, MAX_DOCUMENT_BYTES,
    MAX_NAME_CHARS,
};

/// The `origin` values X-Ray knows (devguide, plus those the Collector's exporter sends).
const ORIGINS: [&str; 7] = [
    "AWS::EC2::Instance",
    "AWS::ECS::Container",
    "AWS::ECS::EC2",
    "AWS::ECS::Fargate",
    "AWS::ElasticBeanstalk::Environment",
    "AWS::EKS::Container",
    "AWS::AppRunner::Service",
];

/// One broken rule, with the JSON path where it is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every rule `doc` (one segment or independent-subsegment document) breaks; empty when valid.
pub fn validate_document(doc: &[u8]) -> Vec<Violation> {
    let mut v = Check::default();
    if doc.len() > MAX_DOCUMENT_BYTES {
        v.fail(
            "$",
            format!(
                "document is {} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit",
                doc.len()
            ),
        );
    }
    match serde_json::from_slice::<Value>(doc) {
        Ok(Value::Object(seg)) => v.segment("$", &seg, true),
        Ok(_) => v.fail("$", "document is not a JSON object"),
        Err(e) => v.fail("$", format!("not JSON: {e}")),
    }
    v.found
}

#[derive(Default)]
struct Check {
    found: Vec<Violation>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `1-` + 8 hex + `-` + 24 hex.
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 35
        && s.starts_with("1-")
        && s.as_bytes()[10] == b'-'
        && is_hex(&s[2..10], 8)
        && is_hex(&s[11..], 24)
}

/// Devguide: Unicode letters, numbers and whitespace, and `_ . : / % & # = + \ - @`.
fn name_char(c: char) -> bool {
    c.is_alphanumeric()
        || c.is_whitespace()
        || matches!(
            c,
            '_' | '.' | ':' | '/' | '%' | '&' | '#' | '=' | '+' | '\\' | '-' | '@'
        )
}

/// Devguide: letters, digits and `_`; X-Ray also takes `.` since 2024 (contrib PR #31386).
fn annotation_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

impl Check {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.found.push(Violation {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// A segment or subsegment object; `top` is false for embedded subsegments, which may omit `trace_id`.
    fn segment(&mut self, path: &str, s: &Map<String, Value>, top: bool) {
        match s.get("name") {
            Some(Value::String(name)) => {
                let chars = name.chars().count();
                if chars == 0 || chars > MAX_NAME_CHARS {
                    self.fail(
                        &format!("{path}.name"),
                        format!("must be 1 to {MAX_NAME_CHARS} characters, is {chars}"),
                    );
                }
                if let Some(bad) = name.chars().find(|c| !name_char(*c)) {
                    self.fail(
                        &format!("{path}.name"),
                        format!("character {bad:?} is not allowed"),
                    );
                }
            }
            Some(_) => self.fail(&format!("{path}.name"), "must be a string"),
            None => self.fail(path, "name is required"),
        }
        self.hex_field(path, s, "id", true);
        match s.get("trace_id") {
            Some(Value::String(t)) if is_trace_id(t) => {}
            Some(_) => self.fail(&format!("{path}.trace_id"), "must be 1-<8 hex>-<24 hex>"),
            None if top => self.fail(path, "trace_id is required"),
            None => {}
        }
        let start = match s.get("start_time") {
            Some(Value::Number(n)) => n.as_f64().filter(|t| *t > 0.0),
            _ => None,
        };
        if start.is_none() {
            self.fail(
                &format!("{path}.start_time"),
                "required, a positive number of epoch seconds",
            );
        }
        let in_progress = match s.get("in_progress") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.fail(&format!("{path}.in_progress"), "must be a boolean");
                false
            }
        };
        match (s.get("end_time"), in_progress) {
            (Some(Value::Number(end)), false) => {
                if let (Some(end), Some(start)) = (end.as_f64(), start)
                    && end < start
                {
                    self.fail(&format!("{path}.end_time"), "is before start_time");
                }
            }
            (Some(Value::Number(_)), true) => self.fail(path, "has both end_time and in_progress"),
            (Some(_), _) => self.fail(&format!("{path}.end_time"), "must be a number"),
            (None, false) => self.fail(path, "needs end_time or in_progress: true"),
            (None, true) => {}
        }
        self.hex_field(path, s, "parent_id", false);
        match s.get("type") {
            None => {}
            Some(Value::String(t)) if t == "subsegment" && top && !s.contains_key("parent_id") => {
                self.fail(path, "an independent subsegment needs parent_id");
            }
            Some(Value::String(t)) if t == "subsegment" => {}
            Some(_) => self.fail(&format!("{path}.type"), "must be \"subsegment\""),
        }
        match s.get("namespace") {
            None => {}
            Some(Value::String(n)) if n == "aws" || n == "remote" => {}
            Some(_) => self.fail(
                &format!("{path}.namespace"),
                "must be \"aws\" or \"remote\"",
            ),
        }
        for flag in ["error", "fault", "throttle"] {
            if s.get(flag).is_some_and(|f| !f.is_boolean()) {
                self.fail(&format!("{path}.{flag}"), "must be a boolean");
            }
        }
        match s.get("origin") {
            None => {}
            Some(Value::String(o)) if ORIGINS.contains(&o.as_str()) => {}
            Some(_) => self.fail(&format!("{path}.origin"), "is not a known origin"),
        }
        self.strings(path, s, &["user"]);
        if let Some(service) = self.object(path, s, "service") {
            self.strings(
                &format!("{path}.service"),
                service,
                &["version", "compiler", "compiler_version"],
            );
        }
        if let Some(http) = self.object(path, s, "http") {
            self.http(&format!("{path}.http"), http);
        }
        if let Some(aws) = self.object(path, s, "aws") {
            self.aws(&format!("{path}.aws"), aws);
        }
        if let Some(sql) = self.object(path, s, "sql") {
            let p = format!("{path}.sql");
            self.strings(
                &p,
                sql,
                &[
                    "connection_string",
                    "url",
                    "sanitized_query",
                    "database_type",
                    "database_version",
                    "driver_version",
                    "user",
                ],
            );
            match sql.get("preparation") {
                None => {}
                Some(Value::String(x)) if x == "call" || x == "statement" => {}
                Some(_) => self.fail(
                    &format!("{p}.preparation"),
                    "must be \"call\" or \"statement\"",
                ),
            }
        }
        match s.get("cause") {
            None => {}
            Some(Value::String(id)) if is_hex(id, 16) => {}
            Some(Value::Object(cause)) => self.cause(&format!("{path}.cause"), cause),
            Some(_) => self.fail(
                &format!("{path}.cause"),
                "must be an exception ID or an object",
            ),
        }
        if let Some(annotations) = self.object(path, s, "annotations") {
            self.annotations(&format!("{path}.annotations"), annotations);
        }
        if let Some(metadata) = self.object(path, s, "metadata") {
            for (ns, value) in metadata {
                let p = format!("{path}.metadata.{ns}");
                if ns.starts_with("AWS.") {
                    self.fail(&p, "namespaces starting with AWS. are reserved");
                }
                if !value.is_object() {
                    self.fail(&p, "a metadata namespace must be an object");
                }
            }
        }
        match s.get("links") {
            None => {}
            Some(Value::Array(links)) => {
                for (i, link) in links.iter().enumerate() {
                    let p = format!("{path}.links[{i}]");
                    let Some(link) = link.as_object() else {
                        self.fail(&p, "must be an object");
                        continue;
                    };
                    if !link
                        .get("trace_id")
                        .and_then(Value::as_str)
                        .is_some_and(is_trace_id)
                    {
                        self.fail(&format!("{p}.trace_id"), "must be 1-<8 hex>-<24 hex>");
                    }
                    self.hex_field(&p, link, "id", true);
                    self.object(&p, link, "attributes");
                }
            }
            Some(_) => self.fail(&format!("{path}.links"), "must be an array"),
        }
        match s.get("precursor_ids") {
            None => {}
            Some(Value::Array(ids))
                if ids
                    .iter()
                    .all(|i| i.as_str().is_some_and(|i| is_hex(i, 16))) => {}
            Some(_) => self.fail(
                &format!("{path}.precursor_ids"),
                "must be an array of 16-hex-digit IDs",
            ),
        }
        match s.get("subsegments") {
            None => {}
            Some(Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    match sub.as_object() {
                        Some(sub) => self.segment(&format!("{path}.subsegments[{i}]"), sub, false),
                        None => self.fail(&format!("{path}.subsegments[{i}]"), "must be an object"),
                    }
                }
            }
            Some(_) => self.fail(&format!("{path}.subsegments"), "must be an array"),
        }
    }

    /// An ID field: 16 hex digits.
    fn hex_field(&mut self, path: &str, s: &Map<String, Value>, key: &str, required: bool) {
        match s.get(key) {
            Some(Value::String(id)) if is_hex(id, 16) => {}
            Some(_) => self.fail(&format!("{path}.{key}"), "must be 16 hex digits"),
            None if required => self.fail(path, format!("{key} is required")),
            None => {}
        }
    }

    /// An optional member that must be an object, returned when it is.
    fn object<'v>(
        &mut self,
        path: &str,
        s: &'v Map<String, Value>,
        key: &str,
    ) -> Option<&'v Map<String, Value>> {
        match s.get(key) {
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.fail(&format!("{path}.{key}"), "must be an object");
                None
            }
            None => None,
        }
    }

    /// Optional members that must be strings.
    fn strings(&mut self, path: &str, s: &Map<String, Value>, keys: &[&str]) {
        for key in keys {
            if s.get(*key).is_some_and(|v| !v.is_string()) {
                self.fail(&format!("{path}.{key}"), "must be a string");
            }
        }
    }

    /// `http.request` strings and flags, `http.response` integers.
    fn http(&mut self, path: &str, http: &Map<String, Value>) {
        if let Some(req) = self.object(path, http, "request") {
            let p = format!("{path}.request");
            self.strings(&p, req, &["method", "url", "user_agent", "client_ip"]);
            for flag in ["x_forwarded_for", "traced"] {
                if req.get(flag).is_some_and(|f| !f.is_boolean()) {
                    self.fail(&format!("{p}.{flag}"), "must be a boolean");
                }
            }
        }
        if let Some(resp) = self.object(path, http, "response") {
            let p = format!("{path}.response");
            if resp.get("status").is_some_and(|s| !s.is_i64()) {
                self.fail(&format!("{p}.status"), "must be an integer");
            }
            if resp.get("content_length").is_some_and(|s| !s.is_u64()) {
                self.fail(
                    &format!("{p}.content_length"),
                    "must be a non-negative integer",
                );
            }
        }
    }

    /// `aws`: the call's string fields, table names, the per-platform objects and log groups.
    fn aws(&mut self, path: &str, aws: &Map<String, Value>) {
        self.strings(
            path,
            aws,
            &[
                "account_id",
                "operation",
                "region",
                "request_id",
                "queue_url",
                "table_name",
            ],
        );
        if let Some(names) = aws.get("table_names")
            && !names
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
        {
            self.fail(
                &format!("{path}.table_names"),
                "must be an array of strings",
            );
        }
        for key in ["ec2", "ecs", "eks", "elastic_beanstalk", "xray"] {
            self.object(path, aws, key);
        }
        if let Some(logs) = aws.get("cloudwatch_logs") {
            let ok = logs.as_array().is_some_and(|a| {
                a.iter()
                    .all(|g| g.get("log_group").is_some_and(Value::is_string))
            });
            if !ok {
                self.fail(
                    &format!("{path}.cloudwatch_logs"),
                    "must be an array of {log_group, arn}",
                );
            }
        }
    }

    /// `cause` as an object: exceptions with unique 16-hex IDs, optional chained `cause` IDs and frames.
    fn cause(&mut self, path: &str, cause: &Map<String, Value>) {
        self.strings(path, cause, &["working_directory"]);
        let Some(list) = cause.get("exceptions") else {
            return;
        };
        let Some(list) = list.as_array() else {
            self.fail(&format!("{path}.exceptions"), "must be an array");
            return;
        };
        let mut ids = Vec::new();
        for (i, e) in list.iter().enumerate() {
            let p = format!("{path}.exceptions[{i}]");
            let Some(e) = e.as_object() else {
                self.fail(&p, "must be an object");
                continue;
            };
            self.hex_field(&p, e, "id", true);
            if let Some(id) = e.get("id").and_then(Value::as_str) {
                if ids.contains(&id) {
                    self.fail(&format!("{p}.id"), "repeats another exception's ID");
                }
                ids.push(id);
            }
            self.hex_field(&p, e, "cause", false);
            self.strings(&p, e, &["message", "type"]);
            if e.get("remote").is_some_and(|r| !r.is_boolean()) {
                self.fail(&format!("{p}.remote"), "must be a boolean");
            }
            for count in ["truncated", "skipped"] {
                if e.get(count).is_some_and(|n| !n.is_u64()) {
                    self.fail(&format!("{p}.{count}"), "must be a non-negative integer");
                }
            }
            match e.get("stack") {
                None => {}
                Some(Value::Array(frames)) => {
                    for (j, frame) in frames.iter().enumerate() {
                        let fp = format!("{p}.stack[{j}]");
                        let Some(frame) = frame.as_object() else {
                            self.fail(&fp, "must be an object");
                            continue;
                        };
                        self.strings(&fp, frame, &["path", "label"]);
                        if frame.get("line").is_some_and(|l| !l.is_i64()) {
                            self.fail(&format!("{fp}.line"), "must be an integer");
                        }
                    }
                }
                Some(_) => self.fail(&format!("{p}.stack"), "must be an array"),
            }
        }
    }

    /// `annotations`: at most 50, keys of letters, digits, `_` and `.`, scalar values.
    fn annotations(&mut self, path: &str, annotations: &Map<String, Value>) {
        if annotations.len() > MAX_ANNOTATIONS {
            self.fail(
                path,
                format!(
                    "{} annotations, more than {MAX_ANNOTATIONS}",
                    annotations.len()
                ),
            );
        }
        for (key, value) in annotations {
            let p = format!("{path}.{key}");
            let chars = key.chars().count();
            if chars == 0 || chars > MAX_ANNOTATION_KEY_CHARS {
                self.fail(
                    &p,
                    format!("key must be 1 to {MAX_ANNOTATION_KEY_CHARS} characters"),
                );
            }
            if let Some(bad) = key.chars().find(|c| !annotation_key_char(*c)) {
                self.fail(&p, format!("key character {bad:?} is not allowed"));
            }
            match value {
                Value::String(s) if s.chars().count() > MAX_ANNOTATION_VALUE_CHARS => {
                    self.fail(
                        &p,
                        format!("value longer than {MAX_ANNOTATION_VALUE_CHARS} characters"),
                    );
                }
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
                _ => self.fail(&p, "value must be a string, number or boolean"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(doc: &str) -> Vec<String> {
        validate_document(doc.as_bytes())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_minimal_segment_is_valid() {
        let doc = r#"{"name":"svc","id":"0123456789abcdef","trace_id":"1-5759e988-bd862e3fe1be46a994272793","start_time":1.5,"end_time":2}"#;
        assert_eq!(messages(doc), Vec::<String>::new());
    }

    #[test]
    fn reports_every_violation() {
        let doc = r#"{"name":"a*b","id":"xyz","trace_id":"5759e988","start_time":3,"end_time":2,
            "type":"subsegment","namespace":"local","origin":"Mars",
            "annotations":{"a-b":{"x":1},"ok":"v"},"metadata":{"AWS.x":{}},
            "cause":{"exceptions":[{"message":"m"}]},"http":{"response":{"status":"200"}}}"#;
        let found = messages(doc);
        for want in [
            "$.name: character '*' is not allowed",
            "$.id: must be 16 hex digits",
            "$.trace_id: must be 1-<8 hex>-<24 hex>",
            "$.end_time: is before start_time",
            "$: an independent subsegment needs parent_id",
            "$.namespace: must be \"aws\" or \"remote\"",
            "$.origin: is not a known origin",
            "$.annotations.a-b: key character '-' is not allowed",
            "$.annotations.a-b: value must be a string, number or boolean",
            "$.metadata.AWS.x: namespaces starting with AWS. are reserved",
            "$.cause.exceptions[0]: id is required",
            "$.http.response.status: must be an integer",
        ] {
            assert!(
                found.contains(&want.to_owned()),
                "missing {want:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 12, "{found:#?}");
    }

    #[test]
    fn oversized_documents_fail() {
        let big = format!(
            r#"{{"name":"s","id":"0123456789abcdef","trace_id":"1-5759e988-bd862e3fe1be46a994272793","start_time":1,"in_progress":true,"metadata":{{"default":{{"x":"{}"}}}}}}"#,
            "x".repeat(MAX_DOCUMENT_BYTES)
        );
        assert_eq!(messages(&big).len(), 1);
    }
}

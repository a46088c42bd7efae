//! Writing a planned document as JSON, and trimming it to the size limit (metadata first).

use std::ops::Range;

use crate::proto::{AnyValue, any_value::Value};

use super::attrs::{Res, str_of};
use super::blocks::{AwsSpan, Http, Port, Sql, Tables, Url};
use super::json::{self, Writer};
use super::plan::{
    Cause, Disp, Doc, EMPTY, Name, Role, annotation_key_char, derived_id, name_char_ok,
};
use super::{
    DEFAULT_NAME, MAX_ANNOTATION_VALUE_CHARS, MAX_NAME_CHARS, METADATA_PREFIX, RESOURCE_PREFIX,
    TRIMMED_STRING_CHARS, TranslateError, Translated, Trim,
};

/// Renders one document as the contents of a JSON string, straight into a request body. A
/// document whose escaped text is over the limit (its JSON may still fit) is written plain into
/// `scratch` by [`write_document`], trimmed there if it has to be, and escaped from there.
pub(super) fn write_document_escaped(
    doc: &Doc<'_, '_>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    report: &mut Translated,
) -> Result<Range<usize>, TranslateError> {
    let begin = out.len();
    render(doc, &mut Writer::escaped(out), &mut Trim::default());
    // The escaped text is never shorter than the document, so this is the common case.
    if out.len() - begin <= doc.c.opts.max_document_bytes {
        return Ok(begin..out.len());
    }
    out.truncate(begin);
    scratch.clear();
    let plain = write_document(doc, scratch, report)?;
    json::escape_into(
        out,
        std::str::from_utf8(&scratch[plain]).unwrap_or_default(),
    );
    Ok(begin..out.len())
}

/// Renders one document, trimming it to `max_document_bytes` if it has to.
pub(super) fn write_document(
    doc: &Doc<'_, '_>,
    out: &mut Vec<u8>,
    report: &mut Translated,
) -> Result<Range<usize>, TranslateError> {
    let begin = out.len();
    let limit = doc.c.opts.max_document_bytes;
    let mut trim = Trim::default();
    render(
        doc,
        &mut Writer::new(out, usize::MAX, false, usize::MAX),
        &mut trim,
    );
    let full = out.len() - begin;
    if full <= limit {
        return Ok(begin..out.len());
    }
    // Pass 2: everything but the metadata entries that do not fit.
    out.truncate(begin);
    trim = Trim::default();
    let mut w = Writer::new(out, limit, false, usize::MAX);
    render(doc, &mut w, &mut trim);
    if w.len() > limit {
        // Pass 3: also cap strings and keep, in priority order, whatever optional part fits.
        out.truncate(begin);
        trim = Trim::default();
        let mut w = Writer::new(out, limit, true, TRIMMED_STRING_CHARS);
        render(doc, &mut w, &mut trim);
        trim.strings_truncated = w.strings_truncated;
        let needed = w.len();
        if needed > limit {
            return Err(TranslateError::TooLarge {
                needed_bytes: needed,
                limit_bytes: limit,
            });
        }
    }
    trim.original_bytes = full;
    report.trim.get_or_insert_with(Trim::default).add(&trim);
    Ok(begin..out.len())
}

/// Writes `f` as one optional member; in budget mode it is rolled back (and counted) if it overflows.
/// Budget mode only checks members written through here; the core fields are never dropped.
pub(super) fn optional(
    w: &mut Writer<'_>,
    first: &mut bool,
    check: bool,
    dropped: &mut u32,
    f: impl FnOnce(&mut Writer<'_>, &mut bool),
) -> bool {
    let mark = w.mark();
    let was_first = *first;
    f(w, first);
    if check && !w.fits() {
        w.rollback(mark);
        *first = was_first;
        *dropped += 1;
        return false;
    }
    true
}

/// Writes the whole document once. Member order is the trimming priority: the core, then
/// `namespace`/`origin`/`user`/`service`, the `http`/`aws`/`sql` blocks, annotations, exceptions,
/// links, and metadata last.
pub(super) fn render(d: &Doc<'_, '_>, w: &mut Writer<'_>, trim: &mut Trim) {
    let c = d.c;
    let budget = w.greedy_all;
    let mut first = true;
    w.byte(b'{');
    w.key(&mut first, "name");
    write_name(w, d.name);
    w.key(&mut first, "id");
    w.hex_id(&d.id);
    w.key(&mut first, "trace_id");
    w.trace_id(&c.ids.trace);
    w.key(&mut first, "start_time");
    w.time(c.span.start_time_unix_nano);
    if c.in_progress {
        w.key(&mut first, "in_progress");
        w.bool(true);
    } else {
        w.key(&mut first, "end_time");
        // Deviation: an end before the start is clamped (X-Ray rejects it).
        w.time(c.span.end_time_unix_nano.max(c.span.start_time_unix_nano));
    }
    if let Some(parent) = &d.parent {
        w.key(&mut first, "parent_id");
        w.hex_id(parent);
    }
    if d.subsegment {
        w.key(&mut first, "type");
        w.str("subsegment");
    }
    for (key, value) in [
        ("error", c.error),
        ("fault", c.fault),
        ("throttle", c.throttle),
    ] {
        w.key(&mut first, key);
        w.bool(value);
    }
    let mut blocks = 0;
    if let Some(ns) = d.namespace {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "namespace");
            w.str(ns);
        });
    }
    if let Some(origin) = c.res.origin() {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "origin");
            w.str(origin);
        });
    }
    if let Some(user) = c.user.filter(|u| !u.is_empty()) {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "user");
            w.str_capped(user);
        });
    }
    // Collector service.go: service.version, else the container image tag.
    if let Some(version) = c.res.version.or(c.res.image_tag).filter(|v| !v.is_empty()) {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "service");
            w.raw(b"{\"version\":");
            w.str_capped(version);
            w.byte(b'}');
        });
    }
    if let Some(http) = c.http.as_ref().filter(|_| d.role != Role::LocalRootService) {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            write_http(w, f, http)
        });
    }
    if let Some(aws) = &c.aws {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            write_aws(w, f, d, aws)
        });
    }
    if let Some(sql) = &c.sql {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            write_sql(w, f, sql)
        });
    }
    trim.blocks_dropped = blocks;
    // Budget order: annotations (indexed, small) before exceptions, links and metadata.
    write_annotations(w, &mut first, d, trim);
    write_cause(w, &mut first, d, trim);
    if d.links {
        write_links(w, &mut first, d, trim);
    }
    write_metadata(w, &mut first, d, trim);
    w.byte(b'}');
}

/// The name, sanitised (Deviation: attribute-derived names too) and cut to 200 characters.
pub(super) fn write_name(w: &mut Writer<'_>, name: Name<'_>) {
    let mut buf = [0u8; 4];
    let mut kept = 0;
    w.byte(b'"');
    let chars = name.main.chars().chain(
        name.host
            .into_iter()
            .flat_map(|h| "@".chars().chain(h.chars())),
    );
    for ch in chars.filter(|c| name_char_ok(*c)) {
        if kept == MAX_NAME_CHARS {
            break;
        }
        let s = ch.encode_utf8(&mut buf);
        w.escape(s);
        kept += 1;
    }
    if kept == 0 {
        w.raw(DEFAULT_NAME.as_bytes());
    }
    w.byte(b'"');
}

/// The `http` block: `request` (method, URL, user agent, client IP, `x_forwarded_for`) and
/// `response` (status, content length); empty halves are left out.
pub(super) fn write_http(w: &mut Writer<'_>, first: &mut bool, h: &Http<'_>) {
    w.key(first, "http");
    w.byte(b'{');
    let mut f = true;
    let has_request =
        h.method.is_some() || h.client_ip.is_some() || h.user_agent.is_some() || h.url.is_some();
    if has_request {
        w.key(&mut f, "request");
        w.byte(b'{');
        let mut r = true;
        if let Some(m) = h.method {
            w.key(&mut r, "method");
            w.str_capped(m);
        }
        if let Some(url) = &h.url {
            w.key(&mut r, "url");
            write_url(w, url);
        }
        if let Some(ua) = h.user_agent {
            w.key(&mut r, "user_agent");
            w.str_capped(ua);
        }
        if let Some(ip) = h.client_ip {
            w.key(&mut r, "client_ip");
            w.str_capped(ip);
        }
        if h.x_forwarded_for {
            w.key(&mut r, "x_forwarded_for");
            w.bool(true);
        }
        w.byte(b'}');
    }
    // Deviation: content_length is left out when unknown (the Collector writes 0).
    if h.status.is_some() || h.content_length != 0 {
        w.key(&mut f, "response");
        w.byte(b'{');
        let mut r = true;
        if let Some(s) = h.status {
            w.key(&mut r, "status");
            w.int(s);
        }
        if h.content_length != 0 {
            w.key(&mut r, "content_length");
            w.int(h.content_length);
        }
        w.byte(b'}');
    }
    w.byte(b'}');
}

/// `http.url`/`url.full` as sent, or `scheme://host[:port]path[?query]` with default ports elided.
pub(super) fn write_url(w: &mut Writer<'_>, u: &Url<'_>) {
    if let Some(full) = u.full {
        w.str_capped(full);
        return;
    }
    let mut digits = itoa::Buffer::new();
    let port = match u.port {
        Some(Port::Text(t)) => t,
        Some(Port::Number(n)) => digits.format(n),
        None => "",
    };
    let default_port =
        (u.scheme == "http" && port == "80") || (u.scheme == "https" && port == "443");
    let (colon, port) = if port.is_empty() || default_port {
        ("", "")
    } else {
        (":", port)
    };
    let (mark, query) = match u.query {
        Some(q) if q.starts_with('?') => ("", q),
        Some(q) => ("?", q),
        None => ("", ""),
    };
    w.str_parts(&[u.scheme, "://", u.host, colon, port, u.path, mark, query]);
}

/// The `aws` block: the call's fields from the span, then what the resource says about where
/// the service runs (`elastic_beanstalk`, `cloudwatch_logs`, `ecs`, `ec2`, `eks`) and the `xray` SDK entry.
pub(super) fn write_aws(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, a: &AwsSpan<'_>) {
    let r = d.c.res;
    // Collector: the LOCAL_ROOT service segment loses the call's fields, account included.
    let call_fields = d.role != Role::LocalRootService;
    w.key(first, "aws");
    w.byte(b'{');
    let mut f = true;
    fn text(w: &mut Writer<'_>, f: &mut bool, key: &str, v: Option<&str>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            w.key(f, key);
            w.str_capped(v);
        }
    }
    if call_fields {
        text(w, &mut f, "account_id", a.account.or(r.account));
        text(w, &mut f, "operation", a.operation);
        text(w, &mut f, "region", a.region);
        text(w, &mut f, "request_id", a.request_id);
        text(w, &mut f, "queue_url", a.queue_url);
        match a.tables {
            Tables::One(t) => text(w, &mut f, "table_name", Some(t)),
            Tables::Many(list) => {
                w.key(&mut f, "table_names");
                w.byte(b'[');
                for (i, t) in list.iter().enumerate() {
                    if i > 0 {
                        w.byte(b',');
                    }
                    w.str_capped(str_of(t).unwrap_or(""));
                }
                w.byte(b']');
            }
            Tables::None => {}
        }
    }
    let platform = r.platform.unwrap_or("");
    if platform == "aws_elastic_beanstalk" && r.instance_id.is_some_and(|i| !i.is_empty()) {
        w.key(&mut f, "elastic_beanstalk");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "environment_name", r.namespace);
        text(w, &mut g, "version_label", r.version);
        w.key(&mut g, "deployment_id");
        w.int(r.instance_id.and_then(|i| i.parse().ok()).unwrap_or(0));
        w.byte(b'}');
    }
    write_log_groups(w, &mut f, r, &d.c.opts.log_group_names);
    if platform == "aws_ecs" {
        w.key(&mut f, "ecs");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "container", r.container);
        text(w, &mut g, "container_id", r.container_id);
        text(w, &mut g, "task_arn", r.task_arn);
        text(w, &mut g, "task_family", r.task_family);
        text(w, &mut g, "cluster_arn", r.cluster_arn);
        text(w, &mut g, "container_arn", r.container_arn);
        text(w, &mut g, "availability_zone", r.zone);
        text(w, &mut g, "launch_type", r.launch_type);
        w.byte(b'}');
    }
    if platform == "aws_ec2" || r.host_id.is_some_and(|h| !h.is_empty()) {
        w.key(&mut f, "ec2");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "instance_id", r.host_id);
        text(w, &mut g, "availability_zone", r.zone);
        text(w, &mut g, "instance_size", r.host_type);
        text(w, &mut g, "ami_id", r.ami_id);
        w.byte(b'}');
    }
    if platform == "aws_eks" || r.cluster_name.is_some_and(|c| !c.is_empty()) {
        w.key(&mut f, "eks");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "cluster_name", r.cluster_name);
        text(w, &mut g, "pod", r.pod);
        text(w, &mut g, "container_id", r.container_id);
        w.byte(b'}');
    }
    w.key(&mut f, "xray");
    w.byte(b'{');
    let mut g = true;
    match (
        r.sdk_name.filter(|s| !s.is_empty()),
        r.sdk_language.filter(|s| !s.is_empty()),
    ) {
        (Some(name), Some(lang)) => {
            w.key(&mut g, "sdk");
            w.str_parts(&[name, " for ", lang]);
        }
        (name, _) => text(w, &mut g, "sdk", name),
    }
    text(w, &mut g, "sdk_version", r.sdk_version);
    w.key(&mut g, "auto_instrumentation");
    w.bool(r.auto_version.is_some_and(|v| !v.is_empty()));
    w.byte(b'}');
    w.byte(b'}');
}

/// `cloudwatch_logs`: log group ARNs, else names, else the configured names. A string value may
/// list several, separated by `&` (how OTEL_RESOURCE_ATTRIBUTES carries lists).
pub(super) fn write_log_groups(
    w: &mut Writer<'_>,
    first: &mut bool,
    r: &Res<'_>,
    configured: &[String],
) {
    fn items(v: &AnyValue) -> Vec<&str> {
        match &v.value {
            Some(Value::StringValue(s)) => s.split('&').filter(|p| !p.is_empty()).collect(),
            Some(Value::ArrayValue(a)) => {
                a.values.iter().map(|v| str_of(v).unwrap_or("")).collect()
            }
            _ => Vec::new(),
        }
    }
    let arns = r.log_group_arns.map(items).unwrap_or_default();
    let (list, are_arns) = if !arns.is_empty() {
        (arns, true)
    } else {
        let names = r.log_groups.map(items).unwrap_or_default();
        if names.is_empty() {
            (configured.iter().map(String::as_str).collect(), false)
        } else {
            (names, false)
        }
    };
    if list.is_empty() {
        return;
    }
    w.key(first, "cloudwatch_logs");
    w.byte(b'[');
    for (i, item) in list.iter().enumerate() {
        if i > 0 {
            w.byte(b',');
        }
        let mut f = true;
        w.byte(b'{');
        w.key(&mut f, "log_group");
        if are_arns {
            // arn:aws:logs:<region>:<account>:log-group:<name>[:*]
            w.str_capped(item.split(':').nth(6).unwrap_or(item));
            w.key(&mut f, "arn");
        }
        w.str_capped(item);
        w.byte(b'}');
    }
    w.byte(b']');
}

/// The `sql` block (Collector sql.go): `url` is the span name, `connection_string` the
/// connection string (or `localhost`) plus `/` and the database name.
pub(super) fn write_sql(w: &mut Writer<'_>, first: &mut bool, s: &Sql<'_>) {
    w.key(first, "sql");
    w.byte(b'{');
    let mut f = true;
    w.key(&mut f, "url");
    w.str_capped(s.url);
    w.key(&mut f, "connection_string");
    w.str_parts(&[s.connection, "/", s.database]);
    w.key(&mut f, "database_type");
    w.str_capped(s.database_type);
    if let Some(user) = s.user.filter(|u| !u.is_empty()) {
        w.key(&mut f, "user");
        w.str_capped(user);
    }
    if let Some(q) = s.query.filter(|q| !q.is_empty()) {
        w.key(&mut f, "sanitized_query");
        w.str_capped(q);
    }
    w.byte(b'}');
}

/// `cause.exceptions`, with IDs derived from the span ID. In budget mode whole exceptions, then
/// single stack frames, are left out when they do not fit; `truncated` counts the frames left out.
pub(super) fn write_cause(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, trim: &mut Trim) {
    let budget = w.greedy_all;
    let exception_id = |i: usize| derived_id(&d.c.ids.span, (d.salt << 32) | (i as u64 + 1));
    match &d.c.cause {
        Cause::None => {}
        Cause::Message(message) => {
            if message.is_empty() {
                return;
            }
            let mut dropped = 0;
            optional(w, first, budget, &mut dropped, |w, f| {
                w.key(f, "cause");
                w.raw(b"{\"exceptions\":[{\"id\":");
                w.hex_id(&exception_id(0));
                w.raw(b",\"message\":");
                w.str_capped(message);
                w.raw(b"}]}");
            });
            trim.exceptions_dropped += dropped;
        }
        Cause::Exceptions(list) => {
            let mark = w.mark();
            let was_first = *first;
            w.key(first, "cause");
            w.raw(b"{\"exceptions\":[");
            let mut written = 0;
            for (i, e) in list.iter().enumerate() {
                let item = w.mark();
                if written > 0 {
                    w.byte(b',');
                }
                let mut f = true;
                w.byte(b'{');
                w.key(&mut f, "id");
                w.hex_id(&exception_id(i));
                if !e.ty.is_empty() {
                    w.key(&mut f, "type");
                    w.str_capped(&e.ty);
                }
                if !e.message.is_empty() {
                    w.key(&mut f, "message");
                    w.str_capped(&e.message);
                }
                w.key(&mut f, "remote");
                w.bool(e.remote);
                if let Some(cause) = e.cause {
                    w.key(&mut f, "cause");
                    w.hex_id(&exception_id(cause));
                }
                if budget && !w.fits() {
                    w.rollback(item);
                    trim.exceptions_dropped += 1;
                    trim.stack_frames_dropped += e.stack.len() as u32;
                    continue;
                }
                let mut omitted = 0u32;
                if !e.stack.is_empty() {
                    let stack = w.mark();
                    let stack_first = f;
                    w.key(&mut f, "stack");
                    w.byte(b'[');
                    let mut frames = 0;
                    for frame in &e.stack {
                        let at = w.mark();
                        if frames > 0 {
                            w.byte(b',');
                        }
                        let mut g = true;
                        w.byte(b'{');
                        if !frame.path.is_empty() {
                            w.key(&mut g, "path");
                            w.str_capped(frame.path);
                        }
                        if frame.line != 0 {
                            w.key(&mut g, "line");
                            w.int(frame.line);
                        }
                        if !frame.label.is_empty() {
                            w.key(&mut g, "label");
                            w.str_capped(frame.label);
                        }
                        w.byte(b'}');
                        if budget && !w.fits() {
                            w.rollback(at);
                            omitted += 1;
                        } else {
                            frames += 1;
                        }
                    }
                    if frames == 0 {
                        w.rollback(stack);
                        f = stack_first;
                    } else {
                        w.byte(b']');
                    }
                }
                if omitted > 0 {
                    // X-Ray's own field for frames left out of `stack`.
                    w.key(&mut f, "truncated");
                    w.int(i64::from(omitted));
                    trim.stack_frames_dropped += omitted;
                }
                w.byte(b'}');
                written += 1;
            }
            if written == 0 {
                w.rollback(mark);
                *first = was_first;
            } else {
                w.raw(b"]}");
            }
        }
    }
}

/// `annotations`, in the planned priority order, with keys sanitised and strings cut to
/// [`MAX_ANNOTATION_VALUE_CHARS`].
pub(super) fn write_annotations(
    w: &mut Writer<'_>,
    first: &mut bool,
    d: &Doc<'_, '_>,
    trim: &mut Trim,
) {
    if d.annotations.is_empty() {
        return;
    }
    let budget = w.greedy_all;
    let keep_dots = d.c.opts.annotation_keys_keep_dots;
    let mark = w.mark();
    let was_first = *first;
    w.key(first, "annotations");
    w.byte(b'{');
    let mut f = true;
    for &(resource, i) in &d.annotations {
        let (prefix, key) = d.annotation_source_key(resource, i);
        optional(w, &mut f, budget, &mut trim.annotations_dropped, |w, f| {
            if !*f {
                w.byte(b',');
            }
            *f = false;
            w.byte(b'"');
            let mut buf = [0u8; 4];
            for ch in prefix.chars().chain(key.chars()) {
                w.raw(
                    annotation_key_char(ch, keep_dots)
                        .encode_utf8(&mut buf)
                        .as_bytes(),
                );
            }
            w.raw(b"\":");
            match d.annotation_value(resource, i).value.as_ref() {
                Some(Value::StringValue(s)) => w.str_max(s, MAX_ANNOTATION_VALUE_CHARS),
                Some(Value::IntValue(n)) => w.int(*n),
                Some(Value::DoubleValue(x)) => w.float(*x),
                Some(Value::BoolValue(b)) => w.bool(*b),
                _ => w.raw(b"null"),
            }
        });
    }
    finish_object(w, first, mark, was_first, f);
}

/// Closes an object opened after `mark`, or removes it when nothing went in.
pub(super) fn finish_object(
    w: &mut Writer<'_>,
    first: &mut bool,
    mark: usize,
    was_first: bool,
    inner_first: bool,
) {
    if inner_first {
        w.rollback(mark);
        *first = was_first;
    } else {
        w.byte(b'}');
    }
}

/// `links`: the valid ones, each with its converted trace ID, span ID and attributes.
pub(super) fn write_links(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, trim: &mut Trim) {
    let budget = w.greedy_all;
    let mut links = d.c.span.links.iter().filter(|l| d.link_ok(l)).peekable();
    if links.peek().is_none() {
        return;
    }
    let mark = w.mark();
    let was_first = *first;
    w.key(first, "links");
    w.byte(b'[');
    let mut written = false;
    for link in links {
        let mut f = !written;
        let ok = optional(w, &mut f, budget, &mut trim.links_dropped, |w, f| {
            if !*f {
                w.byte(b',');
            }
            *f = false;
            w.raw(b"{\"trace_id\":");
            w.trace_id(link.trace_id[..].try_into().unwrap_or(&[0; 16]));
            w.raw(b",\"id\":");
            w.hex_id(&link.span_id);
            let attrs = link
                .attributes
                .iter()
                .filter(|kv| kv.value.as_ref().is_some_and(|v| v.value.is_some()));
            let mut g = true;
            for kv in attrs {
                if g {
                    w.raw(b",\"attributes\":{");
                }
                w.key_escaped(&mut g, &kv.key);
                w.any_value(kv.value.as_ref().unwrap_or(&EMPTY));
            }
            if !g {
                w.byte(b'}');
            }
            w.byte(b'}');
        });
        written |= ok;
    }
    if written {
        w.byte(b']');
    } else {
        w.rollback(mark);
        *first = was_first;
    }
}

/// `metadata`: `default` holds the remaining span attributes, merged `aws.xray.metadata.default`
/// JSON and `otel.resource.*` entries; each other `aws.xray.metadata.<ns>` is its own namespace.
/// Every entry is checked against the limit, so metadata is what goes first.
pub(super) fn write_metadata(
    w: &mut Writer<'_>,
    first: &mut bool,
    d: &Doc<'_, '_>,
    trim: &mut Trim,
) {
    let c = d.c;
    // Collector: the LOCAL_ROOT service segment keeps only the otel.resource.* entries.
    let span_entries = d.role != Role::LocalRootService;
    let mark = w.mark();
    let was_first = *first;
    w.key(first, "metadata");
    w.byte(b'{');
    let mut outer = true;
    // The default namespace.
    let default_mark = w.mark();
    w.key(&mut outer, "default");
    w.byte(b'{');
    let mut f = true;
    // Metadata entries are always checked: they are the first thing trimmed.
    let dropped = &mut trim.metadata_dropped;
    if span_entries {
        for (kv, disp) in c.span.attributes.iter().zip(&d.span_disp) {
            let value = kv.value.as_ref().unwrap_or(&EMPTY);
            match disp {
                Disp::Metadata => {
                    optional(w, &mut f, true, dropped, |w, f| {
                        w.key_escaped(f, &kv.key);
                        w.any_value(value);
                    });
                }
                Disp::Namespace => {
                    let ns = &kv.key[METADATA_PREFIX.len()..];
                    match parse_object(value) {
                        Some(map) if ns.eq_ignore_ascii_case("default") => {
                            for (k, v) in &map {
                                optional(w, &mut f, true, dropped, |w, f| {
                                    w.key_escaped(f, k);
                                    w.json(v);
                                });
                            }
                        }
                        Some(_) => {}
                        // Collector: text that is not a JSON object stays as it is.
                        None => {
                            optional(w, &mut f, true, dropped, |w, f| {
                                w.key_escaped(f, &kv.key);
                                w.any_value(value);
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for (kv, disp) in c.res.attrs.iter().zip(&d.res_disp) {
        if *disp == Disp::Metadata {
            optional(w, &mut f, true, dropped, |w, f| {
                if !*f {
                    w.byte(b',');
                }
                *f = false;
                w.byte(b'"');
                w.raw(RESOURCE_PREFIX.as_bytes());
                w.escape(&kv.key);
                w.raw(b"\":");
                w.any_value(kv.value.as_ref().unwrap_or(&EMPTY));
            });
        }
    }
    if f {
        w.rollback(default_mark);
        outer = true;
    } else {
        w.byte(b'}');
    }
    // Named namespaces from aws.xray.metadata.<namespace>.
    if span_entries {
        for (kv, disp) in c.span.attributes.iter().zip(&d.span_disp) {
            if *disp != Disp::Namespace {
                continue;
            }
            let ns = &kv.key[METADATA_PREFIX.len()..];
            if ns.eq_ignore_ascii_case("default") {
                continue;
            }
            if let Some(map) = parse_object(kv.value.as_ref().unwrap_or(&EMPTY)) {
                optional(w, &mut outer, true, dropped, |w, f| {
                    w.key_escaped(f, ns);
                    w.json(&map);
                });
            }
        }
    }
    finish_object(w, first, mark, was_first, outer);
}

/// An `aws.xray.metadata.<ns>` value, when it is a JSON object.
pub(super) fn parse_object(v: &AnyValue) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_str(str_of(v)?).ok()
}

//! Golden tests of the X-Ray translator: each `tests/golden/xray/<case>.input.json` against `<case>.expected.json`.
//
// An input is an OTLP/JSON ExportTraceServiceRequest with one resource and one span, decoded by
// the real receiver code; its extra top-level `sidetraceTest` object holds the case's options
// and the counters it expects. The expected file is the document (an array for two documents,
// `{"translate_error": reason}` for a rejected span). `UPDATE_GOLDEN=1` rewrites expected files.

use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::{Value, json};
use sidetrace::exporters::xray::translate::{
    IndexedKeys, TraceIdPolicy, TranslateOptions, Translated, to_segment, to_segment_escaped,
};
use sidetrace::exporters::xray::validate::validate_document;
use sidetrace::proto::ExportTraceServiceRequest;
use sidetrace::receivers::otlp_json::json_to_protobuf;

/// The issue asks for at least this many cases.
const MIN_CASES: usize = 40;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/xray")
}

fn cases() -> Vec<PathBuf> {
    let mut inputs: Vec<PathBuf> = fs::read_dir(golden_dir())
        .expect("tests/golden/xray exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".input.json"))
        .collect();
    inputs.sort();
    inputs
}

fn options(test: &Value) -> TranslateOptions {
    let strings = |key: &str| -> Vec<String> {
        test[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut opts = TranslateOptions {
        indexed_attributes: IndexedKeys::new(strings("indexedAttributes")),
        index_all_attributes: test["indexAllAttributes"].as_bool().unwrap_or(false),
        log_group_names: strings("logGroupNames"),
        ..TranslateOptions::default()
    };
    match test["traceIdPolicy"].as_str() {
        None | Some("passThrough") => {}
        Some("requireRecentEpoch") => opts.trace_id_policy = TraceIdPolicy::RequireRecentEpoch,
        Some(other) => panic!("unknown traceIdPolicy {other:?}"),
    }
    if let Some(now) = test["nowUnixSecs"].as_u64() {
        opts.now_unix_secs = now;
    }
    if let Some(max) = test["maxDocumentBytes"].as_u64() {
        opts.max_document_bytes = max as usize;
    }
    if let Some(max) = test["maxAnnotations"].as_u64() {
        opts.max_annotations = max as usize;
    }
    if let Some(keep) = test["annotationKeysKeepDots"].as_bool() {
        opts.annotation_keys_keep_dots = keep;
    }
    opts
}

/// The counters of a translation, in the shape the `expect` object of an input uses.
fn counters(t: &Translated) -> Value {
    let trim = t.trim.as_ref().map(|t| {
        json!({
            "originalBytes": t.original_bytes,
            "metadataDropped": t.metadata_dropped,
            "annotationsDropped": t.annotations_dropped,
            "linksDropped": t.links_dropped,
            "exceptionsDropped": t.exceptions_dropped,
            "stackFramesDropped": t.stack_frames_dropped,
            "blocksDropped": t.blocks_dropped,
            "stringsTruncated": t.strings_truncated,
        })
    });
    json!({
        "documents": t.documents().len(),
        "annotationsOverCap": t.annotations_over_cap,
        "annotationsNotIndexable": t.annotations_not_indexable,
        "annotationValuesTruncated": t.annotation_values_truncated,
        "linksDropped": t.links_dropped,
        "trim": trim,
    })
}

/// Runs one case; returns the output value and any problems other than a golden mismatch.
fn run_case(input_path: &Path) -> (Value, Vec<String>) {
    let mut problems = Vec::new();
    let raw = fs::read(input_path).expect("readable input");
    let input: Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", input_path.display()));
    let test = &input["sidetraceTest"];
    let opts = options(test);
    let proto = json_to_protobuf(&raw).expect("input is OTLP/JSON");
    let req = ExportTraceServiceRequest::decode(&proto[..]).expect("re-encoded request decodes");
    assert_eq!(req.resource_spans.len(), 1, "one resource per case");
    let rs = &req.resource_spans[0];
    assert_eq!(rs.scope_spans.len(), 1, "one scope per case");
    let ss = &rs.scope_spans[0];
    assert_eq!(ss.spans.len(), 1, "one span per case");
    let resource = rs.resource.clone().unwrap_or_default();
    let scope = ss.scope.clone().unwrap_or_default();

    let mut out = b"prefix".to_vec();
    let output = match to_segment(&ss.spans[0], &resource, &scope, &opts, &mut out) {
        Ok(translated) => {
            let mut docs = Vec::new();
            for range in translated.documents() {
                let bytes = &out[range.clone()];
                if bytes.len() > opts.max_document_bytes {
                    problems.push(format!(
                        "document of {} bytes is over the limit",
                        bytes.len()
                    ));
                }
                for v in validate_document(bytes) {
                    problems.push(format!("invalid document: {v}"));
                }
                docs.push(serde_json::from_slice::<Value>(bytes).expect("document is JSON"));
            }
            if !out.starts_with(b"prefix") {
                problems.push("the buffer's earlier contents were changed".into());
            }
            if let Some(expect) = test.get("expect") {
                let got = counters(&translated);
                for (key, want) in expect.as_object().expect("expect is an object") {
                    if &got[key] != want {
                        problems.push(format!("counter {key}: expected {want}, got {}", got[key]));
                    }
                }
            }
            // Pure: the same input gives the same bytes.
            let mut again = b"prefix".to_vec();
            to_segment(&ss.spans[0], &resource, &scope, &opts, &mut again).expect("second run");
            if again != out {
                problems.push("a second translation gave different bytes".into());
            }
            // What a PutTraceSegments body carries, written in the same pass: exactly these
            // documents, each as a JSON string.
            let mut escaped = b"prefix".to_vec();
            let mut scratch = Vec::new();
            let t = to_segment_escaped(
                &ss.spans[0],
                &resource,
                &scope,
                &opts,
                &mut escaped,
                &mut scratch,
            )
            .expect("escaped translation");
            let strings: Vec<String> = translated
                .documents()
                .iter()
                .map(|r| {
                    serde_json::to_string(std::str::from_utf8(&out[r.clone()]).unwrap()).unwrap()
                })
                .collect();
            if escaped[6..] != *strings.join(",").as_bytes() || t.documents().len() != strings.len()
            {
                problems.push(format!(
                    "the escaped documents differ from the plain ones:\n{}\n{}",
                    String::from_utf8_lossy(&escaped[6..]),
                    strings.join(",")
                ));
            }
            if docs.len() == 1 {
                docs.pop().unwrap_or_default()
            } else {
                Value::Array(docs)
            }
        }
        Err(e) => {
            if out != b"prefix" {
                problems.push("a failed translation left bytes in the buffer".into());
            }
            let mut escaped = b"prefix".to_vec();
            match to_segment_escaped(
                &ss.spans[0],
                &resource,
                &scope,
                &opts,
                &mut escaped,
                &mut Vec::new(),
            ) {
                Err(e2) if e2 == e && escaped == b"prefix" => {}
                other => problems.push(format!("the escaped translation gave {other:?}")),
            }
            json!({ "translate_error": e.reason() })
        }
    };
    (output, problems)
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let inputs = cases();
    assert!(
        inputs.len() >= MIN_CASES,
        "only {} golden cases",
        inputs.len()
    );
    let mut failures = Vec::new();
    for input in &inputs {
        let name = input
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .replace(".input.json", "");
        let expected_path = golden_dir().join(format!("{name}.expected.json"));
        let (output, problems) = run_case(input);
        failures.extend(problems.into_iter().map(|p| format!("{name}: {p}")));
        if update {
            let text = serde_json::to_string_pretty(&output).expect("serialisable") + "\n";
            fs::write(&expected_path, text).expect("writable expected file");
            continue;
        }
        match fs::read(&expected_path) {
            Ok(bytes) => {
                let expected: Value =
                    serde_json::from_slice(&bytes).expect("expected file is JSON");
                if expected != output {
                    failures.push(format!(
                        "{name}: output differs from {}\n--- got:\n{}",
                        expected_path.display(),
                        serde_json::to_string_pretty(&output).unwrap_or_default()
                    ));
                }
            }
            Err(_) => failures.push(format!("{name}: no {}", expected_path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

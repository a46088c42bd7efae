//! The fuzz targets on stable Rust, in CI: each target's check (`fuzz/checks.rs`) over its
//! committed seeds (`fuzz/seeds/TARGET/`) and a fixed number of deterministic mutations of them
//! (bit flips, interesting bytes, cuts, splices, repeats). cargo-fuzz explores further
//! (`fuzz/run.sh`); this keeps every finding it made, and the properties, checked on each commit.

#[path = "../fuzz/checks.rs"]
mod checks;

use sidetrace::workload::Rng;

/// Mutated inputs tried per target (deterministic: the same on every run).
const MUTATIONS: usize = 20_000;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = format!("{}/fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {dir}");
    seeds
}

/// One to four random edits of `input`, libFuzzer's simplest mutators.
fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len().max(1) as u64;
        let at = rng.below(len) as usize;
        match rng.below(7) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => {
                out[at] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'\n'][rng.below(8) as usize]
            }
            2 => out.truncate(at),
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16) as usize).min(out.len());
                out.drain(at..end);
            }
            4 => {
                let donor = &others[rng.below(others.len() as u64) as usize];
                if !donor.is_empty() {
                    let from = rng.below(donor.len() as u64) as usize;
                    let to = (from + 1 + rng.below(64) as usize).min(donor.len());
                    let at = at.min(out.len());
                    out.splice(at..at, donor[from..to].iter().copied());
                }
            }
            5 if !out.is_empty() => {
                let end = (at + 1 + rng.below(32) as usize).min(out.len());
                let chunk = out[at..end].to_vec();
                out.splice(at..at, chunk);
            }
            _ => {
                let at = at.min(out.len());
                out.insert(at, rng.next_u64() as u8);
            }
        }
    }
    out
}

fn replay(target: &str, check: fn(&[u8])) {
    let seeds = seeds(target);
    for s in &seeds {
        check(s);
    }
    let mut rng = Rng::new(0x5eed_f022 ^ target.len() as u64);
    for i in 0..MUTATIONS {
        let input = mutate(&mut rng, &seeds[i % seeds.len()], &seeds);
        let outcome = std::panic::catch_unwind(|| check(&input));
        if outcome.is_err() {
            let path = std::env::temp_dir().join(format!("sidetrace-fuzz-{target}-{i}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{target}: mutation {i} failed its check; input saved to {}",
                path.display()
            );
        }
    }
}

#[test]
fn otlp_protobuf() {
    replay("otlp_protobuf", checks::otlp_protobuf);
}

#[test]
fn otlp_json() {
    replay("otlp_json", checks::otlp_json);
}

#[test]
fn gzip() {
    replay("gzip", checks::gzip);
}

#[test]
fn config() {
    replay("config", checks::config);
}

#[test]
fn xray_datagram() {
    replay("xray_datagram", checks::xray_datagram);
}

/// Writes the seed corpora (`cargo test --test fuzz_replay -- --ignored write_seeds`); they are
/// committed, so this only runs when they should change.
#[test]
#[ignore]
fn write_seeds() {
    use prost::Message;
    use sidetrace::workload::{ErrorMix, Shape, Topology, request};
    let root = format!("{}/fuzz/seeds", env!("CARGO_MANIFEST_DIR"));
    let write = |target: &str, name: &str, data: &[u8]| {
        std::fs::create_dir_all(format!("{root}/{target}")).unwrap();
        std::fs::write(format!("{root}/{target}/{name}"), data).unwrap();
    };
    let small = |seed, topology, spans| {
        let shape = Shape {
            spans,
            spans_per_trace: 3,
            error_mix: ErrorMix::Realistic,
            extra_attributes: 1,
            topology,
            ..Shape::default()
        };
        request(&mut Rng::new(seed), &shape)
    };
    let requests = [
        small(1, Topology::Chain, 3),
        small(2, Topology::Services, 7),
        small(3, Topology::Chain, 1),
    ];
    for (i, r) in requests.iter().enumerate() {
        let pb = r.encode_to_vec();
        write("otlp_protobuf", &format!("request-{i}.pb"), &pb);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &pb).unwrap();
        write("gzip", &format!("request-{i}.pb.gz"), &gz.finish().unwrap());
    }
    write("otlp_protobuf", "empty.pb", &[]);
    write("otlp_json", "one-span.json", br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeSpans":[{"scope":{"name":"s","version":"1"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"","name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,"attributes":[{"key":"http.response.status_code","value":{"intValue":"500"}},{"key":"ok","value":{"boolValue":false}},{"key":"ratio","value":{"doubleValue":0.5}},{"key":"list","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":1}]}}},{"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"bytesValue":"AQID"}}]}}}],"events":[{"timeUnixNano":"1544712660500000000","name":"exception","attributes":[{"key":"exception.type","value":{"stringValue":"E"}}]}],"links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b173"}],"status":{"code":2,"message":"boom"},"flags":257}]}]}]}"#);
    write("otlp_json", "empty.json", b"{}");
    write(
        "gzip",
        "empty.gz",
        &[
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    write(
        "config",
        "default.toml",
        sidetrace::agent::config::Config::default_toml().as_bytes(),
    );
    write("config", "small.toml", b"exporters = [\"local\"]\nmemory_limit = \"64MiB\"\n[local]\nmax_bytes = \"32MiB\"\n[sampling]\nratio = 0.1\n");
    for (i, error) in [false, true].into_iter().enumerate() {
        write(
            "xray_datagram",
            &format!("segment-{i}.txt"),
            &sidetrace::loadgen::udp_segment(i as u64, error),
        );
    }
    write("xray_datagram", "subsegment.txt", b"{\"format\": \"json\", \"version\": 1}\n{\"type\":\"subsegment\",\"id\":\"70de5b6f19ff9a0b\",\"trace_id\":\"1-581cf771-a006649127e371903a2de979\",\"parent_id\":\"70de5b6f19ff9a0a\",\"name\":\"DynamoDB\",\"start_time\":1478293361.271,\"end_time\":1478293361.449,\"namespace\":\"aws\",\"aws\":{\"operation\":\"GetItem\",\"table_name\":\"t\"},\"http\":{\"response\":{\"status\":200}}}");
}

/// Findings, kept as checks: inputs where the walk and prost once disagreed.
#[test]
fn known_divergences_stay_fixed() {
    // An unknown field sent as a (proto2) group: prost skips it; the walk refused it.
    checks::otlp_protobuf(&[0x9b, 0x06, 0x9c, 0x06]);
    // A group nested in a group.
    checks::otlp_protobuf(&[0x9b, 0x06, 0xa3, 0x06, 0xa4, 0x06, 0x9c, 0x06]);
    // A stray end-group key and an unclosed group: both refuse.
    checks::otlp_protobuf(&[0x9c, 0x06]);
    checks::otlp_protobuf(&[0x9b, 0x06, 0x08, 0x01]);
    // A key over 32 bits (cargo-fuzz): prost refuses it; the walk took field numbers up to 2^32.
    checks::otlp_protobuf(&[0xd8, 0xf5, 0x8f, 0x8d, 0x43, 0x0b]);
    // A ten-byte varint past 64 bits in an unknown field (cargo-fuzz): prost refuses it.
    checks::otlp_protobuf(&[
        0x28, 0x8a, 0x00, 0x10, 0x88, 0x8e, 0x8a, 0x8a, 0x8a, 0x8a, 0xff, 0xff, 0xff, 0x0f,
    ]);
}

//! Generates the OTLP trace types from the vendored `proto/` files with protox (no system `protoc`).
fn main() {
    let files = ["proto/opentelemetry/proto/collector/trace/v1/trace_service.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"]).expect("vendored OTLP protos compile");
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(fds)
        .expect("prost code generation");
}

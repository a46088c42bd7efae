//! Span-metrics benchmarks (placeholder while the module is written).
fn main() {}

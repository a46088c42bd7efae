#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), starting from the committed seeds
# (fuzz/seeds/TARGET) and growing a git-ignored corpus (fuzz/corpus/TARGET); prints libFuzzer's
# final stats (executions) per target. Findings land in fuzz/artifacts/TARGET: add each as a
# case in tests/fuzz_replay.rs once fixed.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
# FUZZ_SANITIZER (default address) is cargo-fuzz's --sanitizer: the test suite's short runs pass
# none, which builds in 7.5 min instead of 10 on a clean machine; the crate forbids unsafe, so
# AddressSanitizer watches only the dependencies' code, and the long runs keep it.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
shift || true
TARGETS=${*:-otlp_protobuf otlp_json gzip config xray_datagram}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes -Z flags (the sanitizer); on a stable toolchain, allow them (no nightly is
# installable here, and the flags are all it needs).
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  echo "== $t (${SECONDS_EACH}s)"
  rc=0
  cargo fuzz run --release --sanitizer "${FUZZ_SANITIZER:-address}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=65536 >"$LOG" 2>&1 || rc=$?
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$LOG" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$LOG"
    echo "!! $t failed (exit $rc); findings, if any, in fuzz/artifacts/$t"
    exit 1
  fi
done

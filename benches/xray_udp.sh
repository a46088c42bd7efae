#!/usr/bin/env bash
# The X-Ray daemon port under load: `sidetrace loadgen --protocol xray-udp` sends ~1 KB segment
# documents over UDP from one socket at RATE datagrams/s; the agent relays them to the fake
# X-Ray endpoint (benches/fake_xray.rs). Agent and sender are pinned to different cores.
#
#   benches/xray_udp.sh                  # RUNS=3, RATE=40000, DURATION=10s
#   RATE=0 benches/xray_udp.sh           # closed loop: as fast as one sender can go
#
# Prints per run: offered and relayed segments/s, relayed per agent CPU-second, idle and peak
# RSS, and where every datagram went (kernel drops, rejected, spilled).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RATE=${RATE:-40000}
DURATION=${DURATION:-10s}
AGENT_CPU=${AGENT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

cargo build --release --quiet --bin sidetrace
cargo build --release --quiet --features bench-tools --bin fake-xray
BIN=${BIN:-target/release/sidetrace}
FAKE=target/release/fake-xray
GRPC=127.0.0.1:34317; HTTP=127.0.0.1:34318; ADMIN=127.0.0.1:33133; AWS=127.0.0.1:34566; UDP=127.0.0.1:32000

taskset -c "$LOAD_CPU" "$FAKE" "$AWS" 2>/dev/null &
FAKE_PID=$!
trap 'kill $FAKE_PID 2>/dev/null; [ -n "${AGENT_PID:-}" ] && kill $AGENT_PID 2>/dev/null; true' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
metric() { curl -s "http://$ADMIN/metrics" | awk -v k="$1" '$1 == k {print $2; found=1} END {if (!found) print 0}'; }

printf '%-4s %10s %10s %14s %8s %8s %10s %9s %9s\n' run "offered/s" "relayed/s" "relayed/cpu-s" idle_MB peak_MB kernel_drop rejected spilled
for run in $(seq 1 "$RUNS"); do
  env AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://$AWS" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
    taskset -c "$AGENT_CPU" "$BIN" --exporters xray --otlp-grpc-addr "$GRPC" --otlp-http-addr "$HTTP" \
    --admin-addr "$ADMIN" --xray-udp-addr "$UDP" >/dev/null 2>/tmp/sidetrace-bench-udp.log &
  AGENT_PID=$!
  until curl -sf "http://$ADMIN/readyz" >/dev/null 2>&1; do :; done
  sleep 1
  IDLE_KB=$(status_kb "$AGENT_PID" VmRSS)
  c0=$(cpu_ticks "$AGENT_PID")
  s0=$(metric 'sidetrace_exporter_sent_spans_total{exporter="xray"}')
  RATE_ARGS=(); [ "$RATE" != 0 ] && RATE_ARGS=(--rate "$RATE")
  OUT=$(taskset -c "$LOAD_CPU" "$BIN" loadgen --protocol xray-udp --target "$UDP" "${RATE_ARGS[@]}" --duration "$DURATION" --error-ratio 0.1 | tail -1)
  # Let the last batches flush (idle_flush 1 s) before reading the counters.
  sleep 2
  c1=$(cpu_ticks "$AGENT_PID")
  s1=$(metric 'sidetrace_exporter_sent_spans_total{exporter="xray"}')
  PEAK_KB=$(status_kb "$AGENT_PID" VmHWM)
  KDROP=$(metric sidetrace_xray_udp_kernel_dropped_total)
  REJ=$(curl -s "http://$ADMIN/metrics" | awk '$1 ~ /^sidetrace_xray_udp_segments_rejected_total/ {s += $2} END {print s + 0}')
  SPILL=$(curl -s "http://$ADMIN/metrics" | awk '$1 ~ /^sidetrace_xray_udp_segments_spilled_total/ {s += $2} END {print s + 0}')
  python3 - "$run" "$OUT" "$(( c1 - c0 ))" "$(getconf CLK_TCK)" "$IDLE_KB" "$PEAK_KB" "$s0" "$s1" "$KDROP" "$REJ" "$SPILL" <<'PY'
import json, sys
run, out, ticks, hz, idle, peak, s0, s1, kdrop, rej, spill = sys.argv[1:]
r = json.loads(out)
cpu = int(ticks) / int(hz)
relayed = float(s1) - float(s0)
print(f'{run:<4} {r["spans_per_sec"]:10.0f} {relayed / r["duration_s"]:10.0f} {relayed / cpu if cpu else 0:14.0f} '
      f'{int(idle)/1024:8.1f} {int(peak)/1024:8.1f} {float(kdrop):10.0f} {float(rej):9.0f} {float(spill):9.0f}')
PY
  kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
done
curl -s "http://$AWS/stats" || true

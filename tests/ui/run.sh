#!/usr/bin/env bash
# Real-browser tests of the local UI against a sidetrace binary.
# Usage: tests/ui/run.sh BIN [--screenshots]
# Installs Chromium (Debian) and playwright-core (npm) if missing, starts BIN in local mode on free
# loopback ports, seeds traces, runs the tests; --screenshots also rewrites docs/ui/*.png.
# UI_FROM_DISK=1 tests src/admin/ui.html from the work tree instead of the page BIN embeds.
set -euo pipefail
BIN=$(realpath "${1:?usage: tests/ui/run.sh BIN [--screenshots]}")
HERE=$(cd "$(dirname "$0")" && pwd)

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
# playwright-core needs Node 20 or later (Debian 12's own nodejs is 18: not enough).
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
  echo "tests/ui needs Node.js 20 or later (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
npm ci --prefix "$HERE" --no-audit --no-fund --loglevel=error

read -r ADMIN GRPC HTTP XRAY < <(node "$HERE/free-ports.mjs")
LOG=$(mktemp)
# Local mode whatever the environment says: no AWS region, only the local exporter.
env -u AWS_REGION -u AWS_DEFAULT_REGION "$BIN" --exporters local \
  --admin-addr "127.0.0.1:$ADMIN" --otlp-grpc-addr "127.0.0.1:$GRPC" --otlp-http-addr "127.0.0.1:$HTTP" \
  --xray-udp-addr "127.0.0.1:$XRAY" >"$LOG" 2>&1 &
AGENT=$!
stop() { kill "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; rm -f "$LOG"; }
trap stop EXIT

export SIDETRACE_ADMIN_URL="http://127.0.0.1:$ADMIN" SIDETRACE_OTLP_HTTP_URL="http://127.0.0.1:$HTTP"
if ! node "$HERE/seed.mjs"; then
  echo "== agent log"; cat "$LOG"; exit 1
fi
"$BIN" loadgen --target "127.0.0.1:$GRPC" --rate 500 --duration 2s >/dev/null

cd "$HERE"
status=0
node --test --test-reporter=spec --test-concurrency=1 search.test.mjs trace.test.mjs metrics.test.mjs || status=$?
if [ "${2:-}" = --screenshots ]; then
  node screenshots.mjs || status=$?
fi
if ! kill -0 "$AGENT" 2>/dev/null; then
  echo "== the agent exited during the tests"; cat "$LOG"; status=1
fi
exit "$status"

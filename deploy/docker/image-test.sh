#!/usr/bin/env bash
# image-test.sh IMAGE: the image behaves as a sidecar must. Needs DOCKER_HOST set; every
# container runs with --network none or inside another's namespace (no bridge, no addresses).
set -uo pipefail
# Debian's docker.io client (20.10, as its daemon); a newer client may also be on PATH.
DOCKER=${DOCKER:-/usr/bin/docker}
docker() { "$DOCKER" "$@"; }
export DOCKER && export -f docker
image=$1
name=sidetrace-image-test-$$
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
inspect() { docker image inspect -f "$1" "$image"; }

# The image itself.
check "runs as nonroot 65532" test "$(inspect '{{.Config.User}}')" = 65532:65532
size=$(inspect '{{.Size}}')
check "under 40 MB ($((size / 1000000)) MB)" test "$size" -lt 40000000
check "HEALTHCHECK is the binary's own" \
  test "$(inspect '{{json .Config.Healthcheck.Test}}')" = '["CMD","/sidetrace","healthcheck"]'
check "entrypoint listens on all addresses" \
  test "$(inspect '{{json .Config.Entrypoint}}')" = '["/sidetrace","--listen-all"]'
files=$(docker create "$image" | { read -r id; docker export "$id" | tar -t; docker rm "$id" >/dev/null; })
check "no shell in the image" bash -c '! grep -Eq "^(bin|usr/bin)/(sh|bash|dash|busybox)$" <<<"$1"' _ "$files"

# As ECS and Kubernetes run it: locked down, 64 MiB, no network of its own. No memory_limit is
# given: the agent must find the container's limit itself.
docker run -d --name "$name" --network none --read-only --cap-drop ALL \
  --security-opt no-new-privileges --memory 64m --memory-swap 64m --health-interval 1s \
  "$image" >/dev/null
healthy() {
  for _ in $(seq 1 "$1"); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] && return 0
    sleep 0.5
  done
  return 1
}
check "turns healthy under --read-only --cap-drop ALL --memory 64m" healthy 60
check "its process runs as uid 65532" \
  test "$(docker top "$name" -eo pid,uid | awk 'NR > 1 { print $2 }' | sort -u)" = 65532
check "takes 75 % of the container's 64 MiB as its memory limit" \
  bash -c 'docker logs "$1" 2>&1 | grep -q "Memory limit 48 MiB: 75 % of the container'"'"'s 64 MiB"' _ "$name"

# A second container in its network namespace, as an app beside it in an awsvpc task or a pod.
loadgen() {
  docker run --rm --network "container:$name" --read-only --cap-drop ALL --entrypoint /sidetrace \
    "$image" loadgen "$@" 2>/dev/null | tail -n 1
}
# An app's pace (5,000 spans/s in 50-span requests): every request accepted, none refused.
accepted() { grep -q "\"requests_ok\":$2," <<<"$1" && grep -q '"failures":{}' <<<"$1"; }
out=$(loadgen --protocol http --target 127.0.0.1:4318 --rate 5000 --spans-per-request 50 --requests 200)
check "OTLP/HTTP from the shared namespace: 200 of 200 requests accepted" accepted "$out" 200
out=$(loadgen --protocol grpc --target 127.0.0.1:4317 --rate 5000 --spans-per-request 50 --requests 200)
check "OTLP/gRPC from the shared namespace: 200 of 200 requests accepted" accepted "$out" 200

# Overload: four closed-loop streams for 8 s. It must shed load with retryable refusals rather
# than be OOM-killed, and accept again afterwards.
out=$(loadgen --protocol grpc --target 127.0.0.1:4317 --streams 4 --duration 8s)
echo "     overload: $out"
check "not OOM-killed under load" test "$(docker inspect -f '{{.State.OOMKilled}}' "$name")" = false
check "still running and healthy after the load" healthy 20
# The local store sheds half its traces each second it refuses, so memory falls within seconds.
recovered() {
  for _ in $(seq 1 10); do
    out=$(loadgen --protocol grpc --target 127.0.0.1:4317 --rate 5000 --spans-per-request 50 --requests 50)
    accepted "$out" 50 && return 0
    echo "     not yet: $out"
    sleep 1
  done
  return 1
}
check "accepts again after the overload" recovered
peak=$(docker stats --no-stream --format '{{.MemUsage}}' "$name")
echo "     memory after the load: $peak"

# docker stop: SIGTERM, drain, exit 0 within the 30 s ECS gives.
start=$(date +%s)
docker stop -t 30 "$name" >/dev/null
check "docker stop exits 0 after a drain ($(($(date +%s) - start)) s)" \
  test "$(docker inspect -f '{{.State.ExitCode}}' "$name")" = 0
check "the drain is logged" bash -c 'docker logs "$1" 2>&1 | grep -q "Shutdown requested"' _ "$name"

echo "image test: $passed passed, $failed failed"
[ "$failed" = 0 ]

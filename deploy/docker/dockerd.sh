#!/usr/bin/env bash
# dockerd.sh start|stop DIR: a private Docker daemon for the image test, with its own data and
# exec roots under DIR and no networking of its own: --bridge=none (no docker0, no private
# address range), no iptables rules, no forwarding. Containers use --network none or another
# container's namespace. Installs Debian's docker.io when dockerd is missing. `start` prints
# the DOCKER_HOST to use; `stop` stops the daemon by its PID.
set -euo pipefail
cmd=$1 dir=$(mkdir -p "$2" && cd "$2" && pwd)
case $cmd in
start)
  if ! command -v dockerd >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  mkdir -p "$dir/data" "$dir/exec"
  dockerd --data-root "$dir/data" --exec-root "$dir/exec" -H "unix://$dir/docker.sock" \
    --pidfile "$dir/dockerd.pid" --bridge=none --iptables=false --ip-forward=false \
    --ip-masq=false >"$dir/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do
    if [ -S "$dir/docker.sock" ] && DOCKER_HOST="unix://$dir/docker.sock" docker version >/dev/null 2>&1; then
      echo "unix://$dir/docker.sock"
      exit 0
    fi
    sleep 0.2
  done
  echo "dockerd did not start; its log:" >&2 && tail -20 "$dir/dockerd.log" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/dockerd.pid" ]; then
    pid=$(cat "$dir/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  ;;
*) echo "usage: dockerd.sh start|stop DIR" >&2 && exit 2 ;;
esac

#!/usr/bin/env bash
# build.sh BINARY TAG: the image from a prebuilt release binary, on a base made offline from
# this machine's libraries (no registry is reachable in CI). Needs DOCKER_HOST set.
set -euo pipefail
# Debian's docker.io client (20.10, as its daemon); a newer client may also be on PATH.
DOCKER=${DOCKER:-/usr/bin/docker}
docker() { "$DOCKER" "$@"; }
export DOCKER && export -f docker
here=$(cd "$(dirname "$0")" && pwd)
binary=$(realpath "$1") tag=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/make-base-rootfs.sh" "$work/base/rootfs" "$binary"
cp "$here/base.Dockerfile" "$work/base/Dockerfile"
mkdir -p "$work/image" && cp "$binary" "$work/image/sidetrace"
# Debian's client drives BuildKit against the distribution's daemon; no `# syntax=` line, so
# BuildKit never pulls a frontend image.
DOCKER_BUILDKIT=1 docker build -q -t sidetrace-base:ci "$work/base" >/dev/null
DOCKER_BUILDKIT=1 docker build -q -t "$tag" --build-arg BASE=sidetrace-base:ci \
  -f "$here/Dockerfile.prebuilt" "$work/image" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"

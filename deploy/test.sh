#!/usr/bin/env bash
# deploy/test.sh: every deploy check. Lints the Dockerfiles, validates the ECS task definition
# and IAM policy (botocore's own validator), the Kubernetes manifests (kubernetes-validate,
# yamllint), tests and synthesises the CDK construct (cfn-lint on the template), then builds the
# image from the release binary and runs the image test on a private dockerd with no networking.
# Installs what it needs (pip into .venv, npm, Debian's docker.io). ./scripts/test runs it last.
# Usage: deploy/test.sh [BINARY]   (default target/release/sidetrace, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
binary=${1:-target/release/sidetrace}
VENV=.venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r deploy/requirements.txt
export VENV_BIN="$root/$VENV/bin"
started=$(date +%s)
step() { echo "== deploy: $*"; }

step "hadolint"
"$VENV_BIN/hadolint" deploy/docker/Dockerfile deploy/docker/Dockerfile.prebuilt deploy/docker/base.Dockerfile

step "ECS task definition and IAM policy"
"$VENV_BIN/python" deploy/ecs/validate.py
"$VENV_BIN/python" deploy/ecs/validate.py --self-test

step "Kubernetes manifests"
deploy/k8s/test.sh

step "CDK construct"
deploy/cdk/test.sh

step "container image"
[ -x "$binary" ] || cargo build --release --locked
docker_dir=$root/.cache/docker
DOCKER_HOST=$(deploy/docker/dockerd.sh start "$docker_dir")
export DOCKER_HOST
trap 'deploy/docker/dockerd.sh stop "$docker_dir"' EXIT
deploy/docker/build.sh "$binary" sidetrace:ci
deploy/docker/image-test.sh sidetrace:ci

echo "deploy checks passed in $(($(date +%s) - started)) s"

#!/usr/bin/env bash
# Build and test the CDK construct, synthesise the example app and lint its
# CloudFormation. Needs node/npm and cfn-lint in $VENV_BIN (the caller installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
VENV_BIN="${VENV_BIN:-../../.venv/bin}"
start=$SECONDS

npm ci --no-audit --no-fund --loglevel=error
rm -rf dist  # tsc does not remove outputs of deleted sources
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
npm test 2>&1 | tee "$test_log"
passed=$(sed -n 's/^# pass //p' "$test_log")
failed=$(sed -n 's/^# fail //p' "$test_log")

rm -rf cdk.out
CDK_OUTDIR=cdk.out node dist/bin/app.js
templates=(cdk.out/*.template.json)

if [[ ! -x "$VENV_BIN/cfn-lint" ]]; then
  echo "cfn-lint not found in $VENV_BIN (install it, e.g. pip install cfn-lint==1.58.0)" >&2
  exit 1
fi
# No rules are ignored; any warning or error fails the script.
"$VENV_BIN/cfn-lint" "${templates[@]}"
echo "cfn-lint: ${#templates[@]} synthesised template(s) clean; took $((SECONDS - start))s in all"

# One-line summary, in the plain "N passed, N failed" form.
echo "cdk: ${passed:-0} passed, ${failed:-0} failed"

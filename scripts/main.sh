#!/usr/bin/env bash
# scripts/main.sh — the README's main command: set-up, build, then review a
# small sample submission folder (reprod_log-style .npy dicts written by
# numpy, one pair deliberately failing) and print the report.
# Usage: scripts/main.sh [OUT_DIR]   (default: out/sample_submission)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${REPROD_BUILD_DIR:-$ROOT/build}"
export REPROD_BUILD_DIR="$BUILD_DIR"
OUT="${1:-$ROOT/out/sample_submission}"
log() { printf '\033[1m[main]\033[0m %s\n' "$*" >&2; }

"$ROOT/scripts/setup.sh"

log "writing sample submission to $OUT"
"$ROOT/.venv/bin/python" "$ROOT/scripts/make_sample_submission.py" "$OUT"

log "reprodctl review $OUT --preset competition"
set +e
"$BUILD_DIR/client/cpp/reprodctl" review "$OUT" --preset competition --out-dir "$OUT/logs"
rc=$?
set -e
for point in forward loss; do
  log "$OUT/logs/${point}_diff.log (reprod_log format):"
  cat "$OUT/logs/${point}_diff.log"
done
log "review exit code $rc (0 = all passed, 1 = a check failed as designed: the sample's loss pair is broken)"
# The sample deliberately fails one pair; anything else than 1 is an error.
[ $rc -eq 1 ]

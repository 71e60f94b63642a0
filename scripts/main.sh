#!/usr/bin/env bash
# scripts/main.sh — the README's main command: set-up and build, then the
# whole service end to end on the embedded store:
#   1. write a small sample submission (reprod_log-style .npy dicts written by
#      numpy; the loss pair deliberately broken) and review it offline;
#   2. start reprodd on loopback with a RocksDB data dir (temporary, or
#      REPROD_DATA_DIR), push the torch files as one run and the paddle files
#      as another, compare the runs on the server, print the stored report,
#      and stop the server cleanly with SIGTERM;
#   3. before stopping it: train the bert_tiny example live in PyTorch and in
#      PaddlePaddle (and a deliberately broken Paddle port), streaming every
#      acceptance point through the Python client to the same server, and
#      judge them with the competition preset (good passes, broken fails at
#      forward/logits).
# Usage: scripts/main.sh [OUT_DIR]   (default: out/sample_submission)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${REPROD_BUILD_DIR:-$ROOT/build}"
export REPROD_BUILD_DIR="$BUILD_DIR"
OUT="${1:-$ROOT/out/sample_submission}"
REPRODCTL="$BUILD_DIR/client/cpp/reprodctl"
REPRODD="$BUILD_DIR/server/reprodd"
log() { printf '\033[1m[main]\033[0m %s\n' "$*" >&2; }

"$ROOT/scripts/setup.sh"

log "writing sample submission to $OUT"
"$ROOT/.venv/bin/python" "$ROOT/scripts/make_sample_submission.py" "$OUT"

# --- 1. offline review ------------------------------------------------------
log "reprodctl review $OUT --preset competition"
set +e
"$REPRODCTL" review "$OUT" --preset competition --out-dir "$OUT/logs"
rc=$?
set -e
for point in forward loss; do
  log "$OUT/logs/${point}_diff.log (reprod_log format):"
  cat "$OUT/logs/${point}_diff.log"
done
log "review exit code $rc (0 = all passed, 1 = a check failed as designed: the sample's loss pair is broken)"
# The sample deliberately fails one pair; anything else than 1 is an error.
[ $rc -eq 1 ]

# --- 2. the server on the embedded store -------------------------------------
TMP="$(mktemp -d)"
DATA_DIR="${REPROD_DATA_DIR:-$TMP/data}"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

log "starting reprodd (RocksDB in $DATA_DIR, loopback, free port)"
"$REPRODD" --listen 127.0.0.1:0 --data-dir "$DATA_DIR" --port-file "$TMP/port" \
  --log-level info >"$TMP/reprodd.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  [ -s "$TMP/port" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/reprodd.log"; exit 1; }
  sleep 0.1
done
[ -s "$TMP/port" ] || { log "reprodd did not start"; cat "$TMP/reprodd.log"; exit 1; }
export REPROD_SERVER="127.0.0.1:$(cat "$TMP/port")"
log "reprodd listening on $REPROD_SERVER"

# The reference side is the torch dumps plus the guide's benchmark accuracy
# (train_align_benchmark.npy), as the offline review pairs them.
log "reprodctl push *_torch.npy *_benchmark.npy --run sample/torch; *_paddle.npy --run sample/paddle"
"$REPRODCTL" push "$OUT"/*_torch.npy "$OUT"/*_benchmark.npy --run sample/torch --seal
"$REPRODCTL" push "$OUT"/*_paddle.npy --run sample/paddle --seal
"$REPRODCTL" runs ls

log "reprodctl compare sample/torch sample/paddle --preset competition --format markdown"
set +e
"$REPRODCTL" compare sample/torch sample/paddle --preset competition --format markdown
rc=$?
set -e
log "server compare exit code $rc (1 expected: the loss pair is broken)"
[ $rc -eq 1 ]

# --- 3. real frameworks streaming live -------------------------------------
log "examples/bert_tiny: torch, paddle and paddle --break streaming to $REPROD_SERVER (~1 min)"
"$ROOT/.venv/bin/python" "$ROOT/examples/bert_tiny/run_all.py" --server "$REPROD_SERVER" \
  --reprodctl "$REPRODCTL" --out "$ROOT/out/bert_tiny"
log "bert_tiny reports: $ROOT/out/bert_tiny/{good,broken}.{md,json}"

log "stopping reprodd with SIGTERM"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
server_rc=$?
SERVER_PID=""
tail -n 3 "$TMP/reprodd.log"
log "reprodd exit code $server_rc"
[ $server_rc -eq 0 ]

#!/usr/bin/env bash
# scripts/main.sh — the README's main command: set-up and build, then the
# whole service end to end on the embedded store:
#   1. write a small sample submission (reprod_log-style .npy dicts written by
#      numpy; the loss pair deliberately broken) and review it offline;
#   2. the review server: start reprodd on loopback with tokens (--auth
#      tokens), the web UI and a RocksDB data dir (temporary, or
#      REPROD_DATA_DIR); as admin, make a judge and two submitter tokens;
#      push the torch files as the reference run, which the judge publishes;
#      team-a submits the paddle files and compares them against it, team-b
#      is refused team-a's run; the judge compares, signs the verdict and the
#      audit chain verifies; print the report's web address;
#   3. before stopping the server: team-b trains the bert_tiny example live
#      in PyTorch and in PaddlePaddle (and a deliberately broken Paddle port),
#      streaming every acceptance point through the Python client, judged
#      with the competition preset (good passes, broken fails at
#      forward/logits); then stop the server cleanly with SIGTERM.
# Usage: scripts/main.sh [OUT_DIR]   (default: out/sample_submission)
#        REPROD_KEEP_SERVING=1 scripts/main.sh   keeps the server up at the end
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

# --- 2. the review server on the embedded store -------------------------------
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

# Tokens on loopback: the bootstrap admin token is written (mode 0600) to
# admin.token by reprodd itself; every other token is made over the wire.
log "starting reprodd --auth tokens (RocksDB in $DATA_DIR, loopback, free ports, web UI)"
"$REPRODD" --listen 127.0.0.1:0 --auth tokens --admin-token-file "$TMP/admin.token" \
  --http-listen 127.0.0.1:0 --data-dir "$DATA_DIR" --port-file "$TMP/port" \
  --log-level info >"$TMP/reprodd.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  [ -s "$TMP/port" ] && [ -s "$TMP/port.http" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/reprodd.log"; exit 1; }
  sleep 0.1
done
[ -s "$TMP/port" ] || { log "reprodd did not start"; cat "$TMP/reprodd.log"; exit 1; }
export REPROD_SERVER="127.0.0.1:$(cat "$TMP/port")"
WEB="http://127.0.0.1:$(cat "$TMP/port.http")"
log "reprodd listening on $REPROD_SERVER (gRPC) and $WEB (web UI)"

as() {  # as TOKEN reprodctl ARGS...: one call under that identity
  local token="$1"; shift
  REPROD_TOKEN="$token" "$REPRODCTL" "$@"
}
ADMIN="$(cat "$TMP/admin.token")"
log "admin: one judge and two submitter tokens (shown once; only their hashes are stored)"
JUDGE="$(as "$ADMIN" token create --role judge --label "judge Ada")"
TEAM_A="$(as "$ADMIN" token create --role submitter --scope team-a --label "team-a CI")"
TEAM_B="$(as "$ADMIN" token create --role submitter --scope team-b --label "team-b CI")"
as "$ADMIN" token ls

# The organisers' reference: the torch dumps plus the guide's benchmark
# accuracy (train_align_benchmark.npy), as the offline review pairs them;
# pushed by the admin, published as a reference by the judge.
log "admin pushes the reference run reference/sample-torch; the judge publishes it"
as "$ADMIN" push "$OUT"/*_torch.npy "$OUT"/*_benchmark.npy --run reference/sample-torch --seal
as "$JUDGE" runs publish reference/sample-torch

log "team-a submits its port as team-a/sample-paddle and compares it against the reference"
as "$TEAM_A" push "$OUT"/*_paddle.npy --run team-a/sample-paddle --seal
set +e
as "$TEAM_A" compare reference/sample-torch team-a/sample-paddle --preset competition >/dev/null
rc=$?
as "$TEAM_B" runs show team-a/sample-paddle
rc_b=$?
set -e
log "team-a's compare exit code $rc (1 expected: the loss pair is broken)"
[ $rc -eq 1 ]
log "team-b reading team-a's run: exit code $rc_b (2 expected: PERMISSION_DENIED, above)"
[ $rc_b -eq 2 ]

log "the judge compares, reads the Markdown report and signs the verdict"
set +e
as "$JUDGE" compare reference/sample-torch team-a/sample-paddle --preset competition \
  --format markdown 2>"$TMP/compare.err"
rc=$?
set -e
cat "$TMP/compare.err" >&2
[ $rc -eq 1 ]
REPORT_ID="$(grep -o 'rpt-[0-9a-f]\{16\}' "$TMP/compare.err" | head -n 1)"
as "$JUDGE" report sign "$REPORT_ID"
# report get exits 1 like compare: the verdict failed (as planted).
as "$JUDGE" report get "$REPORT_ID" --format text >"$TMP/report.txt" 2>/dev/null || [ $? -eq 1 ]
tail -n 2 "$TMP/report.txt"
as "$ADMIN" audit ls --limit 12
as "$ADMIN" audit verify
log "signed report: $WEB/reports/$REPORT_ID (log in with a judge's token)"

# --- 3. real frameworks streaming live -------------------------------------
# team-b trains its own reference and port: runs team-b/torch-*, team-b/paddle-*.
log "examples/bert_tiny as team-b: torch, paddle and paddle --break streaming to $REPROD_SERVER (~1 min)"
REPROD_TOKEN="$TEAM_B" "$ROOT/.venv/bin/python" "$ROOT/examples/bert_tiny/run_all.py" \
  --server "$REPROD_SERVER" --namespace team-b --reprodctl "$REPRODCTL" --out "$ROOT/out/bert_tiny"
log "bert_tiny reports: $ROOT/out/bert_tiny/{good,broken}.{md,json}"

if [ "${REPROD_KEEP_SERVING:-0}" = 1 ]; then
  log "REPROD_KEEP_SERVING=1: serving until Ctrl-C; open $WEB/reports/$REPORT_ID and log in" \
    "with the judge's token $JUDGE"
  wait "$SERVER_PID" || true
fi
log "signed report was: $WEB/reports/$REPORT_ID (REPROD_KEEP_SERVING=1 keeps the server up to open it)"
log "stopping reprodd with SIGTERM"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
server_rc=$?
SERVER_PID=""
tail -n 3 "$TMP/reprodd.log"
log "reprodd exit code $server_rc"
[ $server_rc -eq 0 ]

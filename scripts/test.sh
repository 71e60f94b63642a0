#!/usr/bin/env bash
# scripts/test.sh — the README's test command: set-up, build, then every test.
#   ctest (GoogleTest: unit + semantics), pytest (numpy / reprod_log oracles,
#   CLI), and each libFuzzer target for REPROD_FUZZ_SECONDS (default 30).
# Exit 0 only if all pass.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${REPROD_BUILD_DIR:-$ROOT/build}"
export REPROD_BUILD_DIR="$BUILD_DIR"
log() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }

"$ROOT/scripts/setup.sh"

status=0
log "ctest"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)") || status=1

log "pytest"
REPROD_BIN_DIR="$BUILD_DIR" "$ROOT/.venv/bin/python" -m pytest -q "$ROOT/tests/python" || status=1

log "fuzzers (${REPROD_FUZZ_SECONDS:-30}s each)"
"$ROOT/scripts/run-fuzzers.sh" "${REPROD_FUZZ_SECONDS:-30}" || status=1

if [ $status -eq 0 ]; then log "ALL TESTS PASSED"; else log "SOME TESTS FAILED"; fi
exit $status

#!/usr/bin/env bash
# scripts/test.sh — the README's test command: set-up, build, then every test.
#   ctest  (GoogleTest: unit, semantics, formats safety)
#   pytest (numpy float64 and reprod_log oracles, CLI behaviour)
#   fuzz   (each libFuzzer target for REPROD_FUZZ_SECONDS, default 30)
# Ends with one line "tests: N passed, M failed"; exit 0 only if all pass.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${REPROD_BUILD_DIR:-$ROOT/build}"
export REPROD_BUILD_DIR="$BUILD_DIR"
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
log() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }

"$ROOT/scripts/setup.sh"

passed=0
failed=0
skipped=0
count() {  # count NAME PASSED FAILED [SKIPPED]
  log "$1: $2 passed, $3 failed, ${4:-0} skipped"
  passed=$((passed + $2))
  failed=$((failed + $3))
  skipped=$((skipped + ${4:-0}))
}

log "ctest"
set +e
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)") 2>&1 | tee "$LOGS/ctest"
ctest_rc=${PIPESTATUS[0]}
set -e
line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$LOGS/ctest" | tail -1 || true)
if [ -n "$line" ]; then
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$line")
  # GPU tests skip visibly without a device; ctest counts them in "passed".
  skip=$(grep -cE "\(Skipped\)$" "$LOGS/ctest" || true)
  count ctest $((total - bad - skip)) "$bad" "$skip"
  if [ "$skip" -gt 0 ]; then
    log "skipped (no CUDA device here; run scripts/gpu-check.sh on a GPU machine):"
    grep -E "\(Skipped\)$" "$LOGS/ctest" >&2 || true
  fi
else
  count ctest 0 1
fi
[ "$ctest_rc" -eq 0 ] || [ -n "$line" ] || failed=$((failed + 1))

log "pytest"
set +e
REPROD_BIN_DIR="$BUILD_DIR" "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests/python" 2>&1 | tee "$LOGS/pytest"
pytest_rc=${PIPESTATUS[0]}
set -e
py_pass=$(grep -oE "[0-9]+ passed" "$LOGS/pytest" | tail -1 | cut -d' ' -f1 || true)
py_fail=$( (grep -oE "[0-9]+ (failed|error)" "$LOGS/pytest" || true) | awk '{s+=$1} END {print s+0}')
count pytest "${py_pass:-0}" "${py_fail:-0}"
if [ "$pytest_rc" -ne 0 ] && [ "${py_fail:-0}" -eq 0 ]; then failed=$((failed + 1)); fi

log "fuzzers (${REPROD_FUZZ_SECONDS:-30}s each)"
set +e
"$ROOT/scripts/run-fuzzers.sh" "${REPROD_FUZZ_SECONDS:-30}" 2>&1 | tee "$LOGS/fuzz"
fuzz_rc=${PIPESTATUS[0]}
set -e
fz_pass=$(grep -cE "result=ok$" "$LOGS/fuzz" || true)
fz_fail=$(grep -cE "result=FAILED" "$LOGS/fuzz" || true)
if [ "$fuzz_rc" -ne 0 ] && [ "$fz_fail" -eq 0 ]; then fz_fail=1; fi
count fuzz "$fz_pass" "$fz_fail"

echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]

#!/usr/bin/env bash
# scripts/test.sh — the README's test command: set-up, build, then every test.
#   ctest  (GoogleTest: unit, semantics, formats safety)
#   pytest (numpy float64 and reprod_log oracles, CLI behaviour), in .venv
#   pytest numpy 2 (the Python client suites, test_client_*.py, again in
#          .venv-np2: numpy 2.x, no torch or paddle; tests that need those
#          skip there with the reason shown, they ran in the pass before)
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

# run_pytest NAME PYTHON PYTEST_ARGS...: one pytest pass, counted from its
# summary line (a non-zero exit without failures, e.g. a collection error,
# counts as one failure).
run_pytest() {
  local name="$1" python="$2"
  shift 2
  log "$name"
  set +e
  REPROD_BIN_DIR="$BUILD_DIR" "$python" -m pytest -q -rs -p no:cacheprovider "$@" 2>&1 | tee "$LOGS/$name"
  local rc=${PIPESTATUS[0]}
  set -e
  local summary py_pass py_fail py_skip
  summary=$(grep -E "^=* ?[0-9]+ (passed|failed|error|skipped)" "$LOGS/$name" | tail -1 || true)
  py_pass=$(grep -oE "[0-9]+ passed" <<<"$summary" | cut -d' ' -f1 || true)
  py_fail=$( (grep -oE "[0-9]+ (failed|errors?)" <<<"$summary" || true) | awk '{s+=$1} END {print s+0}')
  py_skip=$(grep -oE "[0-9]+ skipped" <<<"$summary" | cut -d' ' -f1 || true)
  count "$name" "${py_pass:-0}" "${py_fail:-0}" "${py_skip:-0}"
  if [ "$rc" -ne 0 ] && [ "${py_fail:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
}

run_pytest pytest "$ROOT/.venv/bin/python" "$ROOT/tests/python"
# The client under numpy 2; torch and paddle are absent there by design.
REPROD_TEST_FRAMEWORKS=optional run_pytest "pytest-numpy2" "$ROOT/.venv-np2/bin/python" \
  "$ROOT"/tests/python/test_client_*.py

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

#!/usr/bin/env bash
# Builds the formats fuzzers (clang, libFuzzer + ASan + UBSan) and runs each
# for SECONDS (default 30) on a scratch copy of its seed corpus.
#
#   scripts/run-fuzzers.sh [SECONDS]
#
# Environment: BUILD_DIR (default build-fuzz), FUZZERS (default
# "npy pickle npz safetensors torch"), JOBS (ninja -j, default 2).
# Prints one summary line per fuzzer; exits non-zero when any fuzzer finds a
# crash, leak, timeout or out-of-memory (the reproducer is kept under
# $BUILD_DIR/fuzz-findings/<name>/).
set -euo pipefail

SECONDS_PER_FUZZER="${1:-30}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-fuzz}"
FUZZERS="${FUZZERS:-npy pickle npz safetensors torch}"
JOBS="${JOBS:-2}"

if ! command -v clang++ >/dev/null; then
  echo "run-fuzzers: clang++ not found (apt-get install clang libclang-rt-dev)" >&2
  exit 2
fi

if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  mkdir -p "$BUILD_DIR"
  CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja \
    -DREPROD_ENABLE_CUDA=OFF -DREPROD_BUILD_FUZZERS=ON -DREPROD_ENABLE_ASAN=ON \
    -DREPROD_BUILD_BENCHMARKS=OFF -DREPROD_BUILD_TESTS=ON >"$BUILD_DIR/configure.log" 2>&1 || {
      cat "$BUILD_DIR/configure.log" >&2
      exit 2
    }
fi
targets=()
for f in $FUZZERS; do targets+=("${f}_fuzzer"); done
ninja -C "$BUILD_DIR" -j"$JOBS" "${targets[@]}" >/dev/null

status=0
for f in $FUZZERS; do
  work="$BUILD_DIR/fuzz-work/$f"
  findings="$BUILD_DIR/fuzz-findings/$f"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$findings"
  cp "$ROOT/tests/fuzz/corpus/$f/"* "$work/corpus/"
  dict=()
  [[ -f "$ROOT/tests/fuzz/$f.dict" ]] && dict=(-dict="$ROOT/tests/fuzz/$f.dict")
  log="$work/fuzz.log"
  set +e
  "$BUILD_DIR/tests/fuzz/${f}_fuzzer" "$work/corpus" "${dict[@]}" \
    -max_total_time="$SECONDS_PER_FUZZER" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$findings/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [[ $rc -eq 0 ]]; then
    result=ok
  else
    result="FAILED (exit $rc; see $log and $findings/)"
    status=1
    grep -m1 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY" "$log" >&2 || true
  fi
  printf '%-12s execs=%-10s execs/s=%-8s result=%s\n' "$f" "${execs:-?}" "${rate:-?}" "$result"
done
exit $status

#!/usr/bin/env bash
# scripts/gpu-check.sh — build the CUDA backend's GPU tests here, run them on
# the lent GPU machine.
#
#   scripts/gpu-check.sh --build   (on the dev machine: nvcc, no GPU needed)
#     Configures build-gpu/ (Release, -DREPROD_ENABLE_CUDA=ON, nvcc from
#     /usr/local/cuda or $CUDACXX), builds only the GPU test binaries
#     (cuda_backend_test, cuda_fused_kernel_test) and reprod_cuda_bench
#     (GoogleTest is Debian's static libgtest.a, the CUDA runtime is
#     cudart_static), then makes a
#     self-contained bundle:
#       build-gpu/bundle/bin/{cuda_backend_test,cuda_fused_kernel_test,
#                              reprod_cuda_bench}
#       build-gpu/bundle/lib/*.so*   every shared library ldd resolves except
#                                    the C runtime (absl, spdlog, fmt; the
#                                    GPU machine has none of our Debian
#                                    packages)
#       build-gpu/bundle/lib-cxx/    Debian's libstdc++ (needs glibc >= 2.36;
#                                    --run uses it only on such a glibc)
#     and prints the ldd list, what is bundled and the bundle size (the run
#     tool carries at most 64 MiB: carry "build-gpu/bundle" only).
#
#   scripts/gpu-check.sh --run     (on the GPU machine, from the repo root)
#     Uses the carried build-gpu/bundle (or $REPROD_GPU_BUNDLE): runs the GPU
#     tests (cuda_backend_test twice: the segmented kernel, then with
#     REPROD_CUDA_KERNEL=fused the fused kernel; cuda_fused_kernel_test),
#     then compute-sanitizer memcheck and racecheck on the small tests,
#     and prints a one-screen summary (device from nvidia-smi, tests passed /
#     failed / skipped per step) and the reprod_cuda_bench table (skip it with
#     REPROD_GPU_BENCH=0; REPROD_GPU_BENCH_ARGS=--quick for small sizes).
#     Logs go to $OUT/gpu-check/ when $OUT is set.
#     Exit 0 only when every step passed and no test was skipped.
#
# Example with the run tool: carry ["build-gpu/bundle"], command
#   "scripts/gpu-check.sh --run".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${REPROD_GPU_BUILD_DIR:-$ROOT/build-gpu}"
BUNDLE="${REPROD_GPU_BUNDLE:-$BUILD_DIR/bundle}"
NVCC="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
TESTS=(cuda_backend_test cuda_fused_kernel_test)
# Test runs: binary|REPROD_CUDA_KERNEL. The whole backend suite runs once
# with the verified segmented kernel and once with the fused kernel.
RUNS=("cuda_backend_test|" "cuda_backend_test|fused" "cuda_fused_kernel_test|")
BENCH=reprod_cuda_bench
log() { printf '\033[1m[gpu-check]\033[0m %s\n' "$*" >&2; }

build() {
  [[ -x "$NVCC" ]] || { log "nvcc not found at $NVCC (set CUDACXX)"; exit 2; }
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DREPROD_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DREPROD_BUILD_TESTS=ON -DREPROD_BUILD_BENCHMARKS=ON -DREPROD_BUILD_FUZZERS=OFF >/dev/null
  ninja -C "$BUILD_DIR" -j"${REPROD_JOBS:-2}" "${TESTS[@]}" "$BENCH"
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
  for t in "${TESTS[@]}" "$BENCH"; do
    bin="$(find "$BUILD_DIR" -type f -name "$t" -perm -u+x | head -1)"
    [[ -n "$bin" ]] || { log "built binary $t not found"; exit 1; }
    cp "$bin" "$BUNDLE/bin/"
    log "ldd $t:"
    ldd "$bin" | sed 's/^/    /' >&2
    # Bundle everything but the C runtime, which every Linux machine has.
    ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
      case "$(basename "$lib")" in
        libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|ld-linux*|libgcc_s.so.*) ;;
        # Debian 12's libstdc++ needs glibc 2.36; --run uses it only there.
        libstdc++.so.*) mkdir -p "$BUNDLE/lib-cxx"; cp -L "$lib" "$BUNDLE/lib-cxx/" ;;
        *) cp -L "$lib" "$BUNDLE/lib/" ;;
      esac
    done
    if ldd "$bin" | grep -q 'libcudart'; then
      log "WARNING: $t links libcudart dynamically; expected cudart_static"
    fi
  done
  log "bundled: $(ls "$BUNDLE/lib" "$BUNDLE/lib-cxx" | tr '\n' ' ')"
  log "bundle size: $(du -sh "$BUNDLE" | cut -f1) (carry limit 64 MiB) at ${BUNDLE#$ROOT/}"
}

# Runs one gtest command; prints "passed failed skipped" from its log.
gtest_counts() {  # LOG
  local p f s
  p="$(grep -Eo '^\[  PASSED  \] [0-9]+' "$1" | grep -Eo '[0-9]+' | tail -1 || true)"
  f="$(grep -Eo '^\[  FAILED  \] [0-9]+ test' "$1" | grep -Eo '[0-9]+' | tail -1 || true)"
  s="$(grep -Eo '^\[  SKIPPED \] [0-9]+ test' "$1" | grep -Eo '[0-9]+' | tail -1 || true)"
  echo "${p:-0} ${f:-0} ${s:-0}"
}

run() {
  [[ -d "$BUNDLE/bin" ]] || { log "no bundle at $BUNDLE: run --build first and carry it"; exit 2; }
  local logs="${OUT:-$BUILD_DIR}/gpu-check"
  mkdir -p "$logs"
  # The bundled libstdc++ (GCC 12, GLIBCXX_3.4.30) needs glibc >= 2.36;
  # on an older glibc use the system one (Ubuntu 22.04's is also GCC 12).
  local glibc cxx_note="bundled libstdc++"
  glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
  local libpath="$BUNDLE/lib"
  if [[ -n "$glibc" ]] && printf '2.36\n%s\n' "$glibc" | sort -V -C; then
    libpath="$BUNDLE/lib-cxx:$libpath"
  else
    cxx_note="system libstdc++ (glibc ${glibc:-unknown} < 2.36)"
  fi
  export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local sanitizer=""
  for c in compute-sanitizer /usr/local/cuda/bin/compute-sanitizer \
           /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if command -v "$c" >/dev/null 2>&1; then sanitizer="$(command -v "$c")"; break; fi
  done
  local device
  if command -v nvidia-smi >/dev/null 2>&1; then
    device="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1 || true)"
  else
    device="no nvidia-smi on this machine"
  fi
  local summary=() ok=1
  # Sanitizers are slow: small tests only.
  local small='-*HugePairBeyondInt32:*ChunkedPipelinedEqualsOneShot:*MaxTiesAcrossBlocksAndPieces'
  for entry in "${RUNS[@]}"; do
    local t="${entry%%|*}" kernel="${entry#*|}"
    local bin="$BUNDLE/bin/$t" rc counts
    export REPROD_CUDA_KERNEL="$kernel"
    [[ -n "$kernel" ]] && t="$t[$kernel]"
    set +e
    "$bin" --gtest_color=no >"$logs/$t.log" 2>&1; rc=$?
    set -e
    counts=($(gtest_counts "$logs/$t.log"))
    summary+=("$(printf '%-34s rc=%-3s passed=%-4s failed=%-4s skipped=%s' "$t" "$rc" "${counts[@]}")")
    [[ $rc -eq 0 && ${counts[1]} -eq 0 && ${counts[2]} -eq 0 ]] || ok=0
    if [[ -n "$sanitizer" ]]; then
      for tool in memcheck racecheck; do
        local extra=()
        [[ $tool == memcheck ]] && extra=(--leak-check full)
        set +e
        "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
          "$bin" --gtest_color=no --gtest_filter="$small" >"$logs/$t.$tool.log" 2>&1; rc=$?
        set -e
        counts=($(gtest_counts "$logs/$t.$tool.log"))
        local errs
        # memcheck ends with "ERROR SUMMARY: N errors", racecheck with
        # "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)".
        errs="$(grep -Eo '(ERROR SUMMARY: [0-9]+|RACECHECK SUMMARY: [0-9]+ hazards)' "$logs/$t.$tool.log" | tail -1 || true)"
        summary+=("$(printf '%-34s rc=%-3s passed=%-4s failed=%-4s skipped=%-4s %s' \
          "$t ($tool)" "$rc" "${counts[@]}" "${errs:-no summary}")")
        [[ $rc -eq 0 ]] || ok=0
      done
    else
      summary+=("compute-sanitizer not found: memcheck/racecheck not run")
      ok=0
    fi
  done
  unset REPROD_CUDA_KERNEL
  if [[ -x "$BUNDLE/bin/$BENCH" && "${REPROD_GPU_BENCH:-1}" != 0 ]]; then
    set +e
    "$BUNDLE/bin/$BENCH" ${REPROD_GPU_BENCH_ARGS:-} >"$logs/$BENCH.log" 2>&1 || ok=0
    set -e
  fi
  echo "================ gpu-check summary ================"
  echo "device : ${device:-unknown (nvidia-smi failed)}"
  echo "bundle : ${BUNDLE#$ROOT/} ($cxx_note)"
  printf '%s\n' "${summary[@]}"
  if [[ -f "$logs/$BENCH.log" ]]; then
    echo "bench ($BENCH: host data incl. transfers, then the fused kernel device-resident):"
    sed 's/^/  /' "$logs/$BENCH.log" | head -100
  fi
  echo "logs   : $logs"
  if [[ $ok -eq 1 ]]; then echo "RESULT : PASS"; else echo "RESULT : FAIL"; fi
  echo "==================================================="
  # Failures in detail (first few lines of each failing test).
  for f in "$logs"/*.log; do
    if grep -q '^\[  FAILED  \]' "$f"; then
      echo "--- $(basename "$f"): failures"
      grep -B12 '^\[  FAILED  \] [A-Z]' "$f" | head -60
    fi
  done
  [[ $ok -eq 1 ]]
}

case "${1:-}" in
  --build) build ;;
  --run) run ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac

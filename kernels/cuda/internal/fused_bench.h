// File: kernels/cuda/internal/fused_bench.h
//
// Benchmark hook for the fused kernel on device-resident data
// (bench/cuda_diff_bench.cc only; issue [G] item 6). One call generates a
// realistic pair on the device, times the fused kernel on it next to the
// device's ceilings measured on the same bytes, and can hand the data back
// for a correctness gate against the cpu backend. Plain C++ header;
// implemented in fused_bench.cu.
//
// Data (float64 arithmetic, then rounded to each side's dtype):
//   ref  = 0.02 * N(0, 1), exactly 0 for 0.1 % of the pairs;
//   cand = ref * (1 + 1e-6 * N(0, 1)), and exactly ref for 5 % of the pairs;
//   with `nonfinite`, about one pair in 10^5 gets a NaN or ±Inf on one side.
#ifndef REPROD_KERNELS_CUDA_INTERNAL_FUSED_BENCH_H_
#define REPROD_KERNELS_CUDA_INTERNAL_FUSED_BENCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels::internal {

struct FusedBenchCase {
  DType ref = DType::kFloat32;
  DType cand = DType::kFloat32;
  uint64_t elements = uint64_t{1} << 24;  // pairs
  uint64_t pairs = 1;    // > 1: that many pairs of `elements` in one batched launch
  bool nonfinite = false;
  bool copy_back = false;  // fill host_ref / host_cand for a cpu gate
  int repeats = 10;
};

struct FusedBenchResult {
  // Medians over the repeats, in milliseconds.
  double fused_ms = 0;      // the fused launch (reduce + in-launch merge)
  double d2d_ms = 0;        // cudaMemcpyDeviceToDevice of both sides
  double read_sum_ms = 0;   // a read-only 16-byte-load sum kernel over both sides
  double bytes = 0;         // bytes the kernel reads (both sides)
  std::vector<DiffStats> stats;  // per pair
  bool rerun_identical = false;  // a second launch gave the same bytes
  // When copy_back: pair p's sides start at p * ref_stride / p * cand_stride.
  std::vector<unsigned char> host_ref, host_cand;
  size_t ref_stride = 0, cand_stride = 0;
};

// Device 0. Internal on any CUDA error.
absl::StatusOr<FusedBenchResult> RunFusedBench(const FusedBenchCase& c);

}  // namespace reprod::kernels::internal

#endif  // REPROD_KERNELS_CUDA_INTERNAL_FUSED_BENCH_H_

// File: kernels/cuda/internal/fused_launch.h
//
// Host side of the fused reduction kernel (fused_reduce.cuh): one launch
// over segments that share a dtype pair and a layout. Used by
// cuda_backend.cu; compiled by nvcc only.
//
//   FusedLaunch launch{...};          // device segments sorted by first_block
//   REPROD_RETURN_IF_ERROR(LaunchFused(launch, stream));
//
// The caller provides device memory for one DiffStats partial per logical
// block (FusedNumBlocks summed over the segments), one ticket per segment
// (zeroed here with cudaMemsetAsync before the launch) and one DiffStats per
// segment for the results.
#ifndef REPROD_KERNELS_CUDA_INTERNAL_FUSED_LAUNCH_H_
#define REPROD_KERNELS_CUDA_INTERNAL_FUSED_LAUNCH_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "kernels/cuda/internal/fused_reduce.cuh"
#include "kernels/diff_stats.h"

namespace reprod::kernels::internal {

struct FusedLaunch {
  const FusedSegment* segments = nullptr;  // device, sorted by first_block
  int num_segments = 0;
  uint32_t total_blocks = 0;  // sum of the segments' num_blocks
  DType ref_dtype = DType::kFloat32;
  DType cand_dtype = DType::kFloat32;
  bool transposed = false;
  DiffStats* partials = nullptr;   // device, total_blocks
  unsigned int* tickets = nullptr; // device, num_segments
  DiffStats* out = nullptr;        // device, num_segments
  // CTAs of the persistent grid; 0 = as many as fit the device at once.
  // Results do not depend on it (tests force 1, 7 and full).
  int grid = 0;
};

// True when (ref, cand) has a templated fast kernel for this layout
// (float64/float32/bfloat16/float16 pairs element-wise; equal float dtypes
// transposed); other pairs run the generic instantiation.
bool FusedHasFastKernel(DType ref, DType cand, bool transposed);

// Enqueues the ticket reset and the kernel on `stream`. Internal on a CUDA
// error.
absl::Status LaunchFused(const FusedLaunch& launch, cudaStream_t stream);

}  // namespace reprod::kernels::internal

#endif  // REPROD_KERNELS_CUDA_INTERNAL_FUSED_LAUNCH_H_

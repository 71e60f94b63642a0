// File: kernels/cuda/fused_launch.cu
//
// Instantiations of the fused reduction kernel and their dispatch by dtype
// pair (see internal/fused_launch.h).
#include "kernels/cuda/internal/fused_launch.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "kernels/cuda/internal/cuda_status.h"
#include "kernels/cuda/internal/fused_reduce.cuh"

namespace reprod::kernels::internal {
namespace {

using Kernel = void (*)(const FusedSegment*, int, uint32_t, DiffStats*, unsigned int*,
                        DiffStats*);

// Index of a floating dtype among the templated ones, or -1.
int FloatIndex(DType d) {
  switch (d) {
    case DType::kFloat64: return 0;
    case DType::kFloat32: return 1;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 3;
    default: return -1;
  }
}

template <typename R>
Kernel FlatFor(int cand) {
  switch (cand) {
    case 0: return FusedReduceKernel<R, double, false>;
    case 1: return FusedReduceKernel<R, float, false>;
    case 2: return FusedReduceKernel<R, BFloat16Tag, false>;
    default: return FusedReduceKernel<R, Float16Tag, false>;
  }
}

Kernel Select(DType ref, DType cand, bool transposed) {
  const int r = FloatIndex(ref), c = FloatIndex(cand);
  if (!transposed) {
    if (r < 0 || c < 0) return FusedReduceKernel<GenericElement, GenericElement, false>;
    switch (r) {
      case 0: return FlatFor<double>(c);
      case 1: return FlatFor<float>(c);
      case 2: return FlatFor<BFloat16Tag>(c);
      default: return FlatFor<Float16Tag>(c);
    }
  }
  if (r < 0 || r != c) return FusedReduceKernel<GenericElement, GenericElement, true>;
  switch (r) {
    case 0: return FusedReduceKernel<double, double, true>;
    case 1: return FusedReduceKernel<float, float, true>;
    case 2: return FusedReduceKernel<BFloat16Tag, BFloat16Tag, true>;
    default: return FusedReduceKernel<Float16Tag, Float16Tag, true>;
  }
}

}  // namespace

bool FusedHasFastKernel(DType ref, DType cand, bool transposed) {
  const int r = FloatIndex(ref), c = FloatIndex(cand);
  return r >= 0 && c >= 0 && (!transposed || r == c);
}

absl::Status LaunchFused(const FusedLaunch& launch, cudaStream_t stream) {
  if (launch.num_segments == 0 || launch.total_blocks == 0) return absl::OkStatus();
  const Kernel kernel = Select(launch.ref_dtype, launch.cand_dtype, launch.transposed);
  // The threads' DiffMoments live in dynamic shared memory (above the 48 KiB
  // a launch gets without asking).
  REPROD_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kFusedDynamicShared)));
  int grid = launch.grid;
  if (grid <= 0) {
    int device = 0, sms = 0, per_sm = 0;
    REPROD_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    REPROD_CUDA_RETURN_IF_ERROR(
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    REPROD_CUDA_RETURN_IF_ERROR(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kFusedThreads,
                                                      kFusedDynamicShared));
    grid = std::max(1, sms * std::max(1, per_sm));
  }
  grid = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(grid), launch.total_blocks));
  REPROD_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      launch.tickets, 0, sizeof(unsigned int) * static_cast<size_t>(launch.num_segments),
      stream));
  kernel<<<grid, kFusedThreads, kFusedDynamicShared, stream>>>(launch.segments, launch.num_segments,
                                            launch.total_blocks, launch.partials,
                                            launch.tickets, launch.out);
  REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());
  return absl::OkStatus();
}

}  // namespace reprod::kernels::internal

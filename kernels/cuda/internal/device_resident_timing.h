// File: kernels/cuda/internal/device_resident_timing.h
//
// Measurement hook (bench/cuda_diff_bench.cc, and --backend auto's start-up
// calibration log line): times the reduction kernels on one float32 pair
// that already lives in device memory — no host staging, no transfers —
// next to a device-to-device cudaMemcpy and a pinned host-to-device copy of
// the same bytes, so the kernel can be judged against the device's memory
// bandwidth and the transfer it needs for host-resident data.
// Plain C++ header; implemented in cuda_backend.cu, where the kernels live.
#ifndef REPROD_KERNELS_CUDA_INTERNAL_DEVICE_RESIDENT_TIMING_H_
#define REPROD_KERNELS_CUDA_INTERNAL_DEVICE_RESIDENT_TIMING_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace reprod::kernels::internal {

struct DeviceResidentTiming {
  // Median over the repeats, in milliseconds.
  double kernel_ms = 0;  // reduce + merge launches for the whole pair
  double d2d_ms = 0;     // cudaMemcpyDeviceToDevice of both sides' bytes
  double h2d_ms = 0;     // cudaMemcpyHostToDevice of both sides' bytes from pinned memory
  // Bytes the kernel reads (both sides).
  double bytes = 0;
  // Same statistic the backend returns, to prove the work was done.
  uint64_t count = 0;
};

// `elements` float32 values per side (filled on the device with a fixed
// pattern), cut into pieces of `chunk_elements` (the backend itself also caps
// a piece at what fits one 64 MiB round, so its float32 pieces are smaller).
// Device 0. Internal on any CUDA error.
absl::StatusOr<DeviceResidentTiming> TimeDeviceResidentPair(uint64_t elements,
                                                            int64_t chunk_elements,
                                                            int repeats);

}  // namespace reprod::kernels::internal

#endif  // REPROD_KERNELS_CUDA_INTERNAL_DEVICE_RESIDENT_TIMING_H_

// File: kernels/cuda/internal/cuda_status.h
//
// cudaError_t -> absl::Status at the one edge where CUDA errors enter the
// project: each foreign error type is converted at one edge, so the rest
// of the code sees only absl::Status. nvcc-only.
//
//   REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));
//   kernel<<<g, b, 0, s>>>(...);
//   REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());
//
// Thread-safety: pure functions.
#ifndef REPROD_KERNELS_CUDA_INTERNAL_CUDA_STATUS_H_
#define REPROD_KERNELS_CUDA_INTERNAL_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace reprod::kernels::cuda_internal {

// Internal("file:line: expr: cudaErrorName: description").
inline absl::Status CudaErrorToStatus(cudaError_t err, const char* expr, const char* file,
                                      int line) {
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", expr, ": ",
                                          cudaGetErrorName(err), ": ",
                                          cudaGetErrorString(err)));
}

}  // namespace reprod::kernels::cuda_internal

// Evaluates a cudaError_t expression once; returns Internal with file:line
// from the enclosing function when it is not cudaSuccess.
#define REPROD_CUDA_RETURN_IF_ERROR(expr)                                              \
  do {                                                                                 \
    const cudaError_t reprod_cuda_err_ = (expr);                                       \
    if (reprod_cuda_err_ != cudaSuccess) {                                             \
      return ::reprod::kernels::cuda_internal::CudaErrorToStatus(reprod_cuda_err_, #expr, \
                                                                 __FILE__, __LINE__);  \
    }                                                                                  \
  } while (0)

#endif  // REPROD_KERNELS_CUDA_INTERNAL_CUDA_STATUS_H_

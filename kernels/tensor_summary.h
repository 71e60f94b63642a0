// File: kernels/tensor_summary.h
//
// Summarize: one-tensor statistics for `reprodctl inspect` (count, NaN and
// ±Inf counts, min / max / mean over the finite values), in one pass over the
// bytes, multithreaded for large tensors on the cpu backend's pool.
//
//   absl::StatusOr<TensorSummary> s = Summarize(tensor.view());
//   if (s.ok()) printf("mean %g over %llu finite values\n", s->mean, s->finite);
//
// Values are converted to double first (exactly, except int64 beyond 2^53,
// which rounds as numpy's astype(float64) does); bool bytes other than 0 are
// 1. Integer tensors have no NaN/Inf, so every element is finite.
//
// Determinism: counts, min and max are exact; the mean is a double sum of
// per-block sums combined in a fixed order (chunking depends only on the
// element count), so it is bit-for-bit reproducible and within rounding of
// the exact mean.
//
// Thread-safety: Summarize may be called concurrently.
#ifndef REPROD_KERNELS_TENSOR_SUMMARY_H_
#define REPROD_KERNELS_TENSOR_SUMMARY_H_

#include <cstdint>
#include <limits>

#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "kernels/cpu/thread_pool.h"

namespace reprod::kernels {

struct TensorSummary {
  uint64_t count = 0;          // elements
  uint64_t finite = 0;         // finite elements (those min/max/mean cover)
  uint64_t nan_count = 0;      // NaN elements
  uint64_t inf_count = 0;      // +Inf and -Inf elements
  uint64_t neg_inf_count = 0;  // -Inf elements (included in inf_count)
  // Over the finite values; NaN when there is none (empty tensor, all NaN).
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
  double mean = std::numeric_limits<double>::quiet_NaN();
};

// Summarizes `tensor`. InvalidArgument for an invalid dtype or shape, or a
// view without data but with elements. `pool` = nullptr uses
// DefaultThreadPool(); tensors of at most one chunk (2^18 elements) are
// summarized on the calling thread.
absl::StatusOr<TensorSummary> Summarize(const TensorView& tensor,
                                        ThreadPool* pool = nullptr);

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_TENSOR_SUMMARY_H_

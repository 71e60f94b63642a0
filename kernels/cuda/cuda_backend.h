// File: kernels/cuda/cuda_backend.h
//
// CudaBackend: the Backend that reduces tensor pairs on an NVIDIA GPU
// (docs/design.md §Backends). Plain C++ header (no CUDA types), so host code that
// is not compiled by nvcc can include it; only built when REPROD_HAVE_CUDA.
//
//   absl::StatusOr<std::unique_ptr<Backend>> backend = CreateCudaBackend();
//   if (!backend.ok()) { /* no driver / no device: use the cpu backend */ }
//   absl::StatusOr<DiffStats> stats = (*backend)->Compare(task);
//
// How a call runs: every task is cut into pieces of at most
// CudaBackendOptions::chunk_elements elements (whole ref rows for a
// transposed pair), and consecutive pieces are packed into "rounds" of at
// most min(half the device budget, 64 MiB) of data. A round is packed on the host into a pinned buffer
// (descriptor table + data), copied to the device with one copy, and reduced
// by one segmented launch (each block works on one piece; thread-local
// DiffStats::Add, cub::BlockReduce with DiffStats::Merge, one partial per
// block) plus one tiny launch that merges each piece's partials in block
// order. Rounds alternate between two slots (pinned buffer, device buffer,
// stream), so the copy of round k+1 overlaps the reduction of round k. The
// host merges piece results into each task's DiffStats in piece order.
// Small pairs of a CompareBatch therefore share one launch; large pairs are
// streamed chunk by chunk.
//
// Windows (kernels/chunk_grid.h): a piece's sum rounding depends on its
// length (its blocks and per-thread strides), and a pair's pieces are merged
// one after the other, so windows reproduce Compare on the whole pair bit
// for bit only when every window is exactly one piece: a budget of at least
// one piece (min(chunk_elements, what fits one slot for the pair's element
// sizes), ~8M float32 pairs with the default options) gets such windows
// (`exact`). A smaller budget (the stored compare's default 16 MiB windows
// are 4M float32 elements) gets windows of the budget, whose sums agree with
// the whole pair's to the documented ~1e-12 relative, like any other
// grouping; counts, extrema, indices and histogram are exact regardless.
// The per-piece block split is to be replaced by fixed logical blocks; then
// windows on that block grid can be exact at any size.
//
// Data: TensorView data must be host memory (any alignment). Every dtype of
// common/dtype.h, mixed dtypes by value, float16/bfloat16 decoded exactly.
//
// Determinism: the pieces and the blocks per piece depend only on the task
// shapes/dtypes and on the options (never on the device or timing), and
// every merge happens in a fixed order, so results are bit-for-bit identical
// run to run for given options on a given GPU architecture. Counts, max/min
// (value and index), max r and the histogram equal the cpu backend exactly;
// sums agree with it to ~1e-12 relative (different grouping of additions).
// Device code is compiled with --fmad=false, so every term is rounded as on
// the host.
//
// Errors: CUDA faults become Internal ("file:line: expr: cudaError ...");
// invalid tasks are InvalidArgument exactly as for the cpu backend.
//
// Thread-safety: Compare and CompareBatch may be called concurrently; calls
// are serialised on one internal mutex (they share the device buffers).
#ifndef REPROD_KERNELS_CUDA_CUDA_BACKEND_H_
#define REPROD_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {

enum class CudaKernel { kSegmented, kFused };

struct CudaBackendOptions {
  // CUDA device ordinal.
  int device = 0;
  // Device (and pinned host) memory for tensor data, split over the two
  // pipeline slots; buffers grow lazily up to this. Must be >= 4 MiB.
  size_t device_budget_bytes = size_t{1} << 30;
  // Largest piece of one pair reduced by one launch (elements, in ref's
  // layout). Part of the determinism contract: changing it changes the
  // rounding of sums. Must be >= 1.
  int64_t chunk_elements = int64_t{1} << 24;
  // Which reduction kernel runs a round: kSegmented (verified on an H100,
  // bench/results/gpu-2026-11-27.md) or kFused (kernels/cuda/internal/
  // fused_reduce.cuh: persistent grid over fixed logical blocks, in-launch
  // merge; compiled but not yet run on a GPU, so not the default). The
  // environment variable REPROD_CUDA_KERNEL=fused selects kFused for every
  // backend created without asking for it (scripts/gpu-check.sh runs the
  // whole GPU test suite that way).
  CudaKernel kernel = CudaKernel::kSegmented;
  // kFused: CTAs of its persistent grid, 0 = as many as fit the device.
  // Results are bit-identical for any value (tests force 1 and 7).
  int fused_grid = 0;
  // Device memory for resident refs (`reprodd --gpu-cache-bytes`; 0 = off),
  // on top of device_budget_bytes. A task with a DiffTask::ref_key whose
  // ref fits (kernels/resident_lru.h: LRU, reference runs evicted only for
  // other references) leaves its ref on the device after the compare; a
  // later task with the same key uploads only cand. Results are the same
  // bits as without the cache.
  size_t resident_bytes = 0;
};

class CudaBackend final : public Backend {
 public:
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string_view name() const override { return "cuda"; }

  // See Backend::Compare.
  absl::StatusOr<DiffStats> Compare(const DiffTask& task) override;

  // See Backend::CompareBatch. InvalidArgument when out.size() !=
  // tasks.size() or a task is invalid ("task 17: ..."); Internal on a CUDA
  // fault. `out` is unspecified after an error.
  absl::Status CompareBatch(absl::Span<const DiffTask> tasks,
                            absl::Span<DiffStats> out) override;

  // Windows (kernels/chunk_grid.h; see "Windows" above). Element-wise: the
  // whole pair when it fits the budget; else exactly one piece per window
  // when a piece fits the budget (exact); else windows of the budget (not
  // exact).
  FlatWindowPlan PlanFlatWindows(DType ref_dtype, DType cand_dtype, int64_t elements,
                                 int64_t max_window_elements) const override;
  // Transposed (m, n): whole rows when n fits the budget: all m when they
  // fit; else one piece's rows per window when they fit (exact); else
  // budget / n rows (not exact). A row wider than the budget: SquarishTiles
  // (not exact).
  TransposedWindowPlan PlanTransposedWindows(DType ref_dtype, DType cand_dtype, int64_t m,
                                             int64_t n, int64_t max_window_elements) const override;
  // SequentialMerge: the order Compare merges a pair's pieces in.
  DiffStats MergeWindows(absl::Span<const DiffStats> windows) const override;

  // Resident refs (CudaBackendOptions::resident_bytes; Backend has the
  // contract).
  std::shared_ptr<const void> HoldResidentRef(std::string_view key) override;
  ResidentStats resident_stats() const override;

  const CudaBackendOptions& options() const;

  struct Impl;  // defined in cuda_backend.cu

 private:
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  friend absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
      const CudaBackendOptions& options);

  std::unique_ptr<Impl> impl_;
};

// Creates the CUDA backend on options.device. FailedPrecondition when there
// is no usable driver or no device (cudaGetDeviceCount fails or returns 0) or
// the options are invalid; Unavailable when the device exists but cannot be
// set up (context creation, stream or buffer allocation). Never crashes and
// leaves no sticky CUDA error behind that it can clear.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const CudaBackendOptions& options = CudaBackendOptions());

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_CUDA_CUDA_BACKEND_H_

// File: kernels/cpu/cpu_backend.h
//
// CpuBackend: the Backend that runs on the host's cores. Every pair is
// reduced in one fused pass straight from the tensors' bytes (no
// temporaries), vectorised for the best instruction set the CPU has
// (internal/diff_kernel.h), and spread over a persistent thread pool:
//
//   - a large pair is cut into fixed-size chunks (kChunkElements elements,
//     or whole row tiles of a transposed pair) reduced in parallel and
//     merged with DiffStats::Merge in a fixed pairwise-tree order;
//   - CompareBatch puts all pairs of a batch into one fork-join: small pairs
//     are grouped into work items of about kChunkElements elements, large
//     ones contribute one item per chunk;
//   - a pair of at most one chunk runs on the calling thread (no hand-off),
//     so Compare on a small pair costs microseconds.
//
//   CpuBackend backend;                       // all cores
//   DiffTask task{ref.view(), cand.view()};
//   absl::StatusOr<DiffStats> stats = backend.Compare(task);
//
// Windows: a caller feeding a large pair in windows (kernels/chunk_grid.h)
// gets windows that are whole subtrees of this chunk grid's merge tree
// whenever its budget holds at least one chunk (PlanFlatWindows /
// PlanTransposedWindows say `exact`), and MergeWindows merges them in the
// same tree, so the windows give Compare's result on the whole pair bit for
// bit.
//
// Determinism: chunk boundaries depend only on the tensor's shape (never on
// the thread count or on scheduling), and partials are merged in a fixed
// order, so results are bit-for-bit identical run to run and for any
// `threads` on a given machine (i.e. a given kernel instruction set; across
// instruction sets only the rounding of sums differs). Counts, max/min (value and index), max r
// and the histogram are exact (see diff_stats.h); sums differ from an exact
// sum only by the rounding of a well-conditioned blocked/tree summation.
//
// Data: TensorView bytes are read with unaligned loads (memcpy semantics),
// so views into a pickle or an .npz member at any byte offset are fine.
// bool bytes other than 0 count as true.
//
// Thread-safety: Compare and CompareBatch may be called concurrently from
// several threads; they share the pool.
#ifndef REPROD_KERNELS_CPU_CPU_BACKEND_H_
#define REPROD_KERNELS_CPU_CPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {

class CpuBackend final : public Backend {
 public:
  // Elements per parallel chunk of an element-wise pair (1 MiB of float32
  // per side). Part of the determinism contract above: changing it changes
  // the rounding of sums.
  static constexpr int64_t kChunkElements = int64_t{1} << 18;

  // `threads` = 0: share the process-wide DefaultThreadPool() (all hardware
  // threads). Otherwise a private pool of that many threads (1 = run
  // everything on the calling thread).
  explicit CpuBackend(int threads = 0);

  std::string_view name() const override { return "cpu"; }

  // See Backend::Compare. InvalidArgument for an invalid task (see
  // ValidateDiffTask); the message names both shapes and dtypes.
  absl::StatusOr<DiffStats> Compare(const DiffTask& task) override;

  // See Backend::CompareBatch. InvalidArgument when out.size() !=
  // tasks.size() or a task is invalid ("task 17: ..."); `out` is then left
  // unspecified. Otherwise out[i] == Compare(tasks[i]) exactly.
  absl::Status CompareBatch(absl::Span<const DiffTask> tasks,
                            absl::Span<DiffStats> out) override;

  // Windows on the chunk grid (kernels/chunk_grid.h, "Windows" above).
  // Element-wise: the whole pair when it fits the budget; else
  // kChunkElements * 2^k elements, the largest such <= the budget (exact);
  // a budget below one chunk gives windows of the budget (not exact).
  FlatWindowPlan PlanFlatWindows(DType ref_dtype, DType cand_dtype, int64_t elements,
                                 int64_t max_window_elements) const override;
  // Transposed (m, n): whole rows when n fits the budget: all m rows when
  // they fit; else R * 2^k rows, R = the transposed chunk's rows for this n,
  // the largest such <= budget / n (exact); fewer than R rows fit: budget /
  // n rows (not exact). A row wider than the budget: SquarishTiles (not
  // exact).
  TransposedWindowPlan PlanTransposedWindows(DType ref_dtype, DType cand_dtype, int64_t m,
                                             int64_t n, int64_t max_window_elements) const override;
  // PairwiseTreeMerge: the tree Compare merges its chunks with.
  DiffStats MergeWindows(absl::Span<const DiffStats> windows) const override;

  // Degree of parallelism of the pool in use.
  int num_threads() const { return pool_->num_threads(); }

 private:
  std::unique_ptr<ThreadPool> owned_pool_;  // null when sharing the default
  ThreadPool* pool_;
};

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_CPU_CPU_BACKEND_H_

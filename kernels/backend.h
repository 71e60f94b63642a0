// File: kernels/backend.h
//
// Backend: reduces tensor pairs (or chunks of them) to DiffStats. Implemented
// by cpu/ (all cores, one fused pass, no temporaries) and, when built with
// nvcc, cuda/. Backends must agree as docs/design.md §Diff semantics says:
// exactly on counts, max/min, indices and histogram; to 1e-12 relative on sums.
//
//   auto backend = CreateBackend(BackendKind::kAuto);
//   DiffTask task{ref.view(), cand.view()};
//   absl::StatusOr<DiffStats> stats = (*backend)->Compare(task);
//
// A pair too large to hand over at once is fed in windows on the backend's
// own grid: PlanFlatWindows / PlanTransposedWindows and MergeWindows below
// (kernels/chunk_grid.h). Callers never need a backend's internals.
//
// Implementations: CpuBackend (kernels/cpu/cpu_backend.h) always; the CUDA
// backend when built with nvcc. Use CreateBackend to pick one.
//
// Thread-safety: a Backend may be called from several threads at once.
#ifndef REPROD_KERNELS_BACKEND_H_
#define REPROD_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "kernels/chunk_grid.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {

// One pair to reduce.
//  - Element-wise (transpose_cand == false): ref and cand have the same number
//    of elements (shapes are the caller's business; chunks pass 1-D views);
//    element i of ref pairs with element i of cand.
//  - Transposed: ref is 2-D (m, n) and cand is 2-D (n, m); ref[i, j] pairs with
//    cand[j, i]. Indices are flat indices in ref's layout.
// `index_base` is added to every flat index, so a chunk starting at element k
// of a larger tensor reports indices of the whole tensor.
struct DiffTask {
  TensorView ref;
  TensorView cand;
  bool transpose_cand = false;
  uint64_t index_base = 0;
  DiffOptions options;
  // Device-resident ref (for backends with a resident cache, e.g. the cuda
  // backend with CudaBackendOptions::resident_bytes > 0; others ignore
  // both fields). A non-empty key names ref's bytes: whoever sets it
  // promises the same key always means the same bytes (the stored compare
  // builds it from run, creation time, tensor address, sequence, CRC and
  // byte range). A backend holding a copy under the key reads that copy
  // instead of ref.data; on a miss it may keep ref.data for later tasks.
  // ref.data may be null only while the caller holds the key
  // (HoldResidentRef).
  std::string_view ref_key;
  // The ref belongs to a reference run (storage::RunInfo::reference): its
  // copy is evicted only to make room for another reference's.
  bool ref_is_reference = false;
};

// What a backend's resident-ref cache holds and did (all zero without one).
struct ResidentStats {
  size_t budget_bytes = 0;
  size_t used_bytes = 0;
  uint64_t entries = 0;
  uint64_t hits = 0;            // keyed tasks whose ref was resident
  uint64_t misses = 0;          // keyed tasks whose ref was not
  uint64_t admitted_bytes = 0;  // uploaded into the cache on a miss
  uint64_t evictions = 0;
  uint64_t rejections = 0;      // misses that did not fit
};

// Checks a task against the rules above: valid dtypes, valid shapes
// (CheckedNumElements), equal element counts (element-wise) or ref (m, n)
// vs cand (n, m) (transposed), data present whenever there are elements,
// and index_base + count fitting in uint64. InvalidArgument naming both
// shapes and dtypes otherwise. Backends call this before touching the data.
// `allow_resident_ref`: a backend with a resident cache passes true, and
// then a null ref.data is accepted when ref_key is set (the backend checks
// the key is held).
absl::Status ValidateDiffTask(const DiffTask& task, bool allow_resident_ref = false);

// Checks a CompareBatch call: out has one slot per task ("CompareBatch: 3
// tasks but 2 outputs") and every task passes ValidateDiffTask ("task 17:
// ..."); InvalidArgument otherwise.
absl::Status ValidateDiffBatch(absl::Span<const DiffTask> tasks, size_t num_outputs,
                               bool allow_resident_ref = false);

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda"; reports name the backend that computed them.
  virtual std::string_view name() const = 0;

  // The name of the backend that reduces `task` when it is passed to
  // Compare or CompareBatch: name() for a single backend; a backend that
  // routes pairs (AutoBackend) names the one it routes `task` to. Reports
  // show it per pair. Depends only on the task's layout and dtypes.
  virtual std::string_view ReducerName(const DiffTask& /*task*/) const { return name(); }

  // Reduces one pair. InvalidArgument when the element counts differ, a
  // transposed pair is not (m, n) vs (n, m), or a view has no data but
  // elements.
  virtual absl::StatusOr<DiffStats> Compare(const DiffTask& task) = 0;

  // Reduces many pairs; out[i] receives the stats of tasks[i]. Small pairs
  // are batched (the cpu backend spreads pairs over threads; cuda uses one
  // segmented launch). Fails as a whole on the first invalid task, naming
  // its position.
  virtual absl::Status CompareBatch(absl::Span<const DiffTask> tasks,
                                    absl::Span<DiffStats> out) = 0;

  // ---- Windowed reduction of one pair (kernels/chunk_grid.h) ----
  // For callers that feed a large pair in windows: the backend owns the
  // grid the windows are cut on and the order their partials merge in, so
  // that windows reduced with Compare / CompareBatch (index_base = the
  // window's first flat index) and merged with MergeWindows give what
  // Compare on the whole pair gives: exactly for counts, extrema, indices
  // and histogram; bit for bit for the sums too when the plan says `exact`.
  // All three depend only on their arguments (and the backend's options),
  // never on data, threads or timing.
  //
  // The defaults are right for any backend but exact only for one window
  // covering the whole pair (windows of max_window_elements, whole ref rows
  // for transposed pairs, SquarishTiles when a row exceeds the budget,
  // SequentialMerge); backends override them with their own grid.

  // Element-wise pair of `elements` > 0 elements, windows of at most
  // max_window_elements (values < 1 count as 1) elements.
  virtual FlatWindowPlan PlanFlatWindows(DType ref_dtype, DType cand_dtype, int64_t elements,
                                         int64_t max_window_elements) const;

  // Transposed pair, ref (m, n) vs cand (n, m), m, n > 0: tiles of at most
  // max_window_elements (values < 1 count as 1) elements; whole ref rows
  // whenever n <= max_window_elements.
  virtual TransposedWindowPlan PlanTransposedWindows(DType ref_dtype, DType cand_dtype, int64_t m,
                                                     int64_t n, int64_t max_window_elements) const;

  // Merges the windows' partials, given in window order, in the backend's
  // fixed order. Empty span: DiffStats().
  virtual DiffStats MergeWindows(absl::Span<const DiffStats> windows) const;

  // ---- Device-resident refs (see DiffTask::ref_key) ----
  // A hold on the copy kept under `key`, or null when there is none (always,
  // for a backend without a resident cache). While the returned handle
  // lives the copy is not evicted, so tasks with this ref_key may pass
  // ref.data == nullptr. Handles must not outlive the backend.
  virtual std::shared_ptr<const void> HoldResidentRef(std::string_view /*key*/) {
    return nullptr;
  }
  virtual ResidentStats resident_stats() const { return {}; }
};

enum class BackendKind { kAuto, kCpu, kCuda };

// Parses "auto", "cpu", "cuda"; anything else is InvalidArgument listing
// the choices.
absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name);

// Creates a backend. kAuto: when built with CUDA and a device answers, an
// AutoBackend (kernels/auto_backend.h: transposed pairs on cuda, element-wise
// pairs on whichever a start-up calibration measured faster; one spdlog info
// line with the numbers), else CPU (with one spdlog info line, "no CUDA
// backend in this build; using cpu" in a build without CUDA). kCuda without CUDA support or a device:
// FailedPrecondition. `threads` = 0 means all hardware threads (cpu, shared
// process-wide pool); negative: InvalidArgument. `gpu_cache_bytes` > 0
// gives the cuda backend (kCuda, or kAuto with a device) a resident-ref
// cache of that many device bytes (CudaBackendOptions::resident_bytes);
// where no cuda backend is created it is ignored with a warning.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, int threads = 0,
                                                       size_t gpu_cache_bytes = 0);

// True when this binary was built with the CUDA backend (for --version).
bool BuiltWithCuda();

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_BACKEND_H_

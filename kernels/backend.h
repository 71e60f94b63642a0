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
// Implementations: CpuBackend (kernels/cpu/cpu_backend.h) always; the CUDA
// backend when built with nvcc. Use CreateBackend to pick one.
//
// Thread-safety: a Backend may be called from several threads at once.
#ifndef REPROD_KERNELS_BACKEND_H_
#define REPROD_KERNELS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tensor.h"
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
};

// Checks a task against the rules above: valid dtypes, valid shapes
// (CheckedNumElements), equal element counts (element-wise) or ref (m, n)
// vs cand (n, m) (transposed), data present whenever there are elements,
// and index_base + count fitting in uint64. InvalidArgument naming both
// shapes and dtypes otherwise. Backends call this before touching the data.
absl::Status ValidateDiffTask(const DiffTask& task);

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda"; reports name the backend that computed them.
  virtual std::string_view name() const = 0;

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
};

enum class BackendKind { kAuto, kCpu, kCuda };

// Parses "auto", "cpu", "cuda"; anything else is InvalidArgument listing
// the choices.
absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name);

// Creates a backend. kAuto: CUDA when built with it and a device answers,
// else CPU (with one spdlog info line, "no CUDA backend in this build; using
// cpu" in a build without CUDA). kCuda without CUDA support or a device:
// FailedPrecondition. `threads` = 0 means all hardware threads (cpu, shared
// process-wide pool); negative: InvalidArgument.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(BackendKind kind,
                                                       int threads = 0);

// True when this binary was built with the CUDA backend (for --version).
bool BuiltWithCuda();

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_BACKEND_H_

#include "kernels/backend.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "kernels/chunk_grid.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {
namespace {

bool ValidDType(DType d) { return static_cast<int>(d) < kNumDTypes; }

// "float32 (3, 4)"
std::string Describe(const TensorView& v) {
  return absl::StrCat(std::string(DTypeName(v.dtype)), " ", ShapeToString(v.shape));
}

absl::StatusOr<int64_t> CheckedCount(const TensorView& v, const char* side,
                                     bool may_lack_data = false) {
  if (!ValidDType(v.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(side, " has an invalid dtype (", static_cast<int>(v.dtype), ")"));
  }
  absl::StatusOr<int64_t> n = CheckedNumElements(v.shape, v.dtype);
  if (!n.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(side, ": ", n.status().message()));
  }
  if (*n > 0 && v.data == nullptr && !may_lack_data) {
    return absl::InvalidArgumentError(
        absl::StrCat(side, " ", Describe(v), " has ", *n, " elements but no data"));
  }
  return n;
}

}  // namespace

absl::Status ValidateDiffTask(const DiffTask& task, bool allow_resident_ref) {
  absl::StatusOr<int64_t> n_ref =
      CheckedCount(task.ref, "ref", allow_resident_ref && !task.ref_key.empty());
  if (!n_ref.ok()) return n_ref.status();
  absl::StatusOr<int64_t> n_cand = CheckedCount(task.cand, "cand");
  if (!n_cand.ok()) return n_cand.status();
  if (task.transpose_cand) {
    const Shape& r = task.ref.shape;
    const Shape& c = task.cand.shape;
    if (r.size() != 2 || c.size() != 2 || r[0] != c[1] || r[1] != c[0]) {
      return absl::InvalidArgumentError(
          absl::StrCat("a transposed pair needs ref (m, n) and cand (n, m); got ref ",
                       Describe(task.ref), ", cand ", Describe(task.cand)));
    }
  } else if (*n_ref != *n_cand) {
    return absl::InvalidArgumentError(absl::StrCat(
        "element counts differ: ref ", Describe(task.ref), " has ", *n_ref, ", cand ",
        Describe(task.cand), " has ", *n_cand));
  }
  if (*n_ref > 0 && task.index_base > std::numeric_limits<uint64_t>::max() -
                                          static_cast<uint64_t>(*n_ref)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "index_base ", task.index_base, " + ", *n_ref, " elements overflows uint64"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDiffBatch(absl::Span<const DiffTask> tasks, size_t num_outputs,
                               bool allow_resident_ref) {
  if (num_outputs != tasks.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CompareBatch: ", tasks.size(), " tasks but ", num_outputs, " outputs"));
  }
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (absl::Status s = ValidateDiffTask(tasks[i], allow_resident_ref); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("task ", i, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

FlatWindowPlan Backend::PlanFlatWindows(DType /*ref_dtype*/, DType /*cand_dtype*/, int64_t elements,
                                        int64_t max_window_elements) const {
  return PlanFlatOnGrid(elements, max_window_elements, WindowGrid{});
}

TransposedWindowPlan Backend::PlanTransposedWindows(DType /*ref_dtype*/, DType /*cand_dtype*/,
                                                    int64_t m, int64_t n,
                                                    int64_t max_window_elements) const {
  return PlanTransposedOnGrid(m, n, max_window_elements, WindowGrid{});
}

DiffStats Backend::MergeWindows(absl::Span<const DiffStats> windows) const {
  return SequentialMerge(windows);
}

}  // namespace reprod::kernels

// File: kernels/testing/windowed_reduce.h
//
// Test-only: a pair reduced the way kernels/chunk_grid.h tells a caller to
// feed a backend in windows, for checking a backend's window plans and
// MergeWindows against Compare on the whole pair.
//   - ReduceFlatWindows: element-wise windows of `w` elements viewing the
//     tensors in place, index_base at each window's first element;
//   - ReduceTransposedTiles: tiles of plan.rows x plan.cols of ref (m, n)
//     vs cand (n, m), row blocks outer, each tile packed as its own
//     transposed pair (tr, tc) vs (tc, tr); column-split tiles' max_index is
//     mapped back to the whole pair.
// Both reduce with Compare one window at a time or with one CompareBatch
// (`batch`) and merge with the backend's MergeWindows. Failures of the
// backend calls are reported with EXPECT (the merged result is then
// meaningless).
//
// Thread-safety: plain functions.
#ifndef REPROD_KERNELS_TESTING_WINDOWED_REDUCE_H_
#define REPROD_KERNELS_TESTING_WINDOWED_REDUCE_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/diff_stats.h"
#include "kernels/testing/reference_diff.h"

namespace reprod::kernels::testing {

// Reduces every task with Compare one by one or with one CompareBatch.
inline std::vector<DiffStats> ReduceAll(Backend& b, const std::vector<DiffTask>& tasks,
                                        bool batch) {
  std::vector<DiffStats> out(tasks.size());
  if (batch) {
    const absl::Status s = b.CompareBatch(tasks, absl::MakeSpan(out));
    EXPECT_TRUE(s.ok()) << s;
  } else {
    for (size_t i = 0; i < tasks.size(); ++i) {
      absl::StatusOr<DiffStats> s = b.Compare(tasks[i]);
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) out[i] = *s;
    }
  }
  return out;
}

inline DiffStats ReduceFlatWindows(Backend& b, const HostTensor& ref, const HostTensor& cand,
                                   int64_t w, bool batch, const DiffOptions& options = {}) {
  const int64_t n = ref.size();
  const size_t rs = DTypeSize(ref.dtype), cs = DTypeSize(cand.dtype);
  std::vector<DiffTask> tasks;
  for (int64_t e0 = 0; e0 < n; e0 += w) {
    const int64_t len = std::min(w, n - e0);
    DiffTask t;
    t.ref = TensorView{ref.dtype, Shape{len}, ref.bytes.data() + e0 * rs};
    t.cand = TensorView{cand.dtype, Shape{len}, cand.bytes.data() + e0 * cs};
    t.index_base = static_cast<uint64_t>(e0);
    t.options = options;
    tasks.push_back(t);
  }
  return b.MergeWindows(ReduceAll(b, tasks, batch));
}

inline DiffStats ReduceTransposedTiles(Backend& b, const HostTensor& ref, const HostTensor& cand,
                                       const TransposedWindowPlan& plan, bool batch,
                                       const DiffOptions& options = {}) {
  const int64_t m = ref.shape[0], n = ref.shape[1];
  const size_t rs = DTypeSize(ref.dtype), cs = DTypeSize(cand.dtype);
  struct Tile {
    int64_t r0, c0, tc;
  };
  std::vector<Tile> tiles;
  std::vector<std::vector<unsigned char>> buffers;
  std::vector<DiffTask> tasks;
  for (int64_t r0 = 0; r0 < m; r0 += plan.rows) {
    const int64_t tr = std::min(plan.rows, m - r0);
    for (int64_t c0 = 0; c0 < n; c0 += plan.cols) {
      const int64_t tc = std::min(plan.cols, n - c0);
      std::vector<unsigned char> rb(static_cast<size_t>(tr * tc) * rs);
      std::vector<unsigned char> cb(static_cast<size_t>(tr * tc) * cs);
      for (int64_t i = 0; i < tr; ++i) {
        std::memcpy(rb.data() + i * tc * rs, ref.bytes.data() + ((r0 + i) * n + c0) * rs, tc * rs);
      }
      for (int64_t j = 0; j < tc; ++j) {
        std::memcpy(cb.data() + j * tr * cs, cand.bytes.data() + ((c0 + j) * m + r0) * cs, tr * cs);
      }
      DiffTask t;
      t.transpose_cand = true;
      t.ref = TensorView{ref.dtype, Shape{tr, tc}, rb.data()};
      t.cand = TensorView{cand.dtype, Shape{tc, tr}, cb.data()};
      t.index_base = tc == n ? static_cast<uint64_t>(r0 * n) : 0;
      t.options = options;
      tasks.push_back(t);
      tiles.push_back(Tile{r0, c0, tc});
      buffers.push_back(std::move(rb));
      buffers.push_back(std::move(cb));
    }
  }
  std::vector<DiffStats> parts = ReduceAll(b, tasks, batch);
  for (size_t k = 0; k < parts.size(); ++k) {
    const Tile& t = tiles[k];
    if (t.tc == n || parts[k].count == 0) continue;
    const auto tc = static_cast<uint64_t>(t.tc);
    parts[k].max_index =
        (static_cast<uint64_t>(t.r0) + parts[k].max_index / tc) * static_cast<uint64_t>(n) +
        static_cast<uint64_t>(t.c0) + parts[k].max_index % tc;
  }
  return b.MergeWindows(parts);
}

}  // namespace reprod::kernels::testing

#endif  // REPROD_KERNELS_TESTING_WINDOWED_REDUCE_H_

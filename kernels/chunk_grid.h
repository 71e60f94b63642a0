// File: kernels/chunk_grid.h
//
// Windowed reduction of one pair on the grid of the backend that reduces it.
// A caller that cannot hand a backend the whole pair at once (the stored
// compare, server/store_compare.h, streams large pairs from a store) asks
// the backend (kernels/backend.h) how to cut the pair and how to merge:
//
//   FlatWindowPlan plan = backend.PlanFlatWindows(ref_dtype, cand_dtype, n,
//                                                 max_window_elements);
//   std::vector<DiffStats> parts;
//   for (int64_t e0 = 0; e0 < n; e0 += plan.elements) {
//     // views of elements [e0, min(n, e0 + plan.elements)) of both sides
//     DiffTask window{ref_window, cand_window, false, /*index_base=*/e0, options};
//     parts.push_back(*backend.Compare(window));    // or CompareBatch
//   }
//   DiffStats stats = backend.MergeWindows(parts);  // in window order
//
// The contract, for any backend:
//   1. cut the pair as the plan says (element-wise: windows of
//      `plan.elements` consecutive elements, the last one shorter;
//      transposed ref (m, n) vs cand (n, m): tiles of `plan.rows` ref rows
//      by `plan.cols` ref columns, the last row/column block smaller; a tile
//      is itself a transposed pair ref (tr, tc) vs cand (tc, tr));
//   2. reduce every window with Compare or CompareBatch of the same backend,
//      with index_base = the flat index (in ref's layout) of the window's
//      first element. Column-split tiles (plan.cols < n) report indices of
//      the (tr, tc) tile, which the caller maps to (r0 + i) * n + c0 + j
//      itself (index_base cannot express that);
//   3. merge the partials with MergeWindows, in window order (element-wise:
//      ascending; transposed: row blocks outer, column blocks inner).
// Counts, max/min with index and values, max r and the histogram are then
// exactly those of Compare on the whole pair (diff_stats.h: they do not
// depend on grouping). The sums are bit-for-bit those of Compare on the
// whole pair when plan.exact; otherwise they differ only by the rounding of
// the additions (docs/design.md §Diff semantics: ~1e-12 relative).
//
// Which windows are exact is the backend's business (its chunk grid and its
// merge tree); a single window covering the whole pair always is. The
// helpers below are the shape arithmetic and merge orders backends share.
//
// Thread-safety: plain functions and value types.
#ifndef REPROD_KERNELS_CHUNK_GRID_H_
#define REPROD_KERNELS_CHUNK_GRID_H_

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {

// How to cut an element-wise pair of n > 0 elements.
struct FlatWindowPlan {
  int64_t elements = 1;  // per window (>= 1); the last window may be shorter
  bool exact = false;    // windows + MergeWindows == Compare(whole), bit for bit
};

// How to cut a transposed pair, ref (m, n) vs cand (n, m).
struct TransposedWindowPlan {
  int64_t rows = 1;    // ref rows per tile (>= 1); the last block may be shorter
  int64_t cols = 1;    // ref columns per tile (>= 1): n for whole-row windows,
                       // fewer for column-split tiles (a row wider than the
                       // budget); the last block may be narrower
  bool exact = false;  // tiles + MergeWindows == Compare(whole), bit for bit
};

// The largest unit * 2^k (k >= 0) that is <= limit; 0 when limit < unit.
// unit >= 1.
int64_t LargestPowerOfTwoMultiple(int64_t unit, int64_t limit);

// Tiles of a transposed pair (m, n) whose rows exceed the budget
// (n > max_elements): square-ish tiles of about max_elements elements
// (rows = min(m, floor(sqrt(max_elements))), cols = min(n, max_elements /
// rows)). Never exact: a backend reduces such a tile in another order than
// the whole rows it is cut from. max_elements >= 1.
TransposedWindowPlan SquarishTiles(int64_t m, int64_t n, int64_t max_elements);

// A backend's window grid, for the two planners below: windows are whole
// multiples of `unit` (elements, or ref rows of a transposed pair), either
// unit * 2^k (`powers_of_two`, the largest that fits the budget) or exactly
// one unit; a budget below one unit gets windows of the budget (not exact).
// unit == 0: no grid (windows of the budget, exact only as one window).
struct WindowGrid {
  int64_t unit = 0;
  bool powers_of_two = false;
};

// The plan for an element-wise pair of `elements` on `grid`: one window
// when the pair fits the budget (exact), else as WindowGrid says.
// max_window_elements < 1 counts as 1.
FlatWindowPlan PlanFlatOnGrid(int64_t elements, int64_t max_window_elements, WindowGrid grid);

// The plan for a transposed pair (m, n) on a grid of ref rows: SquarishTiles
// when one row exceeds the budget; all m rows when they fit (exact); else
// whole-row windows as WindowGrid says (its unit counted in rows).
TransposedWindowPlan PlanTransposedOnGrid(int64_t m, int64_t n, int64_t max_window_elements,
                                          WindowGrid row_grid);

// Merges parts[0 .. size) into parts[0] in the pairwise tree
//   width 1: 0 += 1, 2 += 3, ...; width 2: 0 += 2, 4 += 6, ...; ...
// (the cpu backend's merge order; well conditioned). No-op when size < 2.
void PairwiseTreeMerge(absl::Span<DiffStats> parts);

// DiffStats() merged with parts[0], parts[1], ... in order (the cuda
// backend's order for the pieces of a pair). Empty span: DiffStats().
DiffStats SequentialMerge(absl::Span<const DiffStats> parts);

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_CHUNK_GRID_H_

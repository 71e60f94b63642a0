#include "kernels/chunk_grid.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/types/span.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {
namespace {

int64_t ISqrt(int64_t x) {
  auto r = static_cast<int64_t>(std::sqrt(static_cast<double>(x)));
  while (r > 0 && r * r > x) --r;
  while ((r + 1) * (r + 1) <= x) ++r;
  return r;
}

}  // namespace

int64_t LargestPowerOfTwoMultiple(int64_t unit, int64_t limit) {
  unit = std::max<int64_t>(unit, 1);
  if (limit < unit) return 0;
  int64_t w = unit;
  while (w <= limit / 2) w *= 2;
  return w;
}

TransposedWindowPlan SquarishTiles(int64_t m, int64_t n, int64_t max_elements) {
  max_elements = std::max<int64_t>(max_elements, 1);
  TransposedWindowPlan plan;
  plan.rows = std::max<int64_t>(1, std::min(m, ISqrt(max_elements)));
  plan.cols = std::max<int64_t>(1, std::min(n, max_elements / plan.rows));
  plan.exact = false;
  return plan;
}

namespace {

// The window (elements or rows) for a budget that holds `fits` > 0 of them,
// and whether it lies on `grid` (exact).
std::pair<int64_t, bool> OnGrid(int64_t fits, WindowGrid grid) {
  if (grid.unit < 1 || fits < grid.unit) return {fits, false};
  if (grid.powers_of_two) return {LargestPowerOfTwoMultiple(grid.unit, fits), true};
  return {grid.unit, true};
}

}  // namespace

FlatWindowPlan PlanFlatOnGrid(int64_t elements, int64_t max_window_elements, WindowGrid grid) {
  const int64_t budget = std::max<int64_t>(1, max_window_elements);
  if (elements <= budget) return FlatWindowPlan{std::max<int64_t>(1, elements), true};
  const auto [window, exact] = OnGrid(budget, grid);
  return FlatWindowPlan{window, exact};
}

TransposedWindowPlan PlanTransposedOnGrid(int64_t m, int64_t n, int64_t max_window_elements,
                                          WindowGrid row_grid) {
  const int64_t budget = std::max<int64_t>(1, max_window_elements);
  m = std::max<int64_t>(1, m);
  n = std::max<int64_t>(1, n);
  if (n > budget) return SquarishTiles(m, n, budget);
  const int64_t rows = budget / n;
  if (m <= rows) return TransposedWindowPlan{m, n, true};
  const auto [window, exact] = OnGrid(rows, row_grid);
  return TransposedWindowPlan{window, n, exact};
}

void PairwiseTreeMerge(absl::Span<DiffStats> parts) {
  const size_t n = parts.size();
  for (size_t width = 1; width < n; width *= 2) {
    for (size_t i = 0; i + width < n; i += 2 * width) parts[i].Merge(parts[i + width]);
  }
}

DiffStats SequentialMerge(absl::Span<const DiffStats> parts) {
  DiffStats out;
  for (const DiffStats& p : parts) out.Merge(p);
  return out;
}

}  // namespace reprod::kernels

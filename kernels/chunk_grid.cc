#include "kernels/chunk_grid.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

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

#include "kernels/diff_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace reprod::kernels {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

double DiffStats::mean_abs() const {
  if (nan_diff > 0) return kNaN;
  if (count == 0) return 0.0;
  return sum_abs / static_cast<double>(count);
}

double DiffStats::max_abs_value() const {
  if (nan_diff > 0) return kNaN;
  if (count == 0) return 0.0;
  return max_abs;
}

double DiffStats::min_abs_value() const {
  if (nan_diff > 0) return kNaN;
  if (count == 0) return 0.0;
  return min_abs;
}

double DiffStats::mean_rel() const {
  if (nan_diff > 0) return kNaN;
  if (count == 0) return 0.0;
  return sum_rel / static_cast<double>(count);
}

double DiffStats::max_rel_value() const {
  if (nan_diff > 0) return kNaN;
  if (count == 0) return 0.0;
  return max_rel;
}

double DiffStats::rmse() const {
  if (nan_diff > 0) return kNaN;
  if (count == 0) return 0.0;
  return std::sqrt(sum_sq / static_cast<double>(count));
}

double DiffStats::cosine() const {
  if (nan_diff > 0 || inf_diff > 0) return kNaN;
  const bool ref_zero = ref_sq == 0.0, cand_zero = cand_sq == 0.0;
  if (ref_zero && cand_zero) return 1.0;  // includes count == 0
  if (ref_zero || cand_zero) return 0.0;
  const double c = dot / (std::sqrt(ref_sq) * std::sqrt(cand_sq));
  if (c != c) return c;  // an overflowed norm: inf / inf
  return std::clamp(c, -1.0, 1.0);
}

double DiffStats::mismatch_ratio() const {
  if (nan_diff > 0) return kNaN;
  if (count == 0) return 0.0;
  return static_cast<double>(mismatches) / static_cast<double>(count);
}

}  // namespace reprod::kernels

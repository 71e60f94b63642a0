#include "kernels/diff_stats.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/testing/reference_diff.h"

namespace reprod::kernels {
namespace {

using ::reprod::kernels::testing::ExpectEquivalent;
using ::reprod::kernels::testing::ExpectMatchesReference;
using ::reprod::kernels::testing::RefBin;
using ::reprod::kernels::testing::ReferenceDiff;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

DiffStats AddAll(const std::vector<double>& r, const std::vector<double>& c,
                 const DiffOptions& opt = {}) {
  DiffStats s;
  for (size_t i = 0; i < r.size(); ++i) s.Add(r[i], c[i], i, opt);
  return s;
}

TEST(HistogramTest, EdgesAreTheDecades) {
  for (int i = 0; i < kHistogramBins - 2; ++i) {
    EXPECT_EQ(kHistogramEdges[i], HistogramEdge(i));
    EXPECT_EQ(kHistogramEdges[i], testing::kRefEdges[i]);
    EXPECT_EQ(kHistogramEdges[i], std::pow(10.0, i - 12)) << i;  // nearest doubles
  }
}

// Every binade of double (both ends and a middle value), every edge and its
// neighbours: HistogramBin agrees with the independent reference.
TEST(HistogramTest, BinExhaustive) {
  EXPECT_EQ(HistogramBin(0.0), 0);
  EXPECT_EQ(HistogramBin(std::numeric_limits<double>::denorm_min()), 1);
  EXPECT_EQ(HistogramBin(kInf), kHistogramBins - 1);
  for (int e = -1074; e <= 1023; ++e) {
    const double lo = std::ldexp(1.0, e);
    for (double x : {lo, lo * 1.5, std::nextafter(std::ldexp(1.0, e + 1), 0.0)}) {
      ASSERT_EQ(HistogramBin(x), RefBin(x)) << x;
    }
  }
  for (int i = 0; i < kHistogramBins - 2; ++i) {
    const double e = kHistogramEdges[i];
    EXPECT_EQ(HistogramBin(e), i + 2);
    EXPECT_EQ(HistogramBin(std::nextafter(e, 0.0)), i + 1);
    EXPECT_EQ(HistogramBin(std::nextafter(e, kInf)), i + 2);
  }
}

TEST(DiffStatsTest, EmptyFinishedStatistics) {
  DiffStats s;
  EXPECT_EQ(s.mean_abs(), 0.0);
  EXPECT_EQ(s.max_abs_value(), 0.0);
  EXPECT_EQ(s.min_abs_value(), 0.0);
  EXPECT_EQ(s.mean_rel(), 0.0);
  EXPECT_EQ(s.max_rel_value(), 0.0);
  EXPECT_EQ(s.rmse(), 0.0);
  EXPECT_EQ(s.cosine(), 1.0);
  EXPECT_EQ(s.mismatch_ratio(), 0.0);
}

TEST(DiffStatsTest, FinishedStatistics) {
  // d = 1, 2, 0, 4 with ref = 2, 4, 0, 8.
  DiffStats s = AddAll({2, 4, 0, 8}, {3, 2, 0, 12});
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.mean_abs(), 7.0 / 4);
  EXPECT_EQ(s.max_abs_value(), 4.0);
  EXPECT_EQ(s.max_index, 3u);
  EXPECT_EQ(s.min_abs_value(), 0.0);
  EXPECT_DOUBLE_EQ(s.mean_rel(), (0.5 + 0.5 + 0 + 0.5) / 4);
  EXPECT_EQ(s.max_rel_value(), 0.5);
  EXPECT_DOUBLE_EQ(s.rmse(), std::sqrt((1.0 + 4 + 0 + 16) / 4));
  EXPECT_DOUBLE_EQ(s.cosine(), (6.0 + 8 + 0 + 96) / std::sqrt((4.0 + 16 + 64) * (9.0 + 4 + 144)));
  EXPECT_EQ(s.mismatches, 3u);
  EXPECT_DOUBLE_EQ(s.mismatch_ratio(), 0.75);
}

TEST(DiffStatsTest, NanMakesEveryStatisticNan) {
  DiffStats s = AddAll({1, kNaN, 3}, {1, 2, 3});
  EXPECT_EQ(s.nan_diff, 1u);
  EXPECT_EQ(s.nan_ref, 1u);
  EXPECT_EQ(s.mismatches, 1u);
  for (double v : {s.mean_abs(), s.max_abs_value(), s.min_abs_value(), s.mean_rel(),
                   s.max_rel_value(), s.rmse(), s.cosine(), s.mismatch_ratio()}) {
    EXPECT_TRUE(std::isnan(v));
  }
  EXPECT_TRUE(std::isnan(s.max_abs));
  EXPECT_EQ(s.max_index, 1u);
  // equal_nan: NaN against NaN is d = 0, NaN against a number still NaN.
  DiffOptions opt;
  opt.equal_nan = true;
  DiffStats e = AddAll({kNaN, kNaN, 1}, {kNaN, 2, 1}, opt);
  EXPECT_EQ(e.nan_diff, 1u);
  EXPECT_EQ(e.histogram[0], 2u);
  EXPECT_EQ(e.max_index, 1u);
  DiffStats both = AddAll({kNaN, 1}, {kNaN, 1}, opt);
  EXPECT_EQ(both.nan_diff, 0u);
  EXPECT_EQ(both.mean_abs(), 0.0);
  EXPECT_EQ(both.nan_ref, 1u);
  EXPECT_EQ(both.nan_cand, 1u);
  EXPECT_EQ(both.cosine(), 1.0);  // the NaN pair is left out of the cosine
}

TEST(DiffStatsTest, InfinityRules) {
  DiffStats same = AddAll({kInf, -kInf}, {kInf, -kInf});
  EXPECT_EQ(same.inf_diff, 0u);
  EXPECT_EQ(same.mismatches, 0u);
  EXPECT_EQ(same.max_abs_value(), 0.0);
  EXPECT_EQ(same.inf_ref, 2u);
  EXPECT_EQ(same.cosine(), 1.0);  // infinite pairs are left out of the cosine
  DiffStats opposite = AddAll({kInf, 1.0}, {-kInf, 1.0});
  EXPECT_EQ(opposite.inf_diff, 1u);
  EXPECT_EQ(opposite.mismatches, 1u);
  EXPECT_EQ(opposite.max_abs_value(), kInf);
  EXPECT_EQ(opposite.max_rel_value(), kInf);
  EXPECT_TRUE(std::isnan(opposite.cosine()));
  DiffStats finite = AddAll({kInf}, {5.0});
  EXPECT_EQ(finite.max_abs, kInf);
  EXPECT_EQ(finite.max_rel, kInf);
  EXPECT_EQ(finite.histogram[kHistogramBins - 1], 1u);
}

TEST(DiffStatsTest, RelativeErrorAndCosineRules) {
  DiffStats zero_ref = AddAll({0.0, 0.0}, {0.0, 1e-30});
  EXPECT_EQ(zero_ref.max_rel, kInf);
  EXPECT_EQ(zero_ref.histogram[0], 1u);
  DiffStats signed_zero = AddAll({-0.0}, {0.0});
  EXPECT_EQ(signed_zero.max_abs, 0.0);
  EXPECT_EQ(signed_zero.max_rel, 0.0);
  EXPECT_EQ(AddAll({0, 0}, {0, 0}).cosine(), 1.0);
  EXPECT_EQ(AddAll({0, 0}, {1, 0}).cosine(), 0.0);
  EXPECT_EQ(AddAll({1, 0}, {0, 0}).cosine(), 0.0);
  EXPECT_DOUBLE_EQ(AddAll({1, 2}, {-1, -2}).cosine(), -1.0);
  // Norms whose product would overflow do not (each is below 1e308).
  EXPECT_DOUBLE_EQ(AddAll({1e100, 1e100}, {1e100, 1e100}).cosine(), 1.0);
}

TEST(DiffStatsTest, AllcloseBoundUsesNumpyRule) {
  DiffOptions opt;
  opt.atol = 0.5;
  opt.rtol = 0.25;
  // bound = 0.5 + 0.25 * |ref|: ref 2 -> 1.0 (d = 1 passes, 1.0000001 fails).
  DiffStats s = AddAll({2, 2, -2, 0}, {3, 3.0000001, -3.5, 0.5}, opt);
  EXPECT_EQ(s.mismatches, 2u);
}

TEST(DiffStatsTest, MatchesIndependentReference) {
  std::mt19937_64 rng(1);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> pick(0, 40);
  std::vector<double> r(5000), c(5000);
  const double specials[] = {kNaN, kInf, -kInf, 0.0, -0.0, 1e-300, 1e300};
  for (size_t i = 0; i < r.size(); ++i) {
    r[i] = normal(rng);
    c[i] = r[i] + std::ldexp(normal(rng), pick(rng) - 30);
    if (pick(rng) == 0) r[i] = specials[pick(rng) % 7];
    if (pick(rng) == 0) c[i] = specials[pick(rng) % 7];
  }
  for (bool equal_nan : {false, true}) {
    DiffOptions opt;
    opt.equal_nan = equal_nan;
    ExpectMatchesReference(AddAll(r, c, opt), ReferenceDiff(r, c, opt));
  }
}

TEST(DiffStatsTest, MergeIsOrderIndependent) {
  std::mt19937_64 rng(2);
  std::normal_distribution<double> normal;
  std::vector<double> r(3000), c(3000);
  for (size_t i = 0; i < r.size(); ++i) {
    r[i] = normal(rng);
    c[i] = r[i] + 1e-3 * normal(rng);
  }
  c[100] = r[100] + 10;  // the max, tied below
  c[2000] = r[2000] + 10;
  r[1500] = kNaN;
  DiffStats whole = AddAll(r, c);
  std::vector<DiffStats> parts(7);
  for (size_t i = 0; i < r.size(); ++i) parts[(i * 7) / r.size()].Add(r[i], c[i], i, {});
  DiffStats forward, backward;
  for (const DiffStats& p : parts) forward.Merge(p);
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) backward.Merge(*it);
  ExpectEquivalent(forward, whole);
  ExpectEquivalent(backward, whole);
  EXPECT_EQ(backward.max_index, 1500u);
  // Merging an empty partial changes nothing; into an empty one copies.
  DiffStats empty, copy = whole;
  copy.Merge(empty);
  ExpectEquivalent(copy, whole);
  empty.Merge(whole);
  ExpectEquivalent(empty, whole);
}

TEST(DiffStatsTest, MaxTieBreaksBySmallestIndex) {
  DiffStats a, b;
  a.Add(0.0, 2.0, 10, {});
  b.Add(0.0, 2.0, 3, {});
  a.Merge(b);
  EXPECT_EQ(a.max_index, 3u);
  DiffStats nan_late, inf_early;
  nan_late.Add(kNaN, 0.0, 50, {});
  inf_early.Add(kInf, 0.0, 1, {});
  inf_early.Merge(nan_late);
  EXPECT_EQ(inf_early.max_index, 50u);  // NaN ranks above +inf
  EXPECT_TRUE(MaxBeats(kNaN, 9, kInf, 1));
  EXPECT_TRUE(MaxBeats(kNaN, 1, kNaN, 2));
  EXPECT_FALSE(MaxBeats(1.0, 1, 2.0, 5));
}

}  // namespace
}  // namespace reprod::kernels

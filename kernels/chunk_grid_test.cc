// Windowed reduction on a backend's own grid (kernels/chunk_grid.h): the
// shared helpers against hand-computed values, the default Backend plans,
// and, for the cpu backend, windows cut as PlanFlatWindows /
// PlanTransposedWindows say, reduced with Compare / CompareBatch and merged
// with MergeWindows, against Compare on the whole pair: bit for bit
// (memcmp) whenever the plan says exact, else equal but for 1e-12 on sums.
#include "kernels/chunk_grid.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/diff_stats.h"
#include "kernels/testing/reference_diff.h"
#include "kernels/testing/windowed_reduce.h"
#include "tests/testing/status_matchers.h"

namespace reprod::kernels {
namespace {

using ::reprod::kernels::testing::ExpectEquivalent;
using ::reprod::kernels::testing::ExpectIdentical;
using ::reprod::kernels::testing::HostTensor;
using ::reprod::kernels::testing::MakeTensor;
using ::reprod::kernels::testing::ReduceAll;
using ::reprod::kernels::testing::ReduceFlatWindows;
using ::reprod::kernels::testing::ReduceTransposedTiles;
using ::reprod::testing::IsOk;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kChunk = CpuBackend::kChunkElements;
constexpr int64_t kHuge = int64_t{1} << 40;

// A partial of one element whose sum_abs is `v` (count 1, so Merge adds).
DiffStats Partial(double v) {
  DiffStats s;
  s.count = 1;
  s.sum_abs = v;
  return s;
}

TEST(ChunkGridTest, LargestPowerOfTwoMultiple) {
  EXPECT_EQ(LargestPowerOfTwoMultiple(10, 9), 0);
  EXPECT_EQ(LargestPowerOfTwoMultiple(10, 10), 10);
  EXPECT_EQ(LargestPowerOfTwoMultiple(10, 39), 20);
  EXPECT_EQ(LargestPowerOfTwoMultiple(10, 40), 40);
  EXPECT_EQ(LargestPowerOfTwoMultiple(10, 79), 40);
  EXPECT_EQ(LargestPowerOfTwoMultiple(1, 1), 1);
  EXPECT_EQ(LargestPowerOfTwoMultiple(kChunk, 5 * kChunk + 17), 4 * kChunk);
  EXPECT_EQ(LargestPowerOfTwoMultiple(3, int64_t{1} << 62), int64_t{3} << 60);
}

TEST(ChunkGridTest, SquarishTiles) {
  // 100 elements: 10 x 10 tiles.
  TransposedWindowPlan p = SquarishTiles(1000, 5000, 100);
  EXPECT_EQ(p.rows, 10);
  EXPECT_EQ(p.cols, 10);
  EXPECT_FALSE(p.exact);
  // Fewer rows than sqrt: all rows, wider tiles.
  p = SquarishTiles(2, 5000, 1000);
  EXPECT_EQ(p.rows, 2);
  EXPECT_EQ(p.cols, 500);
  // floor(sqrt(99)) = 9 rows, 11 columns.
  p = SquarishTiles(50, 500, 99);
  EXPECT_EQ(p.rows, 9);
  EXPECT_EQ(p.cols, 11);
  p = SquarishTiles(50, 500, 1);
  EXPECT_EQ(p.rows, 1);
  EXPECT_EQ(p.cols, 1);
}

// 1e16 + 1 rounds back to 1e16 (spacing 2, ties to even), so the grouping
// shows in the result: tree (1e16 + 1) + (-1e16 + 1) = 1e16 - 1e16 = 0;
// in sequence ((1e16 + 1) - 1e16) + 1 = 1.
TEST(ChunkGridTest, MergeOrders) {
  std::vector<DiffStats> parts = {Partial(1e16), Partial(1), Partial(-1e16), Partial(1)};
  const DiffStats seq = SequentialMerge(parts);
  EXPECT_EQ(seq.sum_abs, 1.0);
  EXPECT_EQ(seq.count, 4u);
  PairwiseTreeMerge(absl::MakeSpan(parts));
  EXPECT_EQ(parts[0].sum_abs, 0.0);
  EXPECT_EQ(parts[0].count, 4u);
  // Five parts: ((p0 + p1) + (p2 + p3)) + p4.
  std::vector<DiffStats> five = {Partial(1), Partial(1e16), Partial(1), Partial(-1e16), Partial(3)};
  PairwiseTreeMerge(absl::MakeSpan(five));
  EXPECT_EQ(five[0].sum_abs, 3.0);  // (1e16) + (-1e16) + 3
  EXPECT_EQ(SequentialMerge({}).count, 0u);
  std::vector<DiffStats> one = {Partial(7)};
  PairwiseTreeMerge(absl::MakeSpan(one));
  EXPECT_EQ(one[0].sum_abs, 7.0);
}

// A backend with only the interface's defaults (reduction by DiffStats::Add
// in index order).
class PlainBackend final : public Backend {
 public:
  std::string_view name() const override { return "plain"; }
  absl::StatusOr<DiffStats> Compare(const DiffTask&) override {
    return absl::UnimplementedError("plans only");
  }
  absl::Status CompareBatch(absl::Span<const DiffTask>, absl::Span<DiffStats>) override {
    return absl::UnimplementedError("plans only");
  }
};

TEST(ChunkGridTest, DefaultPlansAndMerge) {
  PlainBackend b;
  const DType f = DType::kFloat32;
  FlatWindowPlan fp = b.PlanFlatWindows(f, f, 100, 100);
  EXPECT_EQ(fp.elements, 100);
  EXPECT_TRUE(fp.exact);
  fp = b.PlanFlatWindows(f, f, 101, 100);
  EXPECT_EQ(fp.elements, 100);
  EXPECT_FALSE(fp.exact);
  fp = b.PlanFlatWindows(f, f, 101, 0);
  EXPECT_EQ(fp.elements, 1);
  TransposedWindowPlan tp = b.PlanTransposedWindows(f, f, 10, 30, 300);
  EXPECT_EQ(tp.rows, 10);
  EXPECT_EQ(tp.cols, 30);
  EXPECT_TRUE(tp.exact);
  tp = b.PlanTransposedWindows(f, f, 11, 30, 300);
  EXPECT_EQ(tp.rows, 10);
  EXPECT_EQ(tp.cols, 30);
  EXPECT_FALSE(tp.exact);
  tp = b.PlanTransposedWindows(f, f, 11, 30, 29);
  EXPECT_EQ(tp.rows, 5);
  EXPECT_EQ(tp.cols, 5);
  EXPECT_FALSE(tp.exact);
  std::vector<DiffStats> parts = {Partial(1e16), Partial(1), Partial(-1e16), Partial(1)};
  EXPECT_EQ(b.MergeWindows(parts).sum_abs, 1.0);  // in sequence
}

TEST(ChunkGridTest, CpuPlans) {
  CpuBackend b(1);
  const DType f = DType::kFloat32, d = DType::kFloat64;
  const int64_t n = 5 * kChunk + 17;
  FlatWindowPlan fp = b.PlanFlatWindows(f, d, n, kHuge);
  EXPECT_EQ(fp.elements, n);
  EXPECT_TRUE(fp.exact);
  fp = b.PlanFlatWindows(f, d, n, n);
  EXPECT_EQ(fp.elements, n);
  EXPECT_TRUE(fp.exact);
  fp = b.PlanFlatWindows(f, d, n, 3 * kChunk);
  EXPECT_EQ(fp.elements, 2 * kChunk);
  EXPECT_TRUE(fp.exact);
  fp = b.PlanFlatWindows(f, d, n, kChunk);
  EXPECT_EQ(fp.elements, kChunk);
  EXPECT_TRUE(fp.exact);
  fp = b.PlanFlatWindows(f, d, n, kChunk - 1);
  EXPECT_EQ(fp.elements, kChunk - 1);
  EXPECT_FALSE(fp.exact);
  // Transposed, n = 300: a chunk is 2^18 / 300 = 873 rows rounded up to
  // the kernel's 64-row tiles, 896.
  TransposedWindowPlan tp = b.PlanTransposedWindows(f, f, 4000, 300, 2 * kChunk);
  EXPECT_EQ(tp.rows, 896);
  EXPECT_EQ(tp.cols, 300);
  EXPECT_TRUE(tp.exact);
  tp = b.PlanTransposedWindows(f, f, 4000, 300, 4 * 896 * 300 + 299);
  EXPECT_EQ(tp.rows, 4 * 896);
  EXPECT_TRUE(tp.exact);
  tp = b.PlanTransposedWindows(f, f, 4000, 300, 4000 * 300);
  EXPECT_EQ(tp.rows, 4000);
  EXPECT_TRUE(tp.exact);
  tp = b.PlanTransposedWindows(f, f, 4000, 300, 895 * 300 + 299);
  EXPECT_EQ(tp.rows, 895);
  EXPECT_EQ(tp.cols, 300);
  EXPECT_FALSE(tp.exact);
  // A row wider than the budget: square-ish tiles.
  tp = b.PlanTransposedWindows(f, f, 4000, 300, 299);
  EXPECT_EQ(tp.rows, 17);
  EXPECT_EQ(tp.cols, 17);
  EXPECT_FALSE(tp.exact);
  // Wide rows: 2^18 / 3000 = 87 rows, rounded up to 128.
  tp = b.PlanTransposedWindows(f, f, 1000, 3000, 3000 * 200);
  EXPECT_EQ(tp.rows, 128);
  EXPECT_TRUE(tp.exact);
  std::vector<DiffStats> parts = {Partial(1e16), Partial(1), Partial(-1e16), Partial(1)};
  EXPECT_EQ(b.MergeWindows(parts).sum_abs, 0.0);  // pairwise tree
}

// ---------------------------------------------------------------------------
// Windows against the whole pair.

std::vector<double> Values(size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::uniform_int_distribution<int> expo(-4, 3);
  std::vector<double> v(n);
  for (double& x : v) x = unit(rng) * std::pow(10.0, expo(rng));
  return v;
}

std::vector<double> Perturbed(const std::vector<double>& v, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::vector<double> out(v);
  for (double& x : out) x += 1e-3 * unit(rng) * std::fabs(x);
  return out;
}

// Plants, at flat position `at` (in ref's layout) and after it: NaN in ref,
// +Inf in cand, matched -Inf on both sides, a large finite difference
// (finite even in float16).
void Plant(std::vector<double>& ref, std::vector<double>& cand, size_t at, size_t cand_at_1,
           size_t cand_at_2, size_t cand_at_3) {
  ref[at] = kNaN;
  cand[cand_at_1] = kInf;
  ref[at + 2] = -kInf;
  cand[cand_at_2] = -kInf;
  cand[cand_at_3] += 1e4;
}

std::string Describe(const std::string& what, int64_t budget, bool exact, bool batch,
                     bool planted) {
  return absl::StrCat(what, " budget ", budget, exact ? " exact" : " rounding-only",
                      batch ? " batch" : " compare", planted ? " with NaN/Inf" : "");
}

TEST(ChunkGridTest, CpuFlatWindowsMatchTheWholePair) {
  CpuBackend b(2);
  std::mt19937_64 rng(7);
  int exact_runs = 0, inexact_runs = 0;
  for (const int64_t n : {int64_t{1}, kChunk - 1, kChunk, kChunk + 1, 5 * kChunk + 17}) {
    std::vector<double> rv = Values(static_cast<size_t>(n), rng);
    std::vector<double> cv = Perturbed(rv, rng);
    for (const bool planted : {false, true}) {
      if (planted && n < 8) continue;
      std::vector<double> r = rv, c = cv;
      if (planted) {
        // In the last window of the kChunk grid (and of every other grid
        // tried here but the budget-sized one).
        const size_t at = static_cast<size_t>(n) - 5;
        Plant(r, c, at, at + 1, at + 2, at + 3);
      }
      const HostTensor ref = MakeTensor(DType::kFloat32, r);
      const HostTensor cand = MakeTensor(n > kChunk ? DType::kFloat64 : DType::kFloat32, c);
      DiffTask whole_task;
      whole_task.ref = ref.view();
      whole_task.cand = cand.view();
      absl::StatusOr<DiffStats> whole = b.Compare(whole_task);
      ASSERT_THAT(whole.status(), IsOk());
      ASSERT_EQ(whole->count, static_cast<uint64_t>(n));
      if (planted) {
        ASSERT_EQ(whole->nan_diff, 1u);
        ASSERT_EQ(whole->inf_diff, 1u);
      }
      bool batch = false;
      for (const int64_t budget :
           {kChunk / 3 + 1, kChunk - 1, kChunk, 2 * kChunk + 5, 3 * kChunk, n, kHuge}) {
        const FlatWindowPlan plan = b.PlanFlatWindows(ref.dtype, cand.dtype, n, budget);
        ASSERT_GE(plan.elements, 1);
        ASSERT_LE(plan.elements, std::max<int64_t>(budget, 1));
        batch = !batch;
        const DiffStats windows = ReduceFlatWindows(b, ref, cand, plan.elements, batch);
        const std::string where = Describe(absl::StrCat("n ", n, " windows of ", plan.elements),
                                           budget, plan.exact, batch, planted);
        if (plan.exact) {
          ++exact_runs;
          ExpectIdentical(windows, *whole, where);
        } else {
          ++inexact_runs;
          ExpectEquivalent(windows, *whole, 1e-12, where);
        }
      }
    }
  }
  EXPECT_GT(exact_runs, 20);
  EXPECT_GT(inexact_runs, 5);
}

// The grid matters: the same exact windows merged in sequence (not the
// backend's tree) round the sums differently, so the bit-for-bit checks
// above can fail.
TEST(ChunkGridTest, CpuWindowsMergedInAnotherOrderDiffer) {
  CpuBackend b(2);
  std::mt19937_64 rng(11);
  const int64_t n = 5 * kChunk + 17;
  std::vector<double> rv = Values(static_cast<size_t>(n), rng);
  const HostTensor ref = MakeTensor(DType::kFloat32, rv);
  const HostTensor cand = MakeTensor(DType::kFloat64, Perturbed(rv, rng));
  DiffTask whole_task;
  whole_task.ref = ref.view();
  whole_task.cand = cand.view();
  absl::StatusOr<DiffStats> whole = b.Compare(whole_task);
  ASSERT_THAT(whole.status(), IsOk());
  std::vector<DiffTask> tasks;
  for (int64_t e0 = 0; e0 < n; e0 += kChunk) {
    const int64_t len = std::min(kChunk, n - e0);
    DiffTask t;
    t.ref = TensorView{ref.dtype, Shape{len}, ref.bytes.data() + e0 * 4};
    t.cand = TensorView{cand.dtype, Shape{len}, cand.bytes.data() + e0 * 8};
    t.index_base = static_cast<uint64_t>(e0);
    tasks.push_back(t);
  }
  const std::vector<DiffStats> parts = ReduceAll(b, tasks, /*batch=*/true);
  ExpectIdentical(b.MergeWindows(parts), *whole, "tree");
  const DiffStats seq = SequentialMerge(parts);
  ExpectEquivalent(seq, *whole, 1e-12, "sequence");
  EXPECT_NE(0, std::memcmp(&seq, &*whole, sizeof(DiffStats)))
      << "merging in sequence happened to round like the tree; pick another seed";
}

TEST(ChunkGridTest, CpuTransposedWindowsMatchTheWholePair) {
  CpuBackend b(2);
  std::mt19937_64 rng(9);
  int exact_runs = 0, inexact_runs = 0;
  // Rows: several row chunks of the cpu grid (2^18 / n rounded up to 64).
  struct Case {
    int64_t m, n;
    DType ref, cand;
  };
  for (const Case& c : {Case{3 * kChunk + 100, 1, DType::kFloat32, DType::kFloat32},
                        Case{3 * 37504 + 5, 7, DType::kFloat32, DType::kFloat64},
                        Case{5 * 320 + 17, 1000, DType::kFloat64, DType::kFloat32},
                        Case{5 * 128 + 17, 3000, DType::kFloat32, DType::kFloat16}}) {
    const int64_t m = c.m, n = c.n;
    std::vector<double> rv = Values(static_cast<size_t>(m * n), rng);
    std::vector<double> cv_ref_layout = Perturbed(rv, rng);
    for (const bool planted : {false, true}) {
      std::vector<double> r = rv, cl = cv_ref_layout;
      if (planted) {
        // In the second row chunk of the cpu grid (RowsPerChunk(n) rows),
        // at the start of its last row.
        const int64_t row = std::min<int64_t>(m - 1, 2 * ((kChunk / n + 63) / 64 * 64) - 1);
        const size_t at = static_cast<size_t>(row * n);
        if (n >= 4) {
          Plant(r, cl, at, at + 1, at + 2, at + 3);
        } else {  // the planted values run over the next rows
          Plant(r, cl, at - 3 * n, at - 2 * n, at - n, at);
        }
      }
      // cand (n, m) holds cand_ref_layout[i * n + j] at [j, i].
      std::vector<double> ct(static_cast<size_t>(m * n));
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) ct[j * m + i] = cl[i * n + j];
      }
      const HostTensor ref = MakeTensor(c.ref, r, Shape{m, n});
      const HostTensor cand = MakeTensor(c.cand, ct, Shape{n, m});
      DiffTask whole_task;
      whole_task.ref = ref.view();
      whole_task.cand = cand.view();
      whole_task.transpose_cand = true;
      absl::StatusOr<DiffStats> whole = b.Compare(whole_task);
      ASSERT_THAT(whole.status(), IsOk());
      ASSERT_EQ(whole->count, static_cast<uint64_t>(m * n));
      if (planted) {
        ASSERT_EQ(whole->nan_diff, 1u);
        ASSERT_EQ(whole->inf_diff, 1u);
      }
      // Budgets in whole rows of the cpu grid's row chunk (R rows): R
      // (exact), 2R + 3 rows (exact, 2R), 3R (exact, 2R), R - 1 (rounding
      // only), the whole pair, and, for rows of at least 1000, a budget
      // below one row (square-ish tiles, rounding only).
      const int64_t unit = std::max<int64_t>(1, (kChunk / n + 63) / 64 * 64);
      std::vector<int64_t> budgets = {unit * n, (2 * unit + 3) * n, 3 * unit * n, (unit - 1) * n,
                                      m * n};
      if (n >= 1000) budgets.push_back(n - 1);
      bool batch = false;
      for (const int64_t budget : budgets) {
        const TransposedWindowPlan plan =
            b.PlanTransposedWindows(ref.dtype, cand.dtype, m, n, budget);
        ASSERT_GE(plan.rows, 1);
        ASSERT_GE(plan.cols, 1);
        ASSERT_LE(plan.rows * plan.cols, budget);
        batch = !batch;
        const DiffStats windows = ReduceTransposedTiles(b, ref, cand, plan, batch);
        const std::string where =
            Describe(absl::StrCat("(", m, ", ", n, ") tiles of ", plan.rows, " x ", plan.cols),
                     budget, plan.exact, batch, planted);
        if (plan.exact) {
          ++exact_runs;
          EXPECT_EQ(plan.cols, n) << where;
          ExpectIdentical(windows, *whole, where);
        } else {
          ++inexact_runs;
          ExpectEquivalent(windows, *whole, 1e-12, where);
        }
      }
    }
  }
  EXPECT_GE(exact_runs, 4 * 2 * 4);
  EXPECT_GE(inexact_runs, 4 * 2 + 2 * 2);
}

}  // namespace
}  // namespace reprod::kernels

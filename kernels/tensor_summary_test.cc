#include "kernels/tensor_summary.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/testing/reference_diff.h"
#include "tests/testing/status_matchers.h"

namespace reprod::kernels {
namespace {

using ::reprod::kernels::testing::HostTensor;
using ::reprod::kernels::testing::MakeHalfTensor;
using ::reprod::kernels::testing::MakeTensor;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(TensorSummaryTest, CountsAndFiniteStatistics) {
  HostTensor t = MakeTensor(DType::kFloat32, {1, -2, kNaN, kInf, -kInf, -kInf, 4.5, kNaN});
  ASSERT_OK_AND_ASSIGN(TensorSummary s, Summarize(t.view()));
  EXPECT_EQ(s.count, 8u);
  EXPECT_EQ(s.finite, 3u);
  EXPECT_EQ(s.nan_count, 2u);
  EXPECT_EQ(s.inf_count, 3u);
  EXPECT_EQ(s.neg_inf_count, 2u);
  EXPECT_EQ(s.min, -2.0);
  EXPECT_EQ(s.max, 4.5);
  EXPECT_DOUBLE_EQ(s.mean, 3.5 / 3);
}

TEST(TensorSummaryTest, EmptyAndAllNan) {
  HostTensor empty = MakeTensor(DType::kFloat64, {}, Shape{0, 4});
  ASSERT_OK_AND_ASSIGN(TensorSummary e, Summarize(empty.view()));
  EXPECT_EQ(e.count, 0u);
  EXPECT_TRUE(std::isnan(e.mean));
  EXPECT_TRUE(std::isnan(e.min));
  HostTensor nans = MakeTensor(DType::kFloat64, {kNaN, kNaN});
  ASSERT_OK_AND_ASSIGN(TensorSummary n, Summarize(nans.view()));
  EXPECT_EQ(n.nan_count, 2u);
  EXPECT_EQ(n.finite, 0u);
  EXPECT_TRUE(std::isnan(n.max));
  HostTensor scalar = MakeTensor(DType::kInt64, {-7}, Shape{});
  ASSERT_OK_AND_ASSIGN(TensorSummary z, Summarize(scalar.view()));
  EXPECT_EQ(z.count, 1u);
  EXPECT_EQ(z.mean, -7.0);
}

TEST(TensorSummaryTest, EveryDType) {
  for (int d = 0; d < kNumDTypes; ++d) {
    const DType dtype = static_cast<DType>(d);
    HostTensor t = MakeTensor(dtype, {0, 1, 3, 1, 0, 2});
    ASSERT_OK_AND_ASSIGN(TensorSummary s, Summarize(t.view()));
    double lo = kInf, hi = -kInf, sum = 0;
    for (double v : t.values) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum += v;
    }
    EXPECT_EQ(s.finite, 6u) << d;
    EXPECT_EQ(s.min, lo) << d;
    EXPECT_EQ(s.max, hi) << d;
    EXPECT_DOUBLE_EQ(s.mean, sum / 6) << d;
  }
  HostTensor half = MakeHalfTensor(DType::kFloat16, {0x7c00, 0xfc00, 0x7e00, 0x0001, 0x7bff});
  ASSERT_OK_AND_ASSIGN(TensorSummary h, Summarize(half.view()));
  EXPECT_EQ(h.inf_count, 2u);
  EXPECT_EQ(h.nan_count, 1u);
  EXPECT_EQ(h.min, 0x1p-24);
  EXPECT_EQ(h.max, 65504.0);
}

TEST(TensorSummaryTest, LargeTensorOnThePool) {
  const size_t n = 3000000;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(5.0, 2.0);
  std::vector<double> v(n);
  for (double& x : v) x = normal(rng);
  v[262143] = kNaN;
  v[262144] = -kInf;
  v[2000000] = 1e6;
  HostTensor t = MakeTensor(DType::kFloat64, v);
  long double sum = 0;
  double lo = kInf, hi = -kInf;
  for (double x : v) {
    if (!std::isfinite(x)) continue;
    sum += x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  ThreadPool pool(3);
  ASSERT_OK_AND_ASSIGN(TensorSummary s, Summarize(t.view(), &pool));
  EXPECT_EQ(s.finite, n - 2);
  EXPECT_EQ(s.nan_count, 1u);
  EXPECT_EQ(s.neg_inf_count, 1u);
  EXPECT_EQ(s.min, lo);
  EXPECT_EQ(s.max, 1e6);
  EXPECT_NEAR(s.mean, static_cast<double>(sum / (n - 2)), 1e-12 * 5);
  ASSERT_OK_AND_ASSIGN(TensorSummary again, Summarize(t.view()));
  EXPECT_EQ(again.mean, s.mean);  // deterministic for any pool
}

TEST(TensorSummaryTest, InvalidViews) {
  TensorView v{DType::kFloat32, Shape{3}, nullptr};
  EXPECT_THAT(Summarize(v), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no data")));
  float x = 1;
  TensorView neg{DType::kFloat32, Shape{-2}, &x};
  EXPECT_THAT(Summarize(neg), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  TensorView bad{static_cast<DType>(77), Shape{1}, &x};
  EXPECT_THAT(Summarize(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dtype")));
}

}  // namespace
}  // namespace reprod::kernels

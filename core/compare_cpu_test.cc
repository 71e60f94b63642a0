// CompareRuns on the real CPU backend: the same reports as with the naive
// test backend (exact counts, indices and extrema; sums to 1e-12 relative).
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/compare.h"
#include "core/fake_backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/auto_backend.h"
#include "kernels/backend.h"
#include "tests/testing/status_matchers.h"

namespace reprod::core {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

template <typename T>
Tensor Make(DType dtype, Shape shape, const std::vector<T>& values) {
  absl::StatusOr<Tensor> t = Tensor::Allocate(dtype, std::move(shape));
  EXPECT_TRUE(t.ok());
  if (!values.empty()) {
    std::memcpy(t->mutable_data(), values.data(), values.size() * sizeof(T));
  }
  return *t;
}

std::vector<float> Ramp(int n, float scale, float offset) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = std::sin(0.37f * i) * scale + offset;
  return v;
}

void ExpectNear(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) {
    EXPECT_EQ(std::isnan(a), std::isnan(b));
    return;
  }
  EXPECT_NEAR(a, b, 1e-12 * std::max(std::fabs(a), std::fabs(b)));
}

TEST(CompareRunsCpuTest, SameReportAsNaiveBackend) {
  const std::vector<float> w = Ramp(64 * 48, 1.0f, 0.0f);
  std::vector<float> wt(w.size());  // (48, 64) = w.T, slightly perturbed
  for (int i = 0; i < 64; ++i) {
    for (int j = 0; j < 48; ++j) wt[j * 64 + i] = w[i * 48 + j] + 1e-5f * j;
  }
  std::vector<float> big = Ramp(100003, 3.0f, 0.5f);
  std::vector<double> big_cand(big.begin(), big.end());
  big_cand[77777] += 1e-3;
  std::vector<float> with_nan = Ramp(33, 1.0f, 0.0f);
  with_nan[5] = static_cast<float>(kNaN);

  RunData ref{"ref",
              {{"forward",
                {{"fc.weight", {}, Make(DType::kFloat32, {64, 48}, w)},
                 {"big", {}, Make(DType::kFloat32, {100003}, big)},
                 {"nan", {}, Make(DType::kFloat32, {3, 11}, with_nan)},
                 {"ids", {}, Make<int64_t>(DType::kInt64, {3}, {1, 2, 3})},
                 {"empty", {}, Make<float>(DType::kFloat32, {0, 4}, {})}}},
               {"loss",
                {{"loss", 0, Make<float>(DType::kFloat32, {}, {0.25f})},
                 {"loss", 1, Make<float>(DType::kFloat32, {}, {0.5f})}}}}};
  RunData cand{
      "cand",
      {{"forward",
        {{"fc.weight", {}, Make(DType::kFloat32, {48, 64}, wt)},
         {"big", {}, Make(DType::kFloat64, {100003}, big_cand)},
         {"nan", {}, Make(DType::kFloat32, {3, 11}, with_nan)},
         {"ids", {}, Make<int64_t>(DType::kInt64, {3}, {1, 2, 4})},
         {"empty", {}, Make<float>(DType::kFloat32, {0, 4}, {})}}},
       {"loss",
        {{"loss", 0, Make<float>(DType::kFloat32, {}, {0.25f})},
         {"loss", 1, Make<float>(DType::kFloat32, {}, {0.5000001f})}}}}};
  Policy policy = *PresetPolicy("reprod");
  policy.defaults.push_back(MinCheck(Metric::kCosine, 0.999));
  policy.defaults.push_back(AllcloseCheck());
  policy.defaults.push_back(MaxCheck(Metric::kMismatchRatio, 0.5));
  policy.defaults.back().atol = 1e-4;
  policy.defaults.back().rtol = 0.0;

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<kernels::Backend> cpu,
                       kernels::CreateBackend(kernels::BackendKind::kCpu, 2));
  testing::FakeBackend naive;
  ASSERT_OK_AND_ASSIGN(Report a, CompareRuns(ref, cand, policy, *cpu));
  ASSERT_OK_AND_ASSIGN(Report b, CompareRuns(ref, cand, policy, naive));
  EXPECT_EQ(a.backend, "cpu");
  EXPECT_EQ(a.passed, b.passed);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorResult& x = a.tensors[i];
    const TensorResult& y = b.tensors[i];
    SCOPED_TRACE(x.checkpoint + "/" + x.DisplayKey());
    EXPECT_EQ(x.status, y.status);
    EXPECT_EQ(x.transposed, y.transposed);
    EXPECT_EQ(x.reason, y.reason);
    EXPECT_EQ(x.max_abs_index, y.max_abs_index);
    ASSERT_EQ(x.stats.has_value(), y.stats.has_value());
    if (x.stats) {
      EXPECT_EQ(x.stats->count, y.stats->count);
      EXPECT_EQ(x.stats->mismatches, y.stats->mismatches);
      EXPECT_EQ(x.stats->nan_diff, y.stats->nan_diff);
      EXPECT_EQ(x.stats->max_index, y.stats->max_index);
      ExpectNear(x.stats->max_abs_value(), y.stats->max_abs_value());
      ExpectNear(x.stats->min_abs_value(), y.stats->min_abs_value());
      EXPECT_TRUE(x.stats->histogram == y.stats->histogram);
    }
    ASSERT_EQ(x.checks.size(), y.checks.size());
    for (size_t c = 0; c < x.checks.size(); ++c) {
      EXPECT_EQ(x.checks[c].status, y.checks[c].status);
      ExpectNear(x.checks[c].value, y.checks[c].value);
    }
  }
  // Spot checks against hand-known answers.
  const TensorResult& fc = a.tensors[0];
  EXPECT_TRUE(fc.transposed);
  EXPECT_EQ(fc.max_abs_index[1], 47);  // largest perturbation: column 47
  const TensorResult& big_t = a.tensors[1];
  EXPECT_THAT(big_t.max_abs_index, ::testing::ElementsAre(77777));
  EXPECT_EQ(big_t.notes.size(), 1u);                    // float32 vs float64
  EXPECT_EQ(a.tensors[2].status, TensorStatus::kFail);  // NaN
  EXPECT_EQ(a.tensors[3].status, TensorStatus::kFail);  // ints differ
  EXPECT_EQ(a.tensors[4].status, TensorStatus::kPass);  // empty
  for (const TensorResult& t : a.tensors) EXPECT_EQ(t.reduced_by, "cpu") << t.key;
}

// A stand-in for the cuda backend: the naive backend under another name.
class StandInCuda : public testing::FakeBackend {
 public:
  std::string_view name() const override { return "cuda"; }
};

TEST(CompareRunsCpuTest, EachTensorNamesTheBackendThatReducedIt) {
  // --backend auto routes transposed pairs to cuda and element-wise ones to
  // the faster (here: cpu); the report says which reduced each pair.
  const std::vector<float> w = Ramp(6 * 4, 1.0f, 0.0f);
  std::vector<float> wt(w.size());
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < 4; ++j) wt[j * 6 + i] = w[i * 4 + j];
  }
  const std::vector<float> x = Ramp(10, 1.0f, 0.0f);
  RunData ref{"ref", {{"forward", {{"w", {}, Make(DType::kFloat32, {6, 4}, w)},
                                   {"x", {}, Make(DType::kFloat32, {10}, x)},
                                   {"only_ref", {}, Make(DType::kFloat32, {10}, x)}}}}};
  RunData cand{"cand", {{"forward", {{"w", {}, Make(DType::kFloat32, {4, 6}, wt)},
                                     {"x", {}, Make(DType::kFloat32, {10}, x)}}}}};
  kernels::AutoCalibration calibration;
  calibration.cpu_gbs = 2;
  calibration.cuda_gbs = 1;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<kernels::Backend> cpu,
                       kernels::CreateBackend(kernels::BackendKind::kCpu, 1));
  kernels::AutoBackend automatic(std::move(cpu), std::make_unique<StandInCuda>(), calibration);
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, *PresetPolicy("reprod"), automatic));
  EXPECT_EQ(r.backend, "auto (element-wise: cpu, transposed: cuda)");
  ASSERT_EQ(r.tensors.size(), 3u);
  EXPECT_EQ(r.tensors[0].key, "w");
  EXPECT_TRUE(r.tensors[0].transposed);
  EXPECT_EQ(r.tensors[0].reduced_by, "cuda");
  EXPECT_EQ(r.tensors[1].key, "x");
  EXPECT_EQ(r.tensors[1].reduced_by, "cpu");
  EXPECT_EQ(r.tensors[2].status, TensorStatus::kMissingInCand);
  EXPECT_EQ(r.tensors[2].reduced_by, "");
  ASSERT_OK_AND_ASSIGN(const std::string json, RenderReport(r, ReportFormat::kJson));
  EXPECT_THAT(json, ::testing::HasSubstr("\"transposed\": true,\n      \"backend\": \"cuda\""));
  EXPECT_THAT(json, ::testing::HasSubstr("\"transposed\": false,\n      \"backend\": \"cpu\""));
  EXPECT_THAT(json, ::testing::HasSubstr("\"backend\": null"));
}

}  // namespace
}  // namespace reprod::core

// CompareIndexed: planning on metadata, reduction through a PairReducer, and
// CompareOptions::pair_filter.
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/compare.h"
#include "core/fake_backend_test_util.h"
#include "core/pair_reducer.h"
#include "core/run_index.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::core {
namespace {

using ::reprod::core::testing::FakeBackend;
using ::reprod::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Records what it is asked and answers with stats whose max_abs is the
// pair's position in the call (so the test can see which stats went where),
// and names pair i's reducer "r<i>".
class RecordingReducer : public PairReducer {
 public:
  absl::Status Reduce(absl::Span<const PlannedPair> pairs, absl::Span<kernels::DiffStats> out,
                      absl::Span<std::string> reduced_by) override {
    ++calls;
    seen.assign(pairs.begin(), pairs.end());
    out_size = out.size();
    if (fail_with) return *fail_with;
    for (size_t i = 0; i < pairs.size(); ++i) {
      for (size_t k = 0; k < pairs[i].options.size(); ++k) {
        kernels::DiffStats s;
        // Two elements: d = i at index 1 (max), 0 at index 0.
        s.Add(0, 0, 0, pairs[i].options[k]);
        s.Add(0, static_cast<double>(i), 1, pairs[i].options[k]);
        s.mismatches = k;  // tells the tolerances apart
        out[pairs[i].stats_offset + k] = s;
      }
      reduced_by[i] = absl::StrCat("r", i);
    }
    return absl::OkStatus();
  }

  int calls = 0;
  std::vector<PlannedPair> seen;
  size_t out_size = 0;
  std::optional<absl::Status> fail_with;
};

TensorInfo T(std::string key, DType dtype, std::initializer_list<int64_t> dims,
             std::optional<int64_t> step = {}) {
  TensorInfo t;
  t.key = std::move(key);
  t.step = step;
  t.dtype = dtype;
  t.shape.assign(dims.begin(), dims.end());
  return t;
}

constexpr DType kF32 = DType::kFloat32;
constexpr DType kF64 = DType::kFloat64;

Policy MaxAbs(double bound) {
  Policy p = *PresetPolicy("reprod");
  p.defaults = {MaxCheck(Metric::kMaxAbs, bound)};
  return p;
}

TEST(CompareIndexedTest, PlansPairsByPositionWithTransposeAndTolerances) {
  RunIndex ref{"ref",
               {{"forward",
                 {T("w", kF32, {2, 3}), T("b", kF32, {3}),
                  T("only_ref", kF32, {1}), T("mismatch", kF32, {4, 2})}},
                {"loss", {T("loss", kF64, {}, 1), T("loss", kF64, {}, 2)}}}};
  RunIndex cand{"cand",
                {{"loss", {T("loss", kF32, {}, 2), T("loss", kF32, {}, 1)}},
                 {"forward",
                  {T("mismatch", kF32, {8}), T("b", kF32, {3}),
                   T("w", kF32, {3, 2}), T("only_cand", kF32, {1})}}}};
  Policy policy = MaxAbs(10);
  // loss/*: two allclose tolerances plus mismatch_ratio at the first one.
  Rule rule;
  rule.match = "loss/*";
  rule.checks = {AllcloseCheck(0.0, 0.0), AllcloseCheck(1.0, 0.0),
                 MaxCheck(Metric::kMismatchRatio, 1.0)};
  rule.checks[2].atol = 0.0;
  rule.checks[2].rtol = 0.0;
  rule.equal_nan = true;
  policy.rules = {rule};

  RecordingReducer reducer;
  ASSERT_OK_AND_ASSIGN(Report r,
                       CompareIndexed(ref, cand, policy, reducer, "recording"));
  EXPECT_EQ(reducer.calls, 1);
  EXPECT_EQ(r.backend, "recording");
  EXPECT_EQ(r.ref, "ref");
  EXPECT_EQ(r.cand, "cand");
  // Report order: loss@2, loss@1 (cand order), then forward's cand order.
  ASSERT_EQ(reducer.seen.size(), 4u);
  const PlannedPair& l2 = reducer.seen[0];
  EXPECT_EQ(l2.ref, (TensorPosition{1, 1}));
  EXPECT_EQ(l2.cand, (TensorPosition{0, 0}));
  EXPECT_FALSE(l2.transpose_cand);
  ASSERT_EQ(l2.options.size(), 2u);  // (0, 0) and (1, 0); ratio shares (0, 0)
  EXPECT_EQ(l2.options[0].atol, 0.0);
  EXPECT_EQ(l2.options[1].atol, 1.0);
  EXPECT_TRUE(l2.options[0].equal_nan);
  EXPECT_EQ(l2.stats_offset, 0u);
  const PlannedPair& l1 = reducer.seen[1];
  EXPECT_EQ(l1.ref, (TensorPosition{1, 0}));
  EXPECT_EQ(l1.cand, (TensorPosition{0, 1}));
  EXPECT_EQ(l1.stats_offset, 2u);
  const PlannedPair& b = reducer.seen[2];
  EXPECT_EQ(b.ref, (TensorPosition{0, 1}));
  EXPECT_EQ(b.cand, (TensorPosition{1, 1}));
  ASSERT_EQ(b.options.size(), 1u);  // default tolerance for float32
  EXPECT_EQ(b.options[0].atol, DefaultTolerance(kF32).atol);
  EXPECT_EQ(b.options[0].rtol, DefaultTolerance(kF32).rtol);
  EXPECT_FALSE(b.options[0].equal_nan);
  EXPECT_EQ(b.stats_offset, 4u);
  const PlannedPair& w = reducer.seen[3];
  EXPECT_EQ(w.ref, (TensorPosition{0, 0}));
  EXPECT_EQ(w.cand, (TensorPosition{1, 2}));
  EXPECT_TRUE(w.transpose_cand);
  EXPECT_EQ(w.stats_offset, 5u);
  EXPECT_EQ(reducer.out_size, 6u);

  // The stats came back to the right tensors and tolerances.
  ASSERT_EQ(r.tensors.size(), 7u);
  const TensorResult& loss2 = r.tensors[0];
  EXPECT_EQ(loss2.step, 2);
  EXPECT_EQ(loss2.stats->max_abs, 0.0);
  EXPECT_EQ(loss2.checks[0].value, 0.0);  // allclose (0, 0): mismatches 0
  EXPECT_EQ(loss2.checks[1].value, 1.0);  // allclose (1, 0): mismatches 1
  EXPECT_EQ(loss2.checks[2].value, 0.0);  // ratio at (0, 0)
  EXPECT_EQ(loss2.status, TensorStatus::kFail);
  EXPECT_EQ(r.tensors[1].stats->max_abs, 1.0);
  EXPECT_EQ(r.tensors[2].key, "mismatch");
  EXPECT_EQ(r.tensors[2].status, TensorStatus::kShapeMismatch);
  EXPECT_EQ(r.tensors[3].key, "b");
  EXPECT_EQ(r.tensors[3].stats->max_abs, 2.0);
  EXPECT_EQ(r.tensors[4].key, "w");
  EXPECT_EQ(r.tensors[4].stats->max_abs, 3.0);
  EXPECT_TRUE(r.tensors[4].transposed);
  EXPECT_THAT(r.tensors[4].max_abs_index, ElementsAre(0, 1));
  EXPECT_EQ(r.tensors[5].status, TensorStatus::kMissingInRef);
  EXPECT_EQ(r.tensors[6].key, "only_ref");
  EXPECT_EQ(r.tensors[6].status, TensorStatus::kMissingInCand);
  // Each compared tensor names its pair's reducer; the others none.
  EXPECT_EQ(r.tensors[0].reduced_by, "r0");
  EXPECT_EQ(r.tensors[1].reduced_by, "r1");
  EXPECT_EQ(r.tensors[2].reduced_by, "");
  EXPECT_EQ(r.tensors[3].reduced_by, "r2");
  EXPECT_EQ(r.tensors[4].reduced_by, "r3");
  EXPECT_EQ(r.tensors[5].reduced_by, "");
  EXPECT_EQ(r.tensors[6].reduced_by, "");
}

TEST(CompareIndexedTest, NothingToReduceMeansNoCallAndErrorsPassThrough) {
  RunIndex ref{"r", {{"f", {T("a", kF32, {2})}}}};
  RunIndex cand{"c", {{"f", {T("a", kF32, {3})}}}};
  RecordingReducer reducer;
  ASSERT_OK_AND_ASSIGN(Report r,
                       CompareIndexed(ref, cand, MaxAbs(1), reducer, "x"));
  EXPECT_EQ(reducer.calls, 0);
  EXPECT_EQ(r.tensors[0].status, TensorStatus::kShapeMismatch);

  reducer.fail_with = absl::DataLossError("chunk 3 of f/a is gone");
  EXPECT_THAT(CompareIndexed(ref, ref, MaxAbs(1), reducer, "x"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 3")));

  RunIndex dup{"d", {{"f", {T("a", kF32, {1}, 1), T("a", kF32, {1}, 1)}}}};
  EXPECT_THAT(
      CompareIndexed(ref, dup, MaxAbs(1), reducer, "x"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("f/a@1 twice")));
}

template <typename T>
Tensor Make(DType dtype, Shape shape, const std::vector<T>& values) {
  absl::StatusOr<Tensor> t = Tensor::Allocate(dtype, std::move(shape));
  EXPECT_TRUE(t.ok());
  if (!values.empty()) {
    std::memcpy(t->mutable_data(), values.data(), values.size() * sizeof(T));
  }
  return *t;
}

TEST(CompareIndexedTest, IndexRunDataKeepsPositions) {
  RunData run{"r",
              {{"f",
                {{"a", 3, Make<float>(kF32, {2}, {1, 2})},
                 {"b", {}, Make<double>(kF64, {1, 1}, {1})}}},
               {"g", {}}}};
  RunIndex index = IndexRunData(run);
  EXPECT_EQ(index.name, "r");
  ASSERT_EQ(index.checkpoints.size(), 2u);
  ASSERT_EQ(index.checkpoints[0].tensors.size(), 2u);
  EXPECT_EQ(index.checkpoints[0].tensors[0].key, "a");
  EXPECT_EQ(index.checkpoints[0].tensors[0].step, 3);
  EXPECT_EQ(index.checkpoints[0].tensors[1].dtype, kF64);
  EXPECT_EQ(index.checkpoints[0].tensors[1].shape, (Shape{1, 1}));
  EXPECT_EQ(index.checkpoints[1].name, "g");
}

TEST(CompareIndexedTest, PairFilterSkipsRejectedPairsOnly) {
  auto f = [](std::vector<float> v) {
    const Shape shape{static_cast<int64_t>(v.size())};
    return Make<float>(kF32, shape, v);
  };
  RunData ref{"r",
              {{"fwd",
                {{"a", 1, f({1, 2})},
                 {"b", 1, f({1, 2})},
                 {"gone", 1, f({1})},
                 {"a", 2, f({1, 2})}}}}};
  RunData cand{"c",
               {{"fwd",
                 {{"A", 1, f({1, 2})},
                  {"b", 1, f({1, 5})},
                  {"new", 1, f({1})},
                  {"A", 2, f({1, 9})}}}}};
  Policy p = MaxAbs(1);
  p.rename = {{"A", "a"}};
  std::vector<std::string> asked;
  CompareOptions options;
  options.pair_filter = [&](const TensorAddress& a) {
    asked.push_back(a.checkpoint + "/" + a.key + "@" +
                    std::to_string(a.step.value_or(-1)));
    return a.step == 1;  // only step 1 is "complete"
  };
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend, options));
  // Asked for matched pairs only, in ref terms (after rename).
  EXPECT_THAT(asked, ElementsAre("fwd/a@1", "fwd/b@1", "fwd/a@2"));
  EXPECT_EQ(backend.tasks_seen.size(), 2u);
  ASSERT_EQ(r.tensors.size(), 4u);
  EXPECT_EQ(r.tensors[0].key, "a");
  EXPECT_EQ(r.tensors[0].status, TensorStatus::kPass);
  EXPECT_EQ(r.tensors[1].key, "b");
  EXPECT_EQ(r.tensors[1].status, TensorStatus::kFail);
  EXPECT_EQ(r.tensors[2].key, "new");
  EXPECT_EQ(r.tensors[2].status, TensorStatus::kMissingInRef);
  EXPECT_EQ(r.tensors[3].key, "gone");
  EXPECT_EQ(r.tensors[3].status, TensorStatus::kMissingInCand);
  EXPECT_EQ(r.summary.tensors, 4);
  EXPECT_EQ(r.summary.failed, 1);
  EXPECT_EQ(r.checkpoints[0].tensors, 4);
  EXPECT_EQ(r.checkpoints[0].steps, 2);  // steps still count every tensor
  ASSERT_TRUE(r.first_failure.has_value());
  EXPECT_EQ(r.first_failure->key, "b");

  // Without the filter the step-2 pair fails too.
  FakeBackend all;
  ASSERT_OK_AND_ASSIGN(Report full, CompareRuns(ref, cand, p, all));
  EXPECT_EQ(full.tensors.size(), 5u);
  EXPECT_EQ(full.summary.failed, 2);
}

}  // namespace
}  // namespace reprod::core

#include "core/compare.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/fake_backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::core {
namespace {

using ::reprod::core::testing::FakeBackend;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

template <typename T>
Tensor Make(DType dtype, Shape shape, const std::vector<T>& values) {
  absl::StatusOr<Tensor> t = Tensor::Allocate(dtype, std::move(shape));
  EXPECT_TRUE(t.ok());
  EXPECT_EQ(static_cast<size_t>(t->num_elements()), values.size());
  if (!values.empty()) {
    std::memcpy(t->mutable_data(), values.data(), values.size() * sizeof(T));
  }
  return *t;
}

Tensor F32(Shape shape, const std::vector<float>& v) {
  return Make(DType::kFloat32, std::move(shape), v);
}
Tensor F64(Shape shape, const std::vector<double>& v) {
  return Make(DType::kFloat64, std::move(shape), v);
}

TensorEntry E(std::string key, Tensor t, std::optional<int64_t> step = {}) {
  return TensorEntry{std::move(key), step, std::move(t)};
}

RunData MakeRun(std::string name, std::vector<CheckpointData> cps) {
  return RunData{std::move(name), std::move(cps)};
}

Policy Reprod() { return *PresetPolicy("reprod"); }

const TensorResult& Find(const Report& r, std::string_view checkpoint,
                         std::string_view key,
                         std::optional<int64_t> step = {}) {
  for (const TensorResult& t : r.tensors) {
    if (t.checkpoint == checkpoint && t.key == key && t.step == step) return t;
  }
  ADD_FAILURE() << "no tensor " << checkpoint << "/" << key;
  static const TensorResult kNone;
  return kNone;
}

TEST(CompareRunsTest, IdenticalRunsPassInOneBatch) {
  RunData ref = MakeRun("torch", {{"forward",
                                   {E("logits", F32({2, 2}, {1, 2, 3, 4})),
                                    E("pooled", F32({3}, {0.5f, 0.25f, 0}))}},
                                  {"loss", {E("loss", F32({}, {0.75f}))}}});
  RunData cand = ref;
  cand.name = "paddle";
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  EXPECT_TRUE(r.passed);
  EXPECT_EQ(r.ref, "torch");
  EXPECT_EQ(r.cand, "paddle");
  EXPECT_EQ(r.policy, "reprod");
  EXPECT_EQ(r.backend, "fake");
  EXPECT_EQ(backend.batch_calls, 1);
  EXPECT_EQ(backend.tasks_seen.size(), 3u);
  EXPECT_EQ(r.summary.tensors, 3);
  EXPECT_EQ(r.summary.passed, 3);
  EXPECT_FALSE(r.first_failure.has_value());
  ASSERT_EQ(r.checkpoints.size(), 2u);
  EXPECT_EQ(r.checkpoints[0].name, "forward");
  EXPECT_EQ(r.checkpoints[0].tensors, 2);
  EXPECT_TRUE(r.checkpoints[0].passed);
  const TensorResult& logits = Find(r, "forward", "logits");
  EXPECT_EQ(logits.status, TensorStatus::kPass);
  ASSERT_TRUE(logits.stats.has_value());
  EXPECT_EQ(logits.stats->count, 4u);
  ASSERT_EQ(logits.checks.size(), 1u);
  EXPECT_EQ(logits.checks[0].value, 0.0);
  EXPECT_EQ(logits.policy_source, "defaults");
  EXPECT_THAT(logits.notes, IsEmpty());
}

TEST(CompareRunsTest, FailureNamesMetricValueBoundAndLocation) {
  RunData ref = MakeRun(
      "r", {{"forward", {E("out", F32({2, 3}, {0, 0, 0, 0, 0, 0.25f}))}}});
  RunData cand = MakeRun(
      "c", {{"forward", {E("out", F32({2, 3}, {0, 0, 0, 0, 0, 0.75f}))}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  EXPECT_FALSE(r.passed);
  const TensorResult& t = Find(r, "forward", "out");
  EXPECT_EQ(t.status, TensorStatus::kFail);
  // mean |d| = 0.5 / 6; largest error at flat 5 = [1, 2].
  ASSERT_EQ(t.checks.size(), 1u);
  EXPECT_EQ(t.checks[0].value, 0.5 / 6);
  EXPECT_EQ(t.checks[0].status, TensorStatus::kFail);
  EXPECT_THAT(t.max_abs_index, ElementsAre(1, 2));
  EXPECT_EQ(t.reason,
            "mean_abs = 0.08333333333333333 > max 1e-06; largest error at "
            "[1, 2]: ref 0.25, cand 0.75");
  ASSERT_TRUE(r.first_failure.has_value());
  EXPECT_EQ(r.first_failure->checkpoint, "forward");
  EXPECT_EQ(r.first_failure->key, "out");
  EXPECT_FALSE(r.first_failure->step.has_value());
  EXPECT_FALSE(r.checkpoints[0].passed);
  EXPECT_EQ(r.summary.failed, 1);
}

TEST(CompareRunsTest, TransposeAutoNonSquare) {
  // ref (2, 3); cand (3, 2) holds ref.T with one element perturbed.
  const std::vector<double> ref_v = {1, 2, 3, 4, 5, 6};
  const std::vector<double> cand_t = {1, 4, 2, 5.5, 3, 6};  // (3, 2)
  RunData ref = MakeRun("r", {{"fwd", {E("fc.weight", F64({2, 3}, ref_v))}}});
  RunData cand = MakeRun("c", {{"fwd", {E("fc.weight", F64({3, 2}, cand_t))}}});
  FakeBackend backend;
  Policy policy = Reprod();
  policy.defaults = {MaxCheck(Metric::kMaxAbs, 1.0)};
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, policy, backend));
  const TensorResult& t = Find(r, "fwd", "fc.weight");
  EXPECT_TRUE(t.transposed);
  EXPECT_EQ(t.status, TensorStatus::kPass);
  ASSERT_TRUE(backend.tasks_seen[0].transpose_cand);
  EXPECT_THAT(t.notes, ElementsAre(HasSubstr("cand.T")));

  // Oracle: the same comparison against an explicitly transposed copy.
  const std::vector<double> cand_copy = {1, 2, 3, 4, 5.5, 6};  // (2, 3)
  RunData cand2 =
      MakeRun("c2", {{"fwd", {E("fc.weight", F64({2, 3}, cand_copy))}}});
  FakeBackend backend2;
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(ref, cand2, policy, backend2));
  const TensorResult& t2 = Find(r2, "fwd", "fc.weight");
  EXPECT_FALSE(t2.transposed);
  ASSERT_TRUE(t.stats && t2.stats);
  EXPECT_EQ(t.stats->count, t2.stats->count);
  EXPECT_EQ(t.stats->sum_abs, t2.stats->sum_abs);
  EXPECT_EQ(t.stats->max_abs, 0.5);
  EXPECT_EQ(t.stats->max_abs, t2.stats->max_abs);
  EXPECT_EQ(t.stats->max_index, t2.stats->max_index);
  EXPECT_EQ(t.stats->cand_at_max, 5.5);
  EXPECT_EQ(t.stats->dot, t2.stats->dot);
  EXPECT_THAT(t.max_abs_index, ElementsAre(1, 1));
  EXPECT_EQ(t.max_abs_index, t2.max_abs_index);
}

TEST(CompareRunsTest, SquareIsNeverGuessedButGlobTransposes) {
  // cand = ref.T for a square matrix.
  RunData ref = MakeRun("r", {{"fwd", {E("w", F64({2, 2}, {1, 2, 3, 4}))}}});
  RunData cand = MakeRun("c", {{"fwd", {E("w", F64({2, 2}, {1, 3, 2, 4}))}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  const TensorResult& t = Find(r, "fwd", "w");
  EXPECT_FALSE(t.transposed);  // compared element-wise, so it fails
  EXPECT_EQ(t.status, TensorStatus::kFail);

  Policy globs = Reprod();
  globs.transpose = TransposeMode::kGlobs;
  globs.transpose_globs = {"fwd/w"};
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(ref, cand, globs, backend));
  EXPECT_TRUE(Find(r2, "fwd", "w").transposed);
  EXPECT_EQ(Find(r2, "fwd", "w").status, TensorStatus::kPass);

  // A square reversed pair of different shapes cannot exist, but a listed
  // non-square key is transposed. An unlisted (1, 2) vs (2, 1) differs only
  // in size-1 dimensions and compares flat (the same element pairing);
  // under `shapes: strict` it is a mismatch.
  RunData ref3 = MakeRun(
      "r",
      {{"fwd", {E("a", F64({1, 2}, {1, 2})), E("b", F64({1, 2}, {1, 2}))}}});
  RunData cand3 = MakeRun(
      "c",
      {{"fwd", {E("a", F64({2, 1}, {1, 2})), E("b", F64({2, 1}, {1, 2}))}}});
  globs.transpose_globs = {"*/a"};
  ASSERT_OK_AND_ASSIGN(Report r3, CompareRuns(ref3, cand3, globs, backend));
  EXPECT_TRUE(Find(r3, "fwd", "a").transposed);
  EXPECT_EQ(Find(r3, "fwd", "a").status, TensorStatus::kPass);
  EXPECT_EQ(Find(r3, "fwd", "b").status, TensorStatus::kPass);
  EXPECT_FALSE(Find(r3, "fwd", "b").transposed);
  EXPECT_THAT(Find(r3, "fwd", "b").notes,
              ElementsAre("shapes (1, 2) and (2, 1) differ only in size-1 "
                          "dimensions"));
  globs.shapes = ShapeMode::kStrict;
  ASSERT_OK_AND_ASSIGN(Report r4, CompareRuns(ref3, cand3, globs, backend));
  EXPECT_EQ(Find(r4, "fwd", "b").status, TensorStatus::kShapeMismatch);
  EXPECT_EQ(Find(r4, "fwd", "b").reason,
            "shape mismatch: ref (1, 2) vs cand (2, 1) (key not listed under "
            "'transpose')");
}

TEST(CompareRunsTest, TransposeNeverIsShapeMismatch) {
  RunData ref =
      MakeRun("r", {{"fwd", {E("w", F64({2, 3}, {1, 2, 3, 4, 5, 6}))}}});
  RunData cand =
      MakeRun("c", {{"fwd", {E("w", F64({3, 2}, {1, 4, 2, 5, 3, 6}))}}});
  Policy never = Reprod();
  never.transpose = TransposeMode::kNever;
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, never, backend));
  const TensorResult& t = Find(r, "fwd", "w");
  EXPECT_EQ(t.status, TensorStatus::kShapeMismatch);
  EXPECT_EQ(t.reason,
            "shape mismatch: ref (2, 3) vs cand (3, 2) (policy has transpose: "
            "never)");
  EXPECT_EQ(backend.batch_calls, 0);  // nothing to reduce
}

TEST(CompareRunsTest, NoBroadcast) {
  // Different element counts, or equal counts in differently shaped
  // dimensions other than 1, never compare.
  RunData ref = MakeRun(
      "r", {{"fwd",
             {E("a", F32({4}, {1, 2, 3, 4})), E("b", F32({2, 2}, {1, 2, 3, 4})),
              E("c", F32({1, 4, 1}, {1, 2, 3, 4})), E("z", F32({}, {1}))}}});
  RunData cand = MakeRun(
      "c", {{"fwd",
             {E("a", F32({1}, {1})), E("b", F32({4}, {1, 2, 3, 4})),
              E("c", F32({2, 2}, {1, 2, 3, 4})), E("z", F32({}, {1.5f}))}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  const TensorResult& a = Find(r, "fwd", "a");
  EXPECT_EQ(a.status, TensorStatus::kShapeMismatch);
  EXPECT_EQ(a.reason, "shape mismatch: ref (4,) vs cand (1,)");
  EXPECT_FALSE(a.stats.has_value());
  EXPECT_EQ(*a.shape_ref, (Shape{4}));
  EXPECT_EQ(*a.shape_cand, (Shape{1}));
  EXPECT_EQ(Find(r, "fwd", "b").reason,
            "shape mismatch: ref (2, 2) vs cand (4,)");
  EXPECT_EQ(Find(r, "fwd", "c").reason,
            "shape mismatch: ref (1, 4, 1) vs cand (2, 2)");
  // 0-d pairs compare their one element.
  const TensorResult& z = Find(r, "fwd", "z");
  EXPECT_EQ(z.status, TensorStatus::kFail);
  EXPECT_EQ(z.stats->count, 1u);
  EXPECT_EQ(z.checks[0].value, 0.5);
  EXPECT_THAT(z.max_abs_index, IsEmpty());
  EXPECT_THAT(z.reason, HasSubstr("largest error at []: ref 1.0, cand 1.5"));
  EXPECT_EQ(r.summary.failed, 4);
}

TEST(CompareRunsTest, ShapesDifferingOnlyInSize1DimsCompareFlat) {
  // Paddle < 2.5 returns every loss as (1,), torch as ().
  RunData ref = MakeRun(
      "r", {{"fwd",
             {E("loss", F32({}, {2.5f})), E("logits", F64({1, 3}, {1, 2, 3})),
              E("col", F64({4, 1}, {1, 2, 3, 4}))}}});
  RunData cand = MakeRun(
      "c", {{"fwd",
             {E("loss", F32({1}, {2.5f})), E("logits", F64({3}, {1, 2, 3.5})),
              E("col", F64({1, 4}, {1, 2, 3, 4}))}}});
  FakeBackend backend;
  Policy never = Reprod();
  never.transpose = TransposeMode::kNever;  // (4, 1) vs (1, 4) too
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, never, backend));
  const TensorResult& loss = Find(r, "fwd", "loss");
  EXPECT_EQ(loss.status, TensorStatus::kPass);
  EXPECT_EQ(loss.stats->count, 1u);
  EXPECT_THAT(loss.notes,
              ElementsAre("shapes () and (1,) differ only in size-1 "
                          "dimensions"));
  const TensorResult& logits = Find(r, "fwd", "logits");
  EXPECT_EQ(logits.status, TensorStatus::kFail);  // decided by the checks
  EXPECT_EQ(logits.stats->count, 3u);
  EXPECT_DOUBLE_EQ(logits.checks[0].value, 0.5 / 3);
  EXPECT_THAT(logits.max_abs_index, ElementsAre(0, 2));  // in ref's shape
  EXPECT_THAT(logits.reason,
              HasSubstr("largest error at [0, 2]: ref 3.0, cand 3.5"));
  EXPECT_FALSE(logits.transposed);
  const TensorResult& col = Find(r, "fwd", "col");
  EXPECT_EQ(col.status, TensorStatus::kPass);
  EXPECT_FALSE(col.transposed);
  EXPECT_TRUE(r.summary.compared == 3);

  Policy strict = Reprod();
  strict.shapes = ShapeMode::kStrict;
  ASSERT_OK_AND_ASSIGN(Report s, CompareRuns(ref, cand, strict, backend));
  EXPECT_EQ(Find(s, "fwd", "loss").status, TensorStatus::kShapeMismatch);
  EXPECT_EQ(Find(s, "fwd", "loss").reason,
            "shape mismatch: ref () vs cand (1,) (policy has shapes: strict)");
  EXPECT_EQ(Find(s, "fwd", "logits").status, TensorStatus::kShapeMismatch);
  // Under strict, (4, 1) vs (1, 4) is reversed 2-D: transpose auto takes it.
  EXPECT_TRUE(Find(s, "fwd", "col").transposed);
  EXPECT_FALSE(s.passed);
}

TEST(CompareRunsTest, UnsteppedPairsWithTheOnlyStepOfTheOtherSide) {
  auto v = F32({1}, {1});
  // ref: a file pushed without --step; cand: a run logged with step=0.
  RunData ref = MakeRun("r", {{"loss", {E("loss", v), E("acc", v),
                                        E("lr", v, 0), E("lr", v, 1)}}});
  RunData cand = MakeRun(
      "c", {{"loss", {E("loss", v, 0), E("acc", v, 3), E("acc", v, 4),
                      E("lr", v)}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  const TensorResult& loss = Find(r, "loss", "loss", 0);
  EXPECT_EQ(loss.status, TensorStatus::kPass);
  EXPECT_THAT(loss.notes,
              ElementsAre("paired by key: ref has no step, cand has step 0"));
  // Two cand steps: no guess; the missing side names the other's steps.
  EXPECT_EQ(Find(r, "loss", "acc", 3).status, TensorStatus::kMissingInRef);
  EXPECT_EQ(Find(r, "loss", "acc", 3).reason,
            "missing in ref (ref has it without a step)");
  EXPECT_EQ(Find(r, "loss", "acc").reason,
            "missing in cand (cand has it at steps 3, 4)");
  EXPECT_EQ(Find(r, "loss", "lr").reason,
            "missing in ref (ref has it at steps 0, 1)");
  EXPECT_EQ(Find(r, "loss", "lr", 1).reason,
            "missing in cand (cand has it without a step)");
  EXPECT_EQ(r.summary.compared, 1);
  EXPECT_FALSE(r.passed);

  // The reverse: ref stepped once, cand without a step.
  RunData ref2 = MakeRun("r", {{"loss", {E("loss", v, 7)}}});
  RunData cand2 = MakeRun("c", {{"loss", {E("loss", v)}}});
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(ref2, cand2, Reprod(), backend));
  ASSERT_EQ(r2.tensors.size(), 1u);
  EXPECT_EQ(r2.tensors[0].step, 7);
  EXPECT_THAT(r2.tensors[0].notes,
              ElementsAre("paired by key: ref has step 7, cand has no step"));
  EXPECT_TRUE(r2.passed);
}

TEST(CompareRunsTest, NothingComparedNeverPasses) {
  FakeBackend backend;
  // Two empty runs.
  ASSERT_OK_AND_ASSIGN(
      Report empty,
      CompareRuns(MakeRun("r", {}), MakeRun("c", {}), Reprod(), backend));
  EXPECT_FALSE(empty.passed);
  EXPECT_EQ(empty.summary.compared, 0);
  EXPECT_THAT(empty.reasons,
              ElementsAre("nothing to compare: neither side holds a tensor"));
  // Two empty checkpoints (files whose every member was skipped).
  ASSERT_OK_AND_ASSIGN(
      Report hollow, CompareRuns(MakeRun("r", {{"fwd", {}}}),
                                 MakeRun("c", {{"fwd", {}}}), Reprod(), backend));
  EXPECT_FALSE(hollow.passed);
  ASSERT_EQ(hollow.checkpoints.size(), 1u);
  EXPECT_FALSE(hollow.checkpoints[0].passed);
  EXPECT_THAT(hollow.checkpoints[0].reasons,
              ElementsAre("checkpoint 'fwd' holds no tensor in either run: "
                          "nothing compared"));
  // Disjoint keys.
  auto v = F32({1}, {1});
  ASSERT_OK_AND_ASSIGN(
      Report disjoint,
      CompareRuns(MakeRun("r", {{"fwd", {E("a", v)}}}),
                  MakeRun("c", {{"fwd", {E("b", v)}}}), Reprod(), backend));
  EXPECT_FALSE(disjoint.passed);
  EXPECT_THAT(disjoint.reasons,
              ElementsAre("nothing compared: no tensor pairs with a "
                          "comparable tensor on the other side (1 missing in "
                          "ref, 1 missing in cand, 0 shape mismatches)"));
  EXPECT_EQ(backend.batch_calls, 0);
  // One real pair is enough.
  ASSERT_OK_AND_ASSIGN(
      Report one, CompareRuns(MakeRun("r", {{"fwd", {E("a", v)}}}),
                              MakeRun("c", {{"fwd", {E("a", v)}}}), Reprod(),
                              backend));
  EXPECT_TRUE(one.passed);
  EXPECT_THAT(one.reasons, IsEmpty());
  // A watch round (pair filter) that rejects every pair is not a failure.
  CompareOptions filtered;
  filtered.pair_filter = [](const TensorAddress&) { return false; };
  ASSERT_OK_AND_ASSIGN(
      Report none, CompareRuns(MakeRun("r", {{"fwd", {E("a", v)}}}),
                               MakeRun("c", {{"fwd", {E("a", v)}}}), Reprod(),
                               backend, filtered));
  EXPECT_TRUE(none.passed);
}

TEST(CompareRunsTest, AsBf16ReinterpretsListedUint16Leaves) {
  // bfloat16 bits of 1.0, 2.0, -0.5 (0x3F80, 0x4000, 0xBF00).
  const std::vector<uint16_t> bits = {0x3F80, 0x4000, 0xBF00};
  RunData ref = MakeRun(
      "r", {{"fwd", {E("w", F32({3}, {1.0f, 2.0f, -0.5f})),
                     E("ids", F32({3}, {16256, 16384, 48896}))}}});
  RunData cand = MakeRun(
      "c", {{"fwd", {E("w", Make(DType::kUInt16, {3}, bits)),
                     E("ids", Make(DType::kUInt16, {3}, bits))}}});
  FakeBackend backend;
  Policy p = Reprod();
  p.as_bf16 = {"fwd/w"};
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  const TensorResult& w = Find(r, "fwd", "w");
  EXPECT_EQ(w.status, TensorStatus::kPass);
  EXPECT_EQ(*w.dtype_cand, DType::kBFloat16);
  EXPECT_THAT(w.notes, ElementsAre("cand uint16 read as bfloat16 (as_bf16)",
                                   "dtypes differ (ref float32, cand "
                                   "bfloat16); compared by value"));
  // Not listed: the uint16 values themselves.
  const TensorResult& ids = Find(r, "fwd", "ids");
  EXPECT_EQ(ids.status, TensorStatus::kPass);
  EXPECT_EQ(*ids.dtype_cand, DType::kUInt16);
}

TEST(CompareRunsTest, EmptyPairsPass) {
  RunData ref =
      MakeRun("r", {{"fwd", {E("e", F32({0, 3}, {})), E("e1", F32({0}, {}))}}});
  RunData cand = MakeRun(
      "c", {{"fwd", {E("e", F32({0, 3}, {})), E("e1", F32({0, 3}, {}))}}});
  Policy policy = Reprod();
  policy.defaults = {MaxCheck(Metric::kMeanAbs, 0),
                     MinCheck(Metric::kCosine, 1), AllcloseCheck(),
                     MaxCheck(Metric::kMismatchRatio, 0)};
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, policy, backend));
  const TensorResult& e = Find(r, "fwd", "e");
  EXPECT_EQ(e.status, TensorStatus::kPass);
  EXPECT_EQ(e.stats->count, 0u);
  EXPECT_THAT(e.max_abs_index, IsEmpty());
  EXPECT_EQ(Find(r, "fwd", "e1").status, TensorStatus::kShapeMismatch);
}

TEST(CompareRunsTest, MixedDtypesComparedByValueWithNote) {
  RunData ref = MakeRun("r", {{"fwd", {E("x", F32({2}, {0.5f, 0.25f}))}}});
  RunData cand = MakeRun("c", {{"fwd", {E("x", F64({2}, {0.5, 0.25}))}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  const TensorResult& x = Find(r, "fwd", "x");
  EXPECT_EQ(x.status, TensorStatus::kPass);
  EXPECT_EQ(*x.dtype_ref, DType::kFloat32);
  EXPECT_EQ(*x.dtype_cand, DType::kFloat64);
  EXPECT_THAT(x.notes, ElementsAre("dtypes differ (ref float32, cand float64); "
                                   "compared by value"));
}

TEST(CompareRunsTest, NaNNeverPasses) {
  RunData ref = MakeRun(
      "r",
      {{"fwd", {E("a", F64({2}, {1, kNaN})), E("b", F64({2}, {1, kNaN}))}}});
  RunData cand = MakeRun(
      "c", {{"fwd", {E("a", F64({2}, {1, 1})), E("b", F64({2}, {1, kNaN}))}}});
  FakeBackend backend;
  Policy p = Reprod();
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  EXPECT_EQ(Find(r, "fwd", "a").status, TensorStatus::kFail);
  EXPECT_TRUE(std::isnan(Find(r, "fwd", "a").checks[0].value));
  EXPECT_THAT(Find(r, "fwd", "a").reason,
              HasSubstr("mean_abs = nan (NaN never passes; max 1e-06)"));
  EXPECT_EQ(Find(r, "fwd", "b").status, TensorStatus::kFail);

  p.equal_nan = true;
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(ref, cand, p, backend));
  EXPECT_EQ(Find(r2, "fwd", "a").status, TensorStatus::kFail);  // NaN vs 1
  EXPECT_EQ(Find(r2, "fwd", "b").status, TensorStatus::kPass);  // NaN vs NaN
  EXPECT_TRUE(backend.tasks_seen.back().options.equal_nan);
}

TEST(CompareRunsTest, WarnBand) {
  RunData ref = MakeRun(
      "r", {{"fwd", {E("x", F64({2}, {1, 1})), E("y", F64({2}, {1, 1}))}}});
  RunData cand = MakeRun(
      "c",
      {{"fwd",
        {E("x", F64({2}, {1.0005, 1.0005})), E("y", F64({2}, {1, 1.00001}))}}});
  Policy p = Reprod();
  p.defaults = {MaxCheck(Metric::kMaxAbs, 1e-3, 1e-4)};
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  const TensorResult& x = Find(r, "fwd", "x");
  EXPECT_EQ(x.status, TensorStatus::kWarn);
  EXPECT_EQ(x.checks[0].status, TensorStatus::kWarn);
  EXPECT_THAT(x.reason, HasSubstr("is past warn 0.0001 (max 0.001)"));
  EXPECT_EQ(Find(r, "fwd", "y").status, TensorStatus::kPass);
  EXPECT_TRUE(r.passed);
  EXPECT_EQ(r.summary.warned, 1);
  EXPECT_EQ(r.summary.passed, 1);
  EXPECT_EQ(r.checkpoints[0].warned_tensors, 1);
  EXPECT_FALSE(r.first_failure.has_value());

  // Cosine warns below its warn level.
  p.defaults = {MinCheck(Metric::kCosine, 0.9, 0.999)};
  RunData cand2 = MakeRun(
      "c", {{"fwd", {E("x", F64({2}, {1, 0.8})), E("y", F64({2}, {1, -1}))}}});
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(ref, cand2, p, backend));
  EXPECT_EQ(Find(r2, "fwd", "x").status, TensorStatus::kWarn);  // ~0.9939
  EXPECT_EQ(Find(r2, "fwd", "y").status, TensorStatus::kFail);  // 0
  EXPECT_THAT(Find(r2, "fwd", "y").reason, HasSubstr("cosine = 0.0 < min 0.9"));
}

TEST(CompareRunsTest, MissingKeysBothSides) {
  RunData ref = MakeRun("r", {{"fwd",
                               {E("a", F32({1}, {1})), E("b", F32({1}, {1})),
                                E("c", F32({2}, {1, 2}))}}});
  RunData cand = MakeRun(
      "c", {{"fwd", {E("a", F32({1}, {1})), E("d", F32({3}, {1, 2, 3}))}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  ASSERT_EQ(r.tensors.size(), 4u);
  EXPECT_EQ(r.tensors[0].key, "a");
  EXPECT_EQ(r.tensors[1].key, "d");
  EXPECT_EQ(r.tensors[1].status, TensorStatus::kMissingInRef);
  EXPECT_FALSE(r.tensors[1].shape_ref.has_value());
  EXPECT_EQ(*r.tensors[1].shape_cand, (Shape{3}));
  EXPECT_EQ(r.tensors[2].key, "b");
  EXPECT_EQ(r.tensors[2].status, TensorStatus::kMissingInCand);
  EXPECT_EQ(r.tensors[3].key, "c");
  EXPECT_EQ(r.tensors[3].status, TensorStatus::kMissingInCand);
  EXPECT_EQ(*r.tensors[3].shape_ref, (Shape{2}));
  EXPECT_FALSE(r.tensors[3].shape_cand.has_value());
  EXPECT_EQ(r.summary.tensors, 4);
  EXPECT_EQ(r.summary.passed, 1);
  EXPECT_EQ(r.summary.missing_in_ref, 1);
  EXPECT_EQ(r.summary.missing_in_cand, 2);
  EXPECT_EQ(r.summary.failed, 0);
  EXPECT_EQ(r.first_failure->key, "d");
  EXPECT_FALSE(r.passed);
}

TEST(CompareRunsTest, CheckpointOnlyInOneRun) {
  RunData ref = MakeRun("r", {{"fwd", {E("a", F32({1}, {1}))}},
                              {"loss", {E("l", F32({1}, {1}))}}});
  RunData cand = MakeRun("c", {{"metric", {E("acc", F32({1}, {1}))}},
                               {"fwd", {E("a", F32({1}, {1}))}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  ASSERT_EQ(r.checkpoints.size(), 3u);
  EXPECT_EQ(r.checkpoints[0].name, "metric");
  EXPECT_FALSE(r.checkpoints[0].present_in_ref);
  EXPECT_EQ(r.checkpoints[1].name, "fwd");
  EXPECT_TRUE(r.checkpoints[1].passed);
  EXPECT_EQ(r.checkpoints[2].name, "loss");
  EXPECT_FALSE(r.checkpoints[2].present_in_cand);
  EXPECT_EQ(Find(r, "metric", "acc").status, TensorStatus::kMissingInRef);
  EXPECT_EQ(Find(r, "loss", "l").status, TensorStatus::kMissingInCand);
  EXPECT_EQ(r.first_failure->checkpoint, "metric");
}

TEST(CompareRunsTest, FirstFailureFollowsCandOrder) {
  auto bad = F32({1}, {2});
  auto good = F32({1}, {1});
  RunData ref =
      MakeRun("r", {{"fwd", {E("z", good), E("y", good), E("x", good)}},
                    {"loss", {E("l", good)}}});
  RunData cand =
      MakeRun("c", {{"loss", {E("l", bad)}},
                    {"fwd", {E("x", good), E("y", bad), E("z", bad)}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  EXPECT_EQ(r.first_failure->checkpoint, "loss");
  EXPECT_EQ(r.first_failure->key, "l");

  cand.checkpoints[0].tensors[0] = E("l", good);
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(ref, cand, Reprod(), backend));
  EXPECT_EQ(r2.first_failure->checkpoint, "fwd");
  EXPECT_EQ(r2.first_failure->key, "y");  // cand order x, y, z
  ASSERT_EQ(r2.tensors.size(), 4u);
  EXPECT_EQ(r2.tensors[1].key, "x");
  EXPECT_EQ(r2.tensors[2].key, "y");
  EXPECT_EQ(r2.tensors[3].key, "z");
}

TEST(CompareRunsTest, MatchesBySteps) {
  auto v = F32({1}, {1});
  RunData ref = MakeRun("r", {{"bp", {E("loss", v, 0), E("loss", v, 1)}}});
  RunData cand = MakeRun("c", {{"bp", {E("loss", v, 1), E("loss", v, 2)}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), backend));
  ASSERT_EQ(r.tensors.size(), 3u);
  EXPECT_EQ(r.tensors[0].step, 1);
  EXPECT_EQ(r.tensors[0].status, TensorStatus::kPass);
  EXPECT_EQ(r.tensors[1].step, 2);
  EXPECT_EQ(r.tensors[1].status, TensorStatus::kMissingInRef);
  EXPECT_EQ(r.tensors[2].step, 0);
  EXPECT_EQ(r.tensors[2].status, TensorStatus::kMissingInCand);
  EXPECT_EQ(r.first_failure->step, 2);
  EXPECT_EQ(r.tensors[1].DisplayKey(), "loss@2");
}

TEST(CompareRunsTest, MinSteps) {
  auto v = F32({1}, {1});
  Policy p = Reprod();
  p.checkpoints.push_back({"bp_align", CheckpointPolicy{{}, 2, {}}});
  // Runs with steps: distinct cand steps count.
  RunData ref =
      MakeRun("r", {{"bp_align", {E("loss", v, 0), E("grad", v, 0)}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, ref, p, backend));
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.checkpoints[0].steps, 1);
  EXPECT_EQ(r.checkpoints[0].min_steps, 2);
  EXPECT_THAT(r.checkpoints[0].reasons,
              ElementsAre("checkpoint 'bp_align' needs at least 2 steps in "
                          "cand, found 1"));
  EXPECT_EQ(r.summary.failed, 0);
  EXPECT_FALSE(r.first_failure.has_value());

  RunData two =
      MakeRun("r", {{"bp_align", {E("loss", v, 0), E("loss", v, 1)}}});
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(two, two, p, backend));
  EXPECT_TRUE(r2.passed);
  EXPECT_EQ(r2.checkpoints[0].steps, 2);

  // File inputs (no steps): the checkpoint's tensors count.
  RunData files =
      MakeRun("f", {{"bp_align", {E("loss_0", v), E("loss_1", v)}}});
  ASSERT_OK_AND_ASSIGN(Report r3, CompareRuns(files, files, p, backend));
  EXPECT_TRUE(r3.passed);
  EXPECT_EQ(r3.checkpoints[0].steps, 2);
  RunData one = MakeRun("f", {{"bp_align", {E("loss_0", v)}}});
  ASSERT_OK_AND_ASSIGN(Report r4, CompareRuns(one, one, p, backend));
  EXPECT_FALSE(r4.passed);
}

TEST(CompareRunsTest, RequiredCheckpoints) {
  auto v = F32({1}, {1});
  ASSERT_OK_AND_ASSIGN(Policy p, PresetPolicy("competition"));
  RunData ref =
      MakeRun("r", {{"forward", {E("logits", v)}}, {"metric", {E("acc", v)}}});
  RunData cand = MakeRun("c", {{"forward", {E("logits", v)}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  EXPECT_FALSE(r.passed);
  ASSERT_EQ(r.checkpoints.size(), 5u);
  EXPECT_EQ(r.checkpoints[0].name, "forward");
  EXPECT_TRUE(r.checkpoints[0].passed);
  EXPECT_EQ(r.checkpoints[1].name, "metric");
  EXPECT_THAT(r.checkpoints[1].reasons,
              ElementsAre("required checkpoint 'metric' is absent from cand"));
  EXPECT_EQ(r.checkpoints[2].name, "loss");
  EXPECT_THAT(
      r.checkpoints[2].reasons,
      ElementsAre("required checkpoint 'loss' is absent from both runs"));
  EXPECT_EQ(r.checkpoints[3].name, "bp_align");
  EXPECT_EQ(r.checkpoints[3].min_steps, 2);
  EXPECT_EQ(r.checkpoints[4].name, "train_align");

  // Restricting to one checkpoint drops the others' requirements.
  CompareOptions only;
  only.checkpoints = {"forward"};
  ASSERT_OK_AND_ASSIGN(Report r2, CompareRuns(ref, cand, p, backend, only));
  EXPECT_TRUE(r2.passed);
  ASSERT_EQ(r2.checkpoints.size(), 1u);
}

TEST(CompareRunsTest, RenameAppliesToCandKeys) {
  auto v = F32({1}, {1});
  Policy p = Reprod();
  p.rename = {{"encoder.layers.", "encoder.layer."}};
  RunData ref = MakeRun("r", {{"fwd", {E("encoder.layer.0.w", v)}}});
  RunData cand = MakeRun("c", {{"fwd", {E("encoder.layers.0.w", v)}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  ASSERT_EQ(r.tensors.size(), 1u);
  EXPECT_EQ(r.tensors[0].key, "encoder.layer.0.w");
  EXPECT_EQ(r.tensors[0].cand_key, "encoder.layers.0.w");
  EXPECT_EQ(r.tensors[0].status, TensorStatus::kPass);
}

TEST(CompareRunsTest, RulesSelectChecks) {
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(R"(
defaults: {metric: mean_abs, max: 1e-6}
rules:
  - match: "forward/*"
    checks: [{metric: max_abs, max: 0.5}]
)",
                                             "p.yaml"));
  RunData ref = MakeRun("r", {{"forward", {E("x", F64({1}, {1}))}},
                              {"loss", {E("x", F64({1}, {1}))}}});
  RunData cand = MakeRun("c", {{"forward", {E("x", F64({1}, {1.25}))}},
                               {"loss", {E("x", F64({1}, {1.25}))}}});
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  EXPECT_EQ(Find(r, "forward", "x").status, TensorStatus::kPass);
  EXPECT_EQ(Find(r, "forward", "x").policy_source, "rule 'forward/*'");
  EXPECT_EQ(Find(r, "loss", "x").status, TensorStatus::kFail);
  EXPECT_FALSE(r.passed);
}

TEST(CompareRunsTest, AllcloseToleranceByDtypeAndExtraTasks) {
  // float32: atol 1e-5, rtol 1.3e-6 -> bound for ref 1 is 1.13e-5.
  RunData ref =
      MakeRun("r", {{"fwd",
                     {E("ok", F64({1}, {1})), E("bad", F64({1}, {1})),
                      E("i", Make<int32_t>(DType::kInt32, {2}, {3, 4}))}}});
  RunData cand = MakeRun(
      "c", {{"fwd",
             {E("ok", F32({1}, {1.00001f})), E("bad", F32({1}, {1.0001f})),
              E("i", Make<int32_t>(DType::kInt32, {2}, {3, 5}))}}});
  ASSERT_OK_AND_ASSIGN(Policy p, PresetPolicy("allclose"));
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  const TensorResult& ok = Find(r, "fwd", "ok");
  EXPECT_EQ(ok.status, TensorStatus::kPass);
  ASSERT_TRUE(ok.checks[0].tolerance.has_value());
  // float64 vs float32: looser side (float32 rtol 1.3e-6, float32 atol 1e-5).
  EXPECT_EQ(*ok.checks[0].tolerance, (Tolerance{1e-5, 1.3e-6}));
  const TensorResult& bad = Find(r, "fwd", "bad");
  EXPECT_EQ(bad.status, TensorStatus::kFail);
  EXPECT_EQ(bad.checks[0].value, 1.0);
  EXPECT_THAT(bad.reason, HasSubstr("allclose: 1 of 1 elements mismatch "
                                    "(atol 1e-05, rtol 1.3e-06)"));
  const TensorResult& i = Find(r, "fwd", "i");  // ints: exact
  EXPECT_EQ(i.status, TensorStatus::kFail);
  EXPECT_EQ(*i.checks[0].tolerance, (Tolerance{0, 0}));
  EXPECT_THAT(i.max_abs_index, ElementsAre(1));

  // Two tolerances for one key: two tasks, still one batch.
  Policy two = Reprod();
  two.defaults = {AllcloseCheck(0.0, 0.0), AllcloseCheck(1.0, 0.0),
                  MaxCheck(Metric::kMismatchRatio, 0.5, std::nullopt)};
  two.defaults[2].atol = 0.0;
  two.defaults[2].rtol = 0.0;
  RunData r1 = MakeRun("r", {{"fwd", {E("x", F64({2}, {1, 1}))}}});
  RunData c1 = MakeRun("c", {{"fwd", {E("x", F64({2}, {1, 1.5}))}}});
  FakeBackend b2;
  ASSERT_OK_AND_ASSIGN(Report rep, CompareRuns(r1, c1, two, b2));
  EXPECT_EQ(b2.batch_calls, 1);
  EXPECT_EQ(b2.tasks_seen.size(), 2u);
  const TensorResult& x = Find(rep, "fwd", "x");
  EXPECT_EQ(x.checks[0].value, 1.0);  // atol 0: one mismatch
  EXPECT_EQ(x.checks[0].status, TensorStatus::kFail);
  EXPECT_EQ(x.checks[1].value, 0.0);  // atol 1: none
  EXPECT_EQ(x.checks[1].status, TensorStatus::kPass);
  EXPECT_EQ(x.checks[2].value, 0.5);  // 1 of 2 at atol 0
  EXPECT_EQ(x.checks[2].status, TensorStatus::kPass);
  EXPECT_EQ(x.stats->mismatches, 1u);  // stats use the first tolerance
  EXPECT_EQ(*x.stats_tolerance, (Tolerance{0, 0}));
}

TEST(CompareRunsTest, WorstCheckPerCheckpoint) {
  RunData ref = MakeRun("r", {{"fwd",
                               {E("a", F64({1}, {1})), E("b", F64({1}, {1})),
                                E("c", F64({1}, {1}))}}});
  RunData cand =
      MakeRun("c", {{"fwd",
                     {E("a", F64({1}, {1.25})), E("b", F64({1}, {1.5})),
                      E("c", F64({1}, {1.125}))}}});
  Policy p = Reprod();
  p.defaults = {MaxCheck(Metric::kMaxAbs, 1.0)};
  FakeBackend backend;
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, p, backend));
  ASSERT_TRUE(r.checkpoints[0].worst.has_value());
  EXPECT_EQ(r.checkpoints[0].worst->key, "b");
  EXPECT_EQ(r.checkpoints[0].worst->value, 0.5);
  EXPECT_EQ(r.checkpoints[0].worst->bound, 1.0);
  EXPECT_EQ(r.checkpoints[0].worst->metric, Metric::kMaxAbs);
}

TEST(CompareRunsTest, InputErrors) {
  auto v = F32({1}, {1});
  FakeBackend backend;
  RunData dup_cp = MakeRun("r", {{"fwd", {E("a", v)}}, {"fwd", {E("b", v)}}});
  RunData ok = MakeRun("c", {{"fwd", {E("a", v)}}});
  EXPECT_THAT(CompareRuns(dup_cp, ok, Reprod(), backend),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("checkpoint 'fwd' twice")));
  RunData dup_key = MakeRun("c", {{"fwd", {E("a", v, 3), E("a", v, 3)}}});
  EXPECT_THAT(
      CompareRuns(ok, dup_key, Reprod(), backend),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fwd/a@3 twice")));
  Policy p = Reprod();
  p.rename = {{"x", "a"}};
  RunData renamed = MakeRun("c", {{"fwd", {E("a", v), E("x", v)}}});
  EXPECT_THAT(CompareRuns(ok, renamed, p, backend),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("(key 'x' after rename)")));
  backend.fail_with = absl::InternalError("device lost");
  EXPECT_THAT(CompareRuns(ok, ok, Reprod(), backend),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("device lost")));
}

}  // namespace
}  // namespace reprod::core

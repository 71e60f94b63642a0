// Multi-rank comparisons (core/internal/ranks.h through CompareRuns): rank to
// rank pairing, shard statistics merged into the global tensor's, replica
// checks, per-rank summaries and first divergence, and their JSON.
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/compare.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace reprod::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

Tensor F64(Shape shape, const std::vector<double>& v) {
  absl::StatusOr<Tensor> t = Tensor::Allocate(DType::kFloat64, std::move(shape));
  EXPECT_TRUE(t.ok());
  EXPECT_EQ(static_cast<size_t>(t->num_elements()), v.size());
  if (!v.empty()) std::memcpy(t->mutable_data(), v.data(), v.size() * sizeof(double));
  return *t;
}

TensorEntry E(std::string key, Tensor t, uint32_t rank, Placement placement = {},
              std::optional<int64_t> step = 0) {
  TensorEntry e;
  e.key = std::move(key);
  e.step = step;
  e.tensor = std::move(t);
  e.rank = rank;
  e.placement = std::move(placement);
  return e;
}

std::unique_ptr<kernels::Backend> Cpu() {
  absl::StatusOr<std::unique_ptr<kernels::Backend>> b =
      kernels::CreateBackend(kernels::BackendKind::kCpu, 2);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

Policy Reprod() { return *PresetPolicy("reprod"); }

// A rows x cols row-major matrix's block [r0, r0 + nr) x [c0, c0 + nc).
std::vector<double> Block(const std::vector<double>& m, int cols, int r0, int nr, int c0,
                          int nc) {
  std::vector<double> out;
  for (int r = r0; r < r0 + nr; ++r) {
    for (int c = c0; c < c0 + nc; ++c) out.push_back(m[static_cast<size_t>(r * cols + c)]);
  }
  return out;
}

struct Matrices {
  std::vector<double> ref, cand;
};

// 8 x 6 reference and candidate: noise of varied magnitude, a matched
// infinity, a zero ref where cand differs (relative error +inf), and the
// largest error (4.0) twice: at (0, 4) (flat 4, in rank 1's column shard)
// and at (5, 1) (flat 31, rank 0's column shard, rank 1's row shard), so
// that the global tie-break (smallest flat index) differs from the ranks'
// order for the column split. With `nans`, a NaN in ref at (1, 4) (flat 10)
// and in cand at (5, 0) (flat 30): the largest error is then the first NaN.
Matrices Make8x6(bool nans = false) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  Matrices m;
  for (int i = 0; i < 48; ++i) {
    const double r = normal(rng);
    m.ref.push_back(r);
    m.cand.push_back(r + 1e-3 * normal(rng) * std::pow(10.0, i % 4 - 2));
  }
  m.cand[4] = m.ref[4] + 4.0;
  m.cand[31] = m.ref[31] - 4.0;
  m.ref[17] = m.cand[17] = INFINITY;
  m.ref[40] = 0.0;  // an infinite relative error where cand differs
  m.cand[40] = 1e-9;
  if (nans) {
    m.ref[10] = NAN;
    m.cand[30] = NAN;
  }
  return m;
}

// Equal, or both NaN.
void ExpectSameDouble(double a, double b, const char* what) {
  EXPECT_TRUE((std::isnan(a) && std::isnan(b)) || a == b) << what << ": " << a << " vs " << b;
}

void ExpectSameStats(const kernels::DiffStats& merged, const kernels::DiffStats& full) {
  // Exact fields.
  EXPECT_EQ(merged.count, full.count);
  EXPECT_EQ(merged.nan_diff, full.nan_diff);
  EXPECT_EQ(merged.inf_diff, full.inf_diff);
  EXPECT_EQ(merged.mismatches, full.mismatches);
  EXPECT_EQ(merged.nan_ref, full.nan_ref);
  EXPECT_EQ(merged.nan_cand, full.nan_cand);
  EXPECT_EQ(merged.inf_ref, full.inf_ref);
  EXPECT_EQ(merged.inf_cand, full.inf_cand);
  EXPECT_EQ(merged.histogram, full.histogram);
  ExpectSameDouble(merged.max_abs, full.max_abs, "max_abs");
  EXPECT_EQ(merged.max_index, full.max_index);
  ExpectSameDouble(merged.ref_at_max, full.ref_at_max, "ref_at_max");
  ExpectSameDouble(merged.cand_at_max, full.cand_at_max, "cand_at_max");
  ExpectSameDouble(merged.min_abs, full.min_abs, "min_abs");
  ExpectSameDouble(merged.max_rel, full.max_rel, "max_rel");
  // Sums: only the rounding of the additions differs.
  for (auto [a, b] : {std::pair{merged.sum_abs, full.sum_abs}, {merged.sum_sq, full.sum_sq},
                      {merged.sum_rel, full.sum_rel}, {merged.dot, full.dot},
                      {merged.ref_sq, full.ref_sq}, {merged.cand_sq, full.cand_sq}}) {
    if (a == b) continue;  // infinities included
    EXPECT_NEAR(a, b, 1e-12 * std::abs(b)) << a << " vs " << b;
  }
}

// The same global pair split two ways; the merged statistics equal those of
// the full tensors compared as one pair.
TEST(ShardMergeTest, TwoShardsMergeIntoTheGlobalTensorsStatistics) {
 for (bool nans : {false, true}) {
  SCOPED_TRACE(nans ? "with NaNs" : "finite differences");
  const Matrices m = Make8x6(nans);
  auto backend = Cpu();
  RunData full_ref{"ref", {{"forward", {E("h", F64({8, 6}, m.ref), 0)}}}};
  RunData full_cand{"cand", {{"forward", {E("h", F64({8, 6}, m.cand), 0)}}}};
  ASSERT_OK_AND_ASSIGN(Report full, CompareRuns(full_ref, full_cand, Reprod(), *backend));
  ASSERT_THAT(full.tensors, SizeIs(1));
  const kernels::DiffStats& want = *full.tensors[0].stats;
  if (nans) {
    ASSERT_TRUE(std::isnan(want.max_abs));
    ASSERT_EQ(want.max_index, 10u);
    ASSERT_EQ(want.nan_diff, 2u);
  } else {
    ASSERT_EQ(want.max_abs, 4.0);
    ASSERT_EQ(want.max_index, 4u);
  }

  struct Split {
    int dim;
    int r0[2], nr[2], c0[2], nc[2];
  };
  for (const Split& s : {Split{0, {0, 4}, {4, 4}, {0, 0}, {6, 6}},
                         Split{1, {0, 0}, {8, 8}, {0, 3}, {3, 3}}}) {
    SCOPED_TRACE(absl::StrCat("shard(", s.dim, ")"));
    RunData ref{"ref", {{"forward", {}}}}, cand{"cand", {{"forward", {}}}};
    for (uint32_t rank : {1u, 0u}) {  // rank 1 logs first: order must not matter
      const Shape shape{s.nr[rank], s.nc[rank]};
      const Placement p = Placement::Shard(s.dim, {8, 6}, {s.r0[rank], s.c0[rank]});
      ref.checkpoints[0].tensors.push_back(
          E("h", F64(shape, Block(m.ref, 6, s.r0[rank], s.nr[rank], s.c0[rank], s.nc[rank])),
            rank, p));
      cand.checkpoints[0].tensors.push_back(E(
          "h", F64(shape, Block(m.cand, 6, s.r0[rank], s.nr[rank], s.c0[rank], s.nc[rank])),
          rank, p));
    }
    ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), *backend));
    ASSERT_THAT(r.tensors, SizeIs(2));
    EXPECT_EQ(r.tensors[0].rank, 1u);
    ASSERT_THAT(r.global_tensors, SizeIs(1));
    const TensorResult& g = r.global_tensors[0];
    EXPECT_EQ(g.key, "h");
    EXPECT_EQ(g.step, 0);
    EXPECT_FALSE(g.rank.has_value());
    EXPECT_THAT(g.merged_ranks, ElementsAre(0u, 1u));
    EXPECT_EQ(g.shape_ref, (Shape{8, 6}));
    ExpectSameStats(*g.stats, want);
    const std::vector<int64_t> at_max = nans ? std::vector<int64_t>{1, 4}
                                             : std::vector<int64_t>{0, 4};
    EXPECT_EQ(g.max_abs_index, at_max);
    EXPECT_EQ(g.status, full.tensors[0].status);
    EXPECT_EQ(g.reason, full.tensors[0].reason);
    // A failing global tensor fails the report and says so.
    EXPECT_FALSE(r.passed);
    EXPECT_THAT(r.reasons, ::testing::Contains(HasSubstr("global tensor forward/h@0 (merged "
                                                       "from ranks 0, 1) fails")));
  }
 }
}

TEST(ShardMergeTest, IncompleteOrOverlappingShardsAreNotMerged) {
  const Matrices m = Make8x6();
  auto backend = Cpu();
  for (int64_t second_offset : {2, 4}) {  // rows 2..5 overlap rank 0's; 4 is complete
    RunData ref{"ref", {{"forward", {}}}}, cand{"cand", {{"forward", {}}}};
    for (uint32_t rank : {0u, 1u}) {
      const int64_t r0 = rank == 0 ? 0 : second_offset;
      const Placement p = Placement::Shard(0, {8, 6}, {r0, 0});
      const int row = static_cast<int>(r0);
      ref.checkpoints[0].tensors.push_back(E("h", F64({4, 6}, Block(m.ref, 6, row, 4, 0, 6)), rank, p));
      cand.checkpoints[0].tensors.push_back(E("h", F64({4, 6}, Block(m.ref, 6, row, 4, 0, 6)), rank, p));
    }
    ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), *backend));
    EXPECT_EQ(r.global_tensors.size(), second_offset == 4 ? 1u : 0u) << second_offset;
    EXPECT_TRUE(r.passed);
  }
  // Only rank 0's half logged in cand: rank 1 is missing, nothing merges.
  RunData ref{"ref", {{"forward", {}}}}, cand{"cand", {{"forward", {}}}};
  for (uint32_t rank : {0u, 1u}) {
    const Placement p = Placement::Shard(0, {8, 6}, {rank * 4, 0});
    ref.checkpoints[0].tensors.push_back(
        E("h", F64({4, 6}, Block(m.ref, 6, static_cast<int>(rank) * 4, 4, 0, 6)), rank, p));
    if (rank == 0) cand.checkpoints[0].tensors.push_back(ref.checkpoints[0].tensors.back());
  }
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), *backend));
  EXPECT_THAT(r.global_tensors, IsEmpty());
  EXPECT_FALSE(r.passed);
  ASSERT_THAT(r.ranks, SizeIs(2));
  EXPECT_EQ(r.ranks[1].failed, 1);
  EXPECT_EQ(r.tensors.back().status, TensorStatus::kMissingInCand);
  EXPECT_EQ(r.tensors.back().rank, 1u);
}

// Two ranks in each run; only rank 1 of the candidate computes differently.
TEST(RankPairingTest, PairsRankToRankAndNamesTheRankThatFails) {
  auto backend = Cpu();
  RunData ref{"ref", {{"forward", {}}}}, cand{"cand", {{"forward", {}}}};
  for (uint32_t rank : {0u, 1u}) {
    const double base = rank == 0 ? 1.0 : 10.0;  // ranks see different data
    ref.checkpoints[0].tensors.push_back(E("logits", F64({2}, {base, base + 1}), rank));
    cand.checkpoints[0].tensors.push_back(
        E("logits", F64({2}, {base, base + (rank == 1 ? 1.5 : 1.0)}), rank));
  }
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), *backend));
  EXPECT_FALSE(r.passed);
  ASSERT_THAT(r.tensors, SizeIs(2));
  EXPECT_EQ(r.tensors[0].rank, 0u);
  EXPECT_EQ(r.tensors[0].status, TensorStatus::kPass);
  EXPECT_EQ(r.tensors[1].rank, 1u);
  EXPECT_EQ(r.tensors[1].status, TensorStatus::kFail);
  EXPECT_EQ(r.tensors[1].DisplayKey(), "logits@0 (rank 1)");
  ASSERT_TRUE(r.first_failure.has_value());
  EXPECT_EQ(r.first_failure->rank, 1u);
  ASSERT_THAT(r.ranks, SizeIs(2));
  EXPECT_EQ(r.ranks[0].rank, 0u);
  EXPECT_EQ(r.ranks[0].passed, 1);
  EXPECT_EQ(r.ranks[0].failed, 0);
  EXPECT_FALSE(r.ranks[0].first_failure.has_value());
  EXPECT_EQ(r.ranks[1].failed, 1);
  EXPECT_EQ(r.ranks[1].first_failure->key, "logits");

  ASSERT_OK_AND_ASSIGN(std::string json, RenderReport(r, ReportFormat::kJson));
  const nlohmann::json j = nlohmann::json::parse(json);
  EXPECT_EQ(j["tensors"][1]["rank"], 1);
  EXPECT_EQ(j["first_failure"]["rank"], 1);
  ASSERT_EQ(j["ranks"].size(), 2u);
  EXPECT_EQ(j["ranks"][1]["failed"], 1);
  EXPECT_TRUE(j["ranks"][0]["first_failure"].is_null());
  EXPECT_TRUE(j["global_tensors"].empty());
  EXPECT_TRUE(j["replica_mismatches"].empty());
  ASSERT_OK_AND_ASSIGN(std::string text, RenderReport(r, ReportFormat::kText));
  EXPECT_THAT(text, HasSubstr("rank 1: 0 of 1 tensors pass; first failure forward/logits@0"));
  ASSERT_OK_AND_ASSIGN(std::string md, RenderReport(r, ReportFormat::kMarkdown));
  EXPECT_THAT(md, HasSubstr("| 1 | 1 | 0 | 1 | `forward/logits@0` |"));
  ASSERT_OK_AND_ASSIGN(std::string html, RenderReport(r, ReportFormat::kHtml));
  EXPECT_THAT(html, HasSubstr("<section id=\"ranks\">"));
}

TEST(RankPairingTest, SingleRankReportsHaveNoRanks) {
  auto backend = Cpu();
  RunData ref{"ref", {{"forward", {E("x", F64({1}, {1}), 0)}}}};
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, ref, Reprod(), *backend));
  EXPECT_TRUE(r.passed);
  EXPECT_FALSE(r.tensors[0].rank.has_value());
  EXPECT_THAT(r.ranks, IsEmpty());
  ASSERT_OK_AND_ASSIGN(std::string json, RenderReport(r, ReportFormat::kJson));
  const nlohmann::json j = nlohmann::json::parse(json);
  EXPECT_FALSE(j["tensors"][0].contains("rank"));
  EXPECT_FALSE(j.contains("ranks"));
}

TEST(RankPairingTest, ARunHoldingOneKeyTwiceOnOneRankIsRejected) {
  auto backend = Cpu();
  RunData ref{"ref", {{"forward", {E("x", F64({1}, {1}), 1), E("x", F64({1}, {2}), 1)}}}};
  EXPECT_THAT(CompareRuns(ref, ref, Reprod(), *backend).status(),
              reprod::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                        HasSubstr("forward/x@0 rank 1 twice")));
}

TEST(ReplicaTest, ReplicasThatDifferFailTheReport) {
  auto backend = Cpu();
  RunData ref{"ref", {{"grads", {}}}};
  for (uint32_t rank : {0u, 1u, 2u}) {
    ref.checkpoints[0].tensors.push_back(
        E("w", F64({3}, {0.5, 0.25, 0.125}), rank, Placement::Replicate()));
  }
  RunData cand = ref;
  cand.name = "cand";
  ASSERT_OK_AND_ASSIGN(Report same, CompareRuns(ref, cand, Reprod(), *backend));
  EXPECT_TRUE(same.passed);
  EXPECT_THAT(same.replica_mismatches, IsEmpty());

  // Rank 2 of the candidate missed the all-reduce by one ulp; rank 1 has
  // another shape.
  const double bumped = std::nextafter(0.125, 1.0);
  cand.checkpoints[0].tensors[2].tensor = F64({3}, {0.5, 0.25, bumped});
  cand.checkpoints[0].tensors[1].tensor = F64({1, 3}, {0.5, 0.25, 0.125});
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), *backend));
  EXPECT_FALSE(r.passed);
  ASSERT_THAT(r.replica_mismatches, SizeIs(2));
  const ReplicaMismatch& shape = r.replica_mismatches[0];
  EXPECT_EQ(shape.side, "cand");
  EXPECT_EQ(shape.rank, 1u);
  EXPECT_EQ(shape.against_rank, 0u);
  EXPECT_THAT(shape.reason, HasSubstr("float64 (1, 3) vs float64 (3,) on rank 0"));
  const ReplicaMismatch& bytes = r.replica_mismatches[1];
  EXPECT_EQ(bytes.rank, 2u);
  EXPECT_THAT(bytes.reason, HasSubstr("bytes differ: crc32c 0x"));
  EXPECT_THAT(r.reasons, ::testing::Contains(HasSubstr(
                             "replicate tensor grads/w@0 of the cand run differs between "
                             "rank 2 and rank 0")));
}

// Capture keys on two ranks; layer 1 diverges on rank 1 only.
TEST(RankDivergenceTest, FirstDivergenceNamesTheRankAndModule) {
  auto backend = Cpu();
  RunData ref{"ref", {{"layers", {}}}}, cand{"cand", {{"layers", {}}}};
  for (uint32_t rank : {0u, 1u}) {
    for (int layer = 0; layer < 3; ++layer) {
      const std::string key = absl::StrCat("enc.layer.", layer, "/forward/output/0");
      const double v = rank * 10.0 + layer;
      ref.checkpoints[0].tensors.push_back(E(key, F64({2}, {v, v + 1}), rank));
      const bool bug = rank == 1 && layer >= 1;
      cand.checkpoints[0].tensors.push_back(E(key, F64({2}, {v, v + (bug ? 2 : 1)}), rank));
    }
  }
  ASSERT_OK_AND_ASSIGN(Report r, CompareRuns(ref, cand, Reprod(), *backend));
  ASSERT_TRUE(r.first_divergence.has_value());
  EXPECT_EQ(r.first_divergence->rank, 1u);
  EXPECT_EQ(r.first_divergence->module, "enc.layer.1");
  EXPECT_THAT(r.first_divergence->passed_before, ElementsAre("enc.layer.0"));
  ASSERT_THAT(r.ranks, SizeIs(2));
  EXPECT_FALSE(r.ranks[0].first_divergence.has_value());
  ASSERT_TRUE(r.ranks[1].first_divergence.has_value());
  EXPECT_EQ(r.ranks[1].first_divergence->module, "enc.layer.1");
  ASSERT_OK_AND_ASSIGN(std::string json, RenderReport(r, ReportFormat::kJson));
  const nlohmann::json j = nlohmann::json::parse(json);
  EXPECT_EQ(j["first_divergence"]["rank"], 1);
  EXPECT_EQ(j["ranks"][1]["first_divergence"]["module"], "enc.layer.1");
  ASSERT_OK_AND_ASSIGN(std::string text, RenderReport(r, ReportFormat::kText));
  EXPECT_THAT(text, HasSubstr("module enc.layer.1 (forward, step 0, rank 1) diverges first"));
}

}  // namespace
}  // namespace reprod::core

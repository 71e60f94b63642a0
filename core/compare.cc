#include "core/compare.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "common/status_macros.h"
#include "core/internal/judge.h"
#include "core/internal/localize.h"
#include "core/internal/pairing.h"
#include "core/internal/ranks.h"

namespace reprod::core {
namespace {

using internal::Match;
using internal::PairLayout;
using internal::ShapeDecision;

using internal::CheckpointSelected;

// Checkpoints of a run by name (to their position); InvalidArgument on
// duplicates.
absl::StatusOr<std::map<std::string, size_t>> IndexCheckpoints(
    const RunIndex& run, std::string_view side) {
  std::map<std::string, size_t> out;
  for (size_t i = 0; i < run.checkpoints.size(); ++i) {
    const CheckpointIndex& cp = run.checkpoints[i];
    if (!out.emplace(cp.name, i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(side), " run '", run.name,
                       "' holds checkpoint '", cp.name, "' twice"));
    }
  }
  return out;
}

// Checkpoint order: cand order, then ref-only in ref order.
std::vector<std::string> CheckpointOrder(
    const RunIndex& ref, const RunIndex& cand,
    const std::map<std::string, size_t>& cand_cps,
    const CompareOptions& options) {
  std::vector<std::string> order;
  for (const CheckpointIndex& cp : cand.checkpoints) {
    if (CheckpointSelected(options, cp.name)) order.push_back(cp.name);
  }
  for (const CheckpointIndex& cp : ref.checkpoints) {
    if (CheckpointSelected(options, cp.name) && !cand_cps.count(cp.name)) {
      order.push_back(cp.name);
    }
  }
  return order;
}

// The dtype a side's bytes are read as: uint16 leaves named by as_bf16 are
// bfloat16 bit patterns.
DType ReadDType(const Policy& policy, std::string_view checkpoint,
                const std::string& key, DType stored) {
  if (stored == DType::kUInt16 && ReadAsBFloat16(policy, checkpoint, key)) {
    return DType::kBFloat16;
  }
  return stored;
}

// A pair waiting for the reducer.
struct Pending {
  size_t result = 0;  // index into Report::tensors
  internal::ToleranceStats tolerances;
  PolicyResolution resolution;
  const TensorInfo* ref = nullptr;  // the pair's two tensors
  const TensorInfo* cand = nullptr;
};

// Plans everything of one checkpoint: its tensors' results in report order,
// and for each comparable pair a PlannedPair + Pending.
class CheckpointPlanner {
 public:
  CheckpointPlanner(const RunIndex& ref, const RunIndex& cand,
                    const Policy& policy, const CompareOptions& options,
                    Report& report, std::vector<PlannedPair>& planned,
                    std::vector<Pending>& pending, size_t& num_stats,
                    bool multi_rank)
      : multi_rank_(multi_rank),
        ref_(ref),
        cand_(cand),
        policy_(policy),
        options_(options),
        report_(report),
        planned_(planned),
        pending_(pending),
        num_stats_(num_stats) {}

  // Checkpoint `name`, at position rpos / cpos of the runs that hold it.
  absl::Status Plan(const std::string& name, std::optional<size_t> rpos,
                    std::optional<size_t> cpos) {
    const CheckpointIndex* rcp = rpos ? &ref_.checkpoints[*rpos] : nullptr;
    const CheckpointIndex* ccp = cpos ? &cand_.checkpoints[*cpos] : nullptr;
    CheckpointResult cpr;
    cpr.name = name;
    cpr.present_in_ref = rcp != nullptr;
    cpr.present_in_cand = ccp != nullptr;
    REPROD_ASSIGN_OR_RETURN(
        std::vector<Match> matches,
        internal::MatchCheckpoint(rcp, ccp, policy_, ref_.name, cand_.name,
                                  name));
    std::set<int64_t> cand_steps;
    for (const Match& m : matches) {
      TensorResult t;
      t.checkpoint = name;
      t.key = m.key;
      t.step = m.step;
      if (multi_rank_) t.rank = m.rank;
      const TensorInfo* rt = m.ref ? &rcp->tensors[*m.ref] : nullptr;
      const TensorInfo* ct = m.cand ? &ccp->tensors[*m.cand] : nullptr;
      if (ct != nullptr) {
        if (ct->step) cand_steps.insert(*ct->step);
        t.cand_key = ct->key;
        t.dtype_cand = ReadDType(policy_, name, t.key, ct->dtype);
        t.shape_cand = ct->shape;
      }
      if (rt != nullptr) {
        t.dtype_ref = ReadDType(policy_, name, t.key, rt->dtype);
        t.shape_ref = rt->shape;
      }
      if (rt == nullptr || ct == nullptr) {
        t.status = rt == nullptr ? TensorStatus::kMissingInRef
                                 : TensorStatus::kMissingInCand;
        t.reason = absl::StrCat(rt == nullptr ? "missing in ref"
                                              : "missing in cand",
                                m.note);
        report_.tensors.push_back(std::move(t));
        continue;
      }
      if (options_.pair_filter &&
          !options_.pair_filter(TensorAddress{name, t.key, t.step, t.rank})) {
        continue;
      }
      if (!m.note.empty()) t.notes.push_back(m.note);
      PlanPair(TensorPosition{*rpos, *m.ref}, TensorPosition{*cpos, *m.cand},
               *rt, *ct, std::move(t));
    }
    const auto cand_tensors =
        static_cast<int64_t>(ccp != nullptr ? ccp->tensors.size() : 0);
    cpr.steps = cand_steps.empty() ? cand_tensors
                                   : static_cast<int64_t>(cand_steps.size());
    if (const CheckpointPolicy* cpp = policy_.FindCheckpoint(name)) {
      cpr.min_steps = cpp->min_steps;
    }
    report_.checkpoints.push_back(std::move(cpr));
    return absl::OkStatus();
  }

 private:
  // A matched pair: shape decision, notes, and the reductions it needs.
  void PlanPair(TensorPosition rpos, TensorPosition cpos, const TensorInfo& rt,
                const TensorInfo& ct, TensorResult t) {
    const std::string path = absl::StrCat(t.checkpoint, "/", t.key);
    const ShapeDecision shape =
        internal::DecideShape(rt.shape, ct.shape, policy_, path);
    if (shape.layout == PairLayout::kMismatch) {
      t.status = TensorStatus::kShapeMismatch;
      t.reason = shape.text;
      report_.tensors.push_back(std::move(t));
      return;
    }
    t.transposed = shape.layout == PairLayout::kTransposed;
    if (!shape.text.empty()) t.notes.push_back(shape.text);
    for (const auto& [side, info, read] :
         {std::tuple{"ref", &rt, *t.dtype_ref},
          std::tuple{"cand", &ct, *t.dtype_cand}}) {
      if (read != info->dtype) {
        t.notes.push_back(absl::StrCat(
            side, " ", std::string(DTypeName(info->dtype)), " read as ",
            std::string(DTypeName(read)), " (as_bf16)"));
      }
    }
    const DType rd = *t.dtype_ref, cd = *t.dtype_cand;
    if (rd != cd) {
      t.notes.push_back(absl::StrCat(
          "dtypes differ (ref ", std::string(DTypeName(rd)), ", cand ",
          std::string(DTypeName(cd)), "); compared by value"));
    }

    Pending p;
    p.result = report_.tensors.size();
    p.ref = &rt;
    p.cand = &ct;
    p.resolution = ResolvePolicy(policy_, t.checkpoint, t.key);
    t.policy_source = p.resolution.source;
    PlannedPair pp;
    pp.ref = rpos;
    pp.cand = cpos;
    pp.transpose_cand = t.transposed;
    pp.ref_dtype = rd;
    pp.cand_dtype = cd;
    pp.stats_offset = num_stats_;
    auto add_task = [&](const Tolerance& tol) {
      for (const auto& [have, idx] : p.tolerances) {
        if (have == tol) return;
      }
      kernels::DiffOptions o;
      o.atol = tol.atol;
      o.rtol = tol.rtol;
      o.equal_nan = p.resolution.equal_nan;
      p.tolerances.emplace_back(tol, num_stats_++);
      pp.options.push_back(o);
    };
    for (const Check& c : *p.resolution.checks) {
      if (MetricUsesTolerance(c.metric)) add_task(c.ToleranceFor(rd, cd));
    }
    if (p.tolerances.empty()) add_task(DefaultTolerance(rd, cd));
    planned_.push_back(std::move(pp));
    pending_.push_back(std::move(p));
    report_.tensors.push_back(std::move(t));
  }

  const bool multi_rank_;
  const RunIndex& ref_;
  const RunIndex& cand_;
  const Policy& policy_;
  const CompareOptions& options_;
  Report& report_;
  std::vector<PlannedPair>& planned_;
  std::vector<Pending>& pending_;
  size_t& num_stats_;
};

// CompareRuns' reducer: one CompareBatch over the in-memory tensors, in
// planned order (pair by pair, tolerance by tolerance).
class RunDataReducer final : public PairReducer {
 public:
  RunDataReducer(const RunData& ref, const RunData& cand,
                 kernels::Backend& backend)
      : ref_(ref), cand_(cand), backend_(backend) {}

  absl::Status Reduce(absl::Span<const PlannedPair> pairs,
                      absl::Span<kernels::DiffStats> out,
                      absl::Span<std::string> reduced_by) override {
    std::vector<kernels::DiffTask> tasks;
    tasks.reserve(out.size());
    for (size_t i = 0; i < pairs.size(); ++i) {
      const PlannedPair& p = pairs[i];
      for (size_t k = 0; k < p.options.size(); ++k) {
        kernels::DiffTask task;
        task.ref = At(ref_, p.ref).view();
        task.ref.dtype = p.ref_dtype;
        task.cand = At(cand_, p.cand).view();
        task.cand.dtype = p.cand_dtype;
        task.transpose_cand = p.transpose_cand;
        task.options = p.options[k];
        if (k == 0) reduced_by[i] = std::string(backend_.ReducerName(task));
        tasks.push_back(std::move(task));
      }
    }
    return backend_.CompareBatch(tasks, out);
  }

 private:
  static const Tensor& At(const RunData& run, const TensorPosition& pos) {
    return run.checkpoints[pos.checkpoint].tensors[pos.tensor].tensor;
  }

  const RunData& ref_;
  const RunData& cand_;
  kernels::Backend& backend_;
};

// Multi-rank verdicts (internal/ranks.h): global tensors of shards, replica
// checks, per-rank summaries and the first divergence; failures of the first
// two fail the report.
void JudgeRanks(const RunIndex& ref, const RunIndex& cand,
                const std::vector<Pending>& pending,
                absl::Span<const kernels::DiffStats> stats, Report& report) {
  std::vector<internal::ShardPiece> pieces;  // MergeShards picks the shards
  for (const Pending& p : pending) {
    pieces.push_back(internal::ShardPiece{&report.tensors[p.result], p.ref, p.cand,
                                          &p.resolution, &p.tolerances});
  }
  report.global_tensors = internal::MergeShards(pieces, stats);
  for (const TensorResult& g : report.global_tensors) {
    if (IsPassing(g.status)) continue;
    report.passed = false;
    report.reasons.push_back(absl::StrCat("global tensor ", g.checkpoint, "/", g.DisplayKey(),
                                          " (merged from ranks ",
                                          absl::StrJoin(g.merged_ranks, ", "), ") fails: ",
                                          g.reason));
  }
  report.replica_mismatches = internal::CheckReplicas(ref, "ref");
  for (ReplicaMismatch& m : internal::CheckReplicas(cand, "cand")) {
    report.replica_mismatches.push_back(std::move(m));
  }
  for (const ReplicaMismatch& m : report.replica_mismatches) {
    report.passed = false;
    report.reasons.push_back(absl::StrCat(
        "replicate tensor ", m.checkpoint, "/", m.key,
        m.step ? absl::StrCat("@", *m.step) : std::string(), " of the ", m.side,
        " run differs between rank ", m.rank, " and rank ", m.against_rank, ": ", m.reason));
  }
  internal::SummariseRanks(report);
}

}  // namespace

absl::StatusOr<Report> CompareRuns(const RunData& ref, const RunData& cand,
                                   const Policy& policy,
                                   kernels::Backend& backend,
                                   const CompareOptions& options) {
  RunDataReducer reducer(ref, cand, backend);
  return CompareIndexed(IndexRunData(ref), IndexRunData(cand), policy, reducer,
                        std::string(backend.name()), options);
}

absl::StatusOr<Report> CompareIndexed(const RunIndex& ref, const RunIndex& cand,
                                      const Policy& policy,
                                      PairReducer& reducer,
                                      std::string backend_name,
                                      const CompareOptions& options) {
  REPROD_ASSIGN_OR_RETURN(auto ref_cps, IndexCheckpoints(ref, "ref"));
  REPROD_ASSIGN_OR_RETURN(auto cand_cps, IndexCheckpoints(cand, "cand"));

  Report report;
  report.ref = ref.name;
  report.cand = cand.name;
  report.policy = policy.name;
  report.backend = std::move(backend_name);

  // Match and plan.
  std::vector<PlannedPair> planned;
  std::vector<Pending> pending;
  size_t num_stats = 0;
  const bool multi_rank = internal::IsMultiRank(ref, cand);
  CheckpointPlanner planner(ref, cand, policy, options, report, planned,
                            pending, num_stats, multi_rank);
  for (const std::string& name :
       CheckpointOrder(ref, cand, cand_cps, options)) {
    const auto rit = ref_cps.find(name);
    const auto cit = cand_cps.find(name);
    std::optional<size_t> rpos, cpos;
    if (rit != ref_cps.end()) rpos = rit->second;
    if (cit != cand_cps.end()) cpos = cit->second;
    REPROD_RETURN_IF_ERROR(planner.Plan(name, rpos, cpos));
  }

  // One Reduce for every pair.
  std::vector<kernels::DiffStats> stats(num_stats);
  std::vector<std::string> reduced_by(planned.size());
  if (!planned.empty()) {
    REPROD_RETURN_IF_ERROR(reducer.Reduce(planned, absl::MakeSpan(stats),
                                          absl::MakeSpan(reduced_by)));
  }

  // Judge.
  for (size_t i = 0; i < pending.size(); ++i) {
    const Pending& p = pending[i];
    TensorResult& t = report.tensors[p.result];
    internal::JudgePair(p.resolution, p.tolerances, stats, t);
    t.reduced_by = std::move(reduced_by[i]);
  }
  internal::Summarise(policy, options, report);
  if (multi_rank) {
    JudgeRanks(ref, cand, pending, stats, report);
  } else {
    report.first_divergence = internal::FindFirstDivergence(report);
  }
  return report;
}

}  // namespace reprod::core

#include "core/internal/ranks.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "common/placement.h"
#include "core/internal/localize.h"

namespace reprod::core::internal {
namespace {

using GroupKey = std::tuple<std::string, std::string, std::optional<int64_t>>;

// Do two boxes (offset, shape) of one global tensor share an element?
bool Overlap(const Shape& off_a, const Shape& shape_a, const Shape& off_b,
             const Shape& shape_b) {
  for (size_t d = 0; d < off_a.size(); ++d) {
    if (shape_a[d] == 0 || shape_b[d] == 0) return false;
    if (off_a[d] + shape_a[d] <= off_b[d] || off_b[d] + shape_b[d] <= off_a[d]) return false;
  }
  return true;
}

// One shard piece pairs with the other side's piece in the same layout:
// both shards of the same global shape, at the same offset, same shape,
// compared element-wise.
bool SameLayout(const ShardPiece& p) {
  const Placement& r = p.ref->placement;
  const Placement& c = p.cand->placement;
  return r.kind == PlacementKind::kShard && c.kind == PlacementKind::kShard &&
         r.global_shape == c.global_shape && r.offset == c.offset && r.dim == c.dim &&
         p.ref->shape == p.cand->shape && p.result->stats.has_value() &&
         !p.result->transposed;
}

// The pieces of one group form the global tensor: one layout, tolerances
// alike, no overlap, every element covered.
bool FormsGlobalTensor(const std::vector<const ShardPiece*>& group) {
  const ShardPiece& first = *group.front();
  const Shape& global = first.ref->placement.global_shape;
  int64_t covered = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    const ShardPiece& p = *group[i];
    if (!SameLayout(p) || p.ref->placement.global_shape != global ||
        p.ref->dtype != first.ref->dtype || p.cand->dtype != first.cand->dtype) {
      return false;
    }
    if (p.tolerances->size() != first.tolerances->size()) return false;
    for (size_t k = 0; k < p.tolerances->size(); ++k) {
      if (!((*p.tolerances)[k].first == (*first.tolerances)[k].first)) return false;
    }
    for (size_t j = 0; j < i; ++j) {
      if (Overlap(p.ref->placement.offset, p.ref->shape, group[j]->ref->placement.offset,
                  group[j]->ref->shape)) {
        return false;
      }
    }
    covered += NumElements(p.ref->shape);
  }
  return covered == NumElements(global);
}

// A piece's statistics with max_index moved into the global tensor's flat
// C order, so that Merge's smallest-index tie-break is the global one.
kernels::DiffStats ToGlobal(const kernels::DiffStats& piece, const TensorInfo& ref) {
  kernels::DiffStats s = piece;
  if (s.count > 0 && s.max_abs != -1) {
    s.max_index = GlobalFlatIndex(ref.placement, ref.shape, s.max_index);
  }
  return s;
}

TensorResult MergeGroup(const std::vector<const ShardPiece*>& group,
                        absl::Span<const kernels::DiffStats> stats) {
  const ShardPiece& first = *group.front();
  std::vector<const ShardPiece*> by_rank = group;
  std::sort(by_rank.begin(), by_rank.end(), [](const ShardPiece* a, const ShardPiece* b) {
    return *a->result->rank < *b->result->rank;
  });
  const size_t num_tolerances = first.tolerances->size();
  std::vector<kernels::DiffStats> merged(num_tolerances);
  ToleranceStats tolerances;
  for (size_t k = 0; k < num_tolerances; ++k) {
    tolerances.emplace_back((*first.tolerances)[k].first, k);
    for (const ShardPiece* p : by_rank) {
      merged[k].Merge(ToGlobal(stats[(*p->tolerances)[k].second], *p->ref));
    }
  }
  TensorResult g;
  g.checkpoint = first.result->checkpoint;
  g.key = first.result->key;
  g.cand_key = first.result->cand_key;
  g.step = first.result->step;
  g.dtype_ref = first.result->dtype_ref;
  g.dtype_cand = first.result->dtype_cand;
  g.shape_ref = first.ref->placement.global_shape;
  g.shape_cand = first.cand->placement.global_shape;
  for (const ShardPiece* p : by_rank) g.merged_ranks.push_back(*p->result->rank);
  g.notes.push_back(absl::StrCat("merged from the shard(", first.ref->placement.dim, ") pieces of ranks ",
                                 absl::StrJoin(g.merged_ranks, ", ")));
  for (const std::string& note : first.result->notes) {
    if (absl::StrContains(note, "dtypes differ") || absl::StrContains(note, "as_bf16")) {
      g.notes.push_back(note);
    }
  }
  g.policy_source = first.result->policy_source;
  // The pieces' backends, each once, in rank order ("cpu", or "cpu, cuda").
  std::vector<std::string> backends;
  for (const ShardPiece* p : by_rank) {
    const std::string& b = p->result->reduced_by;
    if (!b.empty() && std::find(backends.begin(), backends.end(), b) == backends.end()) {
      backends.push_back(b);
    }
  }
  g.reduced_by = absl::StrJoin(backends, ", ");
  JudgePair(*first.resolution, tolerances, merged, g);
  return g;
}

std::string Hex32(uint32_t v) { return absl::StrFormat("0x%08x", v); }

}  // namespace

bool IsMultiRank(const RunIndex& ref, const RunIndex& cand) {
  for (const RunIndex* run : {&ref, &cand}) {
    for (const CheckpointIndex& cp : run->checkpoints) {
      for (const TensorInfo& t : cp.tensors) {
        if (t.rank != 0) return true;
      }
    }
  }
  return false;
}

std::vector<TensorResult> MergeShards(absl::Span<const ShardPiece> pieces,
                                      absl::Span<const kernels::DiffStats> stats) {
  std::vector<GroupKey> order;
  std::map<GroupKey, std::vector<const ShardPiece*>> groups;
  for (const ShardPiece& p : pieces) {
    if (p.ref->placement.kind != PlacementKind::kShard ||
        p.cand->placement.kind != PlacementKind::kShard) {
      continue;
    }
    GroupKey key{p.result->checkpoint, p.result->key, p.result->step};
    auto [it, inserted] = groups.try_emplace(key);
    if (inserted) order.push_back(key);
    it->second.push_back(&p);
  }
  std::vector<TensorResult> out;
  for (const GroupKey& key : order) {
    const std::vector<const ShardPiece*>& group = groups.at(key);
    if (FormsGlobalTensor(group)) out.push_back(MergeGroup(group, stats));
  }
  return out;
}

std::vector<ReplicaMismatch> CheckReplicas(const RunIndex& run, std::string_view side) {
  std::vector<ReplicaMismatch> out;
  for (const CheckpointIndex& cp : run.checkpoints) {
    // (key, step) -> the copy of the lowest rank so far.
    std::map<std::pair<std::string, std::optional<int64_t>>, const TensorInfo*> lowest;
    for (const TensorInfo& t : cp.tensors) {
      if (t.placement.kind != PlacementKind::kReplicate) continue;
      auto [it, inserted] = lowest.try_emplace({t.key, t.step}, &t);
      if (!inserted && t.rank < it->second->rank) it->second = &t;
    }
    for (const TensorInfo& t : cp.tensors) {
      if (t.placement.kind != PlacementKind::kReplicate) continue;
      const TensorInfo& base = *lowest.at({t.key, t.step});
      if (&base == &t) continue;
      std::string reason;
      if (t.dtype != base.dtype || t.shape != base.shape) {
        reason = absl::StrCat(std::string(DTypeName(t.dtype)), " ", ShapeToString(t.shape),
                              " vs ", std::string(DTypeName(base.dtype)), " ",
                              ShapeToString(base.shape),
                              " on rank ", base.rank);
      } else if (t.crc32c && base.crc32c && *t.crc32c != *base.crc32c) {
        reason = absl::StrCat("bytes differ: crc32c ", Hex32(*t.crc32c), " vs ",
                              Hex32(*base.crc32c), " on rank ", base.rank);
      }
      if (reason.empty()) continue;
      out.push_back(ReplicaMismatch{std::string(side), cp.name, t.key, t.step, t.rank,
                                    base.rank, std::move(reason)});
    }
  }
  return out;
}

void SummariseRanks(Report& report) {
  std::map<uint32_t, RankSummary> ranks;
  for (const TensorResult& t : report.tensors) {
    if (!t.rank) continue;
    RankSummary& r = ranks[*t.rank];
    r.rank = *t.rank;
    ++r.tensors;
    if (IsPassing(t.status)) {
      ++r.passed;
    } else {
      ++r.failed;
      if (!r.first_failure) r.first_failure = TensorAddress{t.checkpoint, t.key, t.step, t.rank};
    }
  }
  for (auto& [rank, r] : ranks) {
    r.first_divergence = FindFirstDivergence(report, rank);
    if (!r.first_divergence) continue;
    const FirstDivergence& d = *r.first_divergence;
    // Earliest by step (no step first), then by rank (ranks ascend here).
    if (!report.first_divergence || d.step < report.first_divergence->step) {
      report.first_divergence = d;
    }
  }
  for (auto& [rank, r] : ranks) report.ranks.push_back(std::move(r));
}

}  // namespace reprod::core::internal

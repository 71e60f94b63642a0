// File: core/internal/ranks.h
//
// Multi-rank runs (internal to core/; common/placement.h has the model).
// CompareIndexed pairs tensors rank to rank (pairing.h); after judging it
// calls these to
//   - merge the per-rank statistics of sharded tensors into their global
//     tensors' statistics (MergeShards), judged like any pair;
//   - check that replicate tensors agree across the ranks of one run
//     (CheckReplicas);
//   - summarise the report per rank, with each rank's first failure and
//     first divergence (SummariseRanks).
//
// Exactness of MergeShards: every count, max_abs (with its index, now in
// the global tensor's flat C order, and the values there), min_abs and
// max_rel of the merged statistics equal those of the global pair;
// the sums differ only in the rounding of the additions (DiffStats::Merge).
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_INTERNAL_RANKS_H_
#define REPROD_CORE_INTERNAL_RANKS_H_

#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "core/internal/judge.h"
#include "core/policy.h"
#include "core/report.h"
#include "core/run_index.h"
#include "kernels/diff_stats.h"

namespace reprod::core::internal {

// True when either run holds a tensor logged by a rank other than 0.
bool IsMultiRank(const RunIndex& ref, const RunIndex& cand);

// A judged per-rank pair that may be a shard piece of a global tensor.
struct ShardPiece {
  const TensorResult* result = nullptr;  // judged; rank set
  const TensorInfo* ref = nullptr;
  const TensorInfo* cand = nullptr;
  const PolicyResolution* resolution = nullptr;
  const ToleranceStats* tolerances = nullptr;  // indices into `stats`
};

// The global tensors of the pieces whose two sides are both shards: grouped
// by (checkpoint, key, step) in order of first appearance, merged when the
// group forms one global tensor on both sides in the same layout (see
// Report::global_tensors), judged with the pieces' resolution. Groups that
// do not (a piece compared transposed or with a shape mismatch, another
// layout, gaps or overlaps) are left out.
std::vector<TensorResult> MergeShards(absl::Span<const ShardPiece> pieces,
                                      absl::Span<const kernels::DiffStats> stats);

// The replicate tensors of `run` (side "ref" or "cand") that differ from
// the copy of the lowest rank holding the same (checkpoint, key, step):
// another dtype or shape, or another CRC-32C where both are known.
std::vector<ReplicaMismatch> CheckReplicas(const RunIndex& run, std::string_view side);

// Fills report.ranks from report.tensors (their rank set), with each rank's
// first failure and first divergence, and sets report.first_divergence to
// the earliest of those (by step, then rank).
void SummariseRanks(Report& report);

}  // namespace reprod::core::internal

#endif  // REPROD_CORE_INTERNAL_RANKS_H_

// File: common/placement.h
//
// Ranks and placements of distributed runs. A training job of N processes
// (ranks 0..N-1) logs into one run; every tensor address carries the rank
// that logged it (0 for single-process runs, the default everywhere). A
// tensor may also say how its rank's piece relates to the global tensor:
//
//   shard(dim)  this rank holds the block of the global tensor (global_shape)
//               that starts at `offset` (one entry per dimension) and has the
//               tensor's own shape; `dim` is the dimension the job splits
//               (tensor parallelism). Pieces of one tensor from all ranks
//               reduce to the global tensor's statistics exactly.
//   replicate   every rank holds the same whole tensor (data parallelism:
//               weights, all-reduced gradients); ranks are checked to agree.
//   partial     every rank holds a partial sum of the global tensor (before
//               an all-reduce); compared rank to rank only.
//
//   Placement p = Placement::Shard(0, {8, 4}, {4, 0});  // rows 4..7 of 8x4
//   ValidatePlacement(p, {4, 4});                        // OK
//
// Thread-safety: plain value types and pure functions.
#ifndef REPROD_COMMON_PLACEMENT_H_
#define REPROD_COMMON_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace reprod {

// Ranks are 0 .. kMaxRank (a bound on what a client may claim, far above
// any job's world size, so that reports and keys stay small).
inline constexpr uint32_t kMaxRank = (1u << 20) - 1;

// InvalidArgument "invalid rank <r>: above the largest rank <kMaxRank>".
absl::Status ValidateRank(int64_t rank);

enum class PlacementKind : uint8_t {
  kNone = 0,       // not declared: compared rank to rank only
  kShard = 1,
  kReplicate = 2,
  kPartial = 3,
};

// "none", "shard", "replicate", "partial".
std::string_view PlacementKindName(PlacementKind kind);

struct Placement {
  PlacementKind kind = PlacementKind::kNone;
  // kShard only (empty / 0 otherwise).
  int32_t dim = 0;
  Shape global_shape;
  Shape offset;

  static Placement Shard(int32_t dim, Shape global_shape, Shape offset);
  static Placement Replicate() { return {PlacementKind::kReplicate, 0, {}, {}}; }
  static Placement Partial() { return {PlacementKind::kPartial, 0, {}, {}}; }

  friend bool operator==(const Placement&, const Placement&) = default;
};

// Checks `placement` against the shape of the piece it describes. A shard
// needs global_shape and offset of the piece's rank, 0 <= dim < rank, and
// 0 <= offset[d], offset[d] + shape[d] <= global_shape[d] for every d (the
// global element count fitting int64); other kinds carry no dim, global
// shape or offset. InvalidArgument naming the field and values otherwise.
absl::Status ValidatePlacement(const Placement& placement, const Shape& shape);

// "shard(0) of [8, 4] at [4, 0]", "replicate", "partial", "" for kNone.
std::string PlacementToString(const Placement& placement);

// The flat C-order index in the global tensor of element `local_index` of a
// shard of shape `shape` (placement already validated).
uint64_t GlobalFlatIndex(const Placement& shard, const Shape& shape, uint64_t local_index);

}  // namespace reprod

#endif  // REPROD_COMMON_PLACEMENT_H_

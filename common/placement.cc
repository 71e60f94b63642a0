// File: common/placement.cc
#include "common/placement.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace reprod {

absl::Status ValidateRank(int64_t rank) {
  if (rank < 0 || rank > static_cast<int64_t>(kMaxRank)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid rank ", rank, ": ranks are 0 to ", kMaxRank));
  }
  return absl::OkStatus();
}

std::string_view PlacementKindName(PlacementKind kind) {
  switch (kind) {
    case PlacementKind::kNone: return "none";
    case PlacementKind::kShard: return "shard";
    case PlacementKind::kReplicate: return "replicate";
    case PlacementKind::kPartial: return "partial";
  }
  return "unknown";
}

Placement Placement::Shard(int32_t dim, Shape global_shape, Shape offset) {
  return {PlacementKind::kShard, dim, std::move(global_shape), std::move(offset)};
}

absl::Status ValidatePlacement(const Placement& p, const Shape& shape) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid placement ", std::string(PlacementKindName(p.kind)), " of a piece of shape ",
        ShapeToString(shape), ": ", std::string(why)));
  };
  switch (p.kind) {
    case PlacementKind::kNone:
    case PlacementKind::kReplicate:
    case PlacementKind::kPartial:
      if (p.dim != 0 || !p.global_shape.empty() || !p.offset.empty()) {
        return bad("only a shard has a dim, global shape or offset");
      }
      return absl::OkStatus();
    case PlacementKind::kShard:
      break;
    default:
      return bad("unknown kind");
  }
  const size_t n = shape.size();
  if (n == 0) return bad("a scalar cannot be sharded");
  if (p.global_shape.size() != n || p.offset.size() != n) {
    return bad(absl::StrCat("global shape ", ShapeToString(p.global_shape), " and offset ",
                            ShapeToString(p.offset), " need ", n, " dimensions each"));
  }
  if (p.dim < 0 || static_cast<size_t>(p.dim) >= n) {
    return bad(absl::StrCat("dim ", p.dim, " is not a dimension of a ", n, "-d tensor"));
  }
  for (size_t d = 0; d < n; ++d) {
    const int64_t off = p.offset[d], global = p.global_shape[d], local = shape[d];
    if (off < 0 || global < 0 || local < 0 || off > global || local > global - off) {
      return bad(absl::StrCat("dimension ", d, ": offset ", off, " + size ", local,
                              " exceeds the global size ", global));
    }
  }
  if (absl::Status s = CheckedNumElements(p.global_shape, 1).status(); !s.ok()) {
    return bad(absl::StrCat("global shape ", ShapeToString(p.global_shape), ": ",
                            std::string(s.message())));
  }
  return absl::OkStatus();
}

std::string PlacementToString(const Placement& p) {
  switch (p.kind) {
    case PlacementKind::kNone: return "";
    case PlacementKind::kShard:
      return absl::StrCat("shard(", p.dim, ") of ", ShapeToString(p.global_shape), " at ",
                          ShapeToString(p.offset));
    default:
      return std::string(PlacementKindName(p.kind));
  }
}

uint64_t GlobalFlatIndex(const Placement& shard, const Shape& shape, uint64_t local_index) {
  // Unravel in the piece's shape (innermost first), re-ravel in the global one.
  uint64_t global = 0, stride = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    const auto local = static_cast<uint64_t>(shape[d]);
    const uint64_t coord = local == 0 ? 0 : local_index % local;
    local_index = local == 0 ? 0 : local_index / local;
    global += (coord + static_cast<uint64_t>(shard.offset[d])) * stride;
    stride *= static_cast<uint64_t>(shard.global_shape[d]);
  }
  return global;
}

}  // namespace reprod

#include "core/run_index.h"

#include "common/crc32c.h"

namespace reprod::core {

RunIndex IndexRunData(const RunData& run) {
  RunIndex index;
  index.name = run.name;
  index.checkpoints.reserve(run.checkpoints.size());
  for (const CheckpointData& cp : run.checkpoints) {
    CheckpointIndex& ci = index.checkpoints.emplace_back();
    ci.name = cp.name;
    ci.tensors.reserve(cp.tensors.size());
    for (const TensorEntry& e : cp.tensors) {
      TensorInfo& info = ci.tensors.emplace_back();
      info.key = e.key;
      info.step = e.step;
      info.dtype = e.tensor.dtype();
      info.shape = e.tensor.shape();
      info.rank = e.rank;
      info.placement = e.placement;
      // Replicas are checked to agree through their CRCs (internal/ranks.h).
      if (e.placement.kind == PlacementKind::kReplicate) {
        info.crc32c = Crc32c(e.tensor.data(), e.tensor.num_bytes());
      }
    }
  }
  return index;
}

}  // namespace reprod::core

#include "core/run_index.h"

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
      ci.tensors.push_back(
          TensorInfo{e.key, e.step, e.tensor.dtype(), e.tensor.shape()});
    }
  }
  return index;
}

}  // namespace reprod::core

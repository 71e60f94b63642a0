// File: core/run_data.h
//
// The inputs of a comparison: a run (a training process's output, or a set
// of files standing for one) is a list of checkpoints, each a list of tensors
// in the order the producer emitted them. That order is the order in which
// "first failure" is found.
//
// Invariants CompareRuns relies on (it returns InvalidArgument otherwise):
// checkpoint names are unique within a run, and (key, step, rank) addresses
// are unique within a checkpoint.
//
// Thread-safety: plain value types.
#ifndef REPROD_CORE_RUN_DATA_H_
#define REPROD_CORE_RUN_DATA_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/placement.h"
#include "common/tensor.h"

namespace reprod::core {

// One tensor of a checkpoint, addressed by (key, step).
struct TensorEntry {
  std::string key;              // "/"-path, e.g. "encoder/layer0/weight"
  std::optional<int64_t> step;  // none for files
  Tensor tensor;
  uint32_t rank = 0;    // the logging process (common/placement.h)
  Placement placement = {};  // kNone unless declared
};

// A stage of the reproduction pipeline ("forward", "loss", "bp_align", ...).
struct CheckpointData {
  std::string name;
  std::vector<TensorEntry> tensors;  // producer order
};

struct RunData {
  std::string name;  // run name ("team42/bert-paddle") or file path
  std::vector<CheckpointData> checkpoints;
};

}  // namespace reprod::core

#endif  // REPROD_CORE_RUN_DATA_H_

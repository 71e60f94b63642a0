// File: core/run_index.h
//
// RunIndex: a run described without its bytes — checkpoints, and per
// checkpoint its tensors' (key, step, dtype, shape) in producer order. It is
// what the compare engine plans and judges on (CompareIndexed in compare.h);
// the bytes are fetched by a PairReducer (pair_reducer.h), from memory
// (CompareRuns) or from a store chunk by chunk (server/store_compare.h).
//
//   RunIndex index = IndexRunData(run);   // positions match run's 1:1
//
// A tensor is identified by its position (TensorPosition in pair_reducer.h):
// the index of its checkpoint in `checkpoints` and its index in that
// checkpoint's `tensors`. Whoever builds a RunIndex keeps the mapping from
// positions to bytes.
//
// Invariants the engine relies on are those of RunData (run_data.h):
// checkpoint names unique within a run, (key, step) unique within a
// checkpoint; CompareIndexed returns InvalidArgument otherwise. Shapes must
// be valid (non-negative dimensions, element count fitting int64).
//
// Thread-safety: plain value types; IndexRunData is reentrant.
#ifndef REPROD_CORE_RUN_INDEX_H_
#define REPROD_CORE_RUN_INDEX_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/placement.h"
#include "common/tensor.h"
#include "core/run_data.h"

namespace reprod::core {

// One tensor of a checkpoint, without its bytes.
struct TensorInfo {
  std::string key;              // "/"-path, e.g. "encoder/layer0/weight"
  std::optional<int64_t> step;  // none for files
  DType dtype = DType::kFloat32;
  Shape shape;
  uint32_t rank = 0;    // the logging process (common/placement.h)
  Placement placement = {};  // kNone unless declared
  // CRC-32C of the bytes when known (stored tensors; IndexRunData computes
  // it for replicate tensors): replicas are checked to agree through it.
  std::optional<uint32_t> crc32c = std::nullopt;
};

struct CheckpointIndex {
  std::string name;
  std::vector<TensorInfo> tensors;  // producer order
};

struct RunIndex {
  std::string name;  // run name or file path; becomes Report::ref / cand
  std::vector<CheckpointIndex> checkpoints;
};

// The metadata of `run`, position for position (checkpoint i, tensor j of
// the index describe run.checkpoints[i].tensors[j]).
RunIndex IndexRunData(const RunData& run);

}  // namespace reprod::core

#endif  // REPROD_CORE_RUN_INDEX_H_

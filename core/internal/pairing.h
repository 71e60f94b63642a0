// File: core/internal/pairing.h
//
// The matching half of the compare engine (internal to core/): which ref
// tensor pairs with which cand tensor inside one checkpoint, and whether a
// matched pair's shapes can be compared and how. CompareIndexed (compare.h)
// plans the reductions from these decisions; judging is in judge.h.
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_INTERNAL_PAIRING_H_
#define REPROD_CORE_INTERNAL_PAIRING_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "core/policy.h"
#include "core/run_index.h"

namespace reprod::core::internal {

// One entry of a checkpoint's matching: a pair, or a tensor on one side.
struct Match {
  std::optional<size_t> ref;   // index into the ref checkpoint's tensors
  std::optional<size_t> cand;  // index into the cand checkpoint's tensors
  std::string key;             // ref terms (cand keys after rename)
  std::optional<int64_t> step;
  uint32_t rank = 0;  // both sides' (tensors pair rank to rank)
  // A remark on how the pair was made (a step-less tensor paired with the
  // only step of the other side), or for a tensor on one side only, which
  // steps the other side has for the same key (" (ref has it at steps 0,
  // 1)"); empty otherwise.
  std::string note;
};

// Matches the tensors of one checkpoint (either side may be null: the
// checkpoint exists in one run only). Entries come in cand order, then the
// unmatched ref tensors in ref order.
//
// A cand tensor pairs with the ref tensor at the same (key after rename,
// step, rank). When there is none, and the key is held by exactly one tensor on
// each side, one with a step and one without (a file pushed without --step
// against a run logged with step=0), the two pair and the match's note says
// so; its step is the stepped side's.
//
// InvalidArgument (naming the run and the address) when a side holds one
// (key, step, rank) twice, for cand after rename.
absl::StatusOr<std::vector<Match>> MatchCheckpoint(
    const CheckpointIndex* ref, const CheckpointIndex* cand,
    const Policy& policy, std::string_view ref_run, std::string_view cand_run,
    std::string_view checkpoint);

// How a matched pair's elements line up.
enum class PairLayout {
  kSame,        // equal shapes, element-wise
  kTransposed,  // ref (m, n) vs cand (n, m): cand.T is compared
  kFlat,        // shapes differ only in size-1 dimensions: flat C order
  kMismatch,    // not comparable
};

struct ShapeDecision {
  PairLayout layout = PairLayout::kSame;
  // kTransposed / kFlat: the note for the report; kMismatch: the reason.
  std::string text;
};

// Decides how `ref` and `cand` shapes compare under the policy's `transpose`
// and `shapes` rules (policy.h); `path` is "checkpoint/key" for the globs.
ShapeDecision DecideShape(const Shape& ref, const Shape& cand,
                          const Policy& policy, std::string_view path);

}  // namespace reprod::core::internal

#endif  // REPROD_CORE_INTERNAL_PAIRING_H_

// File: core/internal/localize.h
//
// First-divergence localisation (internal to core/): from a judged report,
// the first module in the candidate's execution order whose captured
// tensors fail (core::FirstDivergence in report.h). CompareIndexed calls it
// after Summarise.
//
// Capture keys are "<module>/<direction>/<role>/<index...>" with direction
// "forward" or "backward" (core/capture_key.h);
// other keys are ignored. A report's tensors are in the candidate's producer
// order per checkpoint, which for captured tensors is the order the hooks
// fired: a module's forward tensors after those of the modules it called,
// its gradients in backward order. So the first failing capture tensor
// names the innermost module where the two runs part.
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_INTERNAL_LOCALIZE_H_
#define REPROD_CORE_INTERNAL_LOCALIZE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/capture_key.h"
#include "core/report.h"

namespace reprod::core::internal {

// The first divergence of `report` (its tensors judged) among its tensors
// of `rank` (TensorResult::rank; nullopt in single-rank reports), or nullopt
// when no such tensor with a capture key fails. Tensors present on one side
// only are never a divergence; their modules are listed as unmatched.
std::optional<FirstDivergence> FindFirstDivergence(
    const Report& report, std::optional<uint32_t> rank = std::nullopt);

// One module of a divergence's checkpoint, step and direction, for the
// renderers' execution-order lists.
struct ModuleRow {
  enum class State { kPass, kFail, kUnmatched };
  std::string module;
  State state = State::kPass;
  bool divergent = false;  // the module `d` names
  size_t first_seen = 0;   // index in report.tensors of its first tensor
  int inputs = 0;          // its captured forward inputs (present on both sides)
  bool inputs_fail = false;
};

// Every module of d's checkpoint, step, direction and rank in order of first
// appearance in the report: unmatched when a tensor is on one side only,
// else fail when one fails, else pass.
std::vector<ModuleRow> DivergenceModules(const Report& report, const FirstDivergence& d);

// One sentence: "module M (forward, step 3) diverges first: KEY: REASON;
// its inputs passed." Used by the text and Markdown renderings (which
// escape it themselves).
std::string DescribeDivergence(const FirstDivergence& d);

}  // namespace reprod::core::internal

#endif  // REPROD_CORE_INTERNAL_LOCALIZE_H_

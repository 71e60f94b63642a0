// File: core/compare.h
//
// The compare engine: matches the tensors of two runs, reduces every pair on
// a kernels::Backend in one batch, judges the statistics against a Policy
// and assembles a Report.
//
//   auto backend = kernels::CreateBackend(kernels::BackendKind::kAuto);
//   absl::StatusOr<Policy> policy = PresetPolicy("competition");
//   absl::StatusOr<Report> report = CompareRuns(ref, cand, *policy, **backend);
//   if (report.ok() && !report->passed) ...   // a verdict, not an error
//
// Two entry points, one engine: CompareRuns takes runs with their bytes in
// memory. CompareIndexed takes only their metadata (RunIndex, run_index.h)
// and a PairReducer (pair_reducer.h) that fetches and reduces the planned
// pairs wherever the bytes are (the server streams them from its store,
// server/store_compare.h). CompareRuns(ref, cand, ...) is exactly
// CompareIndexed(IndexRunData(ref), IndexRunData(cand), ...) with a reducer
// that runs one Backend::CompareBatch over the in-memory tensors.
//
// Matching: a ref tensor (checkpoint, key, step) pairs with the cand tensor of
// the same checkpoint and step whose key, after the policy's `rename`, equals
// key. When a key is held by exactly one tensor on each side, one with a step
// and one without (a file pushed without --step against a run logged with
// step=0), the two pair with a note. Unpaired tensors are reported
// missing_in_ref / missing_in_cand; the reason names the steps the other
// side holds for the same key. Matching and shapes are in
// internal/pairing.h, judging in internal/judge.h.
//
// Shapes: equal shapes compare element-wise. Transposition follows the
// policy's `transpose` (see policy.h): `auto` compares cand.T with ref when
// both are 2-D, non-square and reversed; a glob list transposes the listed
// keys when the shapes are (m, n) and (n, m), square included. Shapes that
// differ only in size-1 dimensions (() vs (1,), (1, 1000) vs (1000,)) compare
// element-wise in flat C order with a note, unless the policy has `shapes:
// strict`. Anything else is shape_mismatch; nothing is broadcast. Pairs with
// different dtypes are compared by value and carry a note; uint16 tensors
// named by the policy's `as_bf16` are read as bfloat16. Equal empty shapes
// compare zero elements and pass.
//
// Checks: each compared pair gets the checks its policy resolution gives.
// allclose and mismatch_ratio count mismatches with the check's tolerance
// (dtype defaults when unset); when a key's checks need several tolerances
// the pair is reduced once per tolerance, in the same batch. The reported
// `stats` (mismatches included) come from the first tolerance the key's
// checks need, or the dtypes' DefaultTolerance when none does. A NaN value
// never passes.
//
// Order: checkpoints in cand order, then those only in ref; within one, the
// cand tensors in producer order, then the ref tensors missing in cand in ref
// order. first_failure is the first non-passing tensor in that order.
//
// Verdicts: a checkpoint passes when all its tensors pass (warn passes), its
// min_steps is met, it holds a tensor in at least one run and, if required,
// it exists in both runs. The report passes when every checkpoint passes, no
// required checkpoint is absent and at least one pair was reduced: nothing
// compared is never a pass (Report::reasons says why).
//
// Pair filter (CompareOptions::pair_filter): matched pairs it rejects are
// skipped entirely (not reduced, not listed, not counted); tensors present
// on one side only are still listed, and the nothing-compared rules do not
// apply (a watch round may have no new pair). Checkpoint-level facts (steps for
// min_steps, presence for `required`) still count every tensor.
//
// Errors (the comparison could not be made, as opposed to a failed verdict):
// InvalidArgument for a run naming one checkpoint twice or holding two
// tensors at one (checkpoint, key, step) address (after rename for cand);
// the backend's (reducer's) error when CompareBatch (Reduce) fails.
//
// Thread-safety: CompareRuns and CompareIndexed are reentrant; `backend`
// must allow the call (every Backend does). Inputs are not modified.
#ifndef REPROD_CORE_COMPARE_H_
#define REPROD_CORE_COMPARE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/pair_reducer.h"
#include "core/policy.h"
#include "core/report.h"
#include "core/run_data.h"
#include "core/run_index.h"
#include "kernels/backend.h"

namespace reprod::core {

struct CompareOptions {
  // Compare only these checkpoints (others are ignored on both sides, and
  // `required` entries outside the list are not enforced). Empty = all.
  std::vector<std::string> checkpoints;
  // When set, called once for every matched pair (same checkpoint, key after
  // rename and step on both sides) with its address in ref's terms (the
  // matched key, i.e. cand's key after rename); a pair for which it returns
  // false is neither reduced nor listed in the report (nor counted in
  // summaries, verdicts or first_failure). Tensors on one side only are not
  // passed to it and are listed as usual. The server's watch uses it to
  // judge only newly complete pairs. Empty = every pair.
  std::function<bool(const TensorAddress& ref_address)> pair_filter;
};

// Compares `cand` against `ref` under `policy` on `backend` (exactly one
// CompareBatch call, none when there is nothing to reduce). See the file
// comment for semantics and errors. The report's ref/cand names are the
// runs' names.
absl::StatusOr<Report> CompareRuns(const RunData& ref, const RunData& cand,
                                   const Policy& policy,
                                   kernels::Backend& backend,
                                   const CompareOptions& options = {});

// Compares two runs given by their metadata: plans every pair, calls
// reducer.Reduce exactly once with all planned pairs (not at all when there
// is nothing to reduce), then judges. `backend_name` becomes
// Report::backend. Same semantics and errors as CompareRuns; the reducer's
// error is returned unchanged.
absl::StatusOr<Report> CompareIndexed(const RunIndex& ref, const RunIndex& cand,
                                      const Policy& policy,
                                      PairReducer& reducer,
                                      std::string backend_name,
                                      const CompareOptions& options = {});

}  // namespace reprod::core

#endif  // REPROD_CORE_COMPARE_H_

// File: core/internal/judge.h
//
// The judging half of the compare engine (internal to core/): a reduced
// pair's checks against its policy resolution, and the report-level verdicts
// (checkpoint verdicts, summary, first failure, min_steps, required
// checkpoints, nothing compared). CompareIndexed (compare.h) calls them
// after its single Reduce.
//
// Thread-safety: pure functions over their arguments.
#ifndef REPROD_CORE_INTERNAL_JUDGE_H_
#define REPROD_CORE_INTERNAL_JUDGE_H_

#include <cstddef>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "core/compare.h"
#include "core/policy.h"
#include "core/report.h"
#include "kernels/diff_stats.h"

namespace reprod::core::internal {

// The distinct tolerances a pair was reduced under, each with the index of
// its DiffStats in the reducer's output; [0] gives the reported stats.
using ToleranceStats = std::vector<std::pair<Tolerance, size_t>>;

// How far a check is past (>= 1) or short of (< 1) its bound: value/bound
// for max-checks, (1-value)/(1-bound) for min-checks; +inf for a NaN value
// or a violated bound of 0 (max) / 1 (min). Orders WorstCheck and the HTML
// report's failing tensors.
double Severity(const CheckResult& r);

// True when `name` is among options.checkpoints, or that list is empty (all
// checkpoints are compared).
bool CheckpointSelected(const CompareOptions& options, std::string_view name);

// Fills t.stats, t.max_abs_index, t.checks, t.status and t.reason from the
// pair's statistics (`stats` is the reducer's whole output). t.shape_ref and
// t.dtype_ref / t.dtype_cand must be set.
void JudgePair(const PolicyResolution& resolution,
               const ToleranceStats& tolerances,
               absl::Span<const kernels::DiffStats> stats, TensorResult& t);

// Counts every tensor into its checkpoint and the summary, finds the first
// failure and each checkpoint's worst check, applies min_steps and
// `required`, and sets report.passed. A report in which no pair was reduced
// fails with a "nothing compared" reason, unless `options.pair_filter` is
// set (a watch round may have no new pair).
void Summarise(const Policy& policy, const CompareOptions& options,
               Report& report);

}  // namespace reprod::core::internal

#endif  // REPROD_CORE_INTERNAL_JUDGE_H_

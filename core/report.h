// File: core/report.h
//
// Report: the verdict of comparing two runs under a policy
// (docs/design.md §Reports), and its renderings.
//
//   absl::StatusOr<Report> r = CompareRuns(ref, cand, policy, *backend);
//   absl::StatusOr<std::string> text = RenderReport(*r, ReportFormat::kJson);
//
// Formats:
//  - kText: reprod_log's log lines ("[YYYY/MM/DD HH:MM:SS] root INFO: ..."),
//    local time at rendering, values as Python repr(float).
//  - kJson: schema "reprod.report.v1" (docs/design.md §Report JSON contract),
//    numbers as Python's json.dumps writes them (shortest round-trip
//    digits), non-finite numbers as the strings "NaN", "Infinity",
//    "-Infinity".
//  - kJunit: one <testsuite> per checkpoint, one <testcase> per tensor.
//  - kMarkdown: summary table, one table per checkpoint, failure details.
//  - kHtml: one self-contained page (inline CSS and SVG, no script, nothing
//    fetched): verdict, acceptance checklist, first failure, failing tensors
//    by severity with |d| histograms, step-drift charts, a key x step heat
//    map, and every tensor with passing rows hidden by a CSS-only toggle.
//
// Thread-safety: Report is a plain value; the render functions are
// reentrant.
#ifndef REPROD_CORE_REPORT_H_
#define REPROD_CORE_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "core/policy.h"
#include "kernels/diff_stats.h"

namespace reprod::core {

inline constexpr std::string_view kReportSchema = "reprod.report.v1";

// Verdict of one tensor pair (JSON `status`).
enum class TensorStatus {
  kPass,
  kWarn,  // every check passed, at least one inside its warn band
  kFail,  // at least one check failed
  kMissingInRef,
  kMissingInCand,
  kShapeMismatch,
};

// "pass", "warn", "fail", "missing_in_ref", "missing_in_cand",
// "shape_mismatch".
std::string_view TensorStatusName(TensorStatus s);

// Pass and warn are passing; everything else fails the tensor.
inline bool IsPassing(TensorStatus s) {
  return s == TensorStatus::kPass || s == TensorStatus::kWarn;
}

// One evaluated check.
struct CheckResult {
  Check check;  // metric, bound kind, bound, warn
  // The metric's value; for allclose the number of mismatching elements.
  // NaN never passes.
  double value = 0;
  // kPass, kWarn or kFail.
  TensorStatus status = TensorStatus::kPass;
  // The tolerance used (allclose, mismatch_ratio only).
  std::optional<Tolerance> tolerance;
};

// One tensor pair (or a tensor present on one side only).
struct TensorResult {
  std::string checkpoint;
  std::string key;  // the matched key (cand keys after rename)
  std::string
      cand_key;  // the candidate's own key (before rename); "" if absent
  std::optional<int64_t> step;
  // The rank both sides' tensors were logged by; set (0 included) in every
  // tensor of a multi-rank report (a run holding a tensor of rank > 0), and
  // never in a single-rank one or a global tensor.
  std::optional<uint32_t> rank = std::nullopt;
  TensorStatus status = TensorStatus::kPass;
  std::optional<DType> dtype_ref, dtype_cand;  // of the sides that exist
  std::optional<Shape> shape_ref, shape_cand;
  bool transposed = false;  // cand.T was compared with ref
  // The backend that reduced the pair ("cpu", "cuda"; with --backend auto
  // it depends on the pair, with a distributed compare on the replica);
  // empty when not compared or not known.
  std::string reduced_by;
  // Present when the pair was compared (not for missing / shape mismatch).
  std::optional<kernels::DiffStats> stats;
  // The allclose tolerance `stats.mismatches` was counted with.
  std::optional<Tolerance> stats_tolerance;
  // Location of the largest error as an index in ref's shape (empty for 0-d
  // tensors and for pairs with no elements).
  std::vector<int64_t> max_abs_index;
  std::vector<CheckResult> checks;
  // Which policy entry gave the checks: "rule 'forward/*'", "checkpoint
  // 'bp_align'", "defaults" (empty when not compared).
  std::string policy_source;
  // For non-passing tensors, one line saying why (metric, value, bound,
  // location and values there; or the shapes; or the missing side).
  std::string reason;
  // Remarks that do not change the verdict: differing dtypes ("dtypes differ
  // (ref float32, cand float16); compared by value"), transposition, shapes
  // differing only in size-1 dimensions, a step-less tensor paired with a
  // stepped one, a uint16 read as bfloat16.
  std::vector<std::string> notes;
  // Global tensors only (Report::global_tensors): the ranks whose shard
  // pieces were merged, ascending.
  std::vector<uint32_t> merged_ranks;

  // "key", "key@step", with " (rank N)" appended when rank is set.
  std::string DisplayKey() const;
};

// The worst check of a checkpoint: the one furthest past (or closest to) its
// bound, measured as value/bound for max-checks and (1-value)/(1-bound) for
// min-checks (NaN counts as infinitely bad). For review summary tables.
struct WorstCheck {
  std::string key;
  std::optional<int64_t> step;
  Metric metric = Metric::kMeanAbs;
  double value = 0;
  double bound = 0;
  BoundKind kind = BoundKind::kMax;
};

struct CheckpointResult {
  std::string name;
  bool passed = true;
  int64_t tensors = 0;  // TensorResults of this checkpoint
  int64_t passed_tensors = 0;
  int64_t warned_tensors = 0;
  int64_t failed_tensors = 0;  // fail + shape_mismatch + missing
  // Checkpoint-level failures (min_steps, required but absent), one per
  // line; empty when none.
  std::vector<std::string> reasons;
  // Steps counted for min_steps (distinct cand steps, or cand tensors when
  // none carries a step), and the requirement (0 = none).
  int64_t steps = 0;
  int64_t min_steps = 0;
  bool present_in_ref = false;
  bool present_in_cand = false;
  std::optional<WorstCheck> worst;
};

// Totals over all tensors. tensors = passed + warned + failed +
// missing_in_ref + missing_in_cand; `failed` includes shape mismatches.
// `compared` counts the pairs whose statistics were reduced (pass, warn and
// fail); a report with compared == 0 never passes.
struct ReportSummary {
  int64_t tensors = 0;
  int64_t compared = 0;
  int64_t passed = 0;
  int64_t warned = 0;
  int64_t failed = 0;
  int64_t missing_in_ref = 0;
  int64_t missing_in_cand = 0;
};

struct TensorAddress {
  std::string checkpoint;
  std::string key;
  std::optional<int64_t> step;
  std::optional<uint32_t> rank = std::nullopt;  // multi-rank reports only
};

// Whether the module a divergence was found in had its inputs captured and
// how they compared (JSON `inputs`).
enum class DivergenceInputs {
  kPass,         // captured and all passing: the module itself diverges
  kFail,         // captured and failing: the divergence lies before it, in
                 // code no captured module covers
  kNotCaptured,  // no `<module>/forward/input/...` tensors (or backward)
};

// "pass", "fail", "not_captured".
std::string_view DivergenceInputsName(DivergenceInputs i);

// The first module, in the candidate's execution order, whose captured
// tensors diverge (docs/design.md §First divergence). Capture keys have the
// form "<module>/<direction>/<role>/<index...>" (core/capture_key.h):
// direction "forward" or "backward", role "input", "output", "grad_output"
// or "param_grad" (reprod_client's
// capture() writes them; a module called again in one step is
// "<module>[k]").
struct FirstDivergence {
  // Multi-rank reports: the rank it was found on (the first by step, then
  // rank, among the ranks' own first divergences).
  std::optional<uint32_t> rank = std::nullopt;
  std::string checkpoint;
  std::string module;     // as matched (candidate paths after rename)
  std::string direction;  // "forward" or "backward"
  std::optional<int64_t> step;
  std::string key;     // the module's first failing tensor
  std::string reason;  // that tensor's reason
  DivergenceInputs inputs = DivergenceInputs::kNotCaptured;
  // Modules of the same checkpoint, step and direction before it whose
  // tensors all pass, in execution order.
  std::vector<std::string> passed_before;
  // Modules of the same checkpoint, step and direction with a tensor on one
  // side only (different module structure; not a divergence).
  std::vector<std::string> unmatched;
};

// One rank of a multi-rank report (JSON `ranks`): its pairs' verdicts.
struct RankSummary {
  uint32_t rank = 0;
  int64_t tensors = 0;  // TensorResults of this rank
  int64_t passed = 0;   // pass + warn
  int64_t failed = 0;   // everything else (missing and shape mismatch too)
  std::optional<TensorAddress> first_failure;
  std::optional<FirstDivergence> first_divergence;
};

// A tensor logged as `replicate` whose copy on `rank` differs from the copy
// on `against_rank` (the lowest rank holding it) in the same run (JSON
// `replica_mismatches`). Checked through dtype, shape and CRC-32C of the
// bytes, so the copies must be bit-identical.
struct ReplicaMismatch {
  std::string side;  // "ref" or "cand"
  std::string checkpoint;
  std::string key;  // as logged (before rename)
  std::optional<int64_t> step;
  uint32_t rank = 0;
  uint32_t against_rank = 0;
  std::string reason;  // "crc32c 0x1234abcd vs 0x... (rank 0)", "shape ..."
};

// reprod::core::Report
struct Report {
  bool passed = false;
  std::string ref;  // run names or file paths
  std::string cand;
  std::string policy;   // Policy::name
  std::string backend;  // Backend::name() that computed the stats
  ReportSummary summary;
  // First failing tensor in the candidate's producer order (see
  // CompareRuns); nullopt when no tensor fails (the report may still fail
  // on a checkpoint-level reason).
  std::optional<TensorAddress> first_failure;
  // Set when tensors with capture keys fail (see FirstDivergence).
  std::optional<FirstDivergence> first_divergence;
  // Checkpoints in candidate order, then those only in ref (ref order), then
  // required checkpoints absent from both.
  std::vector<CheckpointResult> checkpoints;
  // Tensors grouped by checkpoint (same order as `checkpoints`), in the
  // candidate's producer order, then those missing in cand (ref order).
  std::vector<TensorResult> tensors;
  // Report-level failures that belong to no checkpoint, one per line
  // ("nothing compared: ..." when no pair could be reduced; replica
  // mismatches and failing global tensors of multi-rank runs).
  std::vector<std::string> reasons;

  // Multi-rank reports (a run holds a tensor of rank > 0); empty otherwise.
  // Per rank, ascending.
  std::vector<RankSummary> ranks;
  // The statistics of sharded tensors' global tensors, merged exactly from
  // their ranks' pieces (both runs sharding the same way: equal global
  // shapes, each rank's piece at the same offset, the pieces covering the
  // global tensor without overlap), judged like any pair. shape_ref and
  // shape_cand are the global shape, rank unset, merged_ranks set. A
  // failing one fails the report.
  std::vector<TensorResult> global_tensors;
  // Replicate tensors that differ between ranks of one run; any fails the
  // report.
  std::vector<ReplicaMismatch> replica_mismatches;

  const CheckpointResult* FindCheckpoint(std::string_view name) const;
};

// One line describing a tensor's verdict, e.g.
// "mean_abs = 1.5e-05 > max 1e-06; largest error at [0, 3]: ref 0.25, cand
// 0.2500152" or "shape mismatch: ref (4, 1) vs cand (4,)".
std::string DescribeTensor(const TensorResult& t);

enum class ReportFormat { kText, kJson, kJunit, kMarkdown, kHtml };

// "text", "json", "junit", "markdown" (also "md"), "html"; InvalidArgument
// otherwise.
absl::StatusOr<ReportFormat> ParseReportFormat(std::string_view name);

struct RenderOptions {
  // Timestamp of kText lines; nullopt = now. Printed in the local time zone.
  std::optional<absl::Time> now;
};

// Renders `report`. InvalidArgument only for an unknown format value.
//
// kText prints one block per tensor in report order. Keys are bare when the
// report has a single checkpoint (one file pair, as reprod_log prints them)
// and "checkpoint/key" otherwise; a step is appended as "@step".
absl::StatusOr<std::string> RenderReport(const Report& report,
                                         ReportFormat format,
                                         const RenderOptions& options = {});

// reprod_log's `X_diff.log` for one checkpoint: its tensors with bare keys
// and a last line with that checkpoint's verdict. NotFound when the report
// has no such checkpoint.
absl::StatusOr<std::string> RenderReprodLogText(
    const Report& report, std::string_view checkpoint,
    const RenderOptions& options = {});

}  // namespace reprod::core

#endif  // REPROD_CORE_REPORT_H_

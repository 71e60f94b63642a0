// File: core/policy.h
//
// Policy: which metrics and thresholds decide pass/fail, per checkpoint and
// per key pattern (docs/design.md §Policies). Policies come from YAML (JSON is
// accepted: it is parsed as YAML flow style), from built-in presets, or from
// the reprod_log-style command-line shortcuts.
//
//   absl::StatusOr<Policy> p = LoadPolicy("competition");     // preset
//   absl::StatusOr<Policy> q = LoadPolicy("ci/policy.yaml");  // file
//   PolicyResolution r = ResolvePolicy(*p, "bp_align", "loss");
//   for (const Check& c : *r.checks) ...
//
// Policy document (every field optional; unknown fields are errors):
//
//   name: my-policy                 # shown in reports (default: source name)
//   description: free text          # ignored
//   defaults: {metric: mean_abs, max: 1.0e-6}   # a check or a list of checks
//   equal_nan: false                # NaN against NaN counts as equal
//   checkpoints:
//     bp_align:    {metric: mean_abs, max: 1.0e-6, min_steps: 2}
//     train_align: {checks: [{metric: mean_abs, max: 0.0015}]}
//     lr:          [{metric: max_abs, max: 1.0e-6}]
//   rules:
//     - match: "forward/*"
//       checks: [{metric: cosine, min: 0.99999}, {metric: max_abs, max: 1e-4}]
//   rename:    [{from: "encoder.layers.", to: "encoder.layer."},
//               {regex: '^enc\.(\d+)\.q_proj/', to: 'encoder.layer.\1.query/'}]
//   transpose: auto                 # auto | never | ["*.weight", ...]
//   shapes:    size1                # size1 | strict
//   as_bf16:   ["*.weight"]         # uint16 leaves holding bfloat16 bits
//   required:  [forward, metric, loss, bp_align, train_align]
//
// A check is a mapping {metric, max | min, warn, atol, rtol}:
//   - metric: mean_abs max_abs min_abs mean_rel max_rel rmse cosine
//     mismatch_ratio allclose (docs/design.md §Diff semantics defines each).
//   - cosine takes `min` (passes when value >= min); every other metric
//     takes `max` (passes when value <= max). The bound is required, except
//     for allclose, which passes iff no element mismatches (`max`/`min`/`warn`
//     are refused for it).
//   - warn: a value past `warn` but within the bound passes with status warn
//     (warn <= max, or warn >= min for cosine).
//   - atol/rtol: only for allclose and mismatch_ratio (the numpy rule
//     d > atol + rtol*|ref|). When absent they default per dtype to
//     torch.testing.assert_close's tolerances (see DefaultTolerance()).
// A checkpoint entry is a check, a list of checks, or a mapping with
// `checks: [...]` (or inline check fields) and the options `min_steps` and
// `equal_nan`; an entry without checks uses `defaults` for its checks.
// A rule is {match, checks: [...] (or inline check fields), equal_nan}.
//
// Resolution per key: the first rule whose `match` glob matches
// "checkpoint/key" (key after rename), else the checkpoint's entry when it
// has checks, else `defaults` (mean_abs <= 1e-6, reprod_log's default, when
// the document has none). `equal_nan` resolves the same way (rule, then
// checkpoint, then top level, then false).
//
// Globs (`match`, transpose lists) follow fnmatch(3) without FNM_PATHNAME:
// `*` matches any run of characters including '/', `?` exactly one
// character, `[...]` a character class, `\` escapes. A glob must match the
// whole "checkpoint/key" string.
//
// `rename` entries are applied to candidate keys, in order, each replacing
// every occurrence of `from` by `to` (plain substrings, not globs), or every
// match of `regex` (RE2 syntax: linear time, no backreferences in the
// pattern) by `to` with \1 .. \9 for its groups.
//
// `transpose`: `auto` compares cand.T with ref when both are 2-D, non-square
// and each shape is the other's reverse; `never` disables it; a list of globs
// transposes exactly the listed keys (matched on "checkpoint/key") whenever
// the shapes are (m, n) and (n, m), square included, and no other key.
//
// `shapes`: `size1` (default) compares shapes that differ only in size-1
// dimensions and hold the same number of elements (`()` vs `(1,)`, `(1, 1000)`
// vs `(1000,)`, `(4, 1)` vs `(4,)`) element-wise in flat C order, with a note;
// `strict` makes them a shape mismatch. Nothing is ever broadcast. The
// transpose rule is applied first.
//
// `as_bf16`: globs on "checkpoint/key"; a matching leaf of dtype uint16 is
// read as bfloat16 bit patterns (Paddle exposes bf16 parameters as a uint16
// view), with a note. Other dtypes are not reinterpreted.
//
// `min_steps` counts the distinct steps of that checkpoint present in the
// candidate run; when no candidate tensor of the checkpoint carries a step
// (file inputs), it counts the checkpoint's candidate tensors instead. Fewer
// makes the checkpoint fail with a reason.
//
// `required` checkpoints that are absent from either run make the report
// fail.
//
// Thread-safety: Policy is a plain value; the functions are reentrant.
#ifndef REPROD_CORE_POLICY_H_
#define REPROD_CORE_POLICY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace reprod::core {

// reprod_log's default diff threshold (mean diff <= 1e-6): the `defaults` of
// a policy document that sets none, and of the "reprod" preset.
inline constexpr double kReprodLogThreshold = 1e-6;

// reprod::core::Metric — the statistics a check can bound.
enum class Metric {
  kMeanAbs,
  kMaxAbs,
  kMinAbs,
  kMeanRel,
  kMaxRel,
  kRmse,
  kCosine,
  kMismatchRatio,
  kAllclose,
};

// "mean_abs", "max_abs", ..., "allclose" (the policy/JSON names).
std::string_view MetricName(Metric m);

// Every metric name, comma-separated, in a stable order (for messages).
std::string MetricNameList();

// Inverse of MetricName; nullopt for unknown names.
std::optional<Metric> MetricFromName(std::string_view name);

// True for the metrics whose value depends on atol/rtol (allclose,
// mismatch_ratio).
bool MetricUsesTolerance(Metric m);

// Which side of the bound passes.
enum class BoundKind {
  kMax,  // value <= bound passes (every metric but cosine)
  kMin,  // value >= bound passes (cosine)
};

// allclose tolerances (numpy rule: mismatch iff d > atol + rtol * |ref|).
struct Tolerance {
  double atol = 0;
  double rtol = 0;
  friend bool operator==(const Tolerance&, const Tolerance&) = default;
};

// torch.testing.assert_close's default tolerances for a dtype: float16
// rtol 1e-3 atol 1e-5; bfloat16 rtol 1.6e-2 atol 1e-5; float32 rtol 1.3e-6
// atol 1e-5; float64 rtol 1e-7 atol 1e-7; integers and bool exact (0, 0).
Tolerance DefaultTolerance(DType dtype);

// Tolerance for a pair of dtypes: each of atol and rtol is the larger of the
// two dtypes' defaults (the less precise side decides, as a promotion to the
// common dtype would).
Tolerance DefaultTolerance(DType ref, DType cand);

// One check of a key.
struct Check {
  Metric metric = Metric::kMeanAbs;
  BoundKind kind = BoundKind::kMax;
  // Pass bound (for allclose: 0 = no mismatching element allowed; the value
  // of an allclose check is the number of mismatching elements).
  double bound = 0;
  std::optional<double> warn;
  // allclose / mismatch_ratio only; absent -> DefaultTolerance(dtypes).
  std::optional<double> atol;
  std::optional<double> rtol;

  // Tolerance for a pair of these dtypes (explicit fields win, the missing
  // ones come from DefaultTolerance(ref, cand)).
  Tolerance ToleranceFor(DType ref, DType cand) const;
};

// Convenience constructors.
Check MaxCheck(Metric metric, double max, std::optional<double> warn = {});
Check MinCheck(Metric metric, double min, std::optional<double> warn = {});
Check AllcloseCheck(std::optional<double> atol = {},
                    std::optional<double> rtol = {});

// Per-checkpoint entry.
struct CheckpointPolicy {
  std::vector<Check> checks;  // empty -> the policy's defaults
  int64_t min_steps = 0;      // 0 = no requirement
  std::optional<bool> equal_nan;
};

// A key-pattern rule.
struct Rule {
  std::string match;          // glob on "checkpoint/key"
  std::vector<Check> checks;  // never empty
  std::optional<bool> equal_nan;
};

// A `rename` entry: `from` replaced by `to` as a plain substring (every
// occurrence), or, with `regex`, every match of the RE2 pattern replaced by
// `to`, in which \1 .. \9 are the pattern's groups and \0 the match.
struct Rename {
  Rename() = default;
  // A substring entry.
  Rename(std::string from_text, std::string to_text)
      : from(std::move(from_text)), to(std::move(to_text)) {}

  std::string from;  // plain substring (empty for a regex entry)
  std::string to;
  std::string regex;  // the pattern as written (empty for a substring entry)
  // `regex` compiled (MakeRegexRename); null for a substring entry.
  std::shared_ptr<const re2::RE2> compiled;
};

// A regex rename entry, or InvalidArgument naming the pattern and why (it
// does not compile, `to` names a group the pattern lacks, or either is
// longer than a tensor key may be).
absl::StatusOr<Rename> MakeRegexRename(std::string_view pattern, std::string_view to);

enum class ShapeMode {
  kSize1,   // shapes equal after dropping size-1 dims compare flat
  kStrict,  // any shape difference is a mismatch (unless transposed)
};

enum class TransposeMode {
  kAuto,   // 2-D, non-square, reversed shapes -> transposed compare
  kNever,  // never transpose
  kGlobs,  // only keys matching transpose_globs, square included
};

// reprod::core::Policy
struct Policy {
  std::string name;             // shown in reports: preset name, file path, ...
  std::vector<Check> defaults;  // never empty in a valid policy
  bool equal_nan = false;
  // Checkpoint entries, in document order (names are unique).
  std::vector<std::pair<std::string, CheckpointPolicy>> checkpoints;
  std::vector<Rule> rules;
  std::vector<Rename> rename;
  TransposeMode transpose = TransposeMode::kAuto;
  std::vector<std::string> transpose_globs;  // kGlobs only
  ShapeMode shapes = ShapeMode::kSize1;
  std::vector<std::string> as_bf16;  // globs on "checkpoint/key"
  std::vector<std::string> required;

  // The checkpoint's entry, or nullptr.
  const CheckpointPolicy* FindCheckpoint(std::string_view name) const;
};

// Where a key's checks came from, and the options that go with them.
struct PolicyResolution {
  const std::vector<Check>* checks = nullptr;  // points into the Policy
  // "rule 'forward/*'", "checkpoint 'bp_align'" or "defaults".
  std::string source;
  bool equal_nan = false;
};

// Resolves a key (after rename) of a checkpoint. The result points into
// `policy`, which must outlive it.
PolicyResolution ResolvePolicy(const Policy& policy,
                               std::string_view checkpoint,
                               std::string_view key);

// The candidate key after the policy's rename entries.
std::string ApplyRename(const Policy& policy, std::string_view cand_key);

// "size1" or "strict" (the `shapes` field); InvalidArgument naming the
// value and the choices otherwise.
absl::StatusOr<ShapeMode> ParseShapeMode(std::string_view name);

// True when "checkpoint/key" matches one of the policy's as_bf16 globs.
bool ReadAsBFloat16(const Policy& policy, std::string_view checkpoint,
                    std::string_view key);

// fnmatch(3)-style glob without FNM_PATHNAME (see the file comment).
bool GlobMatch(std::string_view pattern, std::string_view text);

// Parses a YAML or JSON policy document. `source_name` (a path, "<flag>")
// prefixes every error and becomes the policy's name unless the document
// sets one. Errors: InvalidArgument "<source>:<line>:<column>: <problem>"
// naming the offending field, metric or value.
absl::StatusOr<Policy> ParsePolicy(std::string_view text,
                                   std::string_view source_name);

// Reads and parses a policy file. NotFound when it does not exist,
// PermissionDenied/Internal on read errors, else as ParsePolicy.
absl::StatusOr<Policy> LoadPolicyFile(const std::string& path);

// Built-in presets:
//  - "reprod": mean_abs <= 1e-6 for every key (reprod_log's default).
//  - "competition": the guide's five acceptance points. Required forward,
//    metric, loss, bp_align, train_align; defaults mean_abs <= 1e-6;
//    train_align mean_abs <= 0.0015; bp_align min_steps 2; lr (optional)
//    mean_abs <= 1e-6.
//  - "allclose": one allclose check with torch.testing.assert_close's
//    per-dtype default tolerances.
// InvalidArgument for any other name (the message lists the presets).
absl::StatusOr<Policy> PresetPolicy(std::string_view name);

// Names accepted by PresetPolicy, in a stable order.
std::vector<std::string> PresetPolicyNames();

// A preset name, else a policy file path.
absl::StatusOr<Policy> LoadPolicy(const std::string& preset_or_path);

// Mirrors reprod_log's report(diff_method, diff_threshold): one check per
// method, `value <= threshold` ("mean" -> mean_abs, "max" -> max_abs, "min"
// -> min_abs; "all" = min, max, mean in that order, as reprod_log expands
// it). InvalidArgument for other methods, an empty list, or a threshold that
// is NaN or negative.
absl::StatusOr<Policy> ReprodLogPolicy(
    double threshold, const std::vector<std::string>& methods = {"mean"});

// `--atol/--rtol` on the command line: one allclose check with these
// tolerances for every key. InvalidArgument when either is negative or NaN.
absl::StatusOr<Policy> AllcloseCliPolicy(double atol, double rtol);

}  // namespace reprod::core

#endif  // REPROD_CORE_POLICY_H_

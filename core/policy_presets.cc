// Built-in presets and the reprod_log / allclose command-line shortcuts
// (PresetPolicy, LoadPolicy, ReprodLogPolicy, AllcloseCliPolicy in policy.h).
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/visible.h"
#include "core/policy.h"
#include "core/py_float.h"

namespace reprod::core {

std::vector<std::string> PresetPolicyNames() {
  return {"reprod", "competition", "allclose"};
}

absl::StatusOr<Policy> PresetPolicy(std::string_view name) {
  Policy p;
  p.name = std::string(name);
  const Check reprod_check = MaxCheck(Metric::kMeanAbs, kReprodLogThreshold);
  if (name == "reprod") {
    p.defaults = {reprod_check};
    return p;
  }
  if (name == "competition") {
    p.defaults = {reprod_check};
    p.checkpoints.push_back({"forward", CheckpointPolicy{}});
    p.checkpoints.push_back({"metric", CheckpointPolicy{}});
    p.checkpoints.push_back({"loss", CheckpointPolicy{}});
    CheckpointPolicy bp;
    bp.checks = {reprod_check};
    bp.min_steps = 2;
    p.checkpoints.push_back({"bp_align", bp});
    CheckpointPolicy train;
    train.checks = {MaxCheck(Metric::kMeanAbs, 0.0015)};
    p.checkpoints.push_back({"train_align", train});
    CheckpointPolicy lr;
    lr.checks = {reprod_check};
    p.checkpoints.push_back({"lr", lr});
    p.required = {"forward", "metric", "loss", "bp_align", "train_align"};
    return p;
  }
  if (name == "allclose") {
    p.defaults = {AllcloseCheck()};
    return p;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown policy preset '", VisibleName(name),
      "' (presets: ", absl::StrJoin(PresetPolicyNames(), ", "), ")"));
}

absl::StatusOr<Policy> LoadPolicy(const std::string& preset_or_path) {
  for (const std::string& preset : PresetPolicyNames()) {
    if (preset == preset_or_path) return PresetPolicy(preset);
  }
  return LoadPolicyFile(preset_or_path);
}

absl::StatusOr<Policy> ReprodLogPolicy(
    double threshold, const std::vector<std::string>& methods) {
  if (std::isnan(threshold) || threshold < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diff threshold must be a number >= 0, got ", PyFloatRepr(threshold)));
  }
  if (methods.empty()) {
    return absl::InvalidArgumentError(
        "no diff method given (expected mean, max, min or all)");
  }
  std::vector<std::string> expanded;
  for (const std::string& m : methods) {
    if (m == "all") {
      expanded.insert(expanded.end(), {"min", "max", "mean"});
    } else if (m == "mean" || m == "max" || m == "min") {
      expanded.push_back(m);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown diff method '", m, "' (expected mean, max, min or all)"));
    }
  }
  Policy p;
  p.name = absl::StrCat("reprod_log(", absl::StrJoin(methods, ","), ", ",
                        PyFloatRepr(threshold), ")");
  for (const std::string& m : expanded) {
    const Metric metric = m == "mean"  ? Metric::kMeanAbs
                          : m == "max" ? Metric::kMaxAbs
                                       : Metric::kMinAbs;
    p.defaults.push_back(MaxCheck(metric, threshold));
  }
  return p;
}

absl::StatusOr<Policy> AllcloseCliPolicy(double atol, double rtol) {
  for (const auto& [v, n] : {std::pair{atol, "atol"}, {rtol, "rtol"}}) {
    if (std::isnan(v) || v < 0 || std::isinf(v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          n, " must be a finite number >= 0, got ", PyFloatRepr(v)));
    }
  }
  Policy p;
  p.name = absl::StrCat("allclose(atol=", PyFloatRepr(atol),
                        ", rtol=", PyFloatRepr(rtol), ")");
  p.defaults = {AllcloseCheck(atol, rtol)};
  return p;
}

}  // namespace reprod::core

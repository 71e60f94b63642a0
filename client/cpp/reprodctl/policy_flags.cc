#include "client/cpp/reprodctl/policy_flags.h"

#include "absl/strings/str_join.h"

namespace reprod::reprodctl {

void PolicyFlags::Register(CLI::App& cmd, const std::string& default_preset_name) {
  default_preset = default_preset_name;
  auto* policy_opt = cmd.add_option("--policy", policy_file, "Policy file (YAML or JSON)");
  auto* preset_opt =
      cmd.add_option("--preset", preset,
                     "Built-in policy: " + absl::StrJoin(core::PresetPolicyNames(), ", ") +
                         " (default: " + default_preset_name + ")");
  auto* threshold_opt = cmd.add_option(
      "--threshold", threshold, "reprod_log's diff_threshold: value <= X passes");
  auto* method_opt = cmd.add_option("--method", method,
                                    "reprod_log's diff_method: mean, max, min, all (with --threshold)")
                         ->check(CLI::IsMember({"mean", "max", "min", "all"}));
  auto* atol_opt = cmd.add_option("--atol", atol, "allclose absolute tolerance (numpy rule)");
  auto* rtol_opt = cmd.add_option("--rtol", rtol, "allclose relative tolerance (numpy rule)");
  method_opt->needs(threshold_opt);
  for (CLI::Option* a : {policy_opt, preset_opt}) {
    for (CLI::Option* b : {threshold_opt, atol_opt, rtol_opt}) a->excludes(b);
  }
  cmd.add_option("--as-bf16", as_bf16,
                 "Read uint16 leaves matching GLOB (on checkpoint/key) as bfloat16 bits, e.g. "
                 "Paddle's bf16 view (repeatable)")
      ->type_name("GLOB");
  cmd.add_option("--shapes", shapes,
                 "size1: shapes that differ only in size-1 dims, () vs (1,), compare flat "
                 "(default); strict: they are a shape mismatch")
      ->check(CLI::IsMember({"size1", "strict"}));
  policy_opt->excludes(preset_opt);
  threshold_opt->excludes(atol_opt);
  threshold_opt->excludes(rtol_opt);
}

absl::StatusOr<core::Policy> PolicyFlags::Resolve() const {
  absl::StatusOr<core::Policy> policy = ResolveBase();
  if (!policy.ok()) return policy;
  policy->as_bf16.insert(policy->as_bf16.end(), as_bf16.begin(), as_bf16.end());
  if (!shapes.empty()) {
    absl::StatusOr<core::ShapeMode> mode = core::ParseShapeMode(shapes);
    if (!mode.ok()) return mode.status();
    policy->shapes = *mode;
  }
  return policy;
}

absl::StatusOr<core::Policy> PolicyFlags::ResolveBase() const {
  if (!policy_file.empty()) return core::LoadPolicyFile(policy_file);
  if (threshold.has_value()) {
    if (method == "all") return core::ReprodLogPolicy(*threshold, {"all"});
    return core::ReprodLogPolicy(*threshold, {method});
  }
  if (atol.has_value() || rtol.has_value()) {
    return core::AllcloseCliPolicy(atol.value_or(1e-8), rtol.value_or(1e-5));
  }
  return core::PresetPolicy(preset.empty() ? default_preset : preset);
}

}  // namespace reprod::reprodctl

#include "client/cpp/reprodctl/policy_spec.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/names.h"
#include "nlohmann/json.hpp"

namespace reprod::reprodctl {
namespace {

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open policy file"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path, ": read failed"));
  return text.str();
}

}  // namespace

absl::StatusOr<std::string> DefaultsPolicyDocument(const core::Policy& policy) {
  if (!policy.checkpoints.empty() || !policy.rules.empty() || !policy.rename.empty() ||
      !policy.required.empty() || policy.transpose != core::TransposeMode::kAuto) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy '", policy.name, "' has more than default checks"));
  }
  nlohmann::json checks = nlohmann::json::array();
  for (const core::Check& c : policy.defaults) {
    nlohmann::json check = {{"metric", std::string(core::MetricName(c.metric))}};
    if (c.metric != core::Metric::kAllclose) {
      check[c.kind == core::BoundKind::kMin ? "min" : "max"] = c.bound;
      if (c.warn.has_value()) check["warn"] = *c.warn;
    }
    if (c.atol.has_value()) check["atol"] = *c.atol;
    if (c.rtol.has_value()) check["rtol"] = *c.rtol;
    checks.push_back(std::move(check));
  }
  nlohmann::json doc = {{"name", policy.name}, {"defaults", checks}};
  if (policy.equal_nan) doc["equal_nan"] = true;
  return doc.dump();
}

absl::StatusOr<v1::PolicySpec> PolicySpecFromFlags(const PolicyFlags& flags,
                                                   const std::vector<std::string>& checkpoints) {
  v1::PolicySpec spec;
  for (const std::string& c : checkpoints) {
    if (absl::Status s = ValidateCheckpointName(c); !s.ok()) return s;
    spec.add_checkpoints(c);
  }
  for (const std::string& g : flags.as_bf16) spec.add_as_bf16(g);
  spec.set_shapes(flags.shapes);
  // Resolving checks the flags (and parses a policy file) locally.
  absl::StatusOr<core::Policy> policy = flags.Resolve();
  if (!policy.ok()) return policy.status();
  if (!flags.policy_file.empty()) {
    absl::StatusOr<std::string> text = ReadText(flags.policy_file);
    if (!text.ok()) return text.status();
    spec.set_document(*std::move(text));
  } else if (flags.threshold.has_value() || flags.atol.has_value() || flags.rtol.has_value()) {
    absl::StatusOr<std::string> doc = DefaultsPolicyDocument(*policy);
    if (!doc.ok()) return doc.status();
    spec.set_document(*std::move(doc));
  } else {
    spec.set_preset(flags.preset.empty() ? flags.default_preset : flags.preset);
  }
  return spec;
}

}  // namespace reprod::reprodctl

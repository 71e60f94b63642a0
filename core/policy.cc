// The policy model: metrics, tolerances, checks and how a key resolves to
// its checks (policy.h). Parsing is in policy_parser.cc, presets in
// policy_presets.cc.
#include "core/policy.h"

#include <fnmatch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/visible.h"
#include "re2/re2.h"

namespace reprod::core {
namespace {

struct MetricInfo {
  Metric metric;
  std::string_view name;
};

constexpr MetricInfo kMetrics[] = {
    {Metric::kMeanAbs, "mean_abs"},  {Metric::kMaxAbs, "max_abs"},
    {Metric::kMinAbs, "min_abs"},    {Metric::kMeanRel, "mean_rel"},
    {Metric::kMaxRel, "max_rel"},    {Metric::kRmse, "rmse"},
    {Metric::kCosine, "cosine"},     {Metric::kMismatchRatio, "mismatch_ratio"},
    {Metric::kAllclose, "allclose"},
};

}  // namespace

std::string MetricNameList() {
  std::vector<std::string> names;
  for (const MetricInfo& m : kMetrics) names.emplace_back(m.name);
  return absl::StrJoin(names, ", ");
}

std::string_view MetricName(Metric m) {
  for (const MetricInfo& info : kMetrics) {
    if (info.metric == m) return info.name;
  }
  return "unknown";
}

std::optional<Metric> MetricFromName(std::string_view name) {
  for (const MetricInfo& info : kMetrics) {
    if (info.name == name) return info.metric;
  }
  return std::nullopt;
}

bool MetricUsesTolerance(Metric m) {
  return m == Metric::kAllclose || m == Metric::kMismatchRatio;
}

Tolerance DefaultTolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return {1e-5, 1e-3};
    case DType::kBFloat16:
      return {1e-5, 1.6e-2};
    case DType::kFloat32:
      return {1e-5, 1.3e-6};
    case DType::kFloat64:
      return {1e-7, 1e-7};
    default:
      return {0, 0};
  }
}

Tolerance DefaultTolerance(DType ref, DType cand) {
  const Tolerance a = DefaultTolerance(ref), b = DefaultTolerance(cand);
  return {std::max(a.atol, b.atol), std::max(a.rtol, b.rtol)};
}

Tolerance Check::ToleranceFor(DType ref, DType cand) const {
  Tolerance t = DefaultTolerance(ref, cand);
  if (atol) t.atol = *atol;
  if (rtol) t.rtol = *rtol;
  return t;
}

Check MaxCheck(Metric metric, double max, std::optional<double> warn) {
  Check c;
  c.metric = metric;
  c.kind = BoundKind::kMax;
  c.bound = max;
  c.warn = warn;
  return c;
}

Check MinCheck(Metric metric, double min, std::optional<double> warn) {
  Check c;
  c.metric = metric;
  c.kind = BoundKind::kMin;
  c.bound = min;
  c.warn = warn;
  return c;
}

Check AllcloseCheck(std::optional<double> atol, std::optional<double> rtol) {
  Check c;
  c.metric = Metric::kAllclose;
  c.kind = BoundKind::kMax;
  c.bound = 0;
  c.atol = atol;
  c.rtol = rtol;
  return c;
}

const CheckpointPolicy* Policy::FindCheckpoint(std::string_view name) const {
  for (const auto& [n, cp] : checkpoints) {
    if (n == name) return &cp;
  }
  return nullptr;
}

bool GlobMatch(std::string_view pattern, std::string_view text) {
  const std::string p(pattern), t(text);
  return ::fnmatch(p.c_str(), t.c_str(), 0) == 0;
}

PolicyResolution ResolvePolicy(const Policy& policy,
                               std::string_view checkpoint,
                               std::string_view key) {
  const std::string path =
      absl::StrCat(std::string(checkpoint), "/", std::string(key));
  const CheckpointPolicy* cp = policy.FindCheckpoint(checkpoint);
  PolicyResolution r;
  r.equal_nan = policy.equal_nan;
  if (cp != nullptr && cp->equal_nan) r.equal_nan = *cp->equal_nan;
  for (const Rule& rule : policy.rules) {
    if (GlobMatch(rule.match, path)) {
      r.checks = &rule.checks;
      r.source = absl::StrCat("rule '", rule.match, "'");
      if (rule.equal_nan) r.equal_nan = *rule.equal_nan;
      return r;
    }
  }
  if (cp != nullptr && !cp->checks.empty()) {
    r.checks = &cp->checks;
    r.source = absl::StrCat("checkpoint '", std::string(checkpoint), "'");
    return r;
  }
  r.checks = &policy.defaults;
  r.source = "defaults";
  return r;
}

std::string ApplyRename(const Policy& policy, std::string_view cand_key) {
  std::string key(cand_key);
  for (const Rename& rn : policy.rename) {
    if (rn.compiled != nullptr) {
      re2::RE2::GlobalReplace(&key, *rn.compiled, rn.to);
      continue;
    }
    if (rn.from.empty()) continue;
    key = absl::StrReplaceAll(key, {{rn.from, rn.to}});
  }
  return key;
}

absl::StatusOr<Rename> MakeRegexRename(std::string_view pattern, std::string_view to) {
  // A tensor key's own limit: a rename never needs a longer pattern.
  constexpr size_t kMaxBytes = 1024;
  if (pattern.empty() || pattern.size() > kMaxBytes || to.size() > kMaxBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rename regex '", VisibleText(pattern), "' -> '", VisibleText(to),
        "': the pattern must be 1-", kMaxBytes, " bytes and 'to' at most ", kMaxBytes));
  }
  re2::RE2::Options options;
  options.set_log_errors(false);
  auto compiled = std::make_shared<const re2::RE2>(std::string(pattern), options);
  if (!compiled->ok()) {
    return absl::InvalidArgumentError(absl::StrCat("rename regex '", VisibleText(pattern),
                                                   "' does not compile: ", compiled->error()));
  }
  std::string why;
  if (!compiled->CheckRewriteString(std::string(to), &why)) {
    return absl::InvalidArgumentError(absl::StrCat("rename regex '", VisibleText(pattern),
                                                   "': 'to' '", VisibleText(to), "': ", why));
  }
  Rename rn;
  rn.to = std::string(to);
  rn.regex = std::string(pattern);
  rn.compiled = std::move(compiled);
  return rn;
}

absl::StatusOr<ShapeMode> ParseShapeMode(std::string_view name) {
  if (name == "size1") return ShapeMode::kSize1;
  if (name == "strict") return ShapeMode::kStrict;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown shapes mode '", VisibleName(name),
      "' (expected size1: shapes that differ only in size-1 dimensions "
      "compare flat, or strict: any other shape is a mismatch)"));
}

bool ReadAsBFloat16(const Policy& policy, std::string_view checkpoint,
                    std::string_view key) {
  if (policy.as_bf16.empty()) return false;
  const std::string path =
      absl::StrCat(std::string(checkpoint), "/", std::string(key));
  for (const std::string& glob : policy.as_bf16) {
    if (GlobMatch(glob, path)) return true;
  }
  return false;
}

}  // namespace reprod::core

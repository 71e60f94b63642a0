// The policy document parser (ParsePolicy, LoadPolicyFile in policy.h).
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "core/policy.h"
#include "core/py_float.h"
#include "yaml-cpp/yaml.h"

namespace reprod::core {
namespace {

// ---------------------------------------------------------------------------
// YAML parsing. yaml-cpp throws; everything below that touches it runs inside
// the try block of ParsePolicy, and the helpers use the non-throwing
// YAML::convert<T>::decode where a value may be malformed.

constexpr std::string_view kCheckFields[] = {"metric", "max",  "min",
                                             "warn",   "atol", "rtol"};

bool IsCheckField(std::string_view key) {
  return std::find(std::begin(kCheckFields), std::end(kCheckFields), key) !=
         std::end(kCheckFields);
}

std::string NodeText(const YAML::Node& node) {
  if (node.IsScalar()) return absl::StrCat("'", VisibleName(node.Scalar()), "'");
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  absl::Status Error(const YAML::Mark& mark, std::string_view problem) const {
    // VisibleText: problems quote the document's strings.
    if (mark.is_null() || mark.line < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": ", VisibleText(problem)));
    }
    return absl::InvalidArgumentError(absl::StrCat(source_, ":", mark.line + 1,
                                                   ":", mark.column + 1, ": ",
                                                   VisibleText(problem)));
  }
  absl::Status Error(const YAML::Node& node, std::string_view problem) const {
    return Error(node.Mark(), problem);
  }

  // `valid` (a names.h verdict on a name taken from `node`) located in the
  // policy file, or OK.
  absl::Status NameError(const YAML::Node& node, const absl::Status& valid) const {
    if (valid.ok()) return valid;
    return Error(node, std::string(valid.message()));
  }

  // Iterates a mapping's entries, refusing non-string and duplicate keys.
  template <typename Fn>
  absl::Status ForEachField(const YAML::Node& map, std::string_view what,
                            Fn&& fn) const {
    if (!map.IsMap()) {
      return Error(map,
                   absl::StrCat(std::string(what), " must be a mapping, got ",
                                NodeText(map)));
    }
    std::set<std::string> seen;
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) {
        return Error(kv.first,
                     absl::StrCat("field names in ", std::string(what),
                                  " must be strings"));
      }
      const std::string key = kv.first.Scalar();
      if (!seen.insert(key).second) {
        return Error(kv.first, absl::StrCat("duplicate field '", key, "' in ",
                                            std::string(what)));
      }
      REPROD_RETURN_IF_ERROR(fn(key, kv.first, kv.second));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<double> Number(const YAML::Node& node,
                                std::string_view field) const {
    double v = 0;
    if (!node.IsScalar() || !YAML::convert<double>::decode(node, v)) {
      return Error(node,
                   absl::StrCat("'", std::string(field),
                                "' must be a number, got ", NodeText(node)));
    }
    if (std::isnan(v)) {
      return Error(node,
                   absl::StrCat("'", std::string(field), "' must not be NaN"));
    }
    return v;
  }

  absl::StatusOr<double> Tol(const YAML::Node& node,
                             std::string_view field) const {
    REPROD_ASSIGN_OR_RETURN(double v, Number(node, field));
    if (v < 0 || std::isinf(v)) {
      return Error(node, absl::StrCat("'", std::string(field),
                                      "' must be a finite number >= 0, got ",
                                      NodeText(node)));
    }
    return v;
  }

  absl::StatusOr<bool> Bool(const YAML::Node& node,
                            std::string_view field) const {
    bool v = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, v)) {
      return Error(
          node, absl::StrCat("'", std::string(field),
                             "' must be true or false, got ", NodeText(node)));
    }
    return v;
  }

  absl::StatusOr<std::string> String(const YAML::Node& node,
                                     std::string_view field) const {
    if (!node.IsScalar()) {
      return Error(node,
                   absl::StrCat("'", std::string(field),
                                "' must be a string, got ", NodeText(node)));
    }
    return node.Scalar();
  }

  absl::StatusOr<std::vector<std::string>> StringList(
      const YAML::Node& node, std::string_view field) const {
    if (!node.IsSequence()) {
      return Error(node, absl::StrCat("'", std::string(field),
                                      "' must be a list of strings, got ",
                                      NodeText(node)));
    }
    std::vector<std::string> out;
    for (const YAML::Node& item : node) {
      REPROD_ASSIGN_OR_RETURN(std::string s, String(item, field));
      out.push_back(std::move(s));
    }
    return out;
  }

  // Parses the check fields of `map`; fields named in `options` are skipped
  // (the caller handles them); any other field is an error.
  absl::StatusOr<Check> ParseCheck(const YAML::Node& map, std::string_view what,
                                   const std::set<std::string>& options) const {
    std::optional<Metric> metric;
    // Positions for messages (yaml-cpp's Node assignment rebinds the tree,
    // so positions are kept as plain marks).
    YAML::Mark max_mark, min_mark, warn_mark, tol_mark;
    std::optional<double> max, min, warn, atol, rtol;
    absl::Status st = ForEachField(
        map, what,
        [&](const std::string& key, const YAML::Node& key_node,
            const YAML::Node& value) -> absl::Status {
          if (options.count(key)) return absl::OkStatus();
          if (key == "metric") {
            REPROD_ASSIGN_OR_RETURN(std::string name, String(value, "metric"));
            metric = MetricFromName(name);
            if (!metric) {
              std::string hint;
              if (name == "mean" || name == "max" || name == "min") {
                hint = absl::StrCat("; reprod_log's '", name, "' is '", name,
                                    "_abs'");
              }
              return Error(value, absl::StrCat("unknown metric '", name,
                                               "' (expected one of ",
                                               MetricNameList(), ")", hint));
            }
          } else if (key == "max") {
            REPROD_ASSIGN_OR_RETURN(max, Number(value, "max"));
            max_mark = key_node.Mark();
          } else if (key == "min") {
            REPROD_ASSIGN_OR_RETURN(min, Number(value, "min"));
            min_mark = key_node.Mark();
          } else if (key == "warn") {
            REPROD_ASSIGN_OR_RETURN(warn, Number(value, "warn"));
            warn_mark = key_node.Mark();
          } else if (key == "atol") {
            REPROD_ASSIGN_OR_RETURN(atol, Tol(value, "atol"));
            tol_mark = key_node.Mark();
          } else if (key == "rtol") {
            REPROD_ASSIGN_OR_RETURN(rtol, Tol(value, "rtol"));
            tol_mark = key_node.Mark();
          } else {
            std::vector<std::string> allowed(std::begin(kCheckFields),
                                             std::end(kCheckFields));
            allowed.insert(allowed.end(), options.begin(), options.end());
            return Error(
                key_node,
                absl::StrCat("unknown field '", key, "' in ", std::string(what),
                             " (expected ", absl::StrJoin(allowed, ", "), ")"));
          }
          return absl::OkStatus();
        });
    REPROD_RETURN_IF_ERROR(st);
    if (!metric) {
      return Error(map,
                   absl::StrCat(std::string(what), " has no 'metric' (one of ",
                                MetricNameList(), ")"));
    }
    const std::string name(MetricName(*metric));
    Check check;
    check.metric = *metric;
    if (*metric == Metric::kAllclose) {
      for (const auto& [set, mark, field] :
           {std::tuple{max.has_value(), max_mark, "max"},
            {min.has_value(), min_mark, "min"},
            {warn.has_value(), warn_mark, "warn"}}) {
        if (set) {
          return Error(mark,
                       absl::StrCat("metric allclose takes no '", field,
                                    "': it passes iff no element mismatches "
                                    "(set 'atol'/'rtol' instead)"));
        }
      }
      check.kind = BoundKind::kMax;
      check.bound = 0;
    } else if (*metric == Metric::kCosine) {
      if (max) {
        return Error(max_mark,
                     "metric cosine takes 'min' (passes when value >= min), "
                     "not 'max'");
      }
      if (!min) return Error(map, "check 'cosine' needs 'min'");
      check.kind = BoundKind::kMin;
      check.bound = *min;
      if (warn && *warn < *min) {
        return Error(
            warn_mark,
            absl::StrCat("'warn' (", PyFloatRepr(*warn), ") must be >= 'min' (",
                         PyFloatRepr(*min), ") for metric cosine"));
      }
    } else {
      if (min) {
        return Error(min_mark, absl::StrCat("metric ", name,
                                            " takes 'max' (passes when value "
                                            "<= max), not 'min'"));
      }
      if (!max)
        return Error(map, absl::StrCat("check '", name, "' needs 'max'"));
      check.kind = BoundKind::kMax;
      check.bound = *max;
      if (warn && *warn > *max) {
        return Error(
            warn_mark,
            absl::StrCat("'warn' (", PyFloatRepr(*warn), ") must be <= 'max' (",
                         PyFloatRepr(*max), ") for metric ", name));
      }
    }
    check.warn = warn;
    if ((atol || rtol) && !MetricUsesTolerance(*metric)) {
      return Error(tol_mark, absl::StrCat("metric ", name,
                                          " takes no 'atol'/'rtol' (only "
                                          "allclose and mismatch_ratio do)"));
    }
    check.atol = atol;
    check.rtol = rtol;
    return check;
  }

  // A check (mapping) or a non-empty list of checks.
  absl::StatusOr<std::vector<Check>> ParseChecks(const YAML::Node& node,
                                                 std::string_view what) const {
    std::vector<Check> out;
    if (node.IsMap()) {
      REPROD_ASSIGN_OR_RETURN(Check c, ParseCheck(node, what, {}));
      out.push_back(c);
      return out;
    }
    if (!node.IsSequence()) {
      return Error(node, absl::StrCat(std::string(what),
                                      " must be a check or a list of checks, "
                                      "got ",
                                      NodeText(node)));
    }
    for (const YAML::Node& item : node) {
      REPROD_ASSIGN_OR_RETURN(Check c, ParseCheck(item, what, {}));
      out.push_back(c);
    }
    if (out.empty()) {
      return Error(node, absl::StrCat(std::string(what),
                                      " must hold at least one check"));
    }
    return out;
  }

  // Shared by checkpoint entries and rules: `checks: [...]` or inline check
  // fields, plus the options in `options` (handled by `on_option`).
  template <typename OnOption>
  absl::StatusOr<std::vector<Check>> ParseEntryChecks(
      const YAML::Node& map, std::string_view what,
      const std::set<std::string>& options, OnOption&& on_option) const {
    bool inline_fields = false;
    std::optional<YAML::Node> checks_node;
    std::set<std::string> skip = options;
    skip.insert("checks");
    REPROD_RETURN_IF_ERROR(ForEachField(
        map, what,
        [&](const std::string& key, const YAML::Node& key_node,
            const YAML::Node& value) -> absl::Status {
          if (key == "checks") {
            checks_node.emplace(value);
            return absl::OkStatus();
          }
          if (options.count(key)) return on_option(key, key_node, value);
          if (IsCheckField(key)) {
            inline_fields = true;
            return absl::OkStatus();
          }
          std::vector<std::string> allowed(skip.begin(), skip.end());
          allowed.insert(allowed.end(), std::begin(kCheckFields),
                         std::end(kCheckFields));
          return Error(
              key_node,
              absl::StrCat("unknown field '", key, "' in ", std::string(what),
                           " (expected ", absl::StrJoin(allowed, ", "), ")"));
        }));
    std::vector<Check> checks;
    if (checks_node) {
      if (inline_fields) {
        return Error(map, absl::StrCat(std::string(what),
                                       " has both 'checks' and inline check "
                                       "fields; use one"));
      }
      REPROD_ASSIGN_OR_RETURN(
          checks, ParseChecks(*checks_node,
                              absl::StrCat(std::string(what), " checks")));
    } else if (inline_fields) {
      REPROD_ASSIGN_OR_RETURN(Check c, ParseCheck(map, what, skip));
      checks.push_back(c);
    }
    return checks;
  }

  absl::StatusOr<CheckpointPolicy> ParseCheckpoint(
      const YAML::Node& node, const std::string& name) const {
    const std::string what = absl::StrCat("checkpoint '", name, "'");
    CheckpointPolicy cp;
    if (node.IsSequence()) {
      REPROD_ASSIGN_OR_RETURN(cp.checks, ParseChecks(node, what));
      return cp;
    }
    if (!node.IsMap()) {
      return Error(node, absl::StrCat(what,
                                      " must be a check, a list of checks or a "
                                      "mapping, got ",
                                      NodeText(node)));
    }
    REPROD_ASSIGN_OR_RETURN(
        cp.checks,
        ParseEntryChecks(
            node, what, {"min_steps", "equal_nan"},
            [&](const std::string& key, const YAML::Node&,
                const YAML::Node& value) -> absl::Status {
              if (key == "equal_nan") {
                REPROD_ASSIGN_OR_RETURN(cp.equal_nan, Bool(value, key));
                return absl::OkStatus();
              }
              int64_t steps = 0;
              if (!value.IsScalar() ||
                  !YAML::convert<int64_t>::decode(value, steps) || steps < 0) {
                return Error(value, absl::StrCat("'min_steps' must be an "
                                                 "integer >= 0, got ",
                                                 NodeText(value)));
              }
              cp.min_steps = steps;
              return absl::OkStatus();
            }));
    return cp;
  }

  absl::StatusOr<Rule> ParseRule(const YAML::Node& node, size_t index) const {
    const std::string what = absl::StrCat("rules[", index, "]");
    Rule rule;
    bool has_match = false;
    REPROD_ASSIGN_OR_RETURN(
        rule.checks,
        ParseEntryChecks(
            node, what, {"match", "equal_nan"},
            [&](const std::string& key, const YAML::Node&,
                const YAML::Node& value) -> absl::Status {
              if (key == "equal_nan") {
                REPROD_ASSIGN_OR_RETURN(rule.equal_nan, Bool(value, key));
                return absl::OkStatus();
              }
              REPROD_ASSIGN_OR_RETURN(rule.match, String(value, "match"));
              has_match = true;
              return absl::OkStatus();
            }));
    if (!has_match || rule.match.empty()) {
      return Error(node, absl::StrCat(what, " needs a non-empty 'match' glob"));
    }
    if (rule.checks.empty()) {
      return Error(node,
                   absl::StrCat(what, " ('", rule.match, "') has no checks"));
    }
    return rule;
  }

  absl::StatusOr<std::vector<Rule>> ParseRules(const YAML::Node& value) const {
    if (!value.IsSequence()) {
      return Error(value, absl::StrCat("'rules' must be a list, got ",
                                       NodeText(value)));
    }
    std::vector<Rule> rules;
    size_t i = 0;
    for (const YAML::Node& item : value) {
      REPROD_ASSIGN_OR_RETURN(Rule r, ParseRule(item, i++));
      rules.push_back(std::move(r));
    }
    return rules;
  }

  absl::StatusOr<Rename> ParseRename(const YAML::Node& item,
                                     size_t index) const {
    const std::string what = absl::StrCat("rename[", index, "]");
    Rename rn;
    bool has_from = false, has_to = false;
    std::optional<YAML::Node> regex_node, to_node;
    REPROD_RETURN_IF_ERROR(ForEachField(
        item, what,
        [&](const std::string& k, const YAML::Node& kn,
            const YAML::Node& v) -> absl::Status {
          if (k == "from") {
            REPROD_ASSIGN_OR_RETURN(rn.from, String(v, k));
            REPROD_RETURN_IF_ERROR(NameError(v, ValidateKeyFragment(rn.from)));
            has_from = true;
          } else if (k == "regex") {
            REPROD_ASSIGN_OR_RETURN(rn.regex, String(v, k));
            regex_node = v;
          } else if (k == "to") {
            REPROD_ASSIGN_OR_RETURN(rn.to, String(v, k));
            to_node = v;
            has_to = true;
          } else {
            return Error(kn, absl::StrCat("unknown field '", k, "' in ", what,
                                          " (expected from or regex, and to)"));
          }
          return absl::OkStatus();
        }));
    if (regex_node.has_value()) {
      if (has_from) {
        return Error(item, absl::StrCat(what, " has both 'from' and 'regex'; give one"));
      }
      if (!has_to) return Error(item, absl::StrCat(what, " needs a 'to'"));
      absl::StatusOr<Rename> compiled = MakeRegexRename(rn.regex, rn.to);
      if (!compiled.ok()) return Error(*regex_node, std::string(compiled.status().message()));
      return compiled;
    }
    if (!has_from || !has_to || rn.from.empty()) {
      return Error(item,
                   absl::StrCat(what, " needs a non-empty 'from' (or a 'regex') and a 'to'"));
    }
    REPROD_RETURN_IF_ERROR(NameError(*to_node, ValidateKeyFragment(rn.to)));
    return rn;
  }

  absl::StatusOr<std::vector<Rename>> ParseRenames(
      const YAML::Node& value) const {
    if (!value.IsSequence()) {
      return Error(value, absl::StrCat("'rename' must be a list of "
                                       "{from, to} or {regex, to}, got ",
                                       NodeText(value)));
    }
    std::vector<Rename> out;
    size_t i = 0;
    for (const YAML::Node& item : value) {
      REPROD_ASSIGN_OR_RETURN(Rename rn, ParseRename(item, i++));
      out.push_back(std::move(rn));
    }
    return out;
  }

  absl::Status ParseTranspose(const YAML::Node& value, Policy* policy) const {
    if (!value.IsScalar()) {
      REPROD_ASSIGN_OR_RETURN(policy->transpose_globs,
                              StringList(value, "transpose"));
      policy->transpose = TransposeMode::kGlobs;
      return absl::OkStatus();
    }
    const std::string mode = value.Scalar();
    if (mode == "auto") {
      policy->transpose = TransposeMode::kAuto;
    } else if (mode == "never") {
      policy->transpose = TransposeMode::kNever;
    } else {
      return Error(value, absl::StrCat("unknown transpose mode '", mode,
                                       "' (expected auto, never or "
                                       "a list of globs)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ShapeMode> ParseShapes(const YAML::Node& value) const {
    REPROD_ASSIGN_OR_RETURN(std::string mode, String(value, "shapes"));
    absl::StatusOr<ShapeMode> parsed = ParseShapeMode(mode);
    if (!parsed.ok()) return Error(value, std::string(parsed.status().message()));
    return *parsed;
  }

  absl::Status ParseCheckpoints(const YAML::Node& value,
                                Policy* policy) const {
    return ForEachField(
        value, "checkpoints",
        [&](const std::string& name, const YAML::Node& name_node,
            const YAML::Node& entry) -> absl::Status {
          REPROD_RETURN_IF_ERROR(NameError(name_node, ValidateCheckpointName(name)));
          REPROD_ASSIGN_OR_RETURN(CheckpointPolicy cp,
                                  ParseCheckpoint(entry, name));
          policy->checkpoints.emplace_back(name, std::move(cp));
          return absl::OkStatus();
        });
  }

  // One top-level field of the document.
  absl::Status ParseTopField(const std::string& key, const YAML::Node& key_node,
                             const YAML::Node& value, Policy* policy,
                             bool* has_defaults) const {
    if (key == "name") {
      REPROD_ASSIGN_OR_RETURN(policy->name, String(value, key));
      REPROD_RETURN_IF_ERROR(NameError(value, ValidatePolicyName(policy->name)));
    } else if (key == "description") {
      // Free text, ignored.
    } else if (key == "defaults") {
      REPROD_ASSIGN_OR_RETURN(policy->defaults, ParseChecks(value, "defaults"));
      *has_defaults = true;
    } else if (key == "equal_nan") {
      REPROD_ASSIGN_OR_RETURN(policy->equal_nan, Bool(value, key));
    } else if (key == "checkpoints") {
      return ParseCheckpoints(value, policy);
    } else if (key == "rules") {
      REPROD_ASSIGN_OR_RETURN(policy->rules, ParseRules(value));
    } else if (key == "rename") {
      REPROD_ASSIGN_OR_RETURN(policy->rename, ParseRenames(value));
    } else if (key == "transpose") {
      return ParseTranspose(value, policy);
    } else if (key == "shapes") {
      REPROD_ASSIGN_OR_RETURN(policy->shapes, ParseShapes(value));
    } else if (key == "as_bf16") {
      REPROD_ASSIGN_OR_RETURN(policy->as_bf16, StringList(value, key));
    } else if (key == "required") {
      REPROD_ASSIGN_OR_RETURN(policy->required, StringList(value, key));
      for (const std::string& c : policy->required) {
        REPROD_RETURN_IF_ERROR(NameError(value, ValidateCheckpointName(c)));
      }
    } else {
      return Error(key_node,
                   absl::StrCat("unknown field '", key,
                                "' in policy (expected name, description, "
                                "defaults, equal_nan, checkpoints, rules, "
                                "rename, transpose, shapes, as_bf16, "
                                "required)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Policy> ParseDocument(const YAML::Node& root) const {
    if (!root || root.IsNull()) {
      return Error(YAML::Mark::null_mark(), "policy document is empty");
    }
    Policy policy;
    policy.name = source_;
    bool has_defaults = false;
    REPROD_RETURN_IF_ERROR(ForEachField(
        root, "policy",
        [&](const std::string& key, const YAML::Node& key_node,
            const YAML::Node& value) -> absl::Status {
          return ParseTopField(key, key_node, value, &policy, &has_defaults);
        }));
    if (!has_defaults) {
      policy.defaults = {MaxCheck(Metric::kMeanAbs, kReprodLogThreshold)};
    }
    return policy;
  }

 private:
  std::string source_;
};

bool LooksLikeJson(std::string_view text) {
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    return c == '{' || c == '[';
  }
  return false;
}

}  // namespace

absl::StatusOr<Policy> ParsePolicy(std::string_view text,
                                   std::string_view source_name) {
  const std::string source(source_name);
  std::string doc(text);
  // JSON may indent with tabs, which YAML forbids; a raw tab cannot occur
  // inside a JSON string, so turning tabs into spaces keeps the document and
  // its line/column positions.
  if (LooksLikeJson(doc)) std::replace(doc.begin(), doc.end(), '\t', ' ');
  Parser parser(source);
  try {
    const YAML::Node root = YAML::Load(doc);
    return parser.ParseDocument(root);
  } catch (const YAML::Exception& e) {
    return parser.Error(e.mark, absl::StrCat("malformed YAML/JSON: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": cannot parse policy: ", e.what()));
  }
}

absl::StatusOr<Policy> LoadPolicyFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy path is a directory: ", path));
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("policy file not found: ", path));
    }
    if (err == EACCES) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot read policy file ", path, ": ", std::strerror(err)));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open policy file ", path, ": ",
                     err != 0 ? std::strerror(err) : "unknown error"));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    return absl::InternalError(
        absl::StrCat("error reading policy file ", path));
  }
  return ParsePolicy(buf.str(), path);
}

}  // namespace reprod::core

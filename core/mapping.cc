#include "core/mapping.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/element.h"
#include "common/visible.h"
#include "re2/re2.h"

namespace reprod::core {
namespace {

// Outputs "compute the same" when every fingerprint statistic agrees to this
// fraction of the outputs' scale: loose enough for two frameworks' float32
// kernels (1e-6 relative and less), tight enough to tell layers apart.
constexpr double kRelativeTolerance = 1e-3;

// Alignment weights: any pair beats none; then leaf-with-leaf; then names.
constexpr double kPairWeight = 1000;
constexpr double kSameKindWeight = 10;

bool Close(double a, double b, double scale) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (a == b) return true;  // infinities of one sign, exact zeros
  return std::fabs(a - b) <= kRelativeTolerance * scale;
}

// Same shapes, and the same values unless the paths are the same too (a
// module of one name is the same module even where the port diverged).
bool SameOutputs(const ModuleOutputs& a, const ModuleOutputs& b) {
  if (a.outputs.size() != b.outputs.size() || a.outputs.empty()) return false;
  for (size_t i = 0; i < a.outputs.size(); ++i) {
    if (a.outputs[i].shape != b.outputs[i].shape) return false;
  }
  if (a.module == b.module) return true;
  for (size_t i = 0; i < a.outputs.size(); ++i) {
    const OutputFingerprint& x = a.outputs[i];
    const OutputFingerprint& y = b.outputs[i];
    double scale = std::max(x.rms, y.rms);
    if (!(scale > 0)) scale = 1e-30;  // both zero (or NaN: Close decides)
    if (!Close(x.mean, y.mean, scale) || !Close(x.mean_abs, y.mean_abs, scale) ||
        !Close(x.rms, y.rms, scale)) {
      return false;
    }
  }
  return true;
}

// "m[2]" -> "m"; other paths unchanged.
std::string_view BasePath(std::string_view module) {
  if (!module.empty() && module.back() == ']') {
    const size_t open = module.rfind('[');
    if (open != std::string_view::npos && open > 0) return module.substr(0, open);
  }
  return module;
}

// True for each module that has no other module under it ("a.b" is under
// "a"; "[root]" holds everything).
std::vector<bool> Leaves(const std::vector<ModuleOutputs>& modules) {
  std::set<std::string, std::less<>> parents;
  for (const ModuleOutputs& m : modules) {
    const std::string_view base = BasePath(m.module);
    for (size_t dot = base.find('.'); dot != std::string_view::npos;
         dot = base.find('.', dot + 1)) {
      parents.insert(std::string(base.substr(0, dot)));
    }
  }
  std::vector<bool> leaf;
  leaf.reserve(modules.size());
  for (const ModuleOutputs& m : modules) {
    const std::string_view base = BasePath(m.module);
    leaf.push_back(base == "[root]" ? modules.size() == 1 : !parents.contains(base));
  }
  return leaf;
}

std::vector<std::string> Parts(std::string_view module) {
  return absl::StrSplit(std::string(BasePath(module)), '.');
}

// Shared "."-parts over all distinct parts (Jaccard), in [0, 1].
double NameSimilarity(std::string_view a, std::string_view b) {
  std::vector<std::string> pa = Parts(a), pb = Parts(b);
  std::set<std::string> sa(pa.begin(), pa.end()), sb(pb.begin(), pb.end());
  size_t common = 0;
  for (const std::string& p : sa) common += sb.contains(p);
  const size_t all = sa.size() + sb.size() - common;
  return all == 0 ? 0 : static_cast<double>(common) / static_cast<double>(all);
}

bool IsNumber(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The end of a module path inside a capture key: "/" or a call counter "[".
constexpr char kModuleEnd[] = "(/|\\[)";

// "^<cand with shared numbers as groups>(/|\[)" -> "<ref with \k>\N".
// InvalidArgument when the pattern gets longer than a rename may be.
absl::StatusOr<Rename> GeneralRename(std::string_view cand, std::string_view ref) {
  const std::vector<std::string> c = Parts(cand), r = Parts(ref);
  std::set<std::string> ref_numbers;
  for (const std::string& p : r) {
    if (IsNumber(p)) ref_numbers.insert(p);
  }
  std::map<std::string, int> group;  // number -> its group in the pattern
  std::vector<std::string> pattern;
  for (const std::string& p : c) {
    if (IsNumber(p) && ref_numbers.contains(p) && !group.contains(p)) {
      const int g = static_cast<int>(group.size()) + 1;
      group[p] = g;
      pattern.push_back("(\\d+)");
    } else {
      pattern.push_back(RE2::QuoteMeta(p));
    }
  }
  std::vector<std::string> to;
  for (const std::string& p : r) {
    auto it = group.find(p);
    to.push_back(it != group.end() ? absl::StrCat("\\", it->second) : p);
  }
  const int end_group = static_cast<int>(group.size()) + 1;
  return MakeRegexRename(absl::StrCat("^", absl::StrJoin(pattern, "\\."), kModuleEnd),
                         absl::StrCat(absl::StrJoin(to, "."), "\\", end_group));
}

absl::StatusOr<Rename> LiteralRename(std::string_view cand, std::string_view ref) {
  return MakeRegexRename(absl::StrCat("^", RE2::QuoteMeta(std::string(cand)), kModuleEnd),
                         absl::StrCat(std::string(ref), "\\1"));
}

// True when `renames` map every pair's candidate onto its reference, leave
// every other candidate module off the reference's names (unless it has the
// name there already), and keep distinct candidates distinct.
bool Valid(const std::vector<Rename>& renames, const MappingSuggestion& s,
           const std::vector<ModuleOutputs>& ref, const std::vector<ModuleOutputs>& cand) {
  Policy p;
  p.rename = renames;
  std::map<std::string, std::string> partner(s.pairs.begin(), s.pairs.end());
  std::set<std::string> ref_names;
  for (const ModuleOutputs& m : ref) ref_names.insert(m.module);
  std::set<std::string> seen;
  for (const ModuleOutputs& m : cand) {
    const std::string key = ApplyRename(p, absl::StrCat(m.module, "/forward/output/0"));
    const std::string module = key.substr(0, key.find('/'));
    if (!seen.insert(module).second) return false;
    auto it = partner.find(m.module);
    if (it != partner.end()) {
      if (module != it->second) return false;
    } else if (module != m.module && ref_names.contains(module)) {
      return false;
    }
  }
  return true;
}

// A YAML single-quoted scalar.
std::string Quoted(std::string_view s) {
  std::string out = "'";
  for (const char c : s) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

}  // namespace

OutputFingerprint Fingerprint(const TensorView& view) {
  OutputFingerprint f;
  f.shape = view.shape;
  const int64_t n = view.num_elements();
  if (n <= 0) return f;
  double sum = 0, abs_sum = 0, sq_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = LoadElementAsDouble(view.dtype, view.data, i);
    sum += v;
    abs_sum += std::fabs(v);
    sq_sum += v * v;
  }
  const auto count = static_cast<double>(n);
  f.mean = sum / count;
  f.mean_abs = abs_sum / count;
  f.rms = std::sqrt(sq_sum / count);
  return f;
}

MappingSuggestion SuggestMapping(const std::vector<ModuleOutputs>& ref,
                                 const std::vector<ModuleOutputs>& cand) {
  const size_t n = ref.size(), m = cand.size();
  const std::vector<bool> ref_leaf = Leaves(ref), cand_leaf = Leaves(cand);
  auto weight = [&](size_t i, size_t j) {
    return kPairWeight + (ref_leaf[i] == cand_leaf[j] ? kSameKindWeight : 0) +
           NameSimilarity(ref[i].module, cand[j].module);
  };
  // score[(i, j)]: the best alignment of ref[0, i) with cand[0, j).
  std::vector<double> score((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> double& { return score[i * (m + 1) + j]; };
  std::vector<bool> same(n * m);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < m; ++j) same[i * m + j] = SameOutputs(ref[i], cand[j]);
  }
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      double best = std::max(at(i - 1, j), at(i, j - 1));
      if (same[(i - 1) * m + (j - 1)]) best = std::max(best, at(i - 1, j - 1) + weight(i - 1, j - 1));
      at(i, j) = best;
    }
  }
  MappingSuggestion s;
  std::vector<bool> ref_used(n), cand_used(m);
  for (size_t i = n, j = m; i > 0 && j > 0;) {
    if (same[(i - 1) * m + (j - 1)] && at(i, j) == at(i - 1, j - 1) + weight(i - 1, j - 1)) {
      s.pairs.emplace_back(cand[j - 1].module, ref[i - 1].module);
      ref_used[i - 1] = cand_used[j - 1] = true;
      --i;
      --j;
    } else if (at(i, j) == at(i - 1, j)) {
      --i;
    } else {
      --j;
    }
  }
  std::reverse(s.pairs.begin(), s.pairs.end());
  for (size_t i = 0; i < n; ++i) {
    if (!ref_used[i]) s.unmatched_ref.push_back(ref[i].module);
  }
  for (size_t j = 0; j < m; ++j) {
    if (!cand_used[j]) s.unmatched_cand.push_back(cand[j].module);
  }

  // Entries for the pairs whose paths differ: generalised, else literal.
  // Call counters ("m[1]") follow their module's entry.
  std::vector<Rename> general, literal;
  std::set<std::pair<std::string, std::string>> have;
  for (const auto& [c, r] : s.pairs) {
    if (c == r || BasePath(c) != c || BasePath(r) != r) continue;
    // A path too long to escape into a pattern gets no entry; Valid then
    // finds its pair unmapped.
    absl::StatusOr<Rename> g = GeneralRename(c, r);
    if (g.ok() && have.emplace(g->regex, g->to).second) general.push_back(*std::move(g));
    absl::StatusOr<Rename> l = LiteralRename(c, r);
    if (l.ok()) literal.push_back(*std::move(l));
  }
  if (Valid(general, s, ref, cand)) {
    s.renames = std::move(general);
  } else {
    s.consistent = Valid(literal, s, ref, cand);
    s.renames = std::move(literal);
  }
  return s;
}

std::string MappingYaml(const MappingSuggestion& s, std::string_view header) {
  std::string out;
  const std::vector<std::string> lines = absl::StrSplit(std::string(header), '\n');
  for (const std::string& line : lines) {
    absl::StrAppend(&out, "# ", VisibleText(line), "\n");
  }
  absl::StrAppend(&out, "# ", s.pairs.size(), " module pairs by output shapes and values; ",
                  s.renames.size(), " rename entr", s.renames.size() == 1 ? "y" : "ies",
                  " (candidate module paths -> reference ones).\n");
  if (!s.consistent) {
    absl::StrAppend(&out,
                    "# WARNING: these entries do not map every pair (a candidate path is "
                    "another pair's reference path, or too long for a pattern); edit them "
                    "before use.\n");
  }
  if (s.renames.empty()) {
    absl::StrAppend(&out, "rename: []\n");
  } else {
    absl::StrAppend(&out, "rename:\n");
    for (const Rename& rn : s.renames) {
      absl::StrAppend(&out, "  - {regex: ", Quoted(rn.regex), ", to: ", Quoted(rn.to), "}\n");
    }
  }
  auto list = [&out](std::string_view title, const std::vector<std::string>& modules) {
    if (modules.empty()) return;
    absl::StrAppend(&out, "# ", std::string(title), " (", modules.size(), "):\n");
    for (const std::string& m : modules) absl::StrAppend(&out, "#   ", VisibleText(m), "\n");
  };
  list("unmatched candidate modules: no reference module computes the same values",
       s.unmatched_cand);
  list("unmatched reference modules", s.unmatched_ref);
  return out;
}

}  // namespace reprod::core

#include "core/internal/localize.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"

namespace reprod::core::internal {
namespace {

bool IsMissing(TensorStatus s) {
  return s == TensorStatus::kMissingInRef || s == TensorStatus::kMissingInCand;
}

// What is known of one module (at one checkpoint, step and direction).
struct ModuleState {
  size_t first_seen = 0;  // position of its first tensor in the report
  bool all_pass = true;   // every tensor present on both sides passes
  bool unmatched = false;  // a tensor is on one side only
  int inputs = 0;          // captured forward inputs
  bool inputs_fail = false;
};

// (checkpoint, step, direction, module)
using ModuleId = std::tuple<std::string, std::optional<int64_t>, std::string, std::string>;

}  // namespace

std::optional<FirstDivergence> FindFirstDivergence(const Report& report) {
  std::map<ModuleId, ModuleState> modules;
  std::optional<size_t> first;  // the first failing capture tensor
  for (size_t i = 0; i < report.tensors.size(); ++i) {
    const TensorResult& t = report.tensors[i];
    std::optional<CaptureKey> k = ParseCaptureKey(t.key);
    if (!k) continue;
    ModuleId id{t.checkpoint, t.step, std::string(k->direction), std::string(k->module)};
    auto [it, inserted] = modules.try_emplace(std::move(id));
    ModuleState& m = it->second;
    if (inserted) m.first_seen = i;
    if (IsMissing(t.status)) {
      m.unmatched = true;
      continue;
    }
    const bool passing = IsPassing(t.status);
    if (!passing) {
      m.all_pass = false;
      if (!first) first = i;
    }
    if (k->role == "input") {
      ++m.inputs;
      if (!passing) m.inputs_fail = true;
    }
  }
  if (!first) return std::nullopt;

  const TensorResult& t = report.tensors[*first];
  const CaptureKey k = *ParseCaptureKey(t.key);
  FirstDivergence d;
  d.checkpoint = t.checkpoint;
  d.module = std::string(k.module);
  d.direction = std::string(k.direction);
  d.step = t.step;
  d.key = t.key;
  d.reason = t.reason;
  const ModuleState& self =
      modules.at(ModuleId{t.checkpoint, t.step, d.direction, d.module});
  if (self.inputs > 0) {
    d.inputs = self.inputs_fail ? DivergenceInputs::kFail : DivergenceInputs::kPass;
  }
  // The same checkpoint, step and direction, in order of first appearance.
  std::vector<std::pair<size_t, std::string>> before, unmatched;
  for (const auto& [id, m] : modules) {
    const auto& [checkpoint, step, direction, module] = id;
    if (checkpoint != d.checkpoint || step != d.step || direction != d.direction) continue;
    if (m.unmatched) {
      unmatched.emplace_back(m.first_seen, module);
    } else if (m.all_pass && m.first_seen < *first) {
      before.emplace_back(m.first_seen, module);
    }
  }
  std::sort(before.begin(), before.end());
  std::sort(unmatched.begin(), unmatched.end());
  for (auto& [pos, name] : before) d.passed_before.push_back(std::move(name));
  for (auto& [pos, name] : unmatched) d.unmatched.push_back(std::move(name));
  return d;
}

std::vector<ModuleRow> DivergenceModules(const Report& report, const FirstDivergence& d) {
  std::vector<ModuleRow> rows;
  std::map<std::string, size_t, std::less<>> index;  // module -> rows index
  for (const TensorResult& t : report.tensors) {
    if (t.checkpoint != d.checkpoint || t.step != d.step) continue;
    std::optional<CaptureKey> k = ParseCaptureKey(t.key);
    if (!k || k->direction != d.direction) continue;
    auto [it, inserted] = index.try_emplace(std::string(k->module), rows.size());
    if (inserted) {
      rows.push_back(ModuleRow{std::string(k->module), ModuleRow::State::kPass,
                               k->module == d.module});
    }
    ModuleRow& row = rows[it->second];
    if (IsMissing(t.status)) {
      row.state = ModuleRow::State::kUnmatched;
    } else if (!IsPassing(t.status) && row.state == ModuleRow::State::kPass) {
      row.state = ModuleRow::State::kFail;
    }
  }
  return rows;
}

std::string DescribeDivergence(const FirstDivergence& d) {
  std::string out = absl::StrCat("module ", d.module, " (", d.direction,
                                 d.step ? absl::StrCat(", step ", *d.step) : "",
                                 ") diverges first: ", d.key, ": ", d.reason);
  switch (d.inputs) {
    case DivergenceInputs::kPass:
      absl::StrAppend(&out, "; its inputs pass, so the module itself computes differently");
      break;
    case DivergenceInputs::kFail:
      absl::StrAppend(&out,
                      "; its inputs already differ: the divergence lies before it, in code "
                      "no captured module covers");
      break;
    case DivergenceInputs::kNotCaptured:
      break;
  }
  absl::StrAppend(&out, "; ", d.passed_before.size(), " module",
                  d.passed_before.size() == 1 ? "" : "s", " before it pass");
  if (!d.unmatched.empty()) {
    absl::StrAppend(&out, ", ", d.unmatched.size(), " unmatched (on one side only)");
  }
  return out;
}

}  // namespace reprod::core::internal

#include "core/internal/localize.h"

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace reprod::core::internal {
namespace {

bool IsMissing(TensorStatus s) {
  return s == TensorStatus::kMissingInRef || s == TensorStatus::kMissingInCand;
}

// Every module of (checkpoint, step, direction) in order of first
// appearance; `divergent` names none yet.
std::vector<ModuleRow> GroupModules(const Report& report, std::string_view checkpoint,
                                    const std::optional<int64_t>& step,
                                    std::string_view direction,
                                    const std::optional<uint32_t>& rank) {
  std::vector<ModuleRow> rows;
  std::map<std::string, size_t, std::less<>> index;  // module -> rows index
  for (size_t i = 0; i < report.tensors.size(); ++i) {
    const TensorResult& t = report.tensors[i];
    if (t.checkpoint != checkpoint || t.step != step || t.rank != rank) continue;
    std::optional<CaptureKey> k = ParseCaptureKey(t.key);
    if (!k || k->direction != direction) continue;
    auto [it, inserted] = index.try_emplace(std::string(k->module), rows.size());
    if (inserted) {
      ModuleRow row;
      row.module = std::string(k->module);
      row.first_seen = i;
      rows.push_back(std::move(row));
    }
    ModuleRow& row = rows[it->second];
    if (IsMissing(t.status)) {
      row.state = ModuleRow::State::kUnmatched;
      continue;
    }
    const bool passing = IsPassing(t.status);
    if (!passing && row.state == ModuleRow::State::kPass) row.state = ModuleRow::State::kFail;
    if (k->role == "input") {
      ++row.inputs;
      if (!passing) row.inputs_fail = true;
    }
  }
  return rows;
}

}  // namespace

std::optional<FirstDivergence> FindFirstDivergence(const Report& report,
                                                   std::optional<uint32_t> rank) {
  // The first capture tensor present on both sides that fails.
  std::optional<size_t> first;
  std::optional<CaptureKey> k;
  for (size_t i = 0; i < report.tensors.size() && !first; ++i) {
    const TensorResult& t = report.tensors[i];
    if (t.rank != rank || IsPassing(t.status) || IsMissing(t.status)) continue;
    k = ParseCaptureKey(t.key);
    if (k) first = i;
  }
  if (!first) return std::nullopt;

  const TensorResult& t = report.tensors[*first];
  FirstDivergence d;
  d.rank = rank;
  d.checkpoint = t.checkpoint;
  d.module = std::string(k->module);
  d.direction = std::string(k->direction);
  d.step = t.step;
  d.key = t.key;
  d.reason = t.reason;
  for (ModuleRow& row : GroupModules(report, d.checkpoint, d.step, d.direction, d.rank)) {
    if (row.module == d.module && row.inputs > 0) {
      d.inputs = row.inputs_fail ? DivergenceInputs::kFail : DivergenceInputs::kPass;
    }
    if (row.state == ModuleRow::State::kUnmatched) {
      d.unmatched.push_back(std::move(row.module));
    } else if (row.state == ModuleRow::State::kPass && row.first_seen < *first) {
      d.passed_before.push_back(std::move(row.module));
    }
  }
  return d;
}

std::vector<ModuleRow> DivergenceModules(const Report& report, const FirstDivergence& d) {
  std::vector<ModuleRow> rows =
      GroupModules(report, d.checkpoint, d.step, d.direction, d.rank);
  for (ModuleRow& row : rows) row.divergent = row.module == d.module;
  return rows;
}

std::string DescribeDivergence(const FirstDivergence& d) {
  std::string out = absl::StrCat("module ", d.module, " (", d.direction,
                                 d.step ? absl::StrCat(", step ", *d.step) : "",
                                 d.rank ? absl::StrCat(", rank ", *d.rank) : "",
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

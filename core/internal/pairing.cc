#include "core/internal/pairing.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace reprod::core::internal {
namespace {

using Address = std::tuple<std::string, std::optional<int64_t>, uint32_t>;
// (key, rank) -> tensors: steps are matched within one rank.
using KeyIndex = std::map<std::pair<std::string, uint32_t>, std::vector<size_t>>;

std::string AddressText(std::string_view checkpoint, const std::string& key,
                        const std::optional<int64_t>& step, uint32_t rank) {
  std::string s = absl::StrCat(std::string(checkpoint), "/", key);
  if (step) absl::StrAppend(&s, "@", *step);
  if (rank != 0) absl::StrAppend(&s, " rank ", rank);
  return s;
}

std::string StepText(const std::optional<int64_t>& step) {
  return step ? absl::StrCat("step ", *step) : std::string("no step");
}

// " (ref has it at steps 0, 1, 2)" for a tensor whose key the other side
// holds only at other steps; "" when the other side lacks the key.
std::string OtherSideSteps(std::string_view side, const KeyIndex& by_key,
                           const CheckpointIndex* other,
                           const std::string& key, uint32_t rank) {
  constexpr size_t kMaxListed = 8;
  const auto it = by_key.find({key, rank});
  if (other == nullptr || it == by_key.end()) return "";
  std::vector<std::string> steps;
  bool unstepped = false;
  for (size_t i : it->second) {
    const std::optional<int64_t>& s = other->tensors[i].step;
    if (!s) {
      unstepped = true;
    } else if (steps.size() < kMaxListed) {
      steps.push_back(absl::StrCat(*s));
    }
  }
  const size_t stepped = it->second.size() - (unstepped ? 1 : 0);
  std::string out = absl::StrCat(" (", std::string(side), " has it");
  if (unstepped) absl::StrAppend(&out, " without a step");
  if (stepped > 0) {
    absl::StrAppend(&out, unstepped ? " and" : "", " at step",
                    stepped > 1 ? "s " : " ", absl::StrJoin(steps, ", "),
                    stepped > steps.size() ? ", ..." : "");
  }
  return out + ")";
}

bool IsReverse2D(const Shape& a, const Shape& b) {
  return a.size() == 2 && b.size() == 2 && a[0] == b[1] && a[1] == b[0];
}

Shape WithoutSize1(const Shape& s) {
  Shape out;
  for (int64_t d : s) {
    if (d != 1) out.push_back(d);
  }
  return out;
}

bool TransposeListed(const Policy& policy, std::string_view path) {
  return std::any_of(
      policy.transpose_globs.begin(), policy.transpose_globs.end(),
      [&](const std::string& g) { return GlobMatch(g, path); });
}

}  // namespace

absl::StatusOr<std::vector<Match>> MatchCheckpoint(
    const CheckpointIndex* ref, const CheckpointIndex* cand,
    const Policy& policy, std::string_view ref_run, std::string_view cand_run,
    std::string_view checkpoint) {
  std::map<Address, size_t> ref_index;
  KeyIndex ref_by_key, cand_by_key;
  if (ref != nullptr) {
    for (size_t i = 0; i < ref->tensors.size(); ++i) {
      const TensorInfo& e = ref->tensors[i];
      if (!ref_index.emplace(Address{e.key, e.step, e.rank}, i).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ref run '", std::string(ref_run), "' holds ",
            AddressText(checkpoint, e.key, e.step, e.rank), " twice"));
      }
      ref_by_key[{e.key, e.rank}].push_back(i);
    }
  }
  std::vector<std::string> cand_keys;
  if (cand != nullptr) {
    std::set<Address> seen;
    for (size_t i = 0; i < cand->tensors.size(); ++i) {
      const TensorInfo& e = cand->tensors[i];
      std::string key = ApplyRename(policy, e.key);
      if (!seen.insert(Address{key, e.step, e.rank}).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cand run '", std::string(cand_run), "' holds ",
            AddressText(checkpoint, key, e.step, e.rank), " twice",
            key != e.key ? absl::StrCat(" (key '", e.key, "' after rename)")
                         : std::string()));
      }
      cand_by_key[{key, e.rank}].push_back(i);
      cand_keys.push_back(std::move(key));
    }
  }

  std::vector<Match> out;
  std::vector<bool> ref_matched(ref != nullptr ? ref->tensors.size() : 0);
  for (size_t ci = 0; ci < cand_keys.size(); ++ci) {
    const TensorInfo& ce = cand->tensors[ci];
    Match m;
    m.cand = ci;
    m.key = cand_keys[ci];
    m.step = ce.step;
    m.rank = ce.rank;
    if (auto found = ref_index.find(Address{m.key, m.step, m.rank});
        found != ref_index.end()) {
      m.ref = found->second;
    } else if (auto r = ref_by_key.find({m.key, m.rank});
               r != ref_by_key.end() && r->second.size() == 1 &&
               cand_by_key[{m.key, m.rank}].size() == 1 &&
               ref->tensors[r->second[0]].step.has_value() !=
                   ce.step.has_value()) {
      // One tensor per side under this key, only one of them stepped.
      m.ref = r->second[0];
      const std::optional<int64_t>& ref_step = ref->tensors[*m.ref].step;
      if (!m.step) m.step = ref_step;
      m.note = absl::StrCat("paired by key: ref has ", StepText(ref_step),
                            ", cand has ", StepText(ce.step));
    } else {
      m.note = OtherSideSteps("ref", ref_by_key, ref, m.key, m.rank);
    }
    if (m.ref) ref_matched[*m.ref] = true;
    out.push_back(std::move(m));
  }
  for (size_t i = 0; i < ref_matched.size(); ++i) {
    if (ref_matched[i]) continue;
    const TensorInfo& re = ref->tensors[i];
    Match m;
    m.ref = i;
    m.key = re.key;
    m.step = re.step;
    m.rank = re.rank;
    m.note = OtherSideSteps("cand", cand_by_key, cand, re.key, re.rank);
    out.push_back(std::move(m));
  }
  return out;
}

ShapeDecision DecideShape(const Shape& ref, const Shape& cand,
                          const Policy& policy, std::string_view path) {
  if (ref == cand && policy.transpose != TransposeMode::kGlobs) return {};
  bool transpose = false;
  switch (policy.transpose) {
    case TransposeMode::kAuto:
      transpose = IsReverse2D(ref, cand) && ref[0] != ref[1];
      break;
    case TransposeMode::kNever:
      break;
    case TransposeMode::kGlobs:
      // Equal shapes transpose only when square and listed.
      transpose = IsReverse2D(ref, cand) &&
                  (ref != cand || ref[0] == ref[1]) &&
                  TransposeListed(policy, path);
      break;
  }
  if (transpose) {
    return {PairLayout::kTransposed,
            absl::StrCat("compared cand.T: cand ", ShapeToString(cand),
                         " transposed to ref ", ShapeToString(ref))};
  }
  if (ref == cand) return {};
  const bool size1_only = WithoutSize1(ref) == WithoutSize1(cand);
  if (size1_only && policy.shapes == ShapeMode::kSize1) {
    return {PairLayout::kFlat,
            absl::StrCat("shapes ", ShapeToString(ref), " and ",
                         ShapeToString(cand),
                         " differ only in size-1 dimensions")};
  }
  std::string reason = absl::StrCat("shape mismatch: ref ", ShapeToString(ref),
                                    " vs cand ", ShapeToString(cand));
  if (IsReverse2D(ref, cand)) {
    absl::StrAppend(&reason, policy.transpose == TransposeMode::kNever
                                 ? " (policy has transpose: never)"
                                 : " (key not listed under 'transpose')");
  } else if (size1_only) {
    absl::StrAppend(&reason, " (policy has shapes: strict)");
  }
  return {PairLayout::kMismatch, std::move(reason)};
}

}  // namespace reprod::core::internal

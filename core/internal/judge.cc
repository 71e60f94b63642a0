#include "core/internal/judge.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/py_float.h"

namespace reprod::core::internal {
namespace {

std::vector<int64_t> UnravelIndex(uint64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size(), 0);
  for (size_t i = shape.size(); i-- > 0;) {
    const auto dim = static_cast<uint64_t>(shape[i]);
    if (dim == 0) return {};
    idx[i] = static_cast<int64_t>(flat % dim);
    flat /= dim;
  }
  return idx;
}

double MetricValue(Metric m, const kernels::DiffStats& s) {
  switch (m) {
    case Metric::kMeanAbs:
      return s.mean_abs();
    case Metric::kMaxAbs:
      return s.max_abs_value();
    case Metric::kMinAbs:
      return s.min_abs_value();
    case Metric::kMeanRel:
      return s.mean_rel();
    case Metric::kMaxRel:
      return s.max_rel_value();
    case Metric::kRmse:
      return s.rmse();
    case Metric::kCosine:
      return s.cosine();
    case Metric::kMismatchRatio:
      return s.mismatch_ratio();
    case Metric::kAllclose:
      return static_cast<double>(s.mismatches);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

TensorStatus Evaluate(const Check& c, double value) {
  // Comparisons with NaN are false: a NaN value never passes.
  const bool pass =
      c.kind == BoundKind::kMax ? value <= c.bound : value >= c.bound;
  if (!pass) return TensorStatus::kFail;
  if (c.warn) {
    const bool in_band =
        c.kind == BoundKind::kMax ? value > *c.warn : value < *c.warn;
    if (in_band) return TensorStatus::kWarn;
  }
  return TensorStatus::kPass;
}

}  // namespace

double Severity(const CheckResult& r) {
  const double v = r.value, b = r.check.bound;
  if (std::isnan(v)) return std::numeric_limits<double>::infinity();
  if (r.check.kind == BoundKind::kMax) {
    if (b > 0) return v / b;
    return v > b ? std::numeric_limits<double>::infinity() : 0.0;
  }
  if (b < 1) return (1.0 - v) / (1.0 - b);
  return v < b ? std::numeric_limits<double>::infinity() : 0.0;
}

namespace {

std::string FailureText(const CheckResult& cr, const kernels::DiffStats& s) {
  const Check& c = cr.check;
  if (c.metric == Metric::kAllclose) {
    return absl::StrCat("allclose: ", s.mismatches, " of ", s.count,
                        " elements mismatch (atol ",
                        PyFloatRepr(cr.tolerance->atol), ", rtol ",
                        PyFloatRepr(cr.tolerance->rtol), ")");
  }
  const std::string metric(MetricName(c.metric));
  if (std::isnan(cr.value)) {
    return absl::StrCat(metric, " = nan (NaN never passes; ",
                        c.kind == BoundKind::kMax ? "max " : "min ",
                        PyFloatRepr(c.bound), ")");
  }
  return absl::StrCat(metric, " = ", PyFloatRepr(cr.value),
                      c.kind == BoundKind::kMax ? " > max " : " < min ",
                      PyFloatRepr(c.bound));
}

std::string WarningText(const CheckResult& cr) {
  const Check& c = cr.check;
  return absl::StrCat(std::string(MetricName(c.metric)), " = ", PyFloatRepr(cr.value),
                      " is past warn ", PyFloatRepr(*c.warn), " (",
                      c.kind == BoundKind::kMax ? "max " : "min ",
                      PyFloatRepr(c.bound), ")");
}

// Adds one tensor to its checkpoint's and the report's counts.
void Count(const TensorResult& t, CheckpointResult& c, ReportSummary& sum) {
  ++c.tensors;
  ++sum.tensors;
  if (t.stats) ++sum.compared;
  switch (t.status) {
    case TensorStatus::kPass:
      ++c.passed_tensors;
      ++sum.passed;
      break;
    case TensorStatus::kWarn:
      ++c.warned_tensors;
      ++sum.warned;
      break;
    case TensorStatus::kFail:
    case TensorStatus::kShapeMismatch:
      ++c.failed_tensors;
      ++sum.failed;
      break;
    case TensorStatus::kMissingInRef:
      ++c.failed_tensors;
      ++sum.missing_in_ref;
      break;
    case TensorStatus::kMissingInCand:
      ++c.failed_tensors;
      ++sum.missing_in_cand;
      break;
  }
}

void ApplyRequired(const Policy& policy, const CompareOptions& options,
                   Report& report) {
  for (const std::string& name : policy.required) {
    if (!CheckpointSelected(options, name)) continue;
    const auto it = std::find_if(
        report.checkpoints.begin(), report.checkpoints.end(),
        [&](const CheckpointResult& c) { return c.name == name; });
    if (it == report.checkpoints.end()) {
      CheckpointResult c;
      c.name = name;
      c.passed = false;
      c.reasons.push_back(absl::StrCat("required checkpoint '", name,
                                       "' is absent from both runs"));
      if (const CheckpointPolicy* cpp = policy.FindCheckpoint(name)) {
        c.min_steps = cpp->min_steps;
      }
      report.checkpoints.push_back(std::move(c));
      continue;
    }
    CheckpointResult& c = *it;
    if (!c.present_in_ref && !c.present_in_cand) continue;  // listed twice
    if (!c.present_in_ref || !c.present_in_cand) {
      c.passed = false;
      c.reasons.push_back(absl::StrCat("required checkpoint '", name,
                                       "' is absent from ",
                                       c.present_in_ref ? "cand" : "ref"));
    }
  }
}

// Why nothing was compared, for Report::reasons.
std::string NothingComparedReason(const ReportSummary& s) {
  if (s.tensors == 0) {
    return "nothing to compare: neither side holds a tensor";
  }
  return absl::StrCat(
      "nothing compared: no tensor pairs with a comparable tensor on the "
      "other side (",
      s.missing_in_ref, " missing in ref, ", s.missing_in_cand,
      " missing in cand, ", s.failed, " shape mismatches)");
}

}  // namespace

bool CheckpointSelected(const CompareOptions& options, std::string_view name) {
  return options.checkpoints.empty() ||
         std::find(options.checkpoints.begin(), options.checkpoints.end(),
                   name) != options.checkpoints.end();
}

void JudgePair(const PolicyResolution& resolution,
               const ToleranceStats& tolerances,
               absl::Span<const kernels::DiffStats> stats, TensorResult& t) {
  const kernels::DiffStats& s = stats[tolerances[0].second];
  t.stats = s;
  t.stats_tolerance = tolerances[0].first;
  if (s.count > 0) t.max_abs_index = UnravelIndex(s.max_index, *t.shape_ref);
  TensorStatus status = TensorStatus::kPass;
  std::vector<std::string> failing, warning;
  for (const Check& c : *resolution.checks) {
    CheckResult cr;
    cr.check = c;
    const kernels::DiffStats* cs = &s;
    if (MetricUsesTolerance(c.metric)) {
      const Tolerance tol = c.ToleranceFor(*t.dtype_ref, *t.dtype_cand);
      cr.tolerance = tol;
      for (const auto& [have, idx] : tolerances) {
        if (have == tol) cs = &stats[idx];
      }
    }
    cr.value = MetricValue(c.metric, *cs);
    cr.status = Evaluate(c, cr.value);
    if (cr.status == TensorStatus::kFail) {
      status = TensorStatus::kFail;
      failing.push_back(FailureText(cr, *cs));
    } else if (cr.status == TensorStatus::kWarn) {
      if (status == TensorStatus::kPass) status = TensorStatus::kWarn;
      warning.push_back(WarningText(cr));
    }
    t.checks.push_back(cr);
  }
  t.status = status;
  if (status == TensorStatus::kPass) return;
  t.reason =
      absl::StrJoin(status == TensorStatus::kFail ? failing : warning, "; ");
  if (s.count > 0) {
    absl::StrAppend(&t.reason, "; largest error at [",
                    absl::StrJoin(t.max_abs_index, ", "), "]: ref ",
                    PyFloatRepr(s.ref_at_max), ", cand ",
                    PyFloatRepr(s.cand_at_max));
  }
}

void Summarise(const Policy& policy, const CompareOptions& options,
               Report& report) {
  std::map<std::string, size_t> by_name;  // index into report.checkpoints
  for (size_t i = 0; i < report.checkpoints.size(); ++i) {
    by_name[report.checkpoints[i].name] = i;
  }
  std::map<std::string, double> worst_severity;
  for (const TensorResult& t : report.tensors) {
    CheckpointResult& c = report.checkpoints[by_name.at(t.checkpoint)];
    Count(t, c, report.summary);
    if (!IsPassing(t.status)) {
      c.passed = false;
      if (!report.first_failure) {
        report.first_failure = TensorAddress{t.checkpoint, t.key, t.step, t.rank};
      }
    }
    for (const CheckResult& cr : t.checks) {
      const double sev = Severity(cr);
      auto [it, inserted] = worst_severity.emplace(t.checkpoint, sev);
      if (inserted || sev > it->second) {
        it->second = sev;
        c.worst = WorstCheck{t.key,    t.step,         cr.check.metric,
                             cr.value, cr.check.bound, cr.check.kind};
      }
    }
  }
  const bool judge_emptiness = !options.pair_filter;
  for (CheckpointResult& c : report.checkpoints) {
    if (c.min_steps > 0 && c.steps < c.min_steps) {
      c.passed = false;
      c.reasons.push_back(absl::StrCat("checkpoint '", c.name,
                                       "' needs at least ", c.min_steps,
                                       " steps in cand, found ", c.steps));
    }
    if (judge_emptiness && c.tensors == 0) {
      c.passed = false;
      c.reasons.push_back(absl::StrCat("checkpoint '", c.name,
                                       "' holds no tensor in either run: "
                                       "nothing compared"));
    }
  }
  ApplyRequired(policy, options, report);
  report.passed = true;
  for (const CheckpointResult& c : report.checkpoints) {
    report.passed = report.passed && c.passed;
  }
  if (judge_emptiness && report.summary.compared == 0) {
    report.passed = false;
    report.reasons.push_back(NothingComparedReason(report.summary));
  }
}

}  // namespace reprod::core::internal

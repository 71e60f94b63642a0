#include "core/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "common/status_macros.h"
#include "core/py_float.h"

namespace reprod::core {
namespace {

using Address = std::pair<std::string, std::optional<int64_t>>;

std::string AddressText(std::string_view checkpoint, const std::string& key,
                        const std::optional<int64_t>& step) {
  std::string s = absl::StrCat(std::string(checkpoint), "/", key);
  if (step) absl::StrAppend(&s, "@", *step);
  return s;
}

bool Selected(const CompareOptions& options, const std::string& name) {
  return options.checkpoints.empty() ||
         std::find(options.checkpoints.begin(), options.checkpoints.end(),
                   name) != options.checkpoints.end();
}

// Checkpoints of a run by name (to their position); InvalidArgument on
// duplicates.
absl::StatusOr<std::map<std::string, size_t>> IndexCheckpoints(
    const RunIndex& run, std::string_view side) {
  std::map<std::string, size_t> out;
  for (size_t i = 0; i < run.checkpoints.size(); ++i) {
    const CheckpointIndex& cp = run.checkpoints[i];
    if (!out.emplace(cp.name, i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(side), " run '", run.name,
                       "' holds checkpoint '", cp.name, "' twice"));
    }
  }
  return out;
}

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

bool IsReverse2D(const Shape& a, const Shape& b) {
  return a.size() == 2 && b.size() == 2 && a[0] == b[1] && a[1] == b[0];
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

// How far a check is from/over its bound (see WorstCheck).
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

// A pair waiting for the reducer.
struct Pending {
  size_t result = 0;  // index into Report::tensors
  // Distinct tolerances and their indices into the reducer's output; [0]
  // gives the stats.
  std::vector<std::pair<Tolerance, size_t>> tolerances;
  PolicyResolution resolution;
};

// CompareRuns' reducer: one CompareBatch over the in-memory tensors, in
// planned order (pair by pair, tolerance by tolerance).
class RunDataReducer final : public PairReducer {
 public:
  RunDataReducer(const RunData& ref, const RunData& cand,
                 kernels::Backend& backend)
      : ref_(ref), cand_(cand), backend_(backend) {}

  absl::Status Reduce(absl::Span<const PlannedPair> pairs,
                      absl::Span<kernels::DiffStats> out) override {
    std::vector<kernels::DiffTask> tasks;
    tasks.reserve(out.size());
    for (const PlannedPair& p : pairs) {
      for (size_t k = 0; k < p.options.size(); ++k) {
        kernels::DiffTask task;
        task.ref = At(ref_, p.ref).view();
        task.cand = At(cand_, p.cand).view();
        task.transpose_cand = p.transpose_cand;
        task.options = p.options[k];
        tasks.push_back(std::move(task));
      }
    }
    return backend_.CompareBatch(tasks, out);
  }

 private:
  static const Tensor& At(const RunData& run, const TensorPosition& pos) {
    return run.checkpoints[pos.checkpoint].tensors[pos.tensor].tensor;
  }

  const RunData& ref_;
  const RunData& cand_;
  kernels::Backend& backend_;
};

}  // namespace

absl::StatusOr<Report> CompareRuns(const RunData& ref, const RunData& cand,
                                   const Policy& policy,
                                   kernels::Backend& backend,
                                   const CompareOptions& options) {
  RunDataReducer reducer(ref, cand, backend);
  return CompareIndexed(IndexRunData(ref), IndexRunData(cand), policy, reducer,
                        std::string(backend.name()), options);
}

absl::StatusOr<Report> CompareIndexed(const RunIndex& ref, const RunIndex& cand,
                                      const Policy& policy,
                                      PairReducer& reducer,
                                      std::string backend_name,
                                      const CompareOptions& options) {
  REPROD_ASSIGN_OR_RETURN(auto ref_cps, IndexCheckpoints(ref, "ref"));
  REPROD_ASSIGN_OR_RETURN(auto cand_cps, IndexCheckpoints(cand, "cand"));

  Report report;
  report.ref = ref.name;
  report.cand = cand.name;
  report.policy = policy.name;
  report.backend = std::move(backend_name);

  // Checkpoint order: cand order, then ref-only in ref order.
  std::vector<std::string> order;
  for (const CheckpointIndex& cp : cand.checkpoints) {
    if (Selected(options, cp.name)) order.push_back(cp.name);
  }
  for (const CheckpointIndex& cp : ref.checkpoints) {
    if (Selected(options, cp.name) && !cand_cps.count(cp.name)) {
      order.push_back(cp.name);
    }
  }

  std::vector<PlannedPair> planned;
  size_t num_stats = 0;
  std::vector<Pending> pending;

  for (const std::string& name : order) {
    const auto rit = ref_cps.find(name);
    const auto cit = cand_cps.find(name);
    const CheckpointIndex* rcp =
        rit == ref_cps.end() ? nullptr : &ref.checkpoints[rit->second];
    const CheckpointIndex* ccp =
        cit == cand_cps.end() ? nullptr : &cand.checkpoints[cit->second];

    CheckpointResult cpr;
    cpr.name = name;
    cpr.present_in_ref = rcp != nullptr;
    cpr.present_in_cand = ccp != nullptr;

    std::map<Address, size_t> ref_index;
    if (rcp != nullptr) {
      for (size_t i = 0; i < rcp->tensors.size(); ++i) {
        const TensorInfo& e = rcp->tensors[i];
        if (!ref_index.emplace(Address{e.key, e.step}, i).second) {
          return absl::InvalidArgumentError(
              absl::StrCat("ref run '", ref.name, "' holds ",
                           AddressText(name, e.key, e.step), " twice"));
        }
      }
    }
    std::vector<bool> ref_matched(rcp ? rcp->tensors.size() : 0, false);
    std::set<Address> cand_seen;
    std::set<int64_t> cand_steps;
    int64_t cand_tensors = 0;

    if (ccp != nullptr) {
      for (size_t ci = 0; ci < ccp->tensors.size(); ++ci) {
        const TensorInfo& ce = ccp->tensors[ci];
        ++cand_tensors;
        if (ce.step) cand_steps.insert(*ce.step);
        TensorResult t;
        t.checkpoint = name;
        t.key = ApplyRename(policy, ce.key);
        t.cand_key = ce.key;
        t.step = ce.step;
        t.dtype_cand = ce.dtype;
        t.shape_cand = ce.shape;
        if (!cand_seen.insert(Address{t.key, t.step}).second) {
          return absl::InvalidArgumentError(absl::StrCat(
              "cand run '", cand.name, "' holds ",
              AddressText(name, t.key, t.step), " twice",
              t.key != ce.key
                  ? absl::StrCat(" (key '", ce.key, "' after rename)")
                  : std::string()));
        }
        const auto found = ref_index.find(Address{t.key, t.step});
        if (found == ref_index.end()) {
          t.status = TensorStatus::kMissingInRef;
          t.reason = "missing in ref";
          report.tensors.push_back(std::move(t));
          continue;
        }
        ref_matched[found->second] = true;
        if (options.pair_filter &&
            !options.pair_filter(TensorAddress{name, t.key, t.step})) {
          continue;
        }
        const TensorInfo& rt = rcp->tensors[found->second];
        const TensorInfo& ct = ce;
        t.dtype_ref = rt.dtype;
        t.shape_ref = rt.shape;

        const std::string path = absl::StrCat(name, "/", t.key);
        bool transpose = false;
        if (rt.shape != ct.shape || policy.transpose == TransposeMode::kGlobs) {
          switch (policy.transpose) {
            case TransposeMode::kAuto:
              transpose =
                  IsReverse2D(rt.shape, ct.shape) && rt.shape[0] != rt.shape[1];
              break;
            case TransposeMode::kNever:
              break;
            case TransposeMode::kGlobs:
              if (IsReverse2D(rt.shape, ct.shape) &&
                  (rt.shape != ct.shape || rt.shape[0] == rt.shape[1])) {
                for (const std::string& g : policy.transpose_globs) {
                  if (GlobMatch(g, path)) {
                    transpose = true;
                    break;
                  }
                }
              }
              break;
          }
          if (!transpose && rt.shape != ct.shape) {
            t.status = TensorStatus::kShapeMismatch;
            t.reason =
                absl::StrCat("shape mismatch: ref ", ShapeToString(rt.shape),
                             " vs cand ", ShapeToString(ct.shape));
            if (IsReverse2D(rt.shape, ct.shape)) {
              absl::StrAppend(&t.reason,
                              policy.transpose == TransposeMode::kNever
                                  ? " (policy has transpose: never)"
                                  : " (key not listed under 'transpose')");
            }
            report.tensors.push_back(std::move(t));
            continue;
          }
        }
        t.transposed = transpose;
        if (transpose) {
          t.notes.push_back(
              absl::StrCat("compared cand.T: cand ", ShapeToString(ct.shape),
                           " transposed to ref ", ShapeToString(rt.shape)));
        }
        if (rt.dtype != ct.dtype) {
          t.notes.push_back(absl::StrCat(
              "dtypes differ (ref ", std::string(DTypeName(rt.dtype)),
              ", cand ", std::string(DTypeName(ct.dtype)),
              "); compared by value"));
        }

        Pending p;
        p.result = report.tensors.size();
        p.resolution = ResolvePolicy(policy, name, t.key);
        t.policy_source = p.resolution.source;
        PlannedPair pp;
        pp.ref = TensorPosition{rit->second, found->second};
        pp.cand = TensorPosition{cit->second, ci};
        pp.transpose_cand = transpose;
        pp.stats_offset = num_stats;
        auto add_task = [&](const Tolerance& tol) {
          for (const auto& [have, idx] : p.tolerances) {
            if (have == tol) return;
          }
          kernels::DiffOptions o;
          o.atol = tol.atol;
          o.rtol = tol.rtol;
          o.equal_nan = p.resolution.equal_nan;
          p.tolerances.emplace_back(tol, num_stats++);
          pp.options.push_back(o);
        };
        for (const Check& c : *p.resolution.checks) {
          if (MetricUsesTolerance(c.metric)) {
            add_task(c.ToleranceFor(rt.dtype, ct.dtype));
          }
        }
        if (p.tolerances.empty()) {
          add_task(DefaultTolerance(rt.dtype, ct.dtype));
        }
        planned.push_back(std::move(pp));
        pending.push_back(std::move(p));
        report.tensors.push_back(std::move(t));
      }
    }
    if (rcp != nullptr) {
      for (size_t i = 0; i < rcp->tensors.size(); ++i) {
        if (ref_matched[i]) continue;
        const TensorInfo& re = rcp->tensors[i];
        TensorResult t;
        t.checkpoint = name;
        t.key = re.key;
        t.step = re.step;
        t.dtype_ref = re.dtype;
        t.shape_ref = re.shape;
        t.status = TensorStatus::kMissingInCand;
        t.reason = "missing in cand";
        report.tensors.push_back(std::move(t));
      }
    }

    cpr.steps = cand_steps.empty() ? cand_tensors
                                   : static_cast<int64_t>(cand_steps.size());
    if (const CheckpointPolicy* cpp = policy.FindCheckpoint(name)) {
      cpr.min_steps = cpp->min_steps;
    }
    report.checkpoints.push_back(std::move(cpr));
  }

  // One Reduce for every pair.
  std::vector<kernels::DiffStats> stats(num_stats);
  if (!planned.empty()) {
    REPROD_RETURN_IF_ERROR(reducer.Reduce(planned, absl::MakeSpan(stats)));
  }

  for (const Pending& p : pending) {
    TensorResult& t = report.tensors[p.result];
    const kernels::DiffStats& s = stats[p.tolerances[0].second];
    t.stats = s;
    t.stats_tolerance = p.tolerances[0].first;
    if (s.count > 0) t.max_abs_index = UnravelIndex(s.max_index, *t.shape_ref);
    TensorStatus status = TensorStatus::kPass;
    std::vector<std::string> failing, warning;
    for (const Check& c : *p.resolution.checks) {
      CheckResult cr;
      cr.check = c;
      const kernels::DiffStats* cs = &s;
      if (MetricUsesTolerance(c.metric)) {
        const Tolerance tol = c.ToleranceFor(*t.dtype_ref, *t.dtype_cand);
        cr.tolerance = tol;
        for (const auto& [have, idx] : p.tolerances) {
          if (have == tol) cs = &stats[idx];
        }
      }
      cr.value = MetricValue(c.metric, *cs);
      cr.status = Evaluate(c, cr.value);
      const std::string metric(MetricName(c.metric));
      const std::string bound_name = c.kind == BoundKind::kMax ? "max" : "min";
      if (cr.status == TensorStatus::kFail) {
        status = TensorStatus::kFail;
        if (c.metric == Metric::kAllclose) {
          failing.push_back(absl::StrCat(
              "allclose: ", cs->mismatches, " of ", cs->count,
              " elements mismatch (atol ", PyFloatRepr(cr.tolerance->atol),
              ", rtol ", PyFloatRepr(cr.tolerance->rtol), ")"));
        } else if (std::isnan(cr.value)) {
          failing.push_back(absl::StrCat(metric, " = nan (NaN never passes; ",
                                         bound_name, " ", PyFloatRepr(c.bound),
                                         ")"));
        } else {
          failing.push_back(
              absl::StrCat(metric, " = ", PyFloatRepr(cr.value),
                           c.kind == BoundKind::kMax ? " > max " : " < min ",
                           PyFloatRepr(c.bound)));
        }
      } else if (cr.status == TensorStatus::kWarn) {
        if (status == TensorStatus::kPass) status = TensorStatus::kWarn;
        warning.push_back(absl::StrCat(metric, " = ", PyFloatRepr(cr.value),
                                       " is past warn ", PyFloatRepr(*c.warn),
                                       " (", bound_name, " ",
                                       PyFloatRepr(c.bound), ")"));
      }
      t.checks.push_back(cr);
    }
    t.status = status;
    if (status != TensorStatus::kPass) {
      t.reason = absl::StrJoin(
          status == TensorStatus::kFail ? failing : warning, "; ");
      if (s.count > 0) {
        absl::StrAppend(&t.reason, "; largest error at [",
                        absl::StrJoin(t.max_abs_index, ", "), "]: ref ",
                        PyFloatRepr(s.ref_at_max), ", cand ",
                        PyFloatRepr(s.cand_at_max));
      }
    }
  }

  // Verdicts, summary, first failure.
  std::map<std::string, size_t> by_name;  // index into report.checkpoints
  for (size_t i = 0; i < report.checkpoints.size(); ++i) {
    by_name[report.checkpoints[i].name] = i;
  }
  std::map<std::string, double> worst_severity;
  for (const TensorResult& t : report.tensors) {
    CheckpointResult& c = report.checkpoints[by_name.at(t.checkpoint)];
    ++c.tensors;
    ++report.summary.tensors;
    switch (t.status) {
      case TensorStatus::kPass:
        ++c.passed_tensors;
        ++report.summary.passed;
        break;
      case TensorStatus::kWarn:
        ++c.warned_tensors;
        ++report.summary.warned;
        break;
      case TensorStatus::kFail:
      case TensorStatus::kShapeMismatch:
        ++c.failed_tensors;
        ++report.summary.failed;
        break;
      case TensorStatus::kMissingInRef:
        ++c.failed_tensors;
        ++report.summary.missing_in_ref;
        break;
      case TensorStatus::kMissingInCand:
        ++c.failed_tensors;
        ++report.summary.missing_in_cand;
        break;
    }
    if (!IsPassing(t.status)) {
      c.passed = false;
      if (!report.first_failure) {
        report.first_failure = TensorAddress{t.checkpoint, t.key, t.step};
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
  for (CheckpointResult& c : report.checkpoints) {
    if (c.min_steps > 0 && c.steps < c.min_steps) {
      c.passed = false;
      c.reasons.push_back(absl::StrCat("checkpoint '", c.name,
                                       "' needs at least ", c.min_steps,
                                       " steps in cand, found ", c.steps));
    }
  }
  for (const std::string& name : policy.required) {
    if (!Selected(options, name)) continue;
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      CheckpointResult c;
      c.name = name;
      c.passed = false;
      c.reasons.push_back(absl::StrCat("required checkpoint '", name,
                                       "' is absent from both runs"));
      if (const CheckpointPolicy* cpp = policy.FindCheckpoint(name)) {
        c.min_steps = cpp->min_steps;
      }
      by_name[name] = report.checkpoints.size();
      report.checkpoints.push_back(std::move(c));
      continue;
    }
    CheckpointResult& c = report.checkpoints[it->second];
    if (!c.present_in_ref && !c.present_in_cand) continue;  // listed twice
    if (!c.present_in_ref || !c.present_in_cand) {
      c.passed = false;
      c.reasons.push_back(absl::StrCat("required checkpoint '", name,
                                       "' is absent from ",
                                       c.present_in_ref ? "cand" : "ref"));
    }
  }
  report.passed = true;
  for (const CheckpointResult& c : report.checkpoints) {
    report.passed = report.passed && c.passed;
  }
  return report;
}

}  // namespace reprod::core

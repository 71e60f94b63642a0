// kHtml: one self-contained page (inline CSS and inline SVG, no script, no
// reference to anything outside the document) for reading a report in a
// browser:
//  - header: verdict, ref, cand, policy, backend, summary, report reasons;
//  - the five acceptance points as a checklist (pass / fail / missing, worst
//    value against its bound), then the other checkpoints;
//  - the first failure (arrival order) linked to its row;
//  - failing tensors, most severe first (internal::Severity; NaN, missing
//    and shape mismatch count as infinitely bad), each with its statistics,
//    the largest error's location and values, reason, notes and |d|
//    histogram;
//  - a drift chart per key with several steps, and a key x step heat map;
//  - every tensor in a table per checkpoint; rows with status pass are
//    hidden while the "differences only" checkbox is checked (pure CSS:
//    `#diff-only:checked ~ .tables tr.pass`). Warned rows stay visible.
// Every string that comes from data is escaped by HtmlEscape.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/markup.h"
#include "common/visible.h"
#include "core/internal/judge.h"
#include "core/internal/localize.h"
#include "core/internal/render.h"
#include "core/internal/svg_charts.h"
#include "core/py_float.h"
#include "core/report.h"

namespace reprod::core::internal {
namespace {

constexpr const char* kAcceptancePoints[] = {"forward", "metric", "loss",
                                             "bp_align", "train_align"};
// Beyond these, the page says how many were left out (the tables below still
// list every tensor).
constexpr size_t kMaxFailureCards = 200;
constexpr size_t kMaxDriftCharts = 60;
constexpr size_t kMaxHeatRows = 300;
constexpr size_t kMaxHeatCols = 300;

constexpr char kCss[] = R"css(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:0 24px 48px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
header{padding:16px 20px;margin:0 -24px 12px;border-bottom:4px solid}
header.pass{background:#e6f4ea;border-color:#1a7f37}header.fail{background:#fdecea;border-color:#cf222e}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0 0}
dl.meta dt{font-weight:600}dl.meta dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
table{border-collapse:collapse;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.key{font-family:ui-monospace,monospace;word-break:break-all}
.badge{display:inline-block;padding:0 6px;border-radius:4px;font-weight:600;font-size:12px;color:#fff}
.badge.pass{background:#1a7f37}.badge.warn{background:#9a6700}.badge.fail,.badge.shape{background:#cf222e}
.badge.missing{background:#6e7781}
ol.modules{margin:6px 0 12px;padding-left:3.2em}ol.modules li{margin:1px 0}
ol.modules li.divergent{background:#fdecea;font-weight:600}
tr.fail td,tr.shape td{background:#fff5f5}tr.warn td{background:#fff8e5}tr.missing td{background:#f3f4f6}
tr.first-failure td{outline:2px solid #cf222e;outline-offset:-2px}
ul.reasons li{color:#cf222e;font-weight:600}
.failure{border:1px solid #d0d7de;border-left:5px solid #cf222e;border-radius:4px;padding:8px 12px;margin:10px 0}
.failure.first-failure{box-shadow:0 0 0 3px #ffb3b3}
.failure .reason{font-family:ui-monospace,monospace;margin:4px 0}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:2px 16px;margin:6px 0}
.stats span{font-family:ui-monospace,monospace}.notes{color:#57606a}
#first-failure{padding:8px 12px;background:#fdecea;border-radius:4px}
.toggle-label{font-weight:600;cursor:pointer;user-select:none}
#diff-only:checked ~ .tables tr.pass{display:none}
.hidden-note{color:#57606a;font-size:12px}
#diff-only:not(:checked) ~ .tables .hidden-note{display:none}
svg{display:block;margin:6px 0;font:11px system-ui,sans-serif}
svg .grid{stroke:#eaeef2}svg .axis{stroke:#57606a}
svg .tick.y{text-anchor:end}svg .tick.x{text-anchor:middle}
svg .series{fill:none;stroke:#0969da;stroke-width:1.5}
svg .bound{stroke:#cf222e;stroke-dasharray:5 3}svg .bound-label{fill:#cf222e}
svg circle.pass{fill:#0969da}svg circle.fail{fill:#cf222e;stroke:#fff;stroke-width:1}
svg rect.bar{fill:#8250df}svg .row-label{font-family:ui-monospace,monospace}
.charts{display:flex;flex-wrap:wrap;gap:8px 24px}.charts figure{margin:0}
figcaption{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all;max-width:520px}
)css";

std::string E(std::string_view raw) { return HtmlEscape(raw); }

std::string StatusClass(TensorStatus s) {
  switch (s) {
    case TensorStatus::kPass:
      return "pass";
    case TensorStatus::kWarn:
      return "warn";
    case TensorStatus::kFail:
      return "fail";
    case TensorStatus::kMissingInRef:
    case TensorStatus::kMissingInCand:
      return "missing";
    case TensorStatus::kShapeMismatch:
      return "shape";
  }
  return "fail";
}

std::string Badge(std::string_view css_class, std::string_view text) {
  return absl::StrCat("<span class=\"badge ", std::string(css_class), "\">", E(text),
                      "</span>");
}

std::string StatusBadge(TensorStatus s) {
  return Badge(StatusClass(s), std::string(TensorStatusName(s)));
}

// The tensor's distance past its bound: the largest check severity; +inf
// for tensors that failed without a value (missing, shape mismatch).
double TensorSeverity(const TensorResult& t) {
  if (!IsPassing(t.status) && t.checks.empty()) {
    return std::numeric_limits<double>::infinity();
  }
  double worst = 0;
  for (const CheckResult& c : t.checks) worst = std::max(worst, Severity(c));
  return worst;
}

std::string ValueText(const Check& check, double value) {
  return CheckValueText(CheckResult{check, value, TensorStatus::kPass, {}});
}

// "mean_abs 1.5e-05 (max 1e-06)".
std::string CheckText(const CheckResult& c) {
  return absl::StrCat(std::string(MetricName(c.check.metric)), " ", CheckValueText(c),
                      c.check.kind == BoundKind::kMax ? " (max " : " (min ",
                      ValueText(c.check, c.check.bound), ")");
}

std::string ChecksCell(const TensorResult& t) {
  std::vector<std::string> parts;
  for (const CheckResult& c : t.checks) {
    parts.push_back(absl::StrCat("<span class=\"check ",
                                 StatusClass(c.status), "\">",
                                 E(CheckText(c)), "</span>"));
  }
  return absl::StrJoin(parts, "<br>");
}

std::string RowId(size_t index) { return absl::StrCat("t-", index); }
std::string CardId(size_t index) { return absl::StrCat("f-", index); }

// Index in report.tensors of the first failure, or -1.
int64_t FirstFailureIndex(const Report& report) {
  if (!report.first_failure) return -1;
  const TensorAddress& f = *report.first_failure;
  for (size_t i = 0; i < report.tensors.size(); ++i) {
    const TensorResult& t = report.tensors[i];
    if (t.checkpoint == f.checkpoint && t.key == f.key && t.step == f.step) {
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

std::string FullKey(const TensorResult& t) {
  return absl::StrCat(t.checkpoint, "/", t.DisplayKey());
}

std::string Header(const Report& r) {
  const char* verdict = r.passed ? "pass" : "fail";
  std::string out = absl::StrCat("<header class=\"", verdict,
                                 "\"><h1>reprod report: ",
                                 r.passed ? "PASSED" : "FAILED", "</h1>");
  absl::StrAppend(&out, "<dl class=\"meta\"><dt>ref</dt><dd class=\"ref\">",
                  E(r.ref), "</dd><dt>cand</dt><dd class=\"cand\">", E(r.cand),
                  "</dd><dt>policy</dt><dd class=\"policy\">", E(r.policy),
                  "</dd><dt>backend</dt><dd>", E(r.backend), "</dd></dl>");
  const ReportSummary& s = r.summary;
  absl::StrAppend(
      &out,
      "<table class=\"summary\"><tr><th>tensors</th><th>compared</th>"
      "<th>passed</th><th>warned</th><th>failed</th><th>missing in ref</th>"
      "<th>missing in cand</th></tr><tr><td class=\"num\">",
      s.tensors, "</td><td class=\"num\">", s.compared,
      "</td><td class=\"num\">", s.passed, "</td><td class=\"num\">",
      s.warned, "</td><td class=\"num\">", s.failed, "</td><td class=\"num\">",
      s.missing_in_ref, "</td><td class=\"num\">", s.missing_in_cand,
      "</td></tr></table>");
  if (!r.reasons.empty()) {
    out += "<ul class=\"reasons\">";
    for (const std::string& reason : r.reasons) {
      absl::StrAppend(&out, "<li>", E(reason), "</li>");
    }
    out += "</ul>";
  }
  return out + "</header>";
}

std::string WorstText(const WorstCheck& w) {
  Check check;
  check.metric = w.metric;
  check.kind = w.kind;
  return absl::StrCat(w.step ? absl::StrCat(w.key, "@", *w.step) : w.key, ": ",
                      std::string(MetricName(w.metric)), " ", ValueText(check, w.value),
                      w.kind == BoundKind::kMax ? " (max " : " (min ",
                      ValueText(check, w.bound), ")");
}

// One checklist row; `c` is null for an acceptance point with no data.
std::string ChecklistRow(std::string_view name, const CheckpointResult* c) {
  const bool missing = c == nullptr || (!c->present_in_cand && c->tensors == 0);
  const std::string state = missing ? "missing" : c->passed ? "pass" : "fail";
  std::string detail;
  if (c != nullptr && c->worst) detail = E(WorstText(*c->worst));
  if (c != nullptr) {
    for (const std::string& reason : c->reasons) {
      absl::StrAppend(&detail, detail.empty() ? "" : "<br>", E(reason));
    }
  }
  std::string counts;
  if (c != nullptr) {
    counts = absl::StrCat(c->passed_tensors, " / ", c->warned_tensors, " / ",
                          c->failed_tensors);
  }
  return absl::StrCat("<tr class=\"point ", state, "\"><td class=\"key\">",
                      E(name), "</td><td>", Badge(state, state),
                      "</td><td class=\"num\">", counts, "</td><td>", detail,
                      "</td></tr>");
}

std::string Checklist(const Report& r) {
  std::string out =
      "<section id=\"checklist\"><h2>Acceptance points</h2>"
      "<table class=\"checklist\"><tr><th>checkpoint</th><th>verdict</th>"
      "<th>passed / warned / failed</th><th>worst value (bound)</th></tr>";
  for (const char* point : kAcceptancePoints) {
    absl::StrAppend(&out, ChecklistRow(point, r.FindCheckpoint(point)));
  }
  bool others = false;
  for (const CheckpointResult& c : r.checkpoints) {
    if (std::find(std::begin(kAcceptancePoints), std::end(kAcceptancePoints),
                  c.name) != std::end(kAcceptancePoints)) {
      continue;
    }
    if (!others) {
      out += "<tr><th colspan=\"4\">other checkpoints</th></tr>";
      others = true;
    }
    absl::StrAppend(&out, ChecklistRow(c.name, &c));
  }
  return out + "</table></section>";
}

std::string FirstFailure(const Report& r, int64_t index) {
  if (index < 0) return "";
  const TensorResult& t = r.tensors[static_cast<size_t>(index)];
  return absl::StrCat(
      "<section id=\"first-failure\"><strong>First failure</strong> "
      "(in the candidate's order): <a class=\"key\" href=\"#",
      CardId(static_cast<size_t>(index)), "\">", E(FullKey(t)), "</a> ",
      StatusBadge(t.status), " <span class=\"reason\">",
      E(DescribeTensor(t)), "</span> (<a href=\"#",
      RowId(static_cast<size_t>(index)), "\">row</a>)</section>");
}

// The first divergence and its checkpoint's modules (same step and
// direction) in execution order, coloured pass / fail / unmatched.
std::string Divergence(const Report& r) {
  if (!r.first_divergence) return "";
  const FirstDivergence& d = *r.first_divergence;
  std::string out = absl::StrCat(
      "<section id=\"divergence\"><h2>First divergence</h2><p>Module <code>", E(d.module),
      "</code> (", E(d.direction), d.step ? absl::StrCat(", step ", *d.step) : "",
      d.rank ? absl::StrCat(", rank ", *d.rank) : "", ", checkpoint <code>", E(d.checkpoint), "</code>) diverges first: <span class=\"key\">",
      E(d.key), "</span> <span class=\"reason\">", E(d.reason), "</span>. Its inputs: ",
      E(DivergenceInputsName(d.inputs)), ".</p>");
  const std::vector<ModuleRow> rows = DivergenceModules(r, d);
  absl::StrAppend(&out, "<p>", rows.size(), " modules in execution order (",
                  d.passed_before.size(), " pass before it, ", d.unmatched.size(),
                  " unmatched):</p><ol class=\"modules\">");
  constexpr size_t kMaxModuleRows = 2000;
  for (size_t i = 0; i < rows.size() && i < kMaxModuleRows; ++i) {
    const ModuleRow& row = rows[i];
    const char* state = row.state == ModuleRow::State::kPass   ? "pass"
                        : row.state == ModuleRow::State::kFail ? "fail"
                                                               : "missing";
    const char* label = row.state == ModuleRow::State::kUnmatched ? "unmatched" : state;
    absl::StrAppend(&out, "<li class=\"", state, row.divergent ? " divergent" : "", "\">",
                    Badge(state, label), " <code>", E(row.module), "</code></li>");
  }
  absl::StrAppend(&out, "</ol>");
  if (rows.size() > kMaxModuleRows) {
    absl::StrAppend(&out, "<p>", rows.size() - kMaxModuleRows, " more modules not shown.</p>");
  }
  return out + "</section>";
}

// Multi-rank reports: one row per rank, the global tensors merged from
// shards, and replicas that differ between ranks.
std::string Ranks(const Report& r) {
  if (r.ranks.empty()) return "";
  std::string out =
      "<section id=\"ranks\"><h2>Ranks</h2><table class=\"ranks\"><tr><th>rank</th>"
      "<th>tensors</th><th>passed</th><th>failed</th><th>first failure</th>"
      "<th>first divergence</th></tr>";
  for (const RankSummary& k : r.ranks) {
    const char* state = k.failed == 0 ? "pass" : "fail";
    absl::StrAppend(
        &out, "<tr class=\"", state, "\"><td class=\"num\">", k.rank, " ",
        Badge(state, state), "</td><td class=\"num\">", k.tensors, "</td><td class=\"num\">",
        k.passed, "</td><td class=\"num\">", k.failed, "</td><td>",
        k.first_failure ? absl::StrCat("<code>", E(k.first_failure->checkpoint), "/",
                                       E(k.first_failure->key), "</code>",
                                       k.first_failure->step
                                           ? absl::StrCat(" @", *k.first_failure->step)
                                           : "")
                        : std::string(),
        "</td><td>",
        k.first_divergence ? absl::StrCat("<code>", E(k.first_divergence->module), "</code> (",
                                          E(k.first_divergence->direction), ")")
                           : std::string(),
        "</td></tr>");
  }
  out += "</table>";
  if (!r.global_tensors.empty()) {
    out += "<h3>Global tensors merged from shards</h3><table class=\"ranks\"><tr>"
           "<th>tensor</th><th>shape</th><th>ranks</th><th>verdict</th><th>reason</th></tr>";
    for (const TensorResult& g : r.global_tensors) {
      const std::string name = absl::StrCat(g.checkpoint, "/", g.DisplayKey());
      absl::StrAppend(&out, "<tr><td><code>", E(name), "</code></td><td>",
                      g.shape_ref ? E(ShapeToString(*g.shape_ref)) : std::string(), "</td><td>",
                      E(absl::StrJoin(g.merged_ranks, ", ")), "</td><td>",
                      StatusBadge(g.status), "</td><td>", E(g.reason), "</td></tr>");
    }
    out += "</table>";
  }
  if (!r.replica_mismatches.empty()) {
    out += "<h3>Replicas that differ between ranks</h3><ul class=\"reasons\">";
    for (const ReplicaMismatch& m : r.replica_mismatches) {
      absl::StrAppend(&out, "<li>", E(m.side), " <code>", E(m.checkpoint), "/", E(m.key),
                      m.step ? absl::StrCat("@", *m.step) : "", "</code> rank ", m.rank,
                      " vs rank ", m.against_rank, ": ", E(m.reason), "</li>");
    }
    out += "</ul>";
  }
  return out + "</section>";
}

std::string StatsBlock(const TensorResult& t) {
  if (!t.stats) return "";
  const kernels::DiffStats& s = *t.stats;
  auto item = [](std::string_view name, std::string value) {
    return absl::StrCat("<div>", std::string(name), " <span>", E(value),
                        "</span></div>");
  };
  std::string out = "<div class=\"stats\">";
  absl::StrAppend(
      &out, item("count", absl::StrCat(s.count)),
      item("mean_abs", PyFloatRepr(s.mean_abs())),
      item("max_abs", PyFloatRepr(s.max_abs_value())),
      item("min_abs", PyFloatRepr(s.min_abs_value())),
      item("mean_rel", PyFloatRepr(s.mean_rel())),
      item("max_rel", PyFloatRepr(s.max_rel_value())),
      item("rmse", PyFloatRepr(s.rmse())),
      item("cosine", PyFloatRepr(s.cosine())),
      item("mismatches", absl::StrCat(s.mismatches)),
      item("nan ref / cand", absl::StrCat(s.nan_ref, " / ", s.nan_cand)),
      item("inf ref / cand", absl::StrCat(s.inf_ref, " / ", s.inf_cand)),
      item("nan_diff / inf_diff", absl::StrCat(s.nan_diff, " / ", s.inf_diff)));
  out += "</div>";
  if (s.count > 0) {
    absl::StrAppend(
        &out, "<div class=\"location\">largest error at <code>[",
        absl::StrJoin(t.max_abs_index, ", "), "]</code>: ref <code>",
        E(PyFloatRepr(s.ref_at_max)), "</code>, cand <code>",
        E(PyFloatRepr(s.cand_at_max)), "</code></div>");
  }
  return out;
}

std::string NotesList(const TensorResult& t) {
  if (t.notes.empty()) return "";
  std::string out = "<ul class=\"notes\">";
  for (const std::string& n : t.notes) absl::StrAppend(&out, "<li>", E(n), "</li>");
  return out + "</ul>";
}

std::string FailureCard(const TensorResult& t, size_t index, bool first) {
  std::string out = absl::StrCat(
      "<div class=\"failure", first ? " first-failure" : "", "\" id=\"",
      CardId(index), "\"><h3><a class=\"key\" href=\"#", RowId(index), "\">",
      E(FullKey(t)), "</a> ", StatusBadge(t.status),
      first ? " <span class=\"badge fail\">first failure</span>" : "",
      "</h3><div class=\"reason\">", E(DescribeTensor(t)), "</div>");
  if (!t.checks.empty()) {
    absl::StrAppend(&out, "<div class=\"checks\">", ChecksCell(t), "</div>");
  }
  absl::StrAppend(&out, StatsBlock(t), NotesList(t));
  if (t.stats) absl::StrAppend(&out, HistogramChart(t.stats->histogram));
  return out + "</div>";
}

std::string FailingTensors(const Report& r, int64_t first) {
  std::vector<std::pair<double, size_t>> failing;  // (severity, index)
  for (size_t i = 0; i < r.tensors.size(); ++i) {
    if (!IsPassing(r.tensors[i].status)) {
      failing.emplace_back(TensorSeverity(r.tensors[i]), i);
    }
  }
  if (failing.empty()) return "";
  std::stable_sort(failing.begin(), failing.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string out = absl::StrCat(
      "<section id=\"failures\"><h2>Failing tensors (", failing.size(),
      ", furthest past the bound first)</h2>");
  for (size_t k = 0; k < failing.size(); ++k) {
    const size_t i = failing[k].second;
    const bool is_first = static_cast<int64_t>(i) == first;
    // The first failure keeps its card (it is linked from the top).
    if (k >= kMaxFailureCards && !is_first) continue;
    absl::StrAppend(&out, FailureCard(r.tensors[i], i, is_first));
  }
  if (failing.size() > kMaxFailureCards) {
    absl::StrAppend(&out, "<p class=\"hidden-note\">", failing.size() -
                    kMaxFailureCards, " more failing tensors: see the tables "
                    "below.</p>");
  }
  return out + "</section>";
}

// Stepped tensors grouped by checkpoint/key, in report order.
using StepGroups =
    std::vector<std::pair<std::string, std::vector<const TensorResult*>>>;

StepGroups GroupSteps(const Report& r) {
  StepGroups groups;
  std::map<std::string, size_t> index;
  for (const TensorResult& t : r.tensors) {
    if (!t.step) continue;
    const std::string name = absl::StrCat(t.checkpoint, "/", t.key);
    auto [it, inserted] = index.emplace(name, groups.size());
    if (inserted) groups.push_back({name, {}});
    groups[it->second].second.push_back(&t);
  }
  return groups;
}

// A drift chart of the first check of each step; a min-check (cosine) is
// drawn as 1 - value so that growing error points up on the log axis.
std::string DriftFigure(const std::string& name,
                        const std::vector<const TensorResult*>& steps) {
  std::vector<DriftPoint> points;
  const Check* check = nullptr;
  for (const TensorResult* t : steps) {
    if (t->checks.empty()) continue;
    const CheckResult& c = t->checks.front();
    if (check == nullptr) check = &c.check;
    const bool min = c.check.kind == BoundKind::kMin;
    points.push_back({*t->step, min ? 1 - c.value : c.value,
                      c.status == TensorStatus::kFail});
  }
  if (check == nullptr) return "";
  const bool min = check->kind == BoundKind::kMin;
  const std::string metric(MetricName(check->metric));
  return absl::StrCat(
      "<figure><figcaption>", E(name), "</figcaption>",
      DriftChart(points, min ? 1 - check->bound : check->bound,
                 min ? absl::StrCat("1 - ", metric) : metric),
      "</figure>");
}

std::string DriftSection(const StepGroups& groups) {
  std::string charts;
  size_t drawn = 0, skipped = 0;
  for (const auto& [name, steps] : groups) {
    if (steps.size() < 2) continue;
    if (drawn == kMaxDriftCharts) {
      ++skipped;
      continue;
    }
    const std::string figure = DriftFigure(name, steps);
    if (figure.empty()) continue;
    charts += figure;
    ++drawn;
  }
  if (drawn == 0) return "";
  std::string out = absl::StrCat(
      "<section id=\"drift\"><h2>Step drift</h2><p>Error of each key's first "
      "check against step (log scale); the dashed line is the bound, red "
      "points failed.</p><div class=\"charts\">",
      charts, "</div>");
  if (skipped > 0) {
    absl::StrAppend(&out, "<p class=\"hidden-note\">", skipped,
                    " more stepped keys not charted.</p>");
  }
  return out + "</section>";
}

HeatCell CellOf(const TensorResult& t, int row, int col) {
  const std::string cls = StatusClass(t.status);
  return HeatCell{row, col, TensorSeverity(t),
                  cls == "shape" ? "fail" : cls,
                  absl::StrCat(t.checkpoint, "/", t.DisplayKey(), ": ",
                               std::string(TensorStatusName(t.status)),
                               t.checks.empty()
                                   ? ""
                                   : absl::StrCat(", ", CheckText(t.checks[0])))};
}

std::string HeatMapSection(const StepGroups& groups) {
  std::vector<int64_t> cols;
  for (const auto& group : groups) {
    for (const TensorResult* t : group.second) cols.push_back(*t->step);
  }
  std::sort(cols.begin(), cols.end());
  cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
  if (cols.size() < 2) return "";
  const bool truncated = cols.size() > kMaxHeatCols || groups.size() > kMaxHeatRows;
  if (cols.size() > kMaxHeatCols) cols.resize(kMaxHeatCols);
  std::vector<std::string> rows;
  std::vector<HeatCell> cells;
  for (const auto& [name, steps] : groups) {
    if (rows.size() == kMaxHeatRows) break;
    const int row = static_cast<int>(rows.size());
    rows.push_back(name);
    for (const TensorResult* t : steps) {
      auto it = std::lower_bound(cols.begin(), cols.end(), *t->step);
      if (it == cols.end() || *it != *t->step) continue;
      cells.push_back(CellOf(*t, row, static_cast<int>(it - cols.begin())));
    }
  }
  return absl::StrCat(
      "<section id=\"heatmap\"><h2>Keys by step</h2><p>Each cell is one "
      "tensor, green (far below its bound) to red (past it); grey: "
      "missing.</p>",
      HeatMap(rows, cols, cells),
      truncated ? "<p class=\"hidden-note\">Only the first 300 keys and 300 "
                  "steps are drawn.</p>"
                : "",
      "</section>");
}

std::string TensorRow(const TensorResult& t, size_t index, bool first) {
  std::string location;
  if (t.stats && t.stats->count > 0) {
    location = absl::StrCat("[", absl::StrJoin(t.max_abs_index, ", "), "] ref ",
                            PyFloatRepr(t.stats->ref_at_max), ", cand ",
                            PyFloatRepr(t.stats->cand_at_max));
  } else if (t.status == TensorStatus::kShapeMismatch) {
    location = DescribeTensor(t);
  }
  const std::string cls = StatusClass(t.status);
  return absl::StrCat(
      "<tr id=\"", RowId(index), "\" class=\"", cls,
      first ? " first-failure" : "", "\"><td class=\"key\">",
      IsPassing(t.status) ? E(t.key)
                          : absl::StrCat("<a href=\"#", CardId(index), "\">",
                                         E(t.key), "</a>"),
      "</td><td class=\"num\">", t.step ? absl::StrCat(*t.step) : "",
      "</td><td>", StatusBadge(t.status), t.transposed ? " (transposed)" : "",
      "</td><td>", ChecksCell(t), "</td><td class=\"key\">", E(location),
      "</td><td class=\"notes\">", E(absl::StrJoin(t.notes, "; ")),
      "</td></tr>");
}

std::string CheckpointTable(const Report& r, const CheckpointResult& c,
                            int64_t first) {
  std::string rows;
  int64_t hidden = 0;
  for (size_t i = 0; i < r.tensors.size(); ++i) {
    const TensorResult& t = r.tensors[i];
    if (t.checkpoint != c.name) continue;
    if (t.status == TensorStatus::kPass) ++hidden;
    rows += TensorRow(t, i, static_cast<int64_t>(i) == first);
  }
  std::string out = absl::StrCat("<h3>", E(c.name), " ",
                                 Badge(c.passed ? "pass" : "fail",
                                       c.passed ? "pass" : "fail"),
                                 "</h3>");
  if (rows.empty()) return out + "<p>no tensors</p>";
  absl::StrAppend(
      &out,
      "<table class=\"tensors\"><tr><th>key</th><th>step</th><th>status</th>"
      "<th>checks</th><th>largest error</th><th>notes</th></tr>",
      rows, "</table>");
  if (hidden > 0) {
    absl::StrAppend(&out, "<p class=\"hidden-note\">", hidden,
                    " passing rows hidden.</p>");
  }
  return out;
}

std::string TensorTables(const Report& r, int64_t first) {
  std::string out =
      "<section id=\"tensors\"><h2>All tensors</h2>"
      "<input type=\"checkbox\" id=\"diff-only\" checked> "
      "<label class=\"toggle-label\" for=\"diff-only\">differences only "
      "(hide passing rows)</label><div class=\"tables\">";
  for (const CheckpointResult& c : r.checkpoints) {
    out += CheckpointTable(r, c, first);
  }
  return out + "</div></section>";
}

}  // namespace

std::string HtmlEscape(std::string_view raw) {
  const std::string s = SanitizeUtf8(raw);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const auto c = static_cast<unsigned char>(ch);
    // Bidi overrides and C1 controls shown as their visible escape
    // (VisibleText): a character reference would still reorder the page.
    if (char32_t cp = 0; const size_t n = InvisibleCodePointAt(s, i, &cp)) {
      out += VisibleText(s.substr(i, n));
      i += n - 1;
      continue;
    }
    if (const char* entity = MarkupEntity(ch)) {
      out += entity;
    } else if (c == '\n' || c == '\t') {
      // Tab and newline as references: the same text, no raw control byte.
      absl::StrAppend(&out, "&#", static_cast<int>(c), ";");
    } else {
      out += c < 0x20 || c == 0x7F ? '?' : ch;
    }
  }
  return out;
}

std::string RenderHtml(const Report& report) {
  const int64_t first = FirstFailureIndex(report);
  const StepGroups steps = GroupSteps(report);
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
      "<link rel=\"icon\" href=\"data:,\"><title>reprod report: ",
      report.passed ? "PASSED" : "FAILED", " ", E(report.cand), "</title><style>",
      kCss, "</style></head><body>\n", Header(report), "\n", Divergence(report), "\n", Ranks(report), "\n",
      Checklist(report),
      "\n", FirstFailure(report, first), "\n", FailingTensors(report, first),
      "\n", DriftSection(steps), "\n", HeatMapSection(steps), "\n",
      TensorTables(report, first), "\n</body></html>\n");
}

}  // namespace reprod::core::internal

// kMarkdown: a summary table, a table of checkpoints, then per checkpoint a
// table of its tensors (status as PASS / WARN / FAIL / MISSING IN REF /
// MISSING IN CAND / SHAPE MISMATCH text, no emoji) and the details of every
// non-passing tensor. GitHub-flavoured markdown; names in code spans, other cell
// text with markup characters backslash-escaped (Cell below).
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/visible.h"
#include "core/internal/localize.h"
#include "core/internal/render.h"
#include "core/report.h"

namespace reprod::core::internal {
namespace {

// Text in a table cell or a list item: one line (control characters and
// bidi overrides as VisibleText escapes), '|' escaped, and the
// characters that could start HTML or a Markdown link or code span
// backslash-escaped ('<', '&', '`', '\\', and ']' before '('), so a hostile
// key or label ("<script>", "[x](javascript:..)") shows as text in any
// CommonMark renderer while "[1, 2]" and "> max" stay readable raw.
std::string Cell(std::string_view raw) {
  const std::string text = VisibleText(raw);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool link_end = c == ']' && i + 1 < text.size() && text[i + 1] == '(';
    if (c == '\\' || c == '|' || c == '<' || c == '&' || c == '`' || link_end) out += '\\';
    out += c;
  }
  return out;
}

// A code span holding `raw` in its VisibleText form (HTML and Markdown are
// not interpreted inside one), safe inside a table cell: the fence is one
// backtick longer than the longest run of backticks in `raw`.
std::string Code(std::string_view raw) {
  const std::string s = absl::StrReplaceAll(VisibleText(raw), {{"|", "\\|"}});
  size_t longest = 0, run = 0;
  for (const char c : s) {
    run = c == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  if (longest == 0) return absl::StrCat("`", s, "`");
  const std::string fence(longest + 1, '`');
  return absl::StrCat(fence, " ", s, " ", fence);
}

std::string StatusText(TensorStatus s) {
  switch (s) {
    case TensorStatus::kPass:
      return "PASS";
    case TensorStatus::kWarn:
      return "WARN";
    case TensorStatus::kFail:
      return "FAIL";
    case TensorStatus::kMissingInRef:
      return "MISSING IN REF";
    case TensorStatus::kMissingInCand:
      return "MISSING IN CAND";
    case TensorStatus::kShapeMismatch:
      return "SHAPE MISMATCH";
  }
  return "?";
}

std::string ChecksCell(const TensorResult& t) {
  std::vector<std::string> parts;
  for (const CheckResult& c : t.checks) {
    parts.push_back(absl::StrCat(
        std::string(MetricName(c.check.metric)), " ", CheckValueText(c),
        c.check.kind == BoundKind::kMax ? " (max " : " (min ",
        CheckValueText(
            CheckResult{c.check, c.check.bound, TensorStatus::kPass, {}}),
        ")"));
  }
  if (parts.empty()) {
    if (t.status == TensorStatus::kShapeMismatch) {
      return absl::StrCat("ref ", ShapeToString(*t.shape_ref), " vs cand ",
                          ShapeToString(*t.shape_cand));
    }
    return "";
  }
  return absl::StrJoin(parts, "<br>");
}

}  // namespace

std::string RenderMarkdown(const Report& report) {
  std::string out;
  absl::StrAppend(
      &out, "# reprod report: ", report.passed ? "PASSED" : "FAILED", "\n\n");
  absl::StrAppend(&out, "| | |\n|---|---|\n", "| ref | ", Code(report.ref),
                  " |\n| cand | ", Code(report.cand), " |\n| policy | ",
                  Code(report.policy), " |\n| backend | ", Cell(report.backend),
                  " |\n\n");
  const ReportSummary& s = report.summary;
  absl::StrAppend(&out, "## Summary\n\n",
                  "| tensors | passed | warned | failed | missing in ref | "
                  "missing in cand |\n",
                  "|---:|---:|---:|---:|---:|---:|\n| ", s.tensors, " | ",
                  s.passed, " | ", s.warned, " | ", s.failed, " | ",
                  s.missing_in_ref, " | ", s.missing_in_cand, " |\n\n");
  for (const std::string& r : report.reasons) {
    absl::StrAppend(&out, "**", Cell(r), "**\n\n");
  }
  if (report.first_divergence) {
    absl::StrAppend(&out, "## First divergence\n\n",
                    Cell(absl::StrCat("Checkpoint ", report.first_divergence->checkpoint, ": ",
                                      DescribeDivergence(*report.first_divergence))),
                    ".\n\n");
  }
  if (!report.ranks.empty()) {
    absl::StrAppend(&out, "## Ranks\n\n| rank | tensors | passed | failed | first failure | "
                          "first divergence |\n|---:|---:|---:|---:|---|---|\n");
    for (const RankSummary& k : report.ranks) {
      absl::StrAppend(
          &out, "| ", k.rank, " | ", k.tensors, " | ", k.passed, " | ", k.failed, " | ",
          k.first_failure
              ? Code(absl::StrCat(k.first_failure->checkpoint, "/", k.first_failure->key,
                                  k.first_failure->step
                                      ? absl::StrCat("@", *k.first_failure->step)
                                      : ""))
              : std::string(),
          " | ", k.first_divergence ? Code(k.first_divergence->module) : std::string(),
          " |\n");
    }
    out += "\n";
    for (const TensorResult& g : report.global_tensors) {
      absl::StrAppend(&out, "Global ", Code(absl::StrCat(g.checkpoint, "/", g.DisplayKey())),
                      " ", Cell(g.shape_ref ? ShapeToString(*g.shape_ref) : ""),
                      " merged from ranks ", absl::StrJoin(g.merged_ranks, ", "), ": ",
                      std::string(TensorStatusName(g.status)),
                      g.reason.empty() ? std::string() : absl::StrCat(" (", Cell(g.reason), ")"),
                      "\n\n");
    }
  }
  if (report.first_failure) {
    const TensorAddress& f = *report.first_failure;
    absl::StrAppend(
        &out, "First failure: ", Code(absl::StrCat(f.checkpoint, "/", f.key)),
        f.step ? absl::StrCat(" at step ", *f.step) : "",
        f.rank ? absl::StrCat(" on rank ", *f.rank) : "", "\n\n");
  }
  absl::StrAppend(&out,
                  "| checkpoint | verdict | tensors | passed | warned | failed "
                  "| worst |\n|---|---|---:|---:|---:|---:|---|\n");
  for (const CheckpointResult& c : report.checkpoints) {
    std::string worst;
    if (c.worst) {
      Check check;
      check.metric = c.worst->metric;
      check.kind = c.worst->kind;
      worst = absl::StrCat(
          Code(c.worst->step ? absl::StrCat(c.worst->key, "@", *c.worst->step)
                             : c.worst->key),
          " ", std::string(MetricName(c.worst->metric)), " ",
          CheckValueText(
              CheckResult{check, c.worst->value, TensorStatus::kPass, {}}),
          c.worst->kind == BoundKind::kMax ? " (max " : " (min ",
          CheckValueText(
              CheckResult{check, c.worst->bound, TensorStatus::kPass, {}}),
          ")");
    }
    absl::StrAppend(&out, "| ", Code(c.name), " | ", c.passed ? "PASS" : "FAIL",
                    " | ", c.tensors, " | ", c.passed_tensors, " | ",
                    c.warned_tensors, " | ", c.failed_tensors, " | ", worst,
                    " |\n");
  }
  out += "\n";

  for (const CheckpointResult& c : report.checkpoints) {
    absl::StrAppend(&out, "## Checkpoint ", Code(c.name), ": ",
                    c.passed ? "PASS" : "FAIL", "\n\n");
    for (const std::string& r : c.reasons) {
      absl::StrAppend(&out, "- ", Cell(r), "\n");
    }
    if (!c.reasons.empty()) out += "\n";
    if (c.tensors == 0) continue;
    out += "| key | step | status | checks | notes |\n|---|---:|---|---|---|\n";
    std::vector<const TensorResult*> details;
    for (const TensorResult& t : report.tensors) {
      if (t.checkpoint != c.name) continue;
      absl::StrAppend(&out, "| ", Code(t.key), " | ",
                      t.step ? absl::StrCat(*t.step) : "", " | ",
                      StatusText(t.status), t.transposed ? " (transposed)" : "",
                      " | ", ChecksCell(t), " | ",
                      Cell(absl::StrJoin(t.notes, "; ")), " |\n");
      if (t.status != TensorStatus::kPass) details.push_back(&t);
    }
    out += "\n";
    if (!details.empty()) {
      out += "Details:\n\n";
      for (const TensorResult* t : details) {
        absl::StrAppend(&out, "- ", Code(t->DisplayKey()), " (",
                        StatusText(t->status), "): ", Cell(DescribeTensor(*t)),
                        "\n");
      }
      out += "\n";
    }
  }
  return out;
}

}  // namespace reprod::core::internal

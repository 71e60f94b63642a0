// kJunit: JUnit XML as CI systems read it. One <testsuite> per checkpoint
// (in report order), one <testcase> per tensor (classname = checkpoint, name
// = key or key@step). Failing tensors carry <failure message="..."
// type="<status>"> with the metric, value, bound, location and values there
// in the message and every check in the body; warned tensors pass with a
// <system-out> line. Checkpoint-level failures (min_steps, required) are an
// extra failing testcase named "[checkpoint]".
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/markup.h"
#include "common/visible.h"
#include "core/internal/render.h"
#include "core/report.h"

namespace reprod::core::internal {
namespace {

// XML 1.0 attribute/text escaping; characters XML 1.0 cannot carry (C0
// controls other than tab/newline/CR) become '?'.
std::string Xml(std::string_view raw) {
  const std::string s = SanitizeUtf8(raw);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const auto c = static_cast<unsigned char>(ch);
    // Bidi overrides and C1 controls as character references (lossless).
    if (char32_t cp = 0; const size_t n = InvisibleCodePointAt(s, i, &cp)) {
      absl::StrAppend(&out, "&#x", absl::Hex(static_cast<uint32_t>(cp)), ";");
      i += n - 1;
      continue;
    }
    if (const char* entity = MarkupEntity(ch)) {
      out += entity;
      continue;
    }
    switch (c) {
      case '\n':
        out += "&#10;";
        break;
      case '\r':
        out += "&#13;";
        break;
      case '\t':
        out += "&#9;";
        break;
      default:
        out += c < 0x20 || c == 0x7F ? '?' : ch;
    }
  }
  return out;
}

std::string CheckLines(const TensorResult& t) {
  std::string body;
  for (const CheckResult& c : t.checks) {
    absl::StrAppend(
        &body, std::string(MetricName(c.check.metric)), " = ",
        CheckValueText(c),
        c.check.kind == BoundKind::kMax ? " (max " : " (min ",
        CheckValueText(
            CheckResult{c.check, c.check.bound, TensorStatus::kPass, {}}),
        c.check.warn
            ? absl::StrCat(
                  ", warn ",
                  CheckValueText(CheckResult{
                      c.check, *c.check.warn, TensorStatus::kPass, {}}))
            : std::string(),
        "): ", std::string(TensorStatusName(c.status)), "\n");
  }
  for (const std::string& n : t.notes)
    absl::StrAppend(&body, "note: ", n, "\n");
  return body;
}

}  // namespace

std::string RenderJunit(const Report& report) {
  int64_t failures = 0, tests = 0;
  for (const CheckpointResult& c : report.checkpoints) {
    tests += c.tensors + (c.reasons.empty() ? 0 : 1);
    failures += c.failed_tensors + (c.reasons.empty() ? 0 : 1);
  }
  const std::string report_failure = absl::StrJoin(report.reasons, "; ");
  if (!report.reasons.empty()) {
    ++tests;
    ++failures;
  }
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  absl::StrAppend(&out, "<testsuites name=\"reprod\" tests=\"", tests,
                  "\" failures=\"", failures, "\" errors=\"0\">\n");
  if (!report.reasons.empty()) {
    // Report-level failures ("nothing compared") belong to no checkpoint.
    absl::StrAppend(&out,
                    "  <testsuite name=\"[report]\" tests=\"1\" "
                    "failures=\"1\" errors=\"0\" skipped=\"0\">\n"
                    "    <testcase classname=\"[report]\" name=\"[report]\">"
                    "\n      <failure message=\"",
                    Xml(report_failure), "\" type=\"report\">",
                    Xml(report_failure),
                    "</failure>\n    </testcase>\n  </testsuite>\n");
  }
  for (const CheckpointResult& c : report.checkpoints) {
    const int64_t suite_tests = c.tensors + (c.reasons.empty() ? 0 : 1);
    const int64_t suite_failures =
        c.failed_tensors + (c.reasons.empty() ? 0 : 1);
    const std::string cls = Xml(c.name);
    absl::StrAppend(&out, "  <testsuite name=\"", cls, "\" tests=\"",
                    suite_tests, "\" failures=\"", suite_failures,
                    "\" errors=\"0\" skipped=\"0\">\n");
    absl::StrAppend(
        &out, "    <properties>\n", "      <property name=\"ref\" value=\"",
        Xml(report.ref), "\"/>\n      <property name=\"cand\" value=\"",
        Xml(report.cand), "\"/>\n      <property name=\"policy\" value=\"",
        Xml(report.policy), "\"/>\n      <property name=\"backend\" value=\"",
        Xml(report.backend), "\"/>\n    </properties>\n");
    if (!c.reasons.empty()) {
      std::string msg;
      for (const std::string& r : c.reasons) {
        absl::StrAppend(&msg, msg.empty() ? "" : "; ", r);
      }
      absl::StrAppend(&out, "    <testcase classname=\"", cls, "\" name=\"[",
                      cls, "]\">\n      <failure message=\"", Xml(msg),
                      "\" type=\"checkpoint\">", Xml(msg),
                      "</failure>\n    </testcase>\n");
    }
    for (const TensorResult& t : report.tensors) {
      if (t.checkpoint != c.name) continue;
      absl::StrAppend(&out, "    <testcase classname=\"", cls, "\" name=\"",
                      Xml(t.DisplayKey()), "\"");
      if (t.status == TensorStatus::kPass && t.notes.empty()) {
        out += "/>\n";
        continue;
      }
      out += ">\n";
      if (IsPassing(t.status)) {
        absl::StrAppend(
            &out, "      <system-out>",
            Xml(absl::StrCat(t.reason.empty()
                                 ? std::string()
                                 : absl::StrCat("warn: ", t.reason, "\n"),
                             CheckLines(t))),
            "</system-out>\n");
      } else {
        absl::StrAppend(
            &out, "      <failure message=\"", Xml(DescribeTensor(t)),
            "\" type=\"", std::string(TensorStatusName(t.status)), "\">",
            Xml(absl::StrCat(DescribeTensor(t), "\n", CheckLines(t))),
            "</failure>\n");
      }
      out += "    </testcase>\n";
    }
    out += "  </testsuite>\n";
  }
  out += "</testsuites>\n";
  return out;
}

}  // namespace reprod::core::internal

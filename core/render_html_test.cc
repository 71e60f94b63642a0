// kHtml: escaping, the first failure, severity order, drift marks, histogram
// bars, and that the page is self-contained (no script, no URL).
#include <cstring>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include "core/compare.h"
#include "core/fake_backend_test_util.h"
#include "core/report.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::core {
namespace {

using ::reprod::core::testing::FakeBackend;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr char kHostile[] = "<script>alert(1)</script>\"'&";
constexpr char kHostileEscaped[] =
    "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;";

Tensor F64(Shape shape, const std::vector<double>& v) {
  absl::StatusOr<Tensor> t =
      Tensor::Allocate(DType::kFloat64, std::move(shape));
  EXPECT_TRUE(t.ok());
  std::memcpy(t->mutable_data(), v.data(), v.size() * sizeof(double));
  return *t;
}

TensorEntry E(std::string key, Tensor t, std::optional<int64_t> step = {}) {
  return TensorEntry{std::move(key), step, std::move(t)};
}

// forward: "ok" passes, "small" is 10x past mean_abs <= 1e-6, kHostile
// ~2000x (d = 2^-9 exactly), "nan" NaN (infinitely bad); loss: 5 steps, steps 3 and 4 fail.
// Cand order puts "small" first, so it is the first failure.
Report HostileReport() {
  const std::vector<double> base = {1, 2, 3, 4};
  auto plus = [&](double d) {
    std::vector<double> v = base;
    for (double& x : v) x += d;
    return F64({2, 2}, v);
  };
  RunData ref{kHostile, {{"forward", {}}, {"loss", {}}}};
  RunData cand{kHostile, {{"forward", {}}, {"loss", {}}}};
  for (const char* k : {"small", "ok", kHostile, "nan"}) {
    ref.checkpoints[0].tensors.push_back(E(k, plus(0)));
  }
  cand.checkpoints[0].tensors = {E("small", plus(1e-5)), E("ok", plus(0)),
                                 E(kHostile, plus(0x1p-9)),
                                 E("nan", F64({2, 2}, {1, kNaN, 3, 4}))};
  const double loss_diff[] = {0, 1e-8, 1e-7, 1e-4, 1e-2};
  for (int s = 0; s < 5; ++s) {
    ref.checkpoints[1].tensors.push_back(E("loss", F64({}, {2.5}), s));
    cand.checkpoints[1].tensors.push_back(
        E("loss", F64({}, {2.5 + loss_diff[s]}), s));
  }
  FakeBackend backend;
  absl::StatusOr<Report> r =
      CompareRuns(ref, cand, *PresetPolicy("reprod"), backend);
  EXPECT_TRUE(r.ok()) << r.status();
  r->policy = kHostile;
  r->reasons.push_back(absl::StrCat("reason ", kHostile));
  for (TensorResult& t : r->tensors) {
    if (t.key == "small") t.notes.push_back(absl::StrCat("note ", kHostile));
  }
  return *r;
}

std::string Html(const Report& r) {
  absl::StatusOr<std::string> html = RenderReport(r, ReportFormat::kHtml);
  EXPECT_TRUE(html.ok()) << html.status();
  return *html;
}

int Count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos;
       p = s.find(needle, p + needle.size())) {
    ++n;
  }
  return n;
}

// The text of the first element starting with `open` up to `close`.
std::string Element(const std::string& html, const std::string& open,
                    const std::string& close = "</svg>") {
  const size_t b = html.find(open);
  if (b == std::string::npos) return "";
  return html.substr(b, html.find(close, b) - b + close.size());
}

TEST(RenderHtmlTest, ParsesFormatName) {
  EXPECT_EQ(*ParseReportFormat("html"), ReportFormat::kHtml);
}

TEST(RenderHtmlTest, EscapesEverythingFromData) {
  const Report r = HostileReport();
  ASSERT_FALSE(r.passed);
  const std::string html = Html(r);
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("alert(1)</")));
  EXPECT_THAT(html, Not(HasSubstr("\"'&")));
  // ref, cand, policy, the key (row, card, heat map tooltip none: forward
  // has no steps), the note and the report reason, all escaped.
  EXPECT_THAT(html, HasSubstr(absl::StrCat("<dd class=\"ref\">",
                                           kHostileEscaped, "</dd>")));
  EXPECT_THAT(html, HasSubstr(absl::StrCat("<dd class=\"policy\">",
                                           kHostileEscaped, "</dd>")));
  EXPECT_THAT(html, HasSubstr(absl::StrCat("<li>note ", kHostileEscaped)));
  EXPECT_THAT(html, HasSubstr(absl::StrCat("<li>reason ", kHostileEscaped)));
  EXPECT_GE(Count(html, kHostileEscaped), 6);
}

TEST(RenderHtmlTest, SelfContainedNoUrls) {
  const std::string html = Html(HostileReport());
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("url(")));
  EXPECT_THAT(html, Not(HasSubstr("@import")));
  const std::regex attr(R"re(\b(src|href)\s*=\s*"([^"]*)")re");
  int hrefs = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), attr);
       it != std::sregex_iterator(); ++it) {
    const std::string target = (*it)[2];
    ++hrefs;
    EXPECT_TRUE(target.rfind("#", 0) == 0 || target == "data:,") << target;
    EXPECT_EQ(target.find("//"), std::string::npos) << target;
  }
  EXPECT_GT(hrefs, 4);  // links to failure cards and rows exist
}

TEST(RenderHtmlTest, FirstFailureHighlightedAndLinked) {
  const Report r = HostileReport();
  ASSERT_TRUE(r.first_failure.has_value());
  ASSERT_EQ(r.first_failure->key, "small");
  // "small" is tensor 0 of the report.
  const std::string html = Html(r);
  const std::string section = Element(html, "<section id=\"first-failure\"",
                                      "</section>");
  EXPECT_THAT(section, HasSubstr("href=\"#f-0\">forward/small</a>"));
  EXPECT_THAT(html, HasSubstr("<tr id=\"t-0\" class=\"fail first-failure\">"));
  EXPECT_THAT(html, HasSubstr("<div class=\"failure first-failure\" id=\"f-0\">"));
  EXPECT_EQ(Count(html, " first-failure\""), 2);  // one row, one card
}

TEST(RenderHtmlTest, FailuresSortedBySeverity) {
  const std::string html = Html(HostileReport());
  // Severities by hand: nan inf, loss@4 1e4, hostile 1953, loss@3 100,
  // small 10.
  const std::vector<std::string> order = {
      "forward/nan", "loss/loss@4", absl::StrCat("forward/", kHostileEscaped),
      "loss/loss@3", "forward/small"};
  const std::string failures = Element(html, "<section id=\"failures\"",
                                       "</section>");
  size_t last = 0;
  for (const std::string& k : order) {
    const size_t p = failures.find(absl::StrCat("\">", k, "</a>"));
    ASSERT_NE(p, std::string::npos) << k;
    EXPECT_GT(p, last) << k;
    last = p;
  }
  EXPECT_EQ(Count(failures, "<div class=\"failure"), 5);
}

TEST(RenderHtmlTest, DriftChartMarksFailingSteps) {
  const std::string html = Html(HostileReport());
  EXPECT_EQ(Count(html, "<svg class=\"drift\""), 1);  // only loss has steps
  const std::string drift = Element(html, "<svg class=\"drift\"");
  EXPECT_EQ(Count(drift, "<circle class=\"point fail\""), 2);
  EXPECT_EQ(Count(drift, "<circle class=\"point pass\""), 3);
  EXPECT_EQ(Count(drift, "<line class=\"bound\""), 1);
  EXPECT_THAT(drift, HasSubstr("bound 1e-06"));
  // Step 0 has error 0: drawn on the bottom edge (y = 220 - 40).
  EXPECT_THAT(drift, HasSubstr("cy=\"180.0\""));
}

TEST(RenderHtmlTest, HistogramHasNineteenBarsInTheRightBin) {
  const std::string html = Html(HostileReport());
  EXPECT_EQ(Count(html, "<svg class=\"histogram\""), 5);
  // The first card is "nan": 3 elements with d == 0 (bin 0), the NaN one
  // unbinned.
  const std::string first = Element(html, "<svg class=\"histogram\"");
  EXPECT_EQ(Count(first, "<rect class=\"bar"), 19);
  EXPECT_EQ(Count(first, "<rect class=\"bar empty\""), 18);
  EXPECT_THAT(first, HasSubstr("<title>|d| = 0: 3</title>"));
  // The hostile key's card: 4 elements with d = 2^-9 ~ 1.95e-3 (bin 11).
  const size_t card = html.find(absl::StrCat("forward/", kHostileEscaped,
                                             "</a>"),
                                html.find("<section id=\"failures\""));
  const std::string hist = Element(html.substr(card), "<svg class=\"histogram\"");
  EXPECT_EQ(Count(hist, "<rect class=\"bar"), 19);
  EXPECT_THAT(hist, HasSubstr("<title>1e-3 &lt;= |d| &lt; 1e-2: 4</title>"));
}

TEST(RenderHtmlTest, TableHasEveryRowPassingOnesHiddenByCss) {
  const Report r = HostileReport();
  const std::string html = Html(r);
  EXPECT_EQ(Count(html, "<tr id=\"t-"), static_cast<int>(r.tensors.size()));
  // "ok" and loss@0..2 pass.
  EXPECT_EQ(Count(html, "\" class=\"pass\">"), 4);
  EXPECT_THAT(html, HasSubstr("<input type=\"checkbox\" id=\"diff-only\" checked>"));
  EXPECT_THAT(html, HasSubstr("#diff-only:checked ~ .tables tr.pass{display:none}"));
}

TEST(RenderHtmlTest, ChecklistListsAcceptancePoints) {
  const std::string html = Html(HostileReport());
  const std::string list = Element(html, "<table class=\"checklist\"",
                                   "</table>");
  EXPECT_THAT(list, HasSubstr("<tr class=\"point fail\"><td class=\"key\">forward"));
  EXPECT_THAT(list, HasSubstr("<tr class=\"point fail\"><td class=\"key\">loss"));
  EXPECT_THAT(list, HasSubstr("<tr class=\"point missing\"><td class=\"key\">metric"));
  // The worst of forward is "nan".
  EXPECT_THAT(list, HasSubstr("nan: mean_abs nan (max 1e-06)"));
}

TEST(RenderHtmlTest, HeatMapOneCellPerSteppedTensor) {
  const std::string html = Html(HostileReport());
  const std::string map = Element(html, "<svg class=\"heatmap\"");
  EXPECT_EQ(Count(map, "<rect class=\"cell "), 5);
  EXPECT_EQ(Count(map, "<rect class=\"cell fail\""), 2);
}

TEST(RenderHtmlTest, CapsFailureCardsButKeepsTheFirstFailure) {
  // 250 failing keys; the first (in cand order) is the least severe, so it
  // ranks last and would fall past the 200-card cap.
  RunData ref{"r", {{"forward", {}}}}, cand{"c", {{"forward", {}}}};
  for (int i = 0; i < 250; ++i) {
    const std::string key = absl::StrCat("k", i);
    ref.checkpoints[0].tensors.push_back(E(key, F64({1}, {1})));
    cand.checkpoints[0].tensors.push_back(E(key, F64({1}, {1 + 1e-5 * (i + 1)})));
  }
  FakeBackend backend;
  absl::StatusOr<Report> r =
      CompareRuns(ref, cand, *PresetPolicy("reprod"), backend);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->first_failure->key, "k0");
  const std::string html = Html(*r);
  EXPECT_EQ(Count(html, "<div class=\"failure"), 201);
  EXPECT_THAT(html, HasSubstr("<div class=\"failure first-failure\" id=\"f-0\">"));
  EXPECT_THAT(html, HasSubstr("50 more failing tensors"));
  EXPECT_EQ(Count(html, "<tr id=\"t-"), 250);
}

TEST(RenderHtmlTest, PassingReportHasNoFailureSections) {
  RunData run{"r", {{"forward", {E("a", F64({1}, {1}))}}}};
  FakeBackend backend;
  absl::StatusOr<Report> r =
      CompareRuns(run, run, *PresetPolicy("reprod"), backend);
  ASSERT_TRUE(r.ok());
  const std::string html = Html(*r);
  EXPECT_THAT(html, HasSubstr("<header class=\"pass\">"));
  EXPECT_THAT(html, Not(HasSubstr("id=\"failures\"")));
  EXPECT_THAT(html, Not(HasSubstr("id=\"first-failure\"")));
  EXPECT_THAT(html, Not(HasSubstr("<svg")));
}

}  // namespace
}  // namespace reprod::core

#include "core/report.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "core/compare.h"
#include "core/fake_backend_test_util.h"
#include "core/py_float.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace reprod::core {
namespace {

using ::reprod::core::testing::FakeBackend;
using ::reprod::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor F64(Shape shape, const std::vector<double>& v) {
  absl::StatusOr<Tensor> t =
      Tensor::Allocate(DType::kFloat64, std::move(shape));
  EXPECT_TRUE(t.ok());
  if (!v.empty())
    std::memcpy(t->mutable_data(), v.data(), v.size() * sizeof(double));
  return *t;
}

TensorEntry E(std::string key, Tensor t, std::optional<int64_t> step = {}) {
  return TensorEntry{std::move(key), step, std::move(t)};
}

Report Compare(const RunData& ref, const RunData& cand, const Policy& p) {
  FakeBackend backend;
  absl::StatusOr<Report> r = CompareRuns(ref, cand, p, backend);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

// A fixed instant and the prefix it prints as, in the local zone.
const absl::Time kAt = absl::FromCivil(
    absl::CivilSecond(2021, 11, 17, 21, 44, 19), absl::LocalTimeZone());
constexpr char kPrefix[] = "[2021/11/17 21:44:19] root INFO: ";
RenderOptions At() { return RenderOptions{kAt}; }

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  EXPECT_EQ(lines.back(), "");  // every line ends with '\n'
  lines.pop_back();
  return lines;
}

// reprod_log's message shapes, after the "[ts] root INFO: " prefix.
const std::regex kLogLine(
    R"(^\[\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\] root INFO: )"
    R"((.+: |\t\w+ diff: check passed: (True|False), value: \S+|\t.+|.+))");
const std::regex kCheckLine(
    R"(^\[\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\] root INFO: )"
    R"(\t(mean|max|min|\w+) diff: check passed: (True|False), value: )"
    R"((-?\d+(\.\d+)?(e[+-]\d\d+)?|nan|-?inf|\d+)$)");

TEST(RenderTextTest, SingleCheckpointIsReprodLogFormat) {
  // The lr example of the guide: one key passes exactly, one fails.
  RunData ref{"torch",
              {{"lr",
                {E("step_100_linear_lr", F64({}, {0.1})),
                 E("step_500_cosine_lr", F64({}, {0.5}))}}}};
  RunData cand{
      "paddle",
      {{"lr",
        {E("step_100_linear_lr", F64({}, {0.1})),
         E("step_500_cosine_lr", F64({}, {0.5 + 9.35605818719964e-06}))}}}};
  Report r = Compare(ref, cand, *PresetPolicy("reprod"));
  ASSERT_OK_AND_ASSIGN(std::string text,
                       RenderReport(r, ReportFormat::kText, At()));
  const double d = (0.5 + 9.35605818719964e-06) - 0.5;
  const std::vector<std::string> lines = Lines(text);
  EXPECT_THAT(
      lines,
      ElementsAre(
          std::string(kPrefix) + "step_100_linear_lr: ",
          std::string(kPrefix) + "\tmean diff: check passed: True, value: 0.0",
          std::string(kPrefix) + "step_500_cosine_lr: ",
          std::string(kPrefix) +
              "\tmean diff: check passed: False, value: " + PyFloatRepr(d),
          std::string(kPrefix) + "diff check failed"));
  for (const std::string& line : lines) {
    EXPECT_TRUE(std::regex_match(line, kLogLine)) << line;
  }
  EXPECT_TRUE(std::regex_match(lines[1], kCheckLine));
  EXPECT_TRUE(std::regex_match(lines[3], kCheckLine));
}

TEST(RenderTextTest, PassingReportAndNowTimestamp) {
  RunData run{
      "r",
      {{"bp_align", {E("loss_0", F64({}, {1})), E("loss_1", F64({}, {2}))}}}};
  Report r = Compare(run, run, *PresetPolicy("reprod"));
  ASSERT_OK_AND_ASSIGN(std::string text, RenderReport(r, ReportFormat::kText));
  const std::vector<std::string> lines = Lines(text);
  ASSERT_EQ(lines.size(), 5u);
  for (const std::string& line : lines) {
    EXPECT_TRUE(std::regex_match(line, kLogLine)) << line;
  }
  EXPECT_THAT(lines[0], HasSubstr("root INFO: loss_0: "));
  EXPECT_THAT(lines[4], HasSubstr("root INFO: diff check passed"));
}

TEST(RenderTextTest, EachLineReflectsItsOwnCheck) {
  // reprod_log's flag is cumulative within a key; ours is per check.
  RunData ref{"r", {{"fwd", {E("x", F64({2}, {1, 1}))}}}};
  RunData cand{"c", {{"fwd", {E("x", F64({2}, {1, 1.5}))}}}};
  Report r = Compare(ref, cand, *ReprodLogPolicy(0.1, {"max", "min"}));
  ASSERT_OK_AND_ASSIGN(std::string text,
                       RenderReport(r, ReportFormat::kText, At()));
  EXPECT_THAT(
      Lines(text),
      ElementsAre(
          std::string(kPrefix) + "x: ",
          std::string(kPrefix) + "\tmax diff: check passed: False, value: 0.5",
          std::string(kPrefix) + "\tmin diff: check passed: True, value: 0.0",
          std::string(kPrefix) + "diff check failed"));
}

TEST(RenderTextTest, NaNFailsAndOtherMetricsUseTheirNames) {
  RunData ref{"r", {{"fwd", {E("x", F64({2}, {1, kNaN}))}}}};
  RunData cand{"c", {{"fwd", {E("x", F64({2}, {1, 1}))}}}};
  Policy p = *PresetPolicy("reprod");
  p.defaults.push_back(MinCheck(Metric::kCosine, 0.9));
  p.defaults.push_back(AllcloseCheck());
  Report r = Compare(ref, cand, p);
  ASSERT_OK_AND_ASSIGN(std::string text,
                       RenderReport(r, ReportFormat::kText, At()));
  EXPECT_THAT(Lines(text),
              ElementsAre(std::string(kPrefix) + "x: ",
                          std::string(kPrefix) +
                              "\tmean diff: check passed: False, value: nan",
                          std::string(kPrefix) +
                              "\tcosine diff: check passed: False, value: nan",
                          std::string(kPrefix) +
                              "\tallclose diff: check passed: False, value: 1",
                          std::string(kPrefix) + "diff check failed"));
}

TEST(RenderTextTest, MultiCheckpointMismatchMissingAndReasons) {
  RunData ref{"r",
              {{"forward",
                {E("a", F64({4, 1}, {1, 2, 3, 4})), E("gone", F64({1}, {1}))}},
               {"bp_align", {E("loss", F64({}, {1}), 0)}}}};
  RunData cand{
      "c",
      {{"forward",
        {E("a", F64({2, 2}, {1, 2, 3, 4})), E("extra", F64({1}, {1}))}},
       {"bp_align", {E("loss", F64({}, {1}), 0)}}}};
  Policy p = *PresetPolicy("reprod");
  p.checkpoints.push_back({"bp_align", CheckpointPolicy{{}, 2, {}}});
  Report r = Compare(ref, cand, p);
  ASSERT_OK_AND_ASSIGN(std::string text,
                       RenderReport(r, ReportFormat::kText, At()));
  const std::string P = kPrefix;
  EXPECT_THAT(Lines(text),
              ElementsAre(P + "forward/a: ",
                          P + "\tshape mismatch: ref (4, 1) vs cand (2, 2)",
                          P + "forward/extra: ", P + "\tmissing in ref",
                          P + "forward/gone: ", P + "\tmissing in cand",
                          P + "bp_align/loss@0: ",
                          P + "\tmean diff: check passed: True, value: 0.0",
                          P + "checkpoint 'bp_align' needs at least 2 steps in "
                              "cand, found 1",
                          P + "diff check failed"));

  // The per-checkpoint log of `reprodctl review`: bare keys, its verdict.
  ASSERT_OK_AND_ASSIGN(std::string fwd,
                       RenderReprodLogText(r, "forward", At()));
  EXPECT_THAT(
      Lines(fwd),
      ElementsAre(P + "a: ", P + "\tshape mismatch: ref (4, 1) vs cand (2, 2)",
                  P + "extra: ", P + "\tmissing in ref", P + "gone: ",
                  P + "\tmissing in cand", P + "diff check failed"));
  ASSERT_OK_AND_ASSIGN(std::string bp,
                       RenderReprodLogText(r, "bp_align", At()));
  EXPECT_THAT(Lines(bp).back(), P + "diff check failed");
  EXPECT_THAT(RenderReprodLogText(r, "nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'nope'")));
}

// ---------------------------------------------------------------------------
// JSON

void ExpectType(const Json& obj, const char* field, Json::value_t type) {
  ASSERT_TRUE(obj.contains(field))
      << "missing field " << field << " in " << obj.dump();
  EXPECT_EQ(obj[field].type(), type) << field << " in " << obj.dump();
}

void ExpectInteger(const Json& obj, const char* field) {
  ASSERT_TRUE(obj.contains(field)) << "missing field " << field;
  EXPECT_TRUE(obj[field].is_number_integer()) << field << ": " << obj.dump();
}

void ExpectNumber(const Json& obj, const char* field) {
  ASSERT_TRUE(obj.contains(field)) << field;
  const Json& v = obj[field];
  EXPECT_TRUE(
      v.is_number() ||
      (v.is_string() && (v == "NaN" || v == "Infinity" || v == "-Infinity")))
      << field << ": " << v.dump();
}

Report RichReport() {
  RunData ref{"torch-run",
              {{"forward",
                {E("logits", F64({2, 3}, {1, 2, 3, 4, 5, 6})),
                 E("nan", F64({2}, {1, kNaN})), E("inf", F64({2}, {-kInf, 1})),
                 E("shape", F64({4, 1}, {1, 2, 3, 4})),
                 E("only_ref", F64({3}, {1, 2, 3}))}},
               {"loss", {E("loss", F64({}, {0.1 + 0.2}), 7)}}}};
  RunData cand{
      "paddle-run",
      {{"forward",
        {E("logits", F64({3, 2}, {1, 4, 2, 5, 3, 6.5})),
         E("nan", F64({2}, {1, 1})), E("inf", F64({2}, {0, 1})),
         E("shape", F64({2, 2}, {1, 2, 3, 4})), E("only_cand", F64({1}, {1}))}},
       {"loss", {E("loss", F64({}, {0.3}), 7)}}}};
  Policy p = *PresetPolicy("reprod");
  p.defaults.push_back(MinCheck(Metric::kCosine, 0.5, 0.99));
  p.defaults.push_back(AllcloseCheck(1e-3, 0.0));
  return Compare(ref, cand, p);
}

TEST(RenderJsonTest, ContractFieldsAndTypes) {
  const Report r = RichReport();
  ASSERT_OK_AND_ASSIGN(std::string text, RenderReport(r, ReportFormat::kJson));
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << text;

  using V = Json::value_t;
  EXPECT_EQ(j["schema"], "reprod.report.v1");
  ExpectType(j, "passed", V::boolean);
  EXPECT_EQ(j["passed"], false);
  EXPECT_EQ(j["ref"], "torch-run");
  EXPECT_EQ(j["cand"], "paddle-run");
  EXPECT_EQ(j["policy"], "reprod");
  EXPECT_EQ(j["backend"], "fake");
  ExpectType(j, "summary", V::object);
  ExpectType(j, "reasons", V::array);
  for (const char* f : {"tensors", "passed", "warned", "failed",
                        "missing_in_ref", "missing_in_cand", "compared"}) {
    ExpectInteger(j["summary"], f);
  }
  EXPECT_EQ(j["summary"]["tensors"], 7);
  EXPECT_EQ(j["summary"]["missing_in_ref"], 1);
  EXPECT_EQ(j["summary"]["missing_in_cand"], 1);
  ExpectType(j, "first_failure", V::object);
  EXPECT_EQ(j["first_failure"]["checkpoint"], "forward");
  EXPECT_EQ(j["first_failure"]["key"], "logits");  // cosine ok, mean fails
  EXPECT_TRUE(j["first_failure"]["step"].is_null());

  ExpectType(j, "checkpoints", V::array);
  ASSERT_EQ(j["checkpoints"].size(), 2u);
  for (const Json& c : j["checkpoints"]) {
    ExpectType(c, "name", V::string);
    ExpectType(c, "passed", V::boolean);
    ExpectInteger(c, "tensors");
  }
  EXPECT_EQ(j["checkpoints"][0]["name"], "forward");
  EXPECT_EQ(j["checkpoints"][0]["tensors"], 6);

  ExpectType(j, "tensors", V::array);
  ASSERT_EQ(j["tensors"].size(), 7u);
  for (const Json& t : j["tensors"]) {
    for (const char* f : {"checkpoint", "key", "status"}) {
      ExpectType(t, f, V::string);
    }
    ASSERT_TRUE(t.contains("step"));
    EXPECT_TRUE(t["step"].is_null() || t["step"].is_number_integer());
    for (const char* f : {"dtype_ref", "dtype_cand"}) {
      ASSERT_TRUE(t.contains(f));
      EXPECT_TRUE(t[f].is_null() || t[f].is_string());
    }
    for (const char* f : {"shape_ref", "shape_cand"}) {
      ASSERT_TRUE(t.contains(f));
      EXPECT_TRUE(t[f].is_null() || t[f].is_array());
    }
    ExpectType(t, "transposed", V::boolean);
    ASSERT_TRUE(t.contains("backend"));
    EXPECT_TRUE(t["backend"].is_null() || t["backend"].is_string());
    ASSERT_TRUE(t.contains("stats"));
    ExpectType(t, "checks", V::array);
    const std::string status = t["status"];
    EXPECT_THAT(status,
                ::testing::AnyOf("pass", "warn", "fail", "missing_in_ref",
                                 "missing_in_cand", "shape_mismatch"));
    if (t["stats"].is_null()) {
      EXPECT_THAT(status, ::testing::AnyOf("missing_in_ref", "missing_in_cand",
                                           "shape_mismatch"));
      continue;
    }
    const Json& s = t["stats"];
    for (const char* f : {"count", "mismatches", "nan_ref", "nan_cand",
                          "inf_ref", "inf_cand"}) {
      ExpectInteger(s, f);
    }
    for (const char* f :
         {"mean_abs", "max_abs", "min_abs", "mean_rel", "max_rel", "rmse",
          "cosine", "ref_at_max", "cand_at_max"}) {
      ExpectNumber(s, f);
    }
    ExpectType(s, "max_abs_index", V::array);
    ExpectType(s, "histogram", V::array);
    EXPECT_EQ(s["histogram"].size(), 19u);
    ASSERT_EQ(t["checks"].size(), 3u);
    for (const Json& c : t["checks"]) {
      ExpectType(c, "metric", V::string);
      ExpectNumber(c, "value");
      EXPECT_TRUE(c.contains("max") != c.contains("min")) << c.dump();
      ASSERT_TRUE(c.contains("warn"));
      EXPECT_TRUE(c["warn"].is_null() || c["warn"].is_number());
      ExpectType(c, "status", V::string);
    }
    EXPECT_EQ(t["checks"][1]["metric"], "cosine");
    EXPECT_EQ(t["checks"][1]["min"], 0.5);
    EXPECT_EQ(t["checks"][1]["warn"], 0.99);
    EXPECT_TRUE(t["checks"][0]["warn"].is_null());
  }

  // Individual tensors.
  const Json& logits = j["tensors"][0];
  EXPECT_EQ(logits["transposed"], true);
  EXPECT_EQ(logits["shape_ref"], Json::parse("[2, 3]"));
  EXPECT_EQ(logits["shape_cand"], Json::parse("[3, 2]"));
  EXPECT_EQ(logits["dtype_ref"], "float64");
  EXPECT_EQ(logits["stats"]["max_abs_index"], Json::parse("[1, 2]"));
  EXPECT_EQ(logits["stats"]["ref_at_max"], 6.0);
  EXPECT_EQ(logits["stats"]["cand_at_max"], 6.5);
  EXPECT_EQ(logits["stats"]["mean_abs"].get<double>(), 0.5 / 6);
  EXPECT_EQ(logits["status"], "fail");

  const Json& nan = j["tensors"][1];
  EXPECT_EQ(nan["stats"]["mean_abs"], "NaN");
  EXPECT_EQ(nan["stats"]["nan_ref"], 1);
  EXPECT_EQ(nan["checks"][0]["value"], "NaN");
  EXPECT_EQ(nan["stats"]["ref_at_max"], "NaN");

  const Json& inf = j["tensors"][2];
  EXPECT_EQ(inf["stats"]["max_abs"], "Infinity");
  EXPECT_EQ(inf["stats"]["ref_at_max"], "-Infinity");

  const Json& shape = j["tensors"][3];
  EXPECT_EQ(shape["status"], "shape_mismatch");
  EXPECT_TRUE(shape["stats"].is_null());
  EXPECT_EQ(shape["shape_ref"], Json::parse("[4, 1]"));
  EXPECT_EQ(shape["shape_cand"], Json::parse("[2, 2]"));

  const Json& only_cand = j["tensors"][4];
  EXPECT_EQ(only_cand["status"], "missing_in_ref");
  EXPECT_TRUE(only_cand["shape_ref"].is_null());
  EXPECT_TRUE(only_cand["dtype_ref"].is_null());
  EXPECT_EQ(only_cand["shape_cand"], Json::parse("[1]"));
  const Json& only_ref = j["tensors"][5];
  EXPECT_EQ(only_ref["status"], "missing_in_cand");
  EXPECT_TRUE(only_ref["shape_cand"].is_null());
  EXPECT_EQ(only_ref["shape_ref"], Json::parse("[3]"));

  const Json& loss = j["tensors"][6];
  EXPECT_EQ(loss["step"], 7);
  EXPECT_EQ(loss["checkpoint"], "loss");
  // Doubles round-trip exactly: |0.3 - (0.1 + 0.2)| = 2^-54.
  EXPECT_EQ(loss["stats"]["mean_abs"].get<double>(), std::ldexp(1.0, -54));
  EXPECT_EQ(loss["stats"]["ref_at_max"].get<double>(), 0.1 + 0.2);
  EXPECT_THAT(text, HasSubstr("\"ref_at_max\": 0.30000000000000004"));
  EXPECT_THAT(text, HasSubstr("\"mean_abs\": 5.551115123125783e-17"));
  EXPECT_THAT(loss["stats"]["max_abs_index"], Json::parse("[]"));
}

TEST(RenderJsonTest, PassingReportHasNullFirstFailureAndEscapes) {
  RunData run{"run \"q\"\n\\", {{"fwd", {E("k\x01/\xff", F64({1}, {1}))}}}};
  Report r = Compare(run, run, *PresetPolicy("reprod"));
  ASSERT_OK_AND_ASSIGN(std::string text, RenderReport(r, ReportFormat::kJson));
  const Json j = Json::parse(text, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << text;
  EXPECT_TRUE(j["first_failure"].is_null());
  EXPECT_EQ(j["passed"], true);
  EXPECT_EQ(j["ref"], "run \"q\"\n\\");
  EXPECT_EQ(j["tensors"][0]["key"], "k\x01/\xEF\xBF\xBD");  // invalid UTF-8
}

TEST(RenderAllFormatsTest, ControlCharactersInKeysStayVisible) {
  const std::string key = "a\nb\x1b[2J\x7f\u202e\t";
  RunData ref{"r", {{"fwd", {E(key, F64({1}, {1}))}}}};
  RunData cand{"c", {{"fwd", {E(key, F64({1}, {2}))}}}};
  Report r = Compare(ref, cand, *PresetPolicy("reprod"));
  ASSERT_OK_AND_ASSIGN(std::string text, RenderReport(r, ReportFormat::kText, At()));
  EXPECT_EQ(Lines(text)[0], std::string(kPrefix) + "a\\nb\\x1b[2J\\x7f\\u202e\\t: ");
  ASSERT_OK_AND_ASSIGN(std::string md, RenderReport(r, ReportFormat::kMarkdown));
  EXPECT_THAT(md, HasSubstr("`a\\nb\\x1b[2J\\x7f\\u202e\\t`"));
  ASSERT_OK_AND_ASSIGN(std::string json, RenderReport(r, ReportFormat::kJson));
  EXPECT_THAT(json, HasSubstr("\"a\\nb\\u001b[2J\\u007f\\u202e\\t\""));
  EXPECT_EQ(Json::parse(json)["tensors"][0]["key"], key);
  ASSERT_OK_AND_ASSIGN(std::string junit, RenderReport(r, ReportFormat::kJunit));
  EXPECT_THAT(junit, HasSubstr("a&#10;b?[2J?&#x202e;&#9;"));
  ASSERT_OK_AND_ASSIGN(std::string html, RenderReport(r, ReportFormat::kHtml));
  EXPECT_THAT(html, HasSubstr("a&#10;b?[2J?\\u202e&#9;"));
  for (const std::string* out : {&text, &md, &json, &junit, &html}) {
    for (size_t i = 0; i < out->size(); ++i) {
      const auto c = static_cast<unsigned char>((*out)[i]);
      ASSERT_TRUE((c >= 0x20 && c != 0x7f) || c == '\n' || (out == &text && c == '\t'))
          << "byte " << int{c} << " at " << i;
    }
    EXPECT_EQ(out->find("\u202e"), std::string::npos);
  }
}

TEST(RenderJsonTest, EmptyPair) {
  RunData run{"r", {{"fwd", {E("e", F64({0, 2}, {}))}}}};
  Report r = Compare(run, run, *PresetPolicy("reprod"));
  ASSERT_OK_AND_ASSIGN(std::string text, RenderReport(r, ReportFormat::kJson));
  const Json j = Json::parse(text);
  const Json& s = j["tensors"][0]["stats"];
  EXPECT_EQ(s["count"], 0);
  EXPECT_TRUE(s["ref_at_max"].is_null());
  EXPECT_EQ(s["max_abs_index"], Json::parse("[]"));
  EXPECT_EQ(j["tensors"][0]["status"], "pass");
}

// ---------------------------------------------------------------------------
// JUnit and markdown

TEST(RenderAllFormatsTest, NothingComparedIsAFailureInEveryFormat) {
  Report r = Compare(RunData{"r", {}}, RunData{"c", {}},
                     *PresetPolicy("reprod"));
  ASSERT_FALSE(r.passed);
  const std::string reason = "nothing to compare: neither side holds a tensor";
  ASSERT_OK_AND_ASSIGN(std::string text,
                       RenderReport(r, ReportFormat::kText, At()));
  EXPECT_THAT(Lines(text), ElementsAre(std::string(kPrefix) + reason,
                                       std::string(kPrefix) +
                                           "diff check failed"));
  ASSERT_OK_AND_ASSIGN(std::string json, RenderReport(r, ReportFormat::kJson));
  const Json j = Json::parse(json);
  EXPECT_EQ(j["passed"], false);
  EXPECT_EQ(j["summary"]["compared"], 0);
  EXPECT_EQ(j["reasons"], Json::parse("[\"" + reason + "\"]"));
  ASSERT_OK_AND_ASSIGN(std::string junit,
                       RenderReport(r, ReportFormat::kJunit));
  EXPECT_THAT(junit, HasSubstr("tests=\"1\" failures=\"1\""));
  EXPECT_THAT(junit, HasSubstr("<failure message=\"" + reason +
                               "\" type=\"report\">"));
  ASSERT_OK_AND_ASSIGN(std::string md,
                       RenderReport(r, ReportFormat::kMarkdown));
  EXPECT_THAT(md, HasSubstr("# reprod report: FAILED"));
  EXPECT_THAT(md, HasSubstr("**" + reason + "**"));
}

TEST(RenderJunitTest, SuitesCasesAndFailures) {
  Report r = RichReport();
  ASSERT_OK_AND_ASSIGN(std::string xml, RenderReport(r, ReportFormat::kJunit));
  EXPECT_THAT(xml, HasSubstr("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
  EXPECT_THAT(
      xml, HasSubstr("<testsuites name=\"reprod\" tests=\"7\" failures=\"6\""));
  EXPECT_THAT(
      xml, HasSubstr("<testsuite name=\"forward\" tests=\"6\" failures=\"6\""));
  EXPECT_THAT(xml,
              HasSubstr("<testsuite name=\"loss\" tests=\"1\" failures=\"0\""));
  EXPECT_THAT(xml, HasSubstr("<testcase classname=\"loss\" name=\"loss@7\"/>"));
  EXPECT_THAT(xml,
              HasSubstr("<testcase classname=\"forward\" name=\"logits\">"));
  EXPECT_THAT(xml,
              HasSubstr("<failure message=\"mean_abs = 0.08333333333333333 "
                        "&gt; max 1e-06; allclose: 1 of 6 elements mismatch "
                        "(atol 0.001, rtol 0.0); largest error at [1, 2]: "
                        "ref 6.0, cand 6.5\" type=\"fail\">"));
  EXPECT_THAT(xml,
              HasSubstr("cosine = 0.9992228399077593 (min 0.5, warn 0.99): "
                        "pass&#10;"));
  EXPECT_THAT(xml, HasSubstr("type=\"shape_mismatch\""));
  EXPECT_THAT(xml, HasSubstr("type=\"missing_in_cand\""));
}

TEST(RenderJunitTest, EscapesAndCheckpointFailures) {
  RunData run{"a&b", {{"bp<1>", {E("k\"'<&>", F64({1}, {1}))}}}};
  Policy p = *PresetPolicy("reprod");
  p.checkpoints.push_back({"bp<1>", CheckpointPolicy{{}, 3, {}}});
  Report r = Compare(run, run, p);
  ASSERT_OK_AND_ASSIGN(std::string xml, RenderReport(r, ReportFormat::kJunit));
  EXPECT_THAT(xml, HasSubstr("name=\"k&quot;&#39;&lt;&amp;&gt;\""));
  EXPECT_THAT(xml, HasSubstr("<testsuite name=\"bp&lt;1&gt;\" tests=\"2\" "
                             "failures=\"1\""));
  EXPECT_THAT(xml, HasSubstr("name=\"[bp&lt;1&gt;]\""));
  EXPECT_THAT(xml, HasSubstr("needs at least 3 steps"));
  EXPECT_THAT(xml, HasSubstr("value=\"a&amp;b\""));
  EXPECT_THAT(xml, Not(HasSubstr("k\"'")));
}

TEST(RenderMarkdownTest, TablesAndDetails) {
  Report r = RichReport();
  ASSERT_OK_AND_ASSIGN(std::string md,
                       RenderReport(r, ReportFormat::kMarkdown));
  EXPECT_THAT(md, HasSubstr("# reprod report: FAILED"));
  EXPECT_THAT(md, HasSubstr("| 7 | 1 | 0 | 4 | 1 | 1 |"));
  EXPECT_THAT(md, HasSubstr("First failure: `forward/logits`"));
  EXPECT_THAT(md, HasSubstr("## Checkpoint `forward`: FAIL"));
  EXPECT_THAT(md, HasSubstr("## Checkpoint `loss`: PASS"));
  EXPECT_THAT(md, HasSubstr("| `logits` |  | FAIL (transposed) |"));
  EXPECT_THAT(md, HasSubstr("SHAPE MISMATCH"));
  EXPECT_THAT(md, HasSubstr("MISSING IN CAND"));
  EXPECT_THAT(md,
              HasSubstr("- `logits` (FAIL): mean_abs = 0.08333333333333333 > "
                        "max 1e-06; allclose: 1 of 6 elements mismatch "
                        "(atol 0.001, rtol 0.0); largest error at [1, 2]: "
                        "ref 6.0, cand 6.5\n"));
  EXPECT_THAT(md, HasSubstr("| `forward` | FAIL | 6 | 0 | 0 | 6 | `logits` "
                            "allclose 1 (max 0) |"));
  // No emoji: plain ASCII except for keys.
  for (unsigned char c : md) EXPECT_LT(c, 0x80);
}

TEST(RenderMarkdownTest, EscapesPipes) {
  RunData run{"r", {{"fwd", {E("a|b", F64({1}, {1}))}}}};
  Report r = Compare(run, run, *PresetPolicy("reprod"));
  ASSERT_OK_AND_ASSIGN(std::string md,
                       RenderReport(r, ReportFormat::kMarkdown));
  EXPECT_THAT(md, HasSubstr("`a\\|b`"));
}

TEST(RenderMarkdownTest, HostileNamesStayText) {
  // A key with backticks cannot close its code span; markup in free text
  // (a report-level reason lands in a list item) is backslash-escaped.
  RunData ref{"r", {{"fwd", {E("a``b<script>", F64({1}, {1}))}}}};
  RunData cand{"c", {{"fwd", {E("a``b<script>", F64({1}, {2}))}}}};
  Report r = Compare(ref, cand, *PresetPolicy("reprod"));
  r.reasons.push_back("<img src=x onerror=alert(1)>[x](javascript:y)");
  ASSERT_OK_AND_ASSIGN(std::string md, RenderReport(r, ReportFormat::kMarkdown));
  EXPECT_THAT(md, HasSubstr("``` a``b<script> ```"));
  EXPECT_THAT(md, Not(HasSubstr("`a``b")));
  EXPECT_THAT(md, HasSubstr("\\<img src=x onerror=alert(1)>[x\\](javascript:y)"));
}

TEST(ReportFormatTest, Parse) {
  EXPECT_EQ(*ParseReportFormat("text"), ReportFormat::kText);
  EXPECT_EQ(*ParseReportFormat("json"), ReportFormat::kJson);
  EXPECT_EQ(*ParseReportFormat("junit"), ReportFormat::kJunit);
  EXPECT_EQ(*ParseReportFormat("markdown"), ReportFormat::kMarkdown);
  EXPECT_EQ(*ParseReportFormat("md"), ReportFormat::kMarkdown);
  EXPECT_THAT(
      ParseReportFormat("yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'yaml'")));
}

}  // namespace
}  // namespace reprod::core

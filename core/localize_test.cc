// First-divergence localisation: CompareRuns over runs whose keys have the
// capture form, checked against hand-built expectations (which module was
// perturbed is known by construction), and its four renderings.
#include "core/internal/localize.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/compare.h"
#include "core/fake_backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace reprod::core {
namespace {

using ::reprod::core::internal::DivergenceModules;
using ::reprod::core::internal::ModuleRow;
using ::reprod::core::testing::FakeBackend;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

Tensor F32(std::vector<float> v) {
  absl::StatusOr<Tensor> t =
      Tensor::Allocate(DType::kFloat32, Shape{static_cast<int64_t>(v.size())});
  EXPECT_TRUE(t.ok());
  std::memcpy(t->mutable_data(), v.data(), v.size() * sizeof(float));
  return *t;
}

// A run of one checkpoint "layers" holding `keys` in this order, every
// tensor [1, 2, 3] except those in `off`, which are [1, 2, 4].
struct Entry {
  Entry(std::string k, std::optional<int64_t> s = {}, bool o = false)
      : key(std::move(k)), step(s), off(o) {}
  std::string key;
  std::optional<int64_t> step;
  bool off = false;
};

RunData MakeRun(const std::string& name, const std::vector<Entry>& entries,
            const std::string& checkpoint = "layers") {
  CheckpointData cp;
  cp.name = checkpoint;
  for (const Entry& e : entries) {
    cp.tensors.push_back(TensorEntry{e.key, e.step, F32({1, 2, e.off ? 4.0f : 3.0f})});
  }
  return RunData{name, {std::move(cp)}};
}

Report Compare(const RunData& ref, const RunData& cand, Policy policy = *PresetPolicy("reprod")) {
  FakeBackend backend;
  absl::StatusOr<Report> r = CompareRuns(ref, cand, policy, backend);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

TEST(ParseCaptureKeyTest, SplitsTheFourParts) {
  auto k = ParseCaptureKey("bert.encoder.layer.1.output.LayerNorm/forward/output/0");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->module, "bert.encoder.layer.1.output.LayerNorm");
  EXPECT_EQ(k->direction, "forward");
  EXPECT_EQ(k->role, "output");
  EXPECT_EQ(k->index, "0");
  k = ParseCaptureKey("m[1]/backward/grad_output/1/logits");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->module, "m[1]");
  EXPECT_EQ(k->index, "1/logits");
  EXPECT_TRUE(ParseCaptureKey("[root]/forward/input/0").has_value());
  k = ParseCaptureKey("enc.0.query/backward/param_grad/weight");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->role, "param_grad");
  EXPECT_EQ(k->index, "weight");
}

TEST(ParseCaptureKeyTest, RefusesOtherKeys) {
  for (const char* key : {"logits", "forward/logits", "m/forward/output", "m/sideways/output/0",
                          "m/forward/weights/0", "/forward/output/0", "m/forward/output/",
                          "m/backward/grad_input/0"}) {
    EXPECT_FALSE(ParseCaptureKey(key).has_value()) << key;
  }
}

TEST(FirstDivergenceTest, NamesTheFirstFailingModuleAndThePassingChain) {
  // Completion order: a, b, then c (which diverges), then its parent p.
  const std::vector<Entry> ref = {{"a/forward/output/0"},
                                  {"b/forward/output/0"},
                                  {"c/forward/output/0"},
                                  {"p/forward/output/0"}};
  std::vector<Entry> cand = ref;
  cand[2].off = cand[3].off = true;
  Report r = Compare(MakeRun("ref", ref), MakeRun("cand", cand));
  ASSERT_TRUE(r.first_divergence.has_value());
  const FirstDivergence& d = *r.first_divergence;
  EXPECT_EQ(d.checkpoint, "layers");
  EXPECT_EQ(d.module, "c");
  EXPECT_EQ(d.direction, "forward");
  EXPECT_FALSE(d.step.has_value());
  EXPECT_EQ(d.key, "c/forward/output/0");
  EXPECT_THAT(d.reason, HasSubstr("mean_abs"));
  EXPECT_EQ(d.inputs, DivergenceInputs::kNotCaptured);
  EXPECT_THAT(d.passed_before, ElementsAre("a", "b"));
  EXPECT_THAT(d.unmatched, IsEmpty());
  // The parent fails too, but later: it is listed as failing, not first.
  std::vector<ModuleRow> rows = DivergenceModules(r, d);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[2].module, "c");
  EXPECT_TRUE(rows[2].divergent);
  EXPECT_EQ(rows[2].state, ModuleRow::State::kFail);
  EXPECT_EQ(rows[3].state, ModuleRow::State::kFail);
  EXPECT_FALSE(rows[3].divergent);
  EXPECT_EQ(rows[0].state, ModuleRow::State::kPass);
}

TEST(FirstDivergenceTest, InputsSayWhetherTheModuleOrEarlierCodeDiverged) {
  const std::vector<Entry> ref = {{"a/forward/input/0"}, {"a/forward/output/0"},
                                  {"b/forward/input/0"}, {"b/forward/output/0"}};
  // b's output differs while its input passes: b itself.
  std::vector<Entry> cand = ref;
  cand[3].off = true;
  Report r = Compare(MakeRun("ref", ref), MakeRun("cand", cand));
  ASSERT_TRUE(r.first_divergence.has_value());
  EXPECT_EQ(r.first_divergence->module, "b");
  EXPECT_EQ(r.first_divergence->inputs, DivergenceInputs::kPass);
  EXPECT_THAT(r.first_divergence->passed_before, ElementsAre("a"));

  // b's input differs although a's output passed (uncaptured code between).
  cand = ref;
  cand[2].off = cand[3].off = true;
  r = Compare(MakeRun("ref", ref), MakeRun("cand", cand));
  ASSERT_TRUE(r.first_divergence.has_value());
  EXPECT_EQ(r.first_divergence->module, "b");
  EXPECT_EQ(r.first_divergence->key, "b/forward/input/0");
  EXPECT_EQ(r.first_divergence->inputs, DivergenceInputs::kFail);
}

TEST(FirstDivergenceTest, StepsAndDirectionsAreSeparate) {
  // Step 0 passes; at step 1 forward passes and the gradient of b (fired
  // first in backward order) diverges.
  std::vector<Entry> ref;
  for (int64_t step : {0, 1}) {
    for (const char* key : {"a/forward/output/0", "b/forward/output/0",
                            "b/backward/grad_output/0", "a/backward/grad_output/0"}) {
      ref.push_back({key, step});
    }
  }
  std::vector<Entry> cand = ref;
  cand[6].off = cand[7].off = true;
  Report r = Compare(MakeRun("ref", ref), MakeRun("cand", cand));
  ASSERT_TRUE(r.first_divergence.has_value());
  const FirstDivergence& d = *r.first_divergence;
  EXPECT_EQ(d.module, "b");
  EXPECT_EQ(d.direction, "backward");
  EXPECT_EQ(d.step, 1);
  EXPECT_EQ(d.key, "b/backward/grad_output/0");
  // Only modules of step 1's backward pass count as "before".
  EXPECT_THAT(d.passed_before, IsEmpty());
}

TEST(FirstDivergenceTest, UnmatchedModulesAreNeverADivergence) {
  // The candidate has a module the reference lacks (another structure).
  const std::vector<Entry> ref = {{"a/forward/output/0"}, {"c/forward/output/0"}};
  const std::vector<Entry> cand = {
      {"a/forward/output/0"}, {"extra/forward/output/0"}, {"c/forward/output/0", {}, true}};
  Report r = Compare(MakeRun("ref", ref), MakeRun("cand", cand));
  ASSERT_TRUE(r.first_divergence.has_value());
  EXPECT_EQ(r.first_divergence->module, "c");
  EXPECT_THAT(r.first_divergence->passed_before, ElementsAre("a"));
  EXPECT_THAT(r.first_divergence->unmatched, ElementsAre("extra"));

  // With c equal, nothing diverges although the report fails (missing).
  const std::vector<Entry> same = {
      {"a/forward/output/0"}, {"extra/forward/output/0"}, {"c/forward/output/0"}};
  r = Compare(MakeRun("ref", ref), MakeRun("cand", same));
  EXPECT_FALSE(r.passed);
  EXPECT_FALSE(r.first_divergence.has_value());
}

TEST(FirstDivergenceTest, OtherKeysAndPassingRunsHaveNone) {
  const std::vector<Entry> ref = {{"logits"}, {"a/forward/output/0"}};
  std::vector<Entry> cand = ref;
  cand[0].off = true;  // a plain key fails: first_failure, no divergence
  Report r = Compare(MakeRun("ref", ref, "forward"), MakeRun("cand", cand, "forward"));
  ASSERT_TRUE(r.first_failure.has_value());
  EXPECT_FALSE(r.first_divergence.has_value());
  r = Compare(MakeRun("ref", ref), MakeRun("cand", ref));
  EXPECT_TRUE(r.passed);
  EXPECT_FALSE(r.first_divergence.has_value());
}

TEST(FirstDivergenceTest, ModulesAreNamedAfterRename) {
  // A paddle-style candidate renamed to the reference's module paths.
  const std::vector<Entry> ref = {{"encoder.layer.0.query/forward/output/0"},
                                  {"encoder.layer.0.output.LayerNorm/forward/output/0"}};
  const std::vector<Entry> cand = {{"encoder.layers.0.q_proj/forward/output/0"},
                                   {"encoder.layers.0.norm2/forward/output/0", {}, true}};
  Policy policy = *PresetPolicy("reprod");
  policy.rename = {{"encoder.layers.", "encoder.layer."},
                   {"q_proj", "query"},
                   {"norm2", "output.LayerNorm"}};
  Report r = Compare(MakeRun("ref", ref), MakeRun("cand", cand), policy);
  ASSERT_TRUE(r.first_divergence.has_value());
  EXPECT_EQ(r.first_divergence->module, "encoder.layer.0.output.LayerNorm");
  EXPECT_THAT(r.first_divergence->passed_before, ElementsAre("encoder.layer.0.query"));
}

TEST(FirstDivergenceTest, EveryRenderingShowsIt) {
  const std::vector<Entry> ref = {{"a/forward/input/0"}, {"a/forward/output/0"},
                                  {"<b>/forward/output/0"}};
  std::vector<Entry> cand = ref;
  cand[2].off = true;
  const Report r = Compare(MakeRun("ref", ref), MakeRun("cand", cand));

  absl::StatusOr<std::string> json = RenderReport(r, ReportFormat::kJson);
  ASSERT_TRUE(json.ok());
  const nlohmann::json doc = nlohmann::json::parse(*json);
  const nlohmann::json& d = doc.at("first_divergence");
  EXPECT_EQ(d.at("checkpoint"), "layers");
  EXPECT_EQ(d.at("module"), "<b>");
  EXPECT_EQ(d.at("direction"), "forward");
  EXPECT_TRUE(d.at("step").is_null());
  EXPECT_EQ(d.at("key"), "<b>/forward/output/0");
  EXPECT_EQ(d.at("inputs"), "not_captured");
  EXPECT_EQ(d.at("passed_before"), nlohmann::json::array({"a"}));
  EXPECT_EQ(d.at("unmatched"), nlohmann::json::array());
  EXPECT_THAT(std::string(d.at("reason")), HasSubstr("mean_abs"));
  const Report clean = Compare(MakeRun("ref", ref), MakeRun("cand", ref));
  EXPECT_TRUE(nlohmann::json::parse(*RenderReport(clean, ReportFormat::kJson))
                  .at("first_divergence")
                  .is_null());

  absl::StatusOr<std::string> md = RenderReport(r, ReportFormat::kMarkdown);
  ASSERT_TRUE(md.ok());
  EXPECT_THAT(*md, HasSubstr("## First divergence"));
  EXPECT_THAT(*md, HasSubstr("module \\<b> (forward) diverges first"));
  EXPECT_THAT(*md, HasSubstr("1 module before it pass"));

  absl::StatusOr<std::string> text = RenderReport(r, ReportFormat::kText);
  ASSERT_TRUE(text.ok());
  EXPECT_THAT(*text, HasSubstr("first divergence in layers: module <b> (forward) diverges first: "
                               "<b>/forward/output/0: mean_abs"));

  absl::StatusOr<std::string> html = RenderReport(r, ReportFormat::kHtml);
  ASSERT_TRUE(html.ok());
  EXPECT_THAT(*html, HasSubstr("<section id=\"divergence\"><h2>First divergence</h2>"));
  EXPECT_THAT(*html, HasSubstr("Module <code>&lt;b&gt;</code> (forward"));
  EXPECT_THAT(*html, HasSubstr("<li class=\"pass\"><span class=\"badge pass\">pass</span> "
                               "<code>a</code></li>"));
  EXPECT_THAT(*html, HasSubstr("<li class=\"fail divergent\"><span class=\"badge fail\">fail"
                               "</span> <code>&lt;b&gt;</code></li>"));
  EXPECT_THAT(*html, ::testing::Not(HasSubstr("<b>")));
}

}  // namespace
}  // namespace reprod::core

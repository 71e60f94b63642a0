#include "core/policy.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::core {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kDesignExample[] =
    R"(defaults:   {metric: mean_abs, max: 1.0e-6}        # reprod_log's default
checkpoints:
  bp_align:    {metric: mean_abs, max: 1.0e-6, min_steps: 2}
  train_align: {metric: mean_abs, max: 0.0015}     # SST-2 accuracy within 0.15%
rules:
  - match: "forward/*"
    checks: [{metric: cosine, min: 0.99999}, {metric: max_abs, max: 1.0e-4}]
rename:     [{from: "encoder.layers.", to: "encoder.layer."}]   # applied to cand keys
transpose:  auto
required:   [forward, metric, loss, bp_align, train_align]
)";

TEST(ParsePolicyTest, DesignExample) {
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(kDesignExample, "design.yaml"));
  EXPECT_EQ(p.name, "design.yaml");
  ASSERT_EQ(p.defaults.size(), 1u);
  EXPECT_EQ(p.defaults[0].metric, Metric::kMeanAbs);
  EXPECT_EQ(p.defaults[0].kind, BoundKind::kMax);
  EXPECT_EQ(p.defaults[0].bound, 1e-6);
  ASSERT_EQ(p.checkpoints.size(), 2u);
  EXPECT_EQ(p.checkpoints[0].first, "bp_align");
  EXPECT_EQ(p.checkpoints[0].second.min_steps, 2);
  ASSERT_EQ(p.checkpoints[0].second.checks.size(), 1u);
  EXPECT_EQ(p.checkpoints[1].first, "train_align");
  EXPECT_EQ(p.checkpoints[1].second.checks[0].bound, 0.0015);
  ASSERT_EQ(p.rules.size(), 1u);
  EXPECT_EQ(p.rules[0].match, "forward/*");
  ASSERT_EQ(p.rules[0].checks.size(), 2u);
  EXPECT_EQ(p.rules[0].checks[0].metric, Metric::kCosine);
  EXPECT_EQ(p.rules[0].checks[0].kind, BoundKind::kMin);
  EXPECT_EQ(p.rules[0].checks[0].bound, 0.99999);
  EXPECT_EQ(p.rules[0].checks[1].metric, Metric::kMaxAbs);
  EXPECT_EQ(p.rules[0].checks[1].bound, 1e-4);
  ASSERT_EQ(p.rename.size(), 1u);
  EXPECT_EQ(p.rename[0].from, "encoder.layers.");
  EXPECT_EQ(p.rename[0].to, "encoder.layer.");
  EXPECT_EQ(p.transpose, TransposeMode::kAuto);
  EXPECT_THAT(p.required, ElementsAre("forward", "metric", "loss", "bp_align",
                                      "train_align"));
  EXPECT_FALSE(p.equal_nan);
}

TEST(ParsePolicyTest, AllFieldForms) {
  constexpr char kDoc[] = R"(
name: team-policy
description: anything
equal_nan: true
defaults:
  - {metric: mean_abs, max: 1e-5, warn: 1e-6}
  - {metric: allclose, atol: 1e-4, rtol: 0}
checkpoints:
  lr: [{metric: max_abs, max: 0}]
  loss: {checks: [{metric: rmse, max: 0.5}], equal_nan: false}
  bp_align: {min_steps: 3}
rules:
  - match: "bp_align/*.bias"
    metric: mismatch_ratio
    max: 0.01
    rtol: 1e-3
    equal_nan: false
transpose: ["*.weight", "fc?/w"]
)";
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(kDoc, "x.yaml"));
  EXPECT_EQ(p.name, "team-policy");
  EXPECT_TRUE(p.equal_nan);
  ASSERT_EQ(p.defaults.size(), 2u);
  EXPECT_EQ(p.defaults[0].warn, 1e-6);
  EXPECT_EQ(p.defaults[1].metric, Metric::kAllclose);
  EXPECT_EQ(p.defaults[1].bound, 0);
  EXPECT_EQ(p.defaults[1].atol, 1e-4);
  EXPECT_EQ(p.defaults[1].rtol, 0.0);
  ASSERT_NE(p.FindCheckpoint("lr"), nullptr);
  EXPECT_EQ(p.FindCheckpoint("lr")->checks[0].metric, Metric::kMaxAbs);
  EXPECT_EQ(p.FindCheckpoint("loss")->equal_nan, false);
  EXPECT_EQ(p.FindCheckpoint("loss")->checks[0].metric, Metric::kRmse);
  EXPECT_TRUE(p.FindCheckpoint("bp_align")->checks.empty());
  EXPECT_EQ(p.FindCheckpoint("bp_align")->min_steps, 3);
  EXPECT_EQ(p.FindCheckpoint("forward"), nullptr);
  ASSERT_EQ(p.rules.size(), 1u);
  EXPECT_EQ(p.rules[0].checks[0].metric, Metric::kMismatchRatio);
  EXPECT_EQ(p.rules[0].checks[0].rtol, 1e-3);
  EXPECT_FALSE(p.rules[0].checks[0].atol.has_value());
  EXPECT_EQ(p.rules[0].equal_nan, false);
  EXPECT_EQ(p.transpose, TransposeMode::kGlobs);
  EXPECT_THAT(p.transpose_globs, ElementsAre("*.weight", "fc?/w"));
}

TEST(ParsePolicyTest, MissingDefaultsIsReprodLogDefault) {
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy("transpose: never\n", "t"));
  ASSERT_EQ(p.defaults.size(), 1u);
  EXPECT_EQ(p.defaults[0].metric, Metric::kMeanAbs);
  EXPECT_EQ(p.defaults[0].bound, 1e-6);
  EXPECT_EQ(p.transpose, TransposeMode::kNever);
}

TEST(ParsePolicyTest, JsonWithTabs) {
  constexpr char kJson[] =
      "{\n\t\"defaults\": {\"metric\": \"max_abs\", \"max\": 0.001},\n"
      "\t\"checkpoints\": {\"bp_align\": {\"min_steps\": 2}},\n"
      "\t\"rules\": [{\"match\": \"forward/*\", \"checks\": "
      "[{\"metric\": \"cosine\", \"min\": 0.9, \"warn\": 0.99}]}],\n"
      "\t\"required\": [\"forward\"]\n}\n";
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(kJson, "p.json"));
  EXPECT_EQ(p.defaults[0].metric, Metric::kMaxAbs);
  EXPECT_EQ(p.defaults[0].bound, 0.001);
  EXPECT_EQ(p.FindCheckpoint("bp_align")->min_steps, 2);
  EXPECT_EQ(p.rules[0].checks[0].warn, 0.99);
  EXPECT_THAT(p.required, ElementsAre("forward"));
}

TEST(ParsePolicyTest, JsonErrorsHaveLines) {
  EXPECT_THAT(ParsePolicy("{\n\t\"defaults\": {\"metric\": \"mean\", "
                          "\"max\": 1}\n}",
                          "p.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("p.json:2:"), HasSubstr("'mean'"))));
}

struct ErrorCase {
  const char* doc;
  const char* position;  // "source:line:" prefix expected in the message
  const char* problem;   // a substring naming the offending thing
};

TEST(ParsePolicyTest, ErrorsNameProblemAndLine) {
  const ErrorCase cases[] = {
      {"defaults: {metric: mean_abs, max: 1e-6}\nthresholds: 1\n",
       "e.yaml:2:", "unknown field 'thresholds'"},
      {"defaults:\n  metric: mean_abz\n  max: 1\n",
       "e.yaml:2:", "unknown metric 'mean_abz'"},
      {"defaults: {metric: mean_abs, maxx: 1}\n",
       "e.yaml:1:", "unknown field 'maxx'"},
      {"defaults: {max: 1}\n", "e.yaml:1:", "has no 'metric'"},
      {"defaults: {metric: cosine, max: 0.9}\n",
       "e.yaml:1:", "cosine takes 'min'"},
      {"defaults: {metric: cosine}\n", "e.yaml:1:", "needs 'min'"},
      {"defaults: {metric: mean_abs, min: 0.9}\n",
       "e.yaml:1:", "mean_abs takes 'max'"},
      {"defaults: {metric: rmse}\n", "e.yaml:1:", "check 'rmse' needs 'max'"},
      {"defaults: {metric: allclose, max: 3}\n",
       "e.yaml:1:", "allclose takes no 'max'"},
      {"defaults: {metric: allclose, warn: 3}\n",
       "e.yaml:1:", "allclose takes no 'warn'"},
      {"defaults: {metric: mean_abs, max: 1, atol: 0.1}\n",
       "e.yaml:1:", "takes no 'atol'/'rtol'"},
      {"defaults: {metric: allclose, atol: -1}\n",
       "e.yaml:1:", "'atol' must be a finite number >= 0"},
      {"defaults: {metric: mean_abs, max: 1e-6, warn: 1e-5}\n",
       "e.yaml:1:", "'warn' (1e-05) must be <= 'max' (1e-06)"},
      {"defaults: {metric: cosine, min: 0.99, warn: 0.9}\n",
       "e.yaml:1:", "must be >= 'min'"},
      {"defaults: {metric: mean_abs, max: abc}\n",
       "e.yaml:1:", "'max' must be a number, got 'abc'"},
      {"defaults: {metric: mean_abs, max: .nan}\n",
       "e.yaml:1:", "'max' must not be NaN"},
      {"defaults: []\n", "e.yaml:1:", "at least one check"},
      {"defaults: 3\n", "e.yaml:1:", "must be a check or a list of checks"},
      {"checkpoints:\n  bp_align: {min_steps: -1}\n",
       "e.yaml:2:", "'min_steps' must be an integer >= 0"},
      {"checkpoints:\n  bp_align: {min_steps: two}\n",
       "e.yaml:2:", "'min_steps' must be an integer >= 0"},
      {"checkpoints:\n  bp_align: {steps: 2}\n",
       "e.yaml:2:", "unknown field 'steps' in checkpoint 'bp_align'"},
      {"checkpoints:\n  bp_align: 3\n",
       "e.yaml:2:", "checkpoint 'bp_align' must be"},
      {"checkpoints:\n  x: {metric: max_abs, max: 1, checks: [{metric: rmse, "
       "max: 1}]}\n",
       "e.yaml:2:", "both 'checks' and inline"},
      {"checkpoints:\n  x: {equal_nan: maybe}\n",
       "e.yaml:2:", "'equal_nan' must be true or false"},
      {"rules: {match: x}\n", "e.yaml:1:", "'rules' must be a list"},
      {"rules:\n  - checks: [{metric: max_abs, max: 1}]\n",
       "e.yaml:2:", "rules[0] needs a non-empty 'match'"},
      {"rules:\n  - match: a/*\n    checks: [{metric: max_abs, max: 1}]\n"
       "  - match: b\n",
       "e.yaml:4:", "rules[1] ('b') has no checks"},
      {"rules:\n  - match: a\n    pattern: b\n    max: 1\n",
       "e.yaml:3:", "unknown field 'pattern' in rules[0]"},
      {"rename:\n  - {from: a}\n", "e.yaml:2:", "rename[0] needs"},
      {"rename:\n  - {from: a, to: b, via: c}\n",
       "e.yaml:2:", "unknown field 'via' in rename[0]"},
      {"rename:\n  - {regex: 'a(b', to: x}\n", "e.yaml:2:", "rename regex 'a(b' does not compile"},
      {"rename:\n  - {regex: 'a(b)', to: '\\2'}\n", "e.yaml:2:", "'to' '\\2'"},
      {"rename:\n  - {regex: a, from: a, to: b}\n", "e.yaml:2:", "both 'from' and 'regex'"},
      {"rename:\n  - {regex: a}\n", "e.yaml:2:", "rename[0] needs a 'to'"},
      {"transpose: sometimes\n", "e.yaml:1:", "unknown transpose mode"},
      {"transpose: [[a]]\n", "e.yaml:1:", "'transpose' must be a string"},
      {"required: forward\n", "e.yaml:1:", "'required' must be a list"},
      {"defaults: {metric: mean_abs, max: 1}\ndefaults: {metric: rmse, "
       "max: 1}\n",
       "e.yaml:2:", "duplicate field 'defaults'"},
      {"defaults: {metric: mean_abs, max: [1\n", "e.yaml:", "malformed"},
      {"- a\n- b\n", "e.yaml:1:", "policy must be a mapping"},
  };
  for (const ErrorCase& c : cases) {
    EXPECT_THAT(ParsePolicy(c.doc, "e.yaml"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(c.position), HasSubstr(c.problem))))
        << c.doc;
  }
}

TEST(ParsePolicyTest, ShapesAndAsBf16) {
  ASSERT_OK_AND_ASSIGN(Policy d, ParsePolicy("name: x\n", "p.yaml"));
  EXPECT_EQ(d.shapes, ShapeMode::kSize1);  // the default
  EXPECT_TRUE(d.as_bf16.empty());
  EXPECT_FALSE(ReadAsBFloat16(d, "forward", "w"));
  ASSERT_OK_AND_ASSIGN(
      Policy p, ParsePolicy("shapes: strict\nas_bf16: [\"*.weight\", "
                            "\"fwd/b\"]\n",
                            "p.yaml"));
  EXPECT_EQ(p.shapes, ShapeMode::kStrict);
  EXPECT_THAT(p.as_bf16, ElementsAre("*.weight", "fwd/b"));
  EXPECT_TRUE(ReadAsBFloat16(p, "bp_align", "grad/fc.weight"));
  EXPECT_TRUE(ReadAsBFloat16(p, "fwd", "b"));
  EXPECT_FALSE(ReadAsBFloat16(p, "fwd", "bias"));
  ASSERT_OK_AND_ASSIGN(Policy s1, ParsePolicy("shapes: size1\n", "p.yaml"));
  EXPECT_EQ(s1.shapes, ShapeMode::kSize1);
  EXPECT_THAT(ParsePolicy("\nshapes: squeeze\n", "p.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("p.yaml:2:"),
                             HasSubstr("unknown shapes mode 'squeeze'"))));
  EXPECT_THAT(ParsePolicy("as_bf16: w\n", "p.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'as_bf16' must be a list of strings")));
  EXPECT_THAT(ParseShapeMode("loose"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("expected size1")));
}

TEST(ParsePolicyTest, EmptyDocumentIsAnError) {
  EXPECT_THAT(ParsePolicy("", "empty.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("empty.yaml: policy document is empty")));
  EXPECT_THAT(ParsePolicy("# only a comment\n", "c.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST(PresetPolicyTest, Reprod) {
  ASSERT_OK_AND_ASSIGN(Policy p, PresetPolicy("reprod"));
  EXPECT_EQ(p.name, "reprod");
  ASSERT_EQ(p.defaults.size(), 1u);
  EXPECT_EQ(p.defaults[0].metric, Metric::kMeanAbs);
  EXPECT_EQ(p.defaults[0].bound, 1e-6);
  EXPECT_TRUE(p.required.empty());
  EXPECT_TRUE(p.rules.empty());
  EXPECT_EQ(p.transpose, TransposeMode::kAuto);
}

TEST(PresetPolicyTest, Competition) {
  ASSERT_OK_AND_ASSIGN(Policy p, PresetPolicy("competition"));
  EXPECT_THAT(p.required, ElementsAre("forward", "metric", "loss", "bp_align",
                                      "train_align"));
  EXPECT_EQ(p.defaults[0].bound, 1e-6);
  PolicyResolution train = ResolvePolicy(p, "train_align", "acc");
  ASSERT_EQ(train.checks->size(), 1u);
  EXPECT_EQ((*train.checks)[0].metric, Metric::kMeanAbs);
  EXPECT_EQ((*train.checks)[0].bound, 0.0015);
  EXPECT_EQ(p.FindCheckpoint("bp_align")->min_steps, 2);
  EXPECT_EQ((*ResolvePolicy(p, "bp_align", "loss_0").checks)[0].bound, 1e-6);
  EXPECT_EQ((*ResolvePolicy(p, "lr", "step_100_linear_lr").checks)[0].bound,
            1e-6);
  EXPECT_EQ((*ResolvePolicy(p, "forward", "logits").checks)[0].bound, 1e-6);
  EXPECT_EQ((*ResolvePolicy(p, "other", "x").checks)[0].bound, 1e-6);
}

TEST(PresetPolicyTest, AllcloseUsesDtypeDefaults) {
  ASSERT_OK_AND_ASSIGN(Policy p, PresetPolicy("allclose"));
  ASSERT_EQ(p.defaults.size(), 1u);
  const Check& c = p.defaults[0];
  EXPECT_EQ(c.metric, Metric::kAllclose);
  EXPECT_EQ(c.ToleranceFor(DType::kFloat16, DType::kFloat16),
            (Tolerance{1e-5, 1e-3}));
  EXPECT_EQ(c.ToleranceFor(DType::kBFloat16, DType::kBFloat16),
            (Tolerance{1e-5, 1.6e-2}));
  EXPECT_EQ(c.ToleranceFor(DType::kFloat32, DType::kFloat32),
            (Tolerance{1e-5, 1.3e-6}));
  EXPECT_EQ(c.ToleranceFor(DType::kFloat64, DType::kFloat64),
            (Tolerance{1e-7, 1e-7}));
  EXPECT_EQ(c.ToleranceFor(DType::kInt64, DType::kInt64), (Tolerance{0, 0}));
  EXPECT_EQ(c.ToleranceFor(DType::kBool, DType::kBool), (Tolerance{0, 0}));
  for (DType u : {DType::kUInt8, DType::kUInt16, DType::kUInt32,
                  DType::kUInt64}) {
    EXPECT_EQ(c.ToleranceFor(u, u), (Tolerance{0, 0})) << DTypeName(u);
  }
  // Mixed: the looser side decides.
  EXPECT_EQ(c.ToleranceFor(DType::kFloat32, DType::kFloat16),
            (Tolerance{1e-5, 1e-3}));
  EXPECT_EQ(c.ToleranceFor(DType::kFloat64, DType::kInt32),
            (Tolerance{1e-7, 1e-7}));
  // Explicit fields win.
  EXPECT_EQ(AllcloseCheck(0.5, std::nullopt)
                .ToleranceFor(DType::kFloat16, DType::kFloat16),
            (Tolerance{0.5, 1e-3}));
}

TEST(PresetPolicyTest, UnknownPreset) {
  EXPECT_THAT(PresetPolicy("strict"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'strict'"),
                             HasSubstr("reprod, competition, allclose"))));
}

TEST(ReprodLogPolicyTest, Methods) {
  ASSERT_OK_AND_ASSIGN(Policy mean, ReprodLogPolicy(1e-6));
  ASSERT_EQ(mean.defaults.size(), 1u);
  EXPECT_EQ(mean.defaults[0].metric, Metric::kMeanAbs);
  EXPECT_EQ(mean.defaults[0].bound, 1e-6);

  ASSERT_OK_AND_ASSIGN(Policy all, ReprodLogPolicy(1e-5, {"all"}));
  ASSERT_EQ(all.defaults.size(), 3u);
  EXPECT_EQ(all.defaults[0].metric, Metric::kMinAbs);
  EXPECT_EQ(all.defaults[1].metric, Metric::kMaxAbs);
  EXPECT_EQ(all.defaults[2].metric, Metric::kMeanAbs);
  for (const Check& c : all.defaults) {
    EXPECT_EQ(c.bound, 1e-5);
    EXPECT_EQ(c.kind, BoundKind::kMax);
  }

  ASSERT_OK_AND_ASSIGN(Policy two, ReprodLogPolicy(0.1, {"max", "min"}));
  ASSERT_EQ(two.defaults.size(), 2u);
  EXPECT_EQ(two.defaults[0].metric, Metric::kMaxAbs);
  EXPECT_EQ(two.defaults[1].metric, Metric::kMinAbs);

  EXPECT_THAT(
      ReprodLogPolicy(1e-6, {"median"}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'median'")));
  EXPECT_THAT(
      ReprodLogPolicy(1e-6, {}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no diff")));
  EXPECT_THAT(ReprodLogPolicy(-1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(">= 0")));
}

TEST(AllcloseCliPolicyTest, Basics) {
  ASSERT_OK_AND_ASSIGN(Policy p, AllcloseCliPolicy(1e-3, 1e-4));
  ASSERT_EQ(p.defaults.size(), 1u);
  EXPECT_EQ(p.defaults[0].metric, Metric::kAllclose);
  EXPECT_EQ(p.defaults[0].ToleranceFor(DType::kFloat16, DType::kFloat16),
            (Tolerance{1e-3, 1e-4}));
  EXPECT_EQ(p.name, "allclose(atol=0.001, rtol=0.0001)");
  EXPECT_THAT(AllcloseCliPolicy(-1, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("atol")));
}

TEST(ResolvePolicyTest, RuleThenCheckpointThenDefaults) {
  constexpr char kDoc[] = R"(
defaults: {metric: mean_abs, max: 1}
equal_nan: false
checkpoints:
  forward: {metric: mean_abs, max: 2, equal_nan: true}
  bp_align: {min_steps: 2}
rules:
  - {match: "forward/head.*", metric: max_abs, max: 3}
  - {match: "forward/*", metric: max_abs, max: 4, equal_nan: false}
  - {match: "*/bias", metric: max_abs, max: 5}
)";
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(kDoc, "r.yaml"));
  PolicyResolution r = ResolvePolicy(p, "forward", "head.weight");
  EXPECT_EQ((*r.checks)[0].bound, 3);  // first matching rule wins
  EXPECT_EQ(r.source, "rule 'forward/head.*'");
  EXPECT_TRUE(r.equal_nan);  // rule has none: checkpoint's

  r = ResolvePolicy(p, "forward", "enc/bias");
  EXPECT_EQ((*r.checks)[0].bound, 4);  // "forward/*" comes before "*/bias"
  EXPECT_FALSE(r.equal_nan);

  r = ResolvePolicy(p, "loss", "x/bias");
  EXPECT_EQ((*r.checks)[0].bound, 5);
  EXPECT_EQ(r.source, "rule '*/bias'");

  EXPECT_EQ(p.rules.size(), 3u);
  r = ResolvePolicy(p, "forwardx", "a");  // no rule; no checkpoint entry
  EXPECT_EQ((*r.checks)[0].bound, 1);
  EXPECT_EQ(r.source, "defaults");

  r = ResolvePolicy(p, "bp_align", "loss_0");  // entry without checks
  EXPECT_EQ((*r.checks)[0].bound, 1);
  EXPECT_EQ(r.source, "defaults");
}

TEST(ResolvePolicyTest, CheckpointEntry) {
  ASSERT_OK_AND_ASSIGN(
      Policy p,
      ParsePolicy("checkpoints:\n  loss: {metric: rmse, max: 7}\n", "c.yaml"));
  PolicyResolution r = ResolvePolicy(p, "loss", "loss");
  EXPECT_EQ((*r.checks)[0].metric, Metric::kRmse);
  EXPECT_EQ(r.source, "checkpoint 'loss'");
}

TEST(GlobMatchTest, FnmatchWithoutPathname) {
  EXPECT_TRUE(GlobMatch("forward/*", "forward/a/b/c"));  // '*' crosses '/'
  EXPECT_TRUE(GlobMatch("*", "a/b"));
  EXPECT_TRUE(GlobMatch("*.weight", "forward/fc.weight"));
  EXPECT_FALSE(GlobMatch("*.weight", "forward/fc.weight2"));  // whole string
  EXPECT_TRUE(GlobMatch("fc?/w", "fc1/w"));
  EXPECT_FALSE(GlobMatch("fc?/w", "fc12/w"));
  EXPECT_TRUE(GlobMatch("a?b", "a/b"));  // '?' matches '/'
  EXPECT_TRUE(GlobMatch("layer[0-2]", "layer1"));
  EXPECT_FALSE(GlobMatch("layer[0-2]", "layer3"));
  EXPECT_TRUE(GlobMatch("x\\*", "x*"));
  EXPECT_FALSE(GlobMatch("x\\*", "xy"));
  EXPECT_TRUE(GlobMatch("*", ".hidden"));
}

TEST(ApplyRenameTest, InOrderEveryOccurrence) {
  Policy p;
  p.rename = {{"layers.", "layer."}, {"layer.0", "block0"}, {"q", "query"}};
  EXPECT_EQ(ApplyRename(p, "encoder.layers.0.q"), "encoder.block0.query");
  EXPECT_EQ(ApplyRename(p, "layers.1.layers.2"), "layer.1.layer.2");
  EXPECT_EQ(ApplyRename(p, "plain"), "plain");
}

TEST(ApplyRenameTest, RegexWithCapturesAndSubstringsInOrder) {
  // A paddle module path to the torch one: the layer number is carried.
  ASSERT_OK_AND_ASSIGN(
      Policy p, ParsePolicy("rename:\n"
                            "  - {regex: '^bert\\.encoder\\.layers\\.(\\d+)\\.norm1/', "
                            "to: 'bert.encoder.layer.\\1.attention.output.LayerNorm/'}\n"
                            "  - {from: q_proj, to: query}\n",
                            "r.yaml"));
  ASSERT_EQ(p.rename.size(), 2u);
  EXPECT_EQ(p.rename[0].regex, "^bert\\.encoder\\.layers\\.(\\d+)\\.norm1/");
  EXPECT_EQ(ApplyRename(p, "bert.encoder.layers.11.norm1/forward/output/0"),
            "bert.encoder.layer.11.attention.output.LayerNorm/forward/output/0");
  // Anchored: a "norm1" elsewhere is left alone; substrings still apply.
  EXPECT_EQ(ApplyRename(p, "x.bert.encoder.layers.1.norm1/forward/output/0"),
            "x.bert.encoder.layers.1.norm1/forward/output/0");
  EXPECT_EQ(ApplyRename(p, "a.q_proj/forward/output/0"), "a.query/forward/output/0");
  // Every match is replaced, \0 is the whole match.
  ASSERT_OK_AND_ASSIGN(Rename all, MakeRegexRename("l(\\d)", "<\\0:\\1>"));
  Policy q;
  q.rename = {all};
  EXPECT_EQ(ApplyRename(q, "l1.l2.x"), "<l1:1>.<l2:2>.x");
}

TEST(LoadPolicyTest, FilesAndPresets) {
  EXPECT_THAT(LoadPolicyFile("/nonexistent/policy.yaml"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("/nonexistent/policy.yaml")));
  EXPECT_THAT(LoadPolicyFile(::testing::TempDir()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is a directory")));
  const std::string path = ::testing::TempDir() + "/core_policy_test.yaml";
  {
    std::ofstream out(path);
    out << "defaults: {metric: max_abs, max: 0.5}\nbogus: 1\n";
  }
  EXPECT_THAT(LoadPolicyFile(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path + ":2:"), HasSubstr("'bogus'"))));
  {
    std::ofstream out(path);
    out << "defaults: {metric: max_abs, max: 0.5}\n";
  }
  ASSERT_OK_AND_ASSIGN(Policy p, LoadPolicy(path));
  EXPECT_EQ(p.name, path);
  EXPECT_EQ(p.defaults[0].bound, 0.5);
  std::remove(path.c_str());
  ASSERT_OK_AND_ASSIGN(Policy c, LoadPolicy("competition"));
  EXPECT_EQ(c.name, "competition");
}

TEST(MetricNameTest, RoundTrip) {
  for (const char* name :
       {"mean_abs", "max_abs", "min_abs", "mean_rel", "max_rel", "rmse",
        "cosine", "mismatch_ratio", "allclose"}) {
    std::optional<Metric> m = MetricFromName(name);
    ASSERT_TRUE(m.has_value()) << name;
    EXPECT_EQ(MetricName(*m), name);
  }
  EXPECT_FALSE(MetricFromName("mean").has_value());
}

}  // namespace
}  // namespace reprod::core

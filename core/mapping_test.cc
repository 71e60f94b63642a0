// suggest-mapping's matching and rename generation, on the module lists of
// bert_tiny's two implementations (examples/bert_tiny/model_torch.py and
// model_paddle.py, in the order their forward hooks fire), whose true
// mapping is known by construction.
#include "core/mapping.h"

#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reprod::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A module whose single output has shape `shape` and the values named by
// `value` (equal names: equal values), nudged by `noise` (relative).
ModuleOutputs M(std::string module, int value, Shape shape, double noise = 0) {
  OutputFingerprint f;
  f.shape = std::move(shape);
  f.mean = (0.1 * value + 0.01) * (1 + noise);
  f.mean_abs = (0.2 * value + 0.5) * (1 + noise);
  f.rms = (0.3 * value + 0.7) * (1 + noise);
  return ModuleOutputs{std::move(module), {f}};
}

const Shape kBTH{2, 8, 16}, kBT4H{2, 8, 64}, kProbs{2, 4, 8, 8}, kBH{2, 16}, kLogits{2, 2};

// Value ids: one per distinct output.
enum : int { kW = 1, kP, kTT, kE, kPD, kPT, kLog, kLayer0 = 10 };
int V(int layer, int k) { return kLayer0 + 10 * layer + k; }
enum : int { kQ, kK, kV, kProb, kCtx, kD, kN1, kI, kG, kD2 };
int N2(int layer) { return V(layer, 9) + 100; }

std::vector<ModuleOutputs> TorchModules() {
  std::vector<ModuleOutputs> m = {M("bert.embeddings.word_embeddings", kW, kBTH),
                                  M("bert.embeddings.position_embeddings", kP, {1, 8, 16}),
                                  M("bert.embeddings.token_type_embeddings", kTT, kBTH),
                                  M("bert.embeddings.LayerNorm", kE, kBTH),
                                  M("bert.embeddings.dropout", kE, kBTH),
                                  M("bert.embeddings", kE, kBTH)};
  for (int l = 0; l < 2; ++l) {
    const std::string p = absl::StrCat("bert.encoder.layer.", l);
    m.push_back(M(p + ".attention.self.query", V(l, kQ), kBTH));
    m.push_back(M(p + ".attention.self.key", V(l, kK), kBTH));
    m.push_back(M(p + ".attention.self.value", V(l, kV), kBTH));
    m.push_back(M(p + ".attention.self.dropout", V(l, kProb), kProbs));
    m.push_back(M(p + ".attention.self", V(l, kCtx), kBTH));
    m.push_back(M(p + ".attention.output.dense", V(l, kD), kBTH));
    m.push_back(M(p + ".attention.output.dropout", V(l, kD), kBTH));
    m.push_back(M(p + ".attention.output.LayerNorm", V(l, kN1), kBTH));
    m.push_back(M(p + ".attention.output", V(l, kN1), kBTH));
    m.push_back(M(p + ".attention", V(l, kN1), kBTH));
    m.push_back(M(p + ".intermediate.dense", V(l, kI), kBT4H));
    m.push_back(M(p + ".intermediate", V(l, kG), kBT4H));
    m.push_back(M(p + ".output.dense", V(l, kD2), kBTH));
    m.push_back(M(p + ".output.dropout", V(l, kD2), kBTH));
    m.push_back(M(p + ".output.LayerNorm", N2(l), kBTH));
    m.push_back(M(p + ".output", N2(l), kBTH));
    m.push_back(M(p, N2(l), kBTH));
  }
  for (ModuleOutputs x : {M("bert.encoder", N2(1), kBTH), M("bert.pooler.dense", kPD, kBH),
                          M("bert.pooler", kPT, kBH), M("bert", kPT, kBH), M("dropout", kPT, kBH),
                          M("classifier", kLog, kLogits), M("[root]", kLog, kLogits)}) {
    m.push_back(std::move(x));
  }
  return m;
}

// The paddle port: other names and nesting, values within float32 noise.
std::vector<ModuleOutputs> PaddleModules(double noise = 3e-7) {
  std::vector<ModuleOutputs> m = {M("bert.embeddings.word_embeddings", kW, kBTH, noise),
                                  M("bert.embeddings.position_embeddings", kP, {1, 8, 16}, noise),
                                  M("bert.embeddings.token_type_embeddings", kTT, kBTH, noise),
                                  M("bert.embeddings.layer_norm", kE, kBTH, noise),
                                  M("bert.embeddings.dropout", kE, kBTH, noise),
                                  M("bert.embeddings", kE, kBTH, noise)};
  for (int l = 0; l < 2; ++l) {
    const std::string p = absl::StrCat("bert.encoder.layers.", l);
    m.push_back(M(p + ".self_attn.q_proj", V(l, kQ), kBTH, noise));
    m.push_back(M(p + ".self_attn.k_proj", V(l, kK), kBTH, noise));
    m.push_back(M(p + ".self_attn.v_proj", V(l, kV), kBTH, noise));
    m.push_back(M(p + ".self_attn.dropout", V(l, kProb), kProbs, noise));
    m.push_back(M(p + ".self_attn.out_proj", V(l, kD), kBTH, noise));
    m.push_back(M(p + ".self_attn", V(l, kD), kBTH, noise));
    m.push_back(M(p + ".dropout1", V(l, kD), kBTH, noise));
    m.push_back(M(p + ".norm1", V(l, kN1), kBTH, noise));
    m.push_back(M(p + ".linear1", V(l, kI), kBT4H, noise));
    m.push_back(M(p + ".linear2", V(l, kD2), kBTH, noise));
    m.push_back(M(p + ".dropout2", V(l, kD2), kBTH, noise));
    m.push_back(M(p + ".norm2", N2(l), kBTH, noise));
    m.push_back(M(p, N2(l), kBTH, noise));
  }
  for (ModuleOutputs x :
       {M("bert.encoder", N2(1), kBTH, noise), M("bert.pooler.dense", kPD, kBH, noise),
        M("bert.pooler", kPT, kBH, noise), M("bert", kPT, kBH, noise),
        M("dropout", kPT, kBH, noise), M("classifier", kLog, kLogits, noise),
        M("[root]", kLog, kLogits, noise)}) {
    m.push_back(std::move(x));
  }
  return m;
}

std::string Renamed(const std::vector<Rename>& renames, const std::string& module) {
  Policy p;
  p.rename = renames;
  const std::string key = ApplyRename(p, module + "/forward/output/0");
  return key.substr(0, key.find('/'));
}

TEST(FingerprintTest, MeanMeanAbsRms) {
  const float v[] = {1, -2, 3, -4};
  TensorView view{DType::kFloat32, Shape{2, 2}, v};
  OutputFingerprint f = Fingerprint(view);
  EXPECT_EQ(f.shape, (Shape{2, 2}));
  EXPECT_DOUBLE_EQ(f.mean, -0.5);
  EXPECT_DOUBLE_EQ(f.mean_abs, 2.5);
  EXPECT_DOUBLE_EQ(f.rms, std::sqrt(30.0 / 4));
  TensorView empty{DType::kFloat32, Shape{0}, nullptr};
  EXPECT_EQ(Fingerprint(empty).rms, 0);
}

TEST(SuggestMappingTest, RecoversBertTinyTorchToPaddle) {
  const std::vector<ModuleOutputs> ref = TorchModules(), cand = PaddleModules();
  const MappingSuggestion s = SuggestMapping(ref, cand);
  ASSERT_TRUE(s.consistent);
  // The true mapping (common.TORCH_TO_PADDLE, per module).
  std::map<std::string, std::string> want = {
      {"bert.embeddings.layer_norm", "bert.embeddings.LayerNorm"}};
  for (int l = 0; l < 2; ++l) {
    const std::string c = absl::StrCat("bert.encoder.layers.", l);
    const std::string r = absl::StrCat("bert.encoder.layer.", l);
    want[c + ".self_attn.q_proj"] = r + ".attention.self.query";
    want[c + ".self_attn.k_proj"] = r + ".attention.self.key";
    want[c + ".self_attn.v_proj"] = r + ".attention.self.value";
    want[c + ".self_attn.dropout"] = r + ".attention.self.dropout";
    want[c + ".self_attn.out_proj"] = r + ".attention.output.dense";
    want[c + ".dropout1"] = r + ".attention.output.dropout";
    want[c + ".norm1"] = r + ".attention.output.LayerNorm";
    want[c + ".linear1"] = r + ".intermediate.dense";
    want[c + ".linear2"] = r + ".output.dense";
    want[c + ".dropout2"] = r + ".output.dropout";
    want[c + ".norm2"] = r + ".output.LayerNorm";
    want[c] = r;
  }
  size_t same_name = 0;
  for (const auto& [c, r] : s.pairs) {
    auto it = want.find(c);
    if (it == want.end()) {
      EXPECT_EQ(c, r) << "unexpected pair";
      ++same_name;
    } else {
      EXPECT_EQ(r, it->second) << c;
    }
  }
  EXPECT_EQ(s.pairs.size(), want.size() + same_name);
  EXPECT_EQ(same_name, 12u);  // 5 embeddings + encoder, pooler x2, bert, dropout, classifier, root
  EXPECT_THAT(s.unmatched_cand,
              ElementsAre("bert.encoder.layers.0.self_attn", "bert.encoder.layers.1.self_attn"));
  // Torch's composites that paddle does not have, per layer.
  ASSERT_EQ(s.unmatched_ref.size(), 10u);
  EXPECT_THAT(std::vector<std::string>(s.unmatched_ref.begin(), s.unmatched_ref.begin() + 5),
              ElementsAre("bert.encoder.layer.0.attention.self",
                          "bert.encoder.layer.0.attention.output", "bert.encoder.layer.0.attention",
                          "bert.encoder.layer.0.intermediate", "bert.encoder.layer.0.output"));

  // One entry per kind of module, not per layer, and they map every module.
  EXPECT_EQ(s.renames.size(), 13u);
  for (const auto& [c, r] : want) EXPECT_EQ(Renamed(s.renames, c), r) << c;
  EXPECT_EQ(Renamed(s.renames, "bert.encoder.layers.7.norm1"),
            "bert.encoder.layer.7.attention.output.LayerNorm");
  EXPECT_EQ(Renamed(s.renames, "bert.encoder.layers.0.self_attn"),
            "bert.encoder.layers.0.self_attn");
  // Call counters follow their module.
  Policy p;
  p.rename = s.renames;
  EXPECT_EQ(ApplyRename(p, "bert.encoder.layers.1.norm2[1]/forward/output/0"),
            "bert.encoder.layer.1.output.LayerNorm[1]/forward/output/0");
}

TEST(SuggestMappingTest, YamlParsesBackToTheSameRenames) {
  const MappingSuggestion s = SuggestMapping(TorchModules(), PaddleModules());
  const std::string yaml = MappingYaml(s, "suggest-mapping ref cand\nsecond line");
  EXPECT_THAT(yaml, HasSubstr("# suggest-mapping ref cand\n# second line\n"));
  EXPECT_THAT(yaml, HasSubstr("#   bert.encoder.layers.0.self_attn\n"));
  absl::StatusOr<Policy> parsed = ParsePolicy(yaml, "mapping.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
  ASSERT_EQ(parsed->rename.size(), s.renames.size());
  for (size_t i = 0; i < s.renames.size(); ++i) {
    EXPECT_EQ(parsed->rename[i].regex, s.renames[i].regex);
    EXPECT_EQ(parsed->rename[i].to, s.renames[i].to);
  }
}

TEST(SuggestMappingTest, ValuesDecideBetweenModulesOfOneShape) {
  // Three modules of one shape in a different order on the other side:
  // only values tell them apart; the alignment keeps the order, so the one
  // that moved stays unmatched.
  const std::vector<ModuleOutputs> ref = {M("a", 1, kBTH), M("b", 2, kBTH), M("c", 3, kBTH)};
  const std::vector<ModuleOutputs> cand = {M("x", 1, kBTH), M("z", 3, kBTH), M("y", 2, kBTH)};
  const MappingSuggestion s = SuggestMapping(ref, cand);
  EXPECT_EQ(s.pairs.size(), 2u);
  EXPECT_EQ(s.pairs[0], (std::pair<std::string, std::string>{"x", "a"}));
  // Far-off values never pair.
  const MappingSuggestion none =
      SuggestMapping({M("a", 1, kBTH)}, {M("x", 1, kBTH, /*noise=*/0.01)});
  EXPECT_THAT(none.pairs, IsEmpty());
  EXPECT_THAT(MappingYaml(none, "h"), HasSubstr("rename: []\n"));
}

TEST(SuggestMappingTest, FallsBackToLiteralEntriesWhenAGeneralisationWouldMisfire) {
  // a.0.x -> b.0.y but a.1.x -> c.1.z: "a.(\d+).x" cannot serve both.
  const std::vector<ModuleOutputs> ref = {M("b.0.y", 1, kBTH), M("c.1.z", 2, kBTH)};
  const std::vector<ModuleOutputs> cand = {M("a.0.x", 1, kBTH), M("a.1.x", 2, kBTH)};
  const MappingSuggestion s = SuggestMapping(ref, cand);
  ASSERT_TRUE(s.consistent);
  ASSERT_EQ(s.renames.size(), 2u);
  EXPECT_EQ(s.renames[0].regex, "^a\\.0\\.x(/|\\[)");
  EXPECT_EQ(Renamed(s.renames, "a.0.x"), "b.0.y");
  EXPECT_EQ(Renamed(s.renames, "a.1.x"), "c.1.z");
}

TEST(SuggestMappingTest, APathTooLongForAPatternIsReportedNotFatal) {
  // 900 bytes with 450 dots: escaped, more than a rename pattern may hold.
  std::string long_path;
  for (int i = 0; i < 450; ++i) long_path += "a.";
  long_path.pop_back();
  const MappingSuggestion s =
      SuggestMapping({M("x", 1, kBTH), M("y", 2, kBTH)}, {M("x2", 1, kBTH), M(long_path, 2, kBTH)});
  ASSERT_EQ(s.pairs.size(), 2u);
  EXPECT_FALSE(s.consistent);
  EXPECT_EQ(Renamed(s.renames, "x2"), "x");  // the other pair keeps its entry
  EXPECT_THAT(MappingYaml(s, "h"), HasSubstr("# WARNING: these entries do not map every pair"));
}

}  // namespace
}  // namespace reprod::core

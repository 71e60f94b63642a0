// CompareStoredRuns gives the report core::CompareRuns gives for the same
// tensors in memory, on every path: batched small pairs, element-wise
// windows (mixed dtypes, windows not dividing the tensor, one-element
// windows), transposed row tiles and column-split tiles; bit-for-bit on the
// cpu backend's chunk grid.
#include "server/store_compare.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <atomic>
#include <map>
#include <thread>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/crc32c.h"
#include "common/element.h"
#include "common/half.h"
#include "common/placement.h"
#include "common/tensor.h"
#include "core/compare.h"
#include "core/policy.h"
#include "core/report.h"
#include "core/run_data.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/testing/host_resident_backend.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "storage/store.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int64_t kChunk = kernels::CpuBackend::kChunkElements;

// ---------------------------------------------------------------------------
// Building runs: the same tensors into a memory Store and into RunData.

struct Item {
  std::string checkpoint;
  std::string key;
  std::optional<int64_t> step;
  Tensor tensor;
  uint32_t rank = 0;
  Placement placement = {};
};

// Random values of any dtype; floating types get a spread of magnitudes.
class Gen {
 public:
  explicit Gen(uint32_t seed) : rng_(seed) {}

  Tensor Random(DType dtype, const Shape& shape) {
    Tensor t = *Tensor::Allocate(dtype, shape);
    auto* p = static_cast<uint8_t*>(t.mutable_data());
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      Store(dtype, p, i, Value());
    }
    return t;
  }

  // `t` with small perturbations (about one element in three), same dtype.
  Tensor Perturb(const Tensor& t, double scale) {
    return Convert(t, t.dtype(), scale);
  }

  // `t`'s values in another dtype, perturbed by `scale`.
  Tensor Convert(const Tensor& t, DType dtype, double scale) {
    Tensor out = *Tensor::Allocate(dtype, t.shape());
    auto* p = static_cast<uint8_t*>(out.mutable_data());
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      double v = Load(t, i);
      if (std::uniform_int_distribution<int>(0, 2)(rng_) == 0) {
        v += scale * std::uniform_real_distribution<double>(-1, 1)(rng_);
      }
      Store(dtype, p, i, v);
    }
    return out;
  }

  // 2-D (m, n) -> (n, m), values converted to `dtype` and perturbed.
  Tensor Transposed(const Tensor& t, DType dtype, double scale) {
    const int64_t m = t.shape()[0], n = t.shape()[1];
    Tensor out = *Tensor::Allocate(dtype, Shape{n, m});
    auto* p = static_cast<uint8_t*>(out.mutable_data());
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double v = Load(t, i * n + j);
        if (std::uniform_int_distribution<int>(0, 2)(rng_) == 0) {
          v += scale * std::uniform_real_distribution<double>(-1, 1)(rng_);
        }
        Store(dtype, p, j * m + i, v);
      }
    }
    return out;
  }

  static double Load(const Tensor& t, int64_t i) {
    return LoadElementAsDouble(t.dtype(), t.data(), i);
  }

  static void Set(Tensor& t, int64_t i, double v) {
    Store(t.dtype(), static_cast<uint8_t*>(t.mutable_data()), i, v);
  }

 private:
  double Value() {
    const double mag =
        std::pow(10.0, std::uniform_int_distribution<int>(-3, 2)(rng_));
    return mag * std::uniform_real_distribution<double>(-1, 1)(rng_);
  }

  // float -> float16, round to nearest (test values are far below
  // float16's largest finite value).
  static uint16_t ToHalf(float f) {
    if (std::isnan(f)) return 0x7e00;
    const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    float a = std::fabs(f);
    if (a == 0) return sign;
    const float q = std::ldexp(1.0f, std::max(std::ilogb(a), -14) - 10);
    a = std::nearbyint(a / q) * q;
    if (a == 0) return sign;
    const int e = std::ilogb(a);
    if (e < -14) {  // subnormal: a multiple of 2^-24
      return static_cast<uint16_t>(
          sign | static_cast<uint16_t>(a / std::ldexp(1.0f, -24)));
    }
    const auto mant =
        static_cast<uint16_t>((a / std::ldexp(1.0f, e) - 1.0f) * 1024.0f);
    return static_cast<uint16_t>(sign | ((e + 15) << 10) | mant);
  }

  static void Store(DType dtype, uint8_t* base, int64_t i, double v) {
    uint8_t* p = base + static_cast<size_t>(i) * DTypeSize(dtype);
    auto put = [p](auto x) { std::memcpy(p, &x, sizeof(x)); };
    const double iv = std::isfinite(v) ? std::round(v * 10) : 0;
    switch (dtype) {
      case DType::kBool:
        return put(static_cast<uint8_t>(v > 0));
      case DType::kInt8:
        return put(static_cast<int8_t>(std::clamp(iv, -100.0, 100.0)));
      case DType::kUInt8:
        return put(static_cast<uint8_t>(std::clamp(iv, 0.0, 200.0)));
      case DType::kInt16:
        return put(static_cast<int16_t>(iv));
      case DType::kInt32:
        return put(static_cast<int32_t>(iv));
      case DType::kInt64:
        return put(static_cast<int64_t>(iv));
      case DType::kFloat16:
        return put(ToHalf(static_cast<float>(v)));
      case DType::kBFloat16:
        return put(FloatToBFloat16(static_cast<float>(v)));
      case DType::kFloat32:
        return put(static_cast<float>(v));
      case DType::kFloat64:
        return put(v);
      case DType::kUInt16:
        return put(static_cast<uint16_t>(std::clamp(iv, 0.0, 60000.0)));
      case DType::kUInt32:
        return put(static_cast<uint32_t>(std::max(iv, 0.0)));
      case DType::kUInt64:
        return put(static_cast<uint64_t>(std::max(iv, 0.0)));
    }
  }

  std::mt19937 rng_;
};

void PutTensor(storage::Store& store, const std::string& run,
               const Item& item) {
  storage::TensorHeader h;
  h.address = {item.checkpoint, item.key, item.step, item.rank};
  h.placement = item.placement;
  h.dtype = item.tensor.dtype();
  h.shape = item.tensor.shape();
  h.byte_length = item.tensor.num_bytes();
  h.crc32c = Crc32c(item.tensor.data(), item.tensor.num_bytes());
  absl::StatusOr<std::unique_ptr<storage::TensorWriter>> w =
      store.BeginTensor(run, h);
  ASSERT_THAT(w, IsOk());
  const auto* bytes = static_cast<const uint8_t*>(item.tensor.data());
  size_t done = 0;
  while (done < h.byte_length) {  // a few appends per tensor
    const size_t n = std::min<size_t>(h.byte_length - done, 1000);
    ASSERT_THAT((*w)->Append(absl::MakeConstSpan(bytes + done, n)), IsOk());
    done += n;
  }
  ASSERT_THAT((*w)->Commit(), IsOk());
}

// Stores `items` (in this order: the arrival order) as run `name` and
// returns the same run as RunData (checkpoints by first tensor).
core::RunData AddRun(storage::Store& store, const std::string& name,
                     const std::vector<Item>& items) {
  storage::RunInfo info;
  info.name = name;
  EXPECT_THAT(store.CreateRun(info), IsOk());
  core::RunData run;
  run.name = name;
  std::map<std::string, size_t> cps;
  for (const Item& item : items) {
    PutTensor(store, name, item);
    auto [it, inserted] = cps.emplace(item.checkpoint, run.checkpoints.size());
    if (inserted) run.checkpoints.push_back({item.checkpoint, {}});
    run.checkpoints[it->second].tensors.push_back(
        {item.key, item.step, item.tensor});
    run.checkpoints[it->second].tensors.back().rank = item.rank;
    run.checkpoints[it->second].tensors.back().placement = item.placement;
  }
  return run;
}

// ---------------------------------------------------------------------------
// Report comparison.

void ExpectSum(double stored, double memory, bool exact, const char* what) {
  if (exact || std::isnan(memory) || std::isinf(memory)) {
    if (std::isnan(memory)) {
      EXPECT_TRUE(std::isnan(stored)) << what;
    } else {
      EXPECT_EQ(stored, memory) << what;
    }
    return;
  }
  EXPECT_NEAR(stored, memory,
              1e-12 * std::max(std::fabs(stored), std::fabs(memory)))
      << what;
}

bool SumMetric(core::Metric m) {
  return m == core::Metric::kMeanAbs || m == core::Metric::kMeanRel ||
         m == core::Metric::kRmse || m == core::Metric::kCosine;
}

void ExpectSameStats(const kernels::DiffStats& s, const kernels::DiffStats& m,
                     bool exact) {
  EXPECT_EQ(s.count, m.count);
  EXPECT_EQ(s.nan_diff, m.nan_diff);
  EXPECT_EQ(s.inf_diff, m.inf_diff);
  EXPECT_EQ(s.mismatches, m.mismatches);
  EXPECT_EQ(s.nan_ref, m.nan_ref);
  EXPECT_EQ(s.nan_cand, m.nan_cand);
  EXPECT_EQ(s.inf_ref, m.inf_ref);
  EXPECT_EQ(s.inf_cand, m.inf_cand);
  ExpectSum(s.sum_abs, m.sum_abs, exact, "sum_abs");
  ExpectSum(s.sum_sq, m.sum_sq, exact, "sum_sq");
  ExpectSum(s.sum_rel, m.sum_rel, exact, "sum_rel");
  ExpectSum(s.dot, m.dot, exact, "dot");
  ExpectSum(s.ref_sq, m.ref_sq, exact, "ref_sq");
  ExpectSum(s.cand_sq, m.cand_sq, exact, "cand_sq");
  EXPECT_EQ(s.max_rel, m.max_rel);
  EXPECT_EQ(s.min_abs, m.min_abs);
  if (std::isnan(m.max_abs)) {
    EXPECT_TRUE(std::isnan(s.max_abs));
  } else {
    EXPECT_EQ(s.max_abs, m.max_abs);
  }
  EXPECT_EQ(s.max_index, m.max_index);
  EXPECT_EQ(std::isnan(s.ref_at_max), std::isnan(m.ref_at_max));
  if (!std::isnan(m.ref_at_max)) {
    EXPECT_EQ(s.ref_at_max, m.ref_at_max);
  }
  EXPECT_EQ(std::isnan(s.cand_at_max), std::isnan(m.cand_at_max));
  if (!std::isnan(m.cand_at_max)) {
    EXPECT_EQ(s.cand_at_max, m.cand_at_max);
  }
  EXPECT_EQ(s.histogram, m.histogram);
}

// The part of a reason that never depends on the rounding of sums.
std::string ExactPart(const std::string& reason) {
  const size_t at = reason.find("; largest error at");
  return at == std::string::npos ? std::string() : reason.substr(at);
}

// `stored` (CompareStoredRuns) against `memory` (CompareRuns): equal in
// every field; sums (and what derives from them) exactly when `exact`, else
// to 1e-12 relative.
void ExpectSameReport(const core::Report& stored, const core::Report& memory,
                      bool exact) {
  EXPECT_EQ(stored.passed, memory.passed);
  EXPECT_EQ(stored.ref, memory.ref);
  EXPECT_EQ(stored.cand, memory.cand);
  EXPECT_EQ(stored.policy, memory.policy);
  EXPECT_EQ(stored.backend, memory.backend);
  EXPECT_EQ(stored.summary.tensors, memory.summary.tensors);
  EXPECT_EQ(stored.summary.passed, memory.summary.passed);
  EXPECT_EQ(stored.summary.warned, memory.summary.warned);
  EXPECT_EQ(stored.summary.failed, memory.summary.failed);
  EXPECT_EQ(stored.summary.missing_in_ref, memory.summary.missing_in_ref);
  EXPECT_EQ(stored.summary.missing_in_cand, memory.summary.missing_in_cand);
  ASSERT_EQ(stored.first_failure.has_value(), memory.first_failure.has_value());
  if (memory.first_failure) {
    EXPECT_EQ(stored.first_failure->checkpoint,
              memory.first_failure->checkpoint);
    EXPECT_EQ(stored.first_failure->key, memory.first_failure->key);
    EXPECT_EQ(stored.first_failure->step, memory.first_failure->step);
    EXPECT_EQ(stored.first_failure->rank, memory.first_failure->rank);
  }
  EXPECT_EQ(stored.reasons, memory.reasons);
  ASSERT_EQ(stored.ranks.size(), memory.ranks.size());
  for (size_t i = 0; i < memory.ranks.size(); ++i) {
    EXPECT_EQ(stored.ranks[i].rank, memory.ranks[i].rank);
    EXPECT_EQ(stored.ranks[i].tensors, memory.ranks[i].tensors);
    EXPECT_EQ(stored.ranks[i].passed, memory.ranks[i].passed);
    EXPECT_EQ(stored.ranks[i].failed, memory.ranks[i].failed);
  }
  ASSERT_EQ(stored.replica_mismatches.size(), memory.replica_mismatches.size());
  for (size_t i = 0; i < memory.replica_mismatches.size(); ++i) {
    const core::ReplicaMismatch& s = stored.replica_mismatches[i];
    const core::ReplicaMismatch& m = memory.replica_mismatches[i];
    EXPECT_EQ(s.side, m.side);
    EXPECT_EQ(s.key, m.key);
    EXPECT_EQ(s.step, m.step);
    EXPECT_EQ(s.rank, m.rank);
    EXPECT_EQ(s.against_rank, m.against_rank);
    EXPECT_EQ(s.reason, m.reason);
  }
  ASSERT_EQ(stored.global_tensors.size(), memory.global_tensors.size());
  for (size_t i = 0; i < memory.global_tensors.size(); ++i) {
    const core::TensorResult& s = stored.global_tensors[i];
    const core::TensorResult& m = memory.global_tensors[i];
    SCOPED_TRACE("global tensor " + m.checkpoint + "/" + m.DisplayKey());
    EXPECT_EQ(s.key, m.key);
    EXPECT_EQ(s.status, m.status);
    EXPECT_EQ(s.shape_ref, m.shape_ref);
    EXPECT_EQ(s.merged_ranks, m.merged_ranks);
    ASSERT_EQ(s.stats.has_value(), m.stats.has_value());
    if (m.stats) ExpectSameStats(*s.stats, *m.stats, exact);
    EXPECT_EQ(s.max_abs_index, m.max_abs_index);
  }
  ASSERT_EQ(stored.checkpoints.size(), memory.checkpoints.size());
  for (size_t i = 0; i < memory.checkpoints.size(); ++i) {
    const core::CheckpointResult& s = stored.checkpoints[i];
    const core::CheckpointResult& m = memory.checkpoints[i];
    SCOPED_TRACE("checkpoint " + m.name);
    EXPECT_EQ(s.name, m.name);
    EXPECT_EQ(s.passed, m.passed);
    EXPECT_EQ(s.tensors, m.tensors);
    EXPECT_EQ(s.passed_tensors, m.passed_tensors);
    EXPECT_EQ(s.warned_tensors, m.warned_tensors);
    EXPECT_EQ(s.failed_tensors, m.failed_tensors);
    EXPECT_EQ(s.reasons, m.reasons);
    EXPECT_EQ(s.steps, m.steps);
    EXPECT_EQ(s.min_steps, m.min_steps);
    EXPECT_EQ(s.present_in_ref, m.present_in_ref);
    EXPECT_EQ(s.present_in_cand, m.present_in_cand);
    ASSERT_EQ(s.worst.has_value(), m.worst.has_value());
    if (m.worst) {
      EXPECT_EQ(s.worst->key, m.worst->key);
      EXPECT_EQ(s.worst->step, m.worst->step);
      EXPECT_EQ(s.worst->metric, m.worst->metric);
      ExpectSum(s.worst->value, m.worst->value, exact, "worst");
      EXPECT_EQ(s.worst->bound, m.worst->bound);
      EXPECT_EQ(s.worst->kind, m.worst->kind);
    }
  }
  ASSERT_EQ(stored.tensors.size(), memory.tensors.size());
  for (size_t i = 0; i < memory.tensors.size(); ++i) {
    const core::TensorResult& s = stored.tensors[i];
    const core::TensorResult& m = memory.tensors[i];
    SCOPED_TRACE("tensor " + m.checkpoint + "/" + m.DisplayKey());
    EXPECT_EQ(s.checkpoint, m.checkpoint);
    EXPECT_EQ(s.key, m.key);
    EXPECT_EQ(s.cand_key, m.cand_key);
    EXPECT_EQ(s.step, m.step);
    EXPECT_EQ(s.rank, m.rank);
    EXPECT_EQ(s.status, m.status);
    EXPECT_EQ(s.dtype_ref, m.dtype_ref);
    EXPECT_EQ(s.dtype_cand, m.dtype_cand);
    EXPECT_EQ(s.shape_ref, m.shape_ref);
    EXPECT_EQ(s.shape_cand, m.shape_cand);
    EXPECT_EQ(s.transposed, m.transposed);
    ASSERT_EQ(s.stats.has_value(), m.stats.has_value());
    if (m.stats) ExpectSameStats(*s.stats, *m.stats, exact);
    EXPECT_EQ(s.stats_tolerance, m.stats_tolerance);
    EXPECT_EQ(s.max_abs_index, m.max_abs_index);
    ASSERT_EQ(s.checks.size(), m.checks.size());
    for (size_t c = 0; c < m.checks.size(); ++c) {
      const core::CheckResult& sc = s.checks[c];
      const core::CheckResult& mc = m.checks[c];
      EXPECT_EQ(sc.check.metric, mc.check.metric);
      EXPECT_EQ(sc.check.kind, mc.check.kind);
      EXPECT_EQ(sc.check.bound, mc.check.bound);
      EXPECT_EQ(sc.check.warn, mc.check.warn);
      EXPECT_EQ(sc.check.atol, mc.check.atol);
      EXPECT_EQ(sc.check.rtol, mc.check.rtol);
      ExpectSum(sc.value, mc.value, exact || !SumMetric(mc.check.metric),
                "check value");
      EXPECT_EQ(sc.status, mc.status);
      EXPECT_EQ(sc.tolerance, mc.tolerance);
    }
    EXPECT_EQ(s.policy_source, m.policy_source);
    if (exact) {
      EXPECT_EQ(s.reason, m.reason);
    } else {
      EXPECT_EQ(ExactPart(s.reason), ExactPart(m.reason));
      EXPECT_EQ(s.reason.empty(), m.reason.empty());
    }
    EXPECT_EQ(s.notes, m.notes);
  }
}

// ---------------------------------------------------------------------------
// The mixed runs.

struct Runs {
  std::unique_ptr<storage::Store> store = storage::CreateMemoryStore();
  core::RunData ref, cand;
};

// `store`: where the runs go (nullptr: a memory store).
Runs MixedRuns(uint32_t seed, std::unique_ptr<storage::Store> store = nullptr) {
  Gen g(seed);
  Runs runs;
  if (store != nullptr) runs.store = std::move(store);
  std::vector<Item> ref, cand;
  auto pair = [&](const std::string& cp, const std::string& key,
                  std::optional<int64_t> step, Tensor r, Tensor c) {
    ref.push_back({cp, key, step, std::move(r)});
    cand.push_back({cp, key, step, std::move(c)});
  };
  const DType f32 = DType::kFloat32;
  // Element-wise pairs of many sizes and dtypes.
  for (int64_t n : {1, 7, 100, 1001, 4099}) {
    Tensor r = g.Random(f32, {n});
    pair("forward", "f32_" + std::to_string(n), {}, r, g.Perturb(r, 1e-4));
  }
  {
    Tensor r = g.Random(f32, {3, 5, 7});
    pair("forward", "f32_vs_f16", {}, r, g.Convert(r, DType::kFloat16, 0));
    Tensor h = g.Random(DType::kFloat16, {999});
    pair("forward", "f16_vs_f64", {}, h, g.Convert(h, DType::kFloat64, 1e-3));
    Tensor b = g.Random(DType::kBFloat16, {17, 31});
    pair("forward", "bf16", {}, b, g.Perturb(b, 1e-2));
    Tensor d = g.Random(DType::kFloat64, {2000});
    pair("forward", "f64", {}, d, g.Perturb(d, 1e-9));
    Tensor i = g.Random(DType::kInt32, {333});
    pair("forward", "i32_vs_i64", {}, i, g.Convert(i, DType::kInt64, 2));
    Tensor u = g.Random(DType::kUInt8, {77});
    pair("forward", "u8_vs_i16", {}, u, g.Convert(u, DType::kInt16, 0));
    Tensor bo = g.Random(DType::kBool, {50});
    pair("forward", "bool", {}, bo, g.Perturb(bo, 1));
    Tensor i8 = g.Random(DType::kInt8, {65});
    pair("forward", "i8_vs_f32", {}, i8, g.Convert(i8, f32, 0.5));
  }
  // NaN and infinities.
  {
    Tensor r = g.Random(f32, {500});
    Tensor c = g.Perturb(r, 1e-5);
    Gen::Set(c, 123, std::numeric_limits<double>::quiet_NaN());
    Gen::Set(r, 400, std::numeric_limits<double>::quiet_NaN());
    pair("forward", "with_nan", {}, r, c);
    Tensor ri = g.Random(DType::kFloat64, {300});
    Tensor ci = g.Perturb(ri, 1e-5);
    Gen::Set(ri, 10, std::numeric_limits<double>::infinity());
    Gen::Set(ci, 10, std::numeric_limits<double>::infinity());
    Gen::Set(ci, 200, -std::numeric_limits<double>::infinity());
    pair("forward", "with_inf", {}, ri, ci);
  }
  // 0-d and empty tensors.
  pair("forward", "scalar", {}, g.Random(f32, {}), g.Random(f32, {}));
  pair("forward", "empty", {}, g.Random(f32, {0}), g.Random(f32, {0}));
  pair("forward", "empty2d", {}, g.Random(f32, {3, 0}),
       g.Random(DType::kFloat16, {3, 0}));
  // Transposed 2-D pairs (transpose: auto), mixed dtypes too.
  {
    Tensor w = g.Random(f32, {13, 7});
    pair("forward", "fc.weight", {}, w, g.Transposed(w, f32, 1e-4));
    Tensor w2 = g.Random(f32, {50, 37});
    pair("forward", "proj.weight", {}, w2,
         g.Transposed(w2, DType::kFloat16, 0));
    Tensor w3 = g.Random(DType::kFloat64, {3, 200});
    pair("forward", "wide.weight", {}, w3, g.Transposed(w3, f32, 1e-3));
  }
  // Steps.
  for (int64_t step = 0; step < 3; ++step) {
    Tensor l = g.Random(f32, {});
    pair("loss", "loss", step, l, g.Perturb(l, 1e-7));
    Tensor gr = g.Random(f32, {64, 3});
    pair("bp_align", "grad", step, gr, g.Perturb(gr, 1e-6));
  }
  // Shape mismatch, missing keys on both sides, a renamed key.
  ref.push_back({"forward", "col", {}, g.Random(f32, {4, 1})});
  cand.push_back({"forward", "col", {}, g.Random(f32, {4})});
  ref.push_back({"forward", "only_in_ref", {}, g.Random(f32, {3})});
  cand.push_back({"forward", "only_in_cand", {}, g.Random(f32, {3})});
  {
    Tensor r = g.Random(f32, {600});
    ref.push_back({"forward", "encoder.layer.0", {}, r});
    cand.push_back({"forward", "encoder.layers.0", {}, g.Perturb(r, 1e-6)});
  }
  // A checkpoint only in cand.
  cand.push_back({"metric", "acc", {}, g.Random(f32, {})});

  // Arrival order: interleave checkpoints (steps arrive in between).
  std::stable_partition(ref.begin(), ref.end(),
                        [](const Item& i) { return i.step != 1; });
  runs.ref = AddRun(*runs.store, "team/torch", ref);
  runs.cand = AddRun(*runs.store, "team/paddle", cand);
  return runs;
}

// Several checks per key: two allclose tolerances (two reductions per pair),
// a sum-based metric, max_abs, cosine; rename; transpose auto.
core::Policy MixedPolicy() {
  core::Policy p = *core::PresetPolicy("reprod");
  p.name = "mixed";
  p.defaults = {core::MaxCheck(core::Metric::kMeanAbs, 1e-4),
                core::MaxCheck(core::Metric::kMaxAbs, 1e-2, 1e-3),
                core::MinCheck(core::Metric::kCosine, 0.999),
                core::AllcloseCheck(),
                core::AllcloseCheck(1e-3, 1e-3),
                core::MaxCheck(core::Metric::kRmse, 1e-3)};
  core::Rule r;
  r.match = "bp_align/*";
  r.checks = {core::MaxCheck(core::Metric::kMismatchRatio, 0.5),
              core::MaxCheck(core::Metric::kMeanRel, 1e-3)};
  r.checks[0].atol = 1e-7;
  r.checks[0].rtol = 0;
  r.equal_nan = true;
  p.rules = {r};
  p.checkpoints = {{"bp_align", core::CheckpointPolicy{{}, 2, std::nullopt}}};
  p.rename = {{"encoder.layers.", "encoder.layer."}};
  p.required = {"forward", "loss", "absent"};
  return p;
}

class StoreCompareTest : public ::testing::Test {
 protected:
  // CompareStoredRuns under many window and batch sizes gives the report
  // core::CompareRuns gives for the same data.
  void ExpectSameReportOnEveryPath(const Runs& runs);

  kernels::CpuBackend backend_{2};
};

// Every path again on a RocksDB store that keeps every tensor in a segment
// file: windows are then mapped in place (TensorReader::Map), not copied.
TEST_F(StoreCompareTest, SameReportAsCompareRunsOnEveryPath) {
  std::string dir = (std::filesystem::temp_directory_path() / "store_compare_XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  storage::RocksDbStoreOptions segments;
  segments.segment_tensor_bytes = 1;
  segments.sync_commits = false;
  segments.min_free_bytes = 0;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<storage::Store> rocksdb,
                       storage::OpenRocksDbStore(dir + "/store", segments));
  for (bool mapped : {false, true}) {
    SCOPED_TRACE(mapped ? "RocksDB segment files" : "memory store");
    ExpectSameReportOnEveryPath(mapped ? MixedRuns(7, std::move(rocksdb)) : MixedRuns(7));
  }
  std::filesystem::remove_all(dir);
}

void StoreCompareTest::ExpectSameReportOnEveryPath(const Runs& runs) {
  const core::Policy policy = MixedPolicy();
  ASSERT_OK_AND_ASSIGN(
      core::Report memory,
      core::CompareRuns(runs.ref, runs.cand, policy, backend_));
  // Sanity: the report exercises what it should.
  EXPECT_GT(memory.summary.failed, 0);
  EXPECT_EQ(memory.summary.missing_in_ref, 2);  // only_in_cand, metric/acc
  EXPECT_EQ(memory.summary.missing_in_cand, 1);

  struct Case {
    const char* name;
    size_t small_pair_bytes, batch_bytes, window_bytes;
    bool exact;
  };
  const Case cases[] = {
      {"defaults: all batched", size_t{4} << 20, size_t{64} << 20,
       size_t{16} << 20, true},
      {"tiny batches", size_t{4} << 20, 1, size_t{16} << 20, true},
      {"all windowed, 24-byte windows", 0, 1, 24, false},
      {"mixed, 40-byte windows", 64, 200, 40, false},
      {"one-element windows", 0, 1000, 1, false},
      {"windows of 1000 bytes", 2000, 5000, 1000, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    StoreCompareOptions options;
    options.small_pair_bytes = c.small_pair_bytes;
    options.batch_bytes = c.batch_bytes;
    options.window_bytes = c.window_bytes;
    ASSERT_OK_AND_ASSIGN(
        core::Report stored,
        CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                          backend_, options));
    ExpectSameReport(stored, memory, c.exact);
  }
}

TEST_F(StoreCompareTest, BitExactOnTheBackendChunkGrid) {
  Gen g(11);
  const DType f32 = DType::kFloat32;
  Tensor flat = g.Random(f32, {9 * kChunk + 12345});
  Tensor mixed = g.Random(DType::kFloat64, {3 * kChunk + 7});
  Tensor w = g.Random(f32, {4000, 300});
  Tensor wide = g.Random(f32, {2, 5 * kChunk});  // rows wider than a window
  std::vector<Item> ref = {{"fwd", "flat", {}, flat},
                           {"fwd", "mixed", {}, mixed},
                           {"fwd", "w", {}, w},
                           {"fwd", "wide", {}, wide}};
  std::vector<Item> cand = {
      {"fwd", "flat", {}, g.Perturb(flat, 1e-3)},
      {"fwd", "mixed", {}, g.Convert(mixed, f32, 1e-4)},
      {"fwd", "w", {}, g.Transposed(w, DType::kFloat16, 0)},
      {"fwd", "wide", {}, g.Transposed(wide, f32, 1e-5)}};
  auto store = storage::CreateMemoryStore();
  core::RunData r = AddRun(*store, "a/ref", ref);
  core::RunData c = AddRun(*store, "a/cand", cand);
  const core::Policy policy = MixedPolicy();
  ASSERT_OK_AND_ASSIGN(core::Report memory,
                       core::CompareRuns(r, c, policy, backend_));
  ASSERT_TRUE(memory.tensors[2].transposed);

  StoreCompareOptions options;
  options.small_pair_bytes = 0;
  // 1 backend chunk of float64 / 2 of float32 per window: flat in 5
  // windows (the last partial), mixed in 4, w in 5 tiles of 896 rows (one
  // backend row chunk), wide in column-split tiles (its rows of 5 chunks
  // exceed the window). Five windows merge differently in a sequence and
  // in the backend's tree, so this also pins the merge order.
  options.window_bytes = kChunk * 8;
  // What the backend plans for these budgets (elements per side on the
  // wider dtype): exact windows but for the wide rows.
  EXPECT_TRUE(backend_.PlanFlatWindows(f32, f32, 9 * kChunk + 12345, 2 * kChunk).exact);
  EXPECT_TRUE(backend_.PlanFlatWindows(DType::kFloat64, f32, 3 * kChunk + 7, kChunk).exact);
  EXPECT_TRUE(backend_.PlanTransposedWindows(f32, DType::kFloat16, 4000, 300, 2 * kChunk).exact);
  EXPECT_FALSE(backend_.PlanTransposedWindows(f32, f32, 2, 5 * kChunk, 2 * kChunk).exact);
  {
    ASSERT_OK_AND_ASSIGN(core::Report stored,
                         CompareStoredRuns(*store, "a/ref", "a/cand", policy,
                                           backend_, options));
    // Column-split tiles reduce in a different order: sums to 1e-12 there.
    core::Report memory_rest = memory, stored_rest = stored;
    ExpectSameReport(stored, memory, /*exact=*/false);
    memory_rest.tensors.pop_back();
    stored_rest.tensors.pop_back();
    memory_rest.checkpoints.clear();
    stored_rest.checkpoints.clear();
    ExpectSameReport(stored_rest, memory_rest, /*exact=*/true);
  }
  // Default windows (16 MiB): bit-exact everywhere.
  ASSERT_OK_AND_ASSIGN(
      core::Report stored,
      CompareStoredRuns(*store, "a/ref", "a/cand", policy, backend_));
  ExpectSameReport(stored, memory, /*exact=*/true);
}

// The stored compare cuts windows where the backend's plan says and merges
// them with the backend's MergeWindows (it knows no grid of its own): a
// backend planning 1000-element windows and 7-row tiles gets exactly those,
// and the report still matches the in-memory one (to rounding: that plan is
// off the cpu grid).
// A cpu backend (`threads` threads) behind the Backend interface, every call
// forwarded; test backends override what they change.
class ForwardingCpuBackend : public kernels::Backend {
 public:
  explicit ForwardingCpuBackend(int threads) : inner_(threads) {}
  std::string_view name() const override { return inner_.name(); }
  absl::StatusOr<kernels::DiffStats> Compare(const kernels::DiffTask& task) override {
    return inner_.Compare(task);
  }
  absl::Status CompareBatch(absl::Span<const kernels::DiffTask> tasks,
                            absl::Span<kernels::DiffStats> out) override {
    return inner_.CompareBatch(tasks, out);
  }
  kernels::FlatWindowPlan PlanFlatWindows(DType r, DType c, int64_t elements,
                                          int64_t max_window) const override {
    return inner_.PlanFlatWindows(r, c, elements, max_window);
  }
  kernels::TransposedWindowPlan PlanTransposedWindows(DType r, DType c, int64_t m, int64_t n,
                                                      int64_t max_window) const override {
    return inner_.PlanTransposedWindows(r, c, m, n, max_window);
  }
  kernels::DiffStats MergeWindows(absl::Span<const kernels::DiffStats> windows) const override {
    return inner_.MergeWindows(windows);
  }

 protected:
  kernels::CpuBackend inner_;
};

class PlanningBackend final : public ForwardingCpuBackend {
 public:
  PlanningBackend() : ForwardingCpuBackend(2) {}
  kernels::FlatWindowPlan PlanFlatWindows(DType, DType, int64_t elements,
                                          int64_t max_window_elements) const override {
    absl::MutexLock lock(&mu_);
    flat_requests_.push_back({elements, max_window_elements});
    return kernels::FlatWindowPlan{1000, false};
  }
  kernels::TransposedWindowPlan PlanTransposedWindows(DType, DType, int64_t, int64_t n,
                                                      int64_t) const override {
    return kernels::TransposedWindowPlan{7, n, false};
  }
  kernels::DiffStats MergeWindows(absl::Span<const kernels::DiffStats> windows) const override {
    absl::MutexLock lock(&mu_);
    merged_.push_back(windows.size());
    return inner_.MergeWindows(windows);
  }

  std::vector<std::pair<int64_t, int64_t>> flat_requests() const {
    absl::MutexLock lock(&mu_);
    return flat_requests_;
  }
  std::vector<size_t> merged() const {
    absl::MutexLock lock(&mu_);
    return merged_;
  }

 private:
  mutable absl::Mutex mu_;
  mutable std::vector<std::pair<int64_t, int64_t>> flat_requests_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<size_t> merged_ ABSL_GUARDED_BY(mu_);
};

TEST_F(StoreCompareTest, WindowsFollowTheBackendsPlanAndMerge) {
  Gen g(17);
  Tensor flat = g.Random(DType::kFloat32, {10000});
  Tensor w = g.Random(DType::kFloat32, {50, 40});
  std::vector<Item> ref = {{"fwd", "flat", {}, flat}, {"fwd", "w", {}, w}};
  std::vector<Item> cand = {{"fwd", "flat", {}, g.Perturb(flat, 1e-3)},
                            {"fwd", "w", {}, g.Transposed(w, DType::kFloat32, 1e-3)}};
  auto store = storage::CreateMemoryStore();
  core::RunData r = AddRun(*store, "a/ref", ref);
  core::RunData c = AddRun(*store, "a/cand", cand);
  const core::Policy policy = MixedPolicy();
  ASSERT_OK_AND_ASSIGN(core::Report memory, core::CompareRuns(r, c, policy, backend_));
  ASSERT_TRUE(memory.tensors[1].transposed);

  PlanningBackend planning;
  StoreCompareOptions options;
  options.small_pair_bytes = 0;
  options.window_bytes = 4096;  // 1024 float32 elements per side
  ASSERT_OK_AND_ASSIGN(core::Report stored,
                       CompareStoredRuns(*store, "a/ref", "a/cand", policy, planning, options));
  ExpectSameReport(stored, memory, /*exact=*/false);
  EXPECT_THAT(planning.flat_requests(),
              ::testing::ElementsAre(std::pair<int64_t, int64_t>{10000, 1024}));
  // One merge per pair and option set: flat in 10 windows, w in 8 tiles.
  std::vector<size_t> merged = planning.merged();
  ASSERT_FALSE(merged.empty());
  std::sort(merged.begin(), merged.end());
  EXPECT_EQ(merged.front(), 8u);
  EXPECT_EQ(merged.back(), 10u);
  for (size_t n : merged) EXPECT_TRUE(n == 8 || n == 10) << n;
}

// Two ranks per run: shards of a logits tensor (merged into a global one),
// a replicated weight whose copies differ between the candidate's ranks
// (found through the stored CRC-32Cs), partial sums, and a tensor only
// rank 1 of the reference logged. Stored and in-memory reports agree.
TEST_F(StoreCompareTest, MultiRankRunsGiveTheSameReport) {
  Gen g(23);
  const DType f32 = DType::kFloat32;
  Tensor logits0 = g.Random(f32, {3, 50}), logits1 = g.Random(f32, {3, 50});
  Tensor w = g.Random(f32, {40}), part0 = g.Random(f32, {9}), part1 = g.Random(f32, {9});
  Tensor extra = g.Random(f32, {5});
  Tensor w_changed = g.Perturb(w, 1e-3);
  auto shard = [](int64_t row) { return Placement::Shard(0, {6, 50}, {row, 0}); };
  auto item = [](std::string key, std::optional<int64_t> step, Tensor t, uint32_t rank,
                 Placement p) {
    Item i;
    i.checkpoint = "fwd";
    i.key = std::move(key);
    i.step = step;
    i.tensor = std::move(t);
    i.rank = rank;
    i.placement = std::move(p);
    return i;
  };
  std::vector<Item> ref, cand;
  ref.push_back(item("logits", 1, logits0, 0, shard(0)));
  ref.push_back(item("logits", 1, logits1, 1, shard(3)));
  ref.push_back(item("w", std::nullopt, w, 0, Placement::Replicate()));
  ref.push_back(item("w", std::nullopt, w, 1, Placement::Replicate()));
  ref.push_back(item("g", 1, part0, 0, Placement::Partial()));
  ref.push_back(item("g", 1, part1, 1, Placement::Partial()));
  ref.push_back(item("extra", 1, extra, 1, Placement{}));
  cand.push_back(item("logits", 1, g.Perturb(logits0, 1e-6), 0, shard(0)));
  cand.push_back(item("logits", 1, g.Perturb(logits1, 1e-2), 1, shard(3)));
  cand.push_back(item("w", std::nullopt, w, 0, Placement::Replicate()));
  cand.push_back(item("w", std::nullopt, w_changed, 1, Placement::Replicate()));
  cand.push_back(item("g", 1, g.Perturb(part0, 1e-6), 0, Placement::Partial()));
  cand.push_back(item("g", 1, part1, 1, Placement::Partial()));
  auto store = storage::CreateMemoryStore();
  core::RunData r = AddRun(*store, "a/ref", ref);
  core::RunData c = AddRun(*store, "a/cand", cand);
  const core::Policy policy = MixedPolicy();
  ASSERT_OK_AND_ASSIGN(core::Report memory, core::CompareRuns(r, c, policy, backend_));
  // Sanity: the report exercises what it should.
  ASSERT_EQ(memory.ranks.size(), 2u);
  ASSERT_EQ(memory.global_tensors.size(), 1u);
  EXPECT_EQ(memory.global_tensors[0].merged_ranks, (std::vector<uint32_t>{0, 1}));
  ASSERT_EQ(memory.replica_mismatches.size(), 1u);
  EXPECT_EQ(memory.replica_mismatches[0].side, "cand");
  EXPECT_EQ(memory.replica_mismatches[0].rank, 1u);
  EXPECT_EQ(memory.summary.missing_in_cand, 1);
  EXPECT_FALSE(memory.passed);
  for (size_t window : {size_t{16} << 20, size_t{40}}) {
    SCOPED_TRACE(absl::StrCat("window ", window));
    StoreCompareOptions options;
    options.small_pair_bytes = window == 40 ? 0 : options.small_pair_bytes;
    options.window_bytes = window;
    ASSERT_OK_AND_ASSIGN(core::Report stored,
                         CompareStoredRuns(*store, "a/ref", "a/cand", policy, backend_, options));
    ExpectSameReport(stored, memory, /*exact=*/window != 40);
  }
}

TEST_F(StoreCompareTest, PairFilterRestrictsTheReport) {
  Runs runs = MixedRuns(3);
  const core::Policy policy = MixedPolicy();
  core::CompareOptions compare;
  std::vector<std::string> asked;
  compare.pair_filter = [&asked](const core::TensorAddress& a) {
    asked.push_back(a.checkpoint + "/" + a.key);
    return a.step == 1 || a.key == "encoder.layer.0";
  };
  ASSERT_OK_AND_ASSIGN(
      core::Report memory,
      core::CompareRuns(runs.ref, runs.cand, policy, backend_, compare));
  const size_t asked_in_memory = asked.size();
  asked.clear();
  StoreCompareOptions options;
  options.compare = compare;
  options.small_pair_bytes = 0;
  options.window_bytes = 64;
  ASSERT_OK_AND_ASSIGN(
      core::Report stored,
      CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                        backend_, options));
  EXPECT_EQ(asked.size(), asked_in_memory);
  ExpectSameReport(stored, memory, /*exact=*/false);
  // Kept: loss@1, grad@1, the renamed key; plus the one-sided tensors.
  int compared = 0;
  for (const core::TensorResult& t : stored.tensors) {
    if (t.status == core::TensorStatus::kMissingInRef ||
        t.status == core::TensorStatus::kMissingInCand) {
      continue;
    }
    ++compared;
    EXPECT_TRUE(t.step == 1 || t.key == "encoder.layer.0") << t.key;
  }
  EXPECT_EQ(compared, 3);
}

TEST_F(StoreCompareTest, CheckpointSelection) {
  Runs runs = MixedRuns(5);
  const core::Policy policy = MixedPolicy();
  StoreCompareOptions options;
  options.compare.checkpoints = {"loss", "bp_align"};
  ASSERT_OK_AND_ASSIGN(core::Report memory,
                       core::CompareRuns(runs.ref, runs.cand, policy, backend_,
                                         options.compare));
  ASSERT_OK_AND_ASSIGN(
      core::Report stored,
      CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                        backend_, options));
  ExpectSameReport(stored, memory, /*exact=*/true);
  EXPECT_EQ(stored.checkpoints.size(), 2u);
}

TEST_F(StoreCompareTest, Errors) {
  Runs runs = MixedRuns(1);
  const core::Policy policy = MixedPolicy();
  EXPECT_THAT(CompareStoredRuns(*runs.store, "team/nope", "team/paddle", policy,
                                backend_),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("ref run 'team/nope' not found")));
  EXPECT_THAT(CompareStoredRuns(*runs.store, "team/torch", "team/gone", policy,
                                backend_),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("cand run 'team/gone' not found")));
  StoreCompareOptions zero;
  zero.window_bytes = 0;
  EXPECT_THAT(
      CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                        backend_, zero),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("window_bytes")));
  // Two cand keys that meet after rename: as CompareRuns.
  core::Policy clash = policy;
  clash.rename.push_back({"only_in_cand", "col"});
  EXPECT_THAT(
      CompareStoredRuns(*runs.store, "team/torch", "team/paddle", clash,
                        backend_),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("after rename")));
}

// A Store that delegates to another and can fail or observe reads.
class ObservedStore : public storage::Store {
 public:
  explicit ObservedStore(storage::Store& base) : base_(base) {}

  absl::Status CreateRun(const storage::RunInfo& run) override {
    return base_.CreateRun(run);
  }
  absl::StatusOr<storage::RunInfo> GetRun(std::string_view name) override {
    return base_.GetRun(name);
  }
  absl::StatusOr<std::vector<storage::RunInfo>> ListRuns(
      std::string_view prefix) override {
    return base_.ListRuns(prefix);
  }
  absl::StatusOr<storage::RunInfo> SealRun(std::string_view name,
                                           storage::RunState state) override {
    return base_.SealRun(name, state);
  }
  absl::StatusOr<uint64_t> DeleteRun(std::string_view name) override {
    return base_.DeleteRun(name);
  }
  absl::StatusOr<std::unique_ptr<storage::TensorWriter>> BeginTensor(
      std::string_view run, const storage::TensorHeader& header) override {
    return base_.BeginTensor(run, header);
  }
  absl::StatusOr<std::vector<storage::TensorMeta>> ListTensors(
      std::string_view run, std::string_view checkpoint) override {
    return base_.ListTensors(run, checkpoint);
  }
  absl::StatusOr<std::unique_ptr<storage::TensorReader>> OpenTensor(
      std::string_view run, const storage::TensorAddress& address) override {
    absl::StatusOr<std::unique_ptr<storage::TensorReader>> r =
        base_.OpenTensor(run, address);
    if (!r.ok()) return r;
    ++opened;
    return std::unique_ptr<storage::TensorReader>(
        new Reader(*this, *std::move(r), address.key == fail_key, run == counted_run));
  }
  absl::Status PutReport(const storage::StoredReport& report) override {
    return base_.PutReport(report);
  }
  absl::StatusOr<storage::StoredReport> GetReport(
      std::string_view id) override {
    return base_.GetReport(id);
  }
  absl::StatusOr<std::vector<storage::StoredReport>> ListReports(
      std::string_view run, size_t limit) override {
    return base_.ListReports(run, limit);
  }
  absl::StatusOr<storage::RunInfo> SetRunReference(std::string_view name,
                                                   bool reference) override {
    return base_.SetRunReference(name, reference);
  }
  absl::Status PutAuthRecord(std::string_view key,
                             std::string_view value) override {
    return base_.PutAuthRecord(key, value);
  }
  absl::Status InsertAuthRecord(std::string_view key,
                                std::string_view value) override {
    return base_.InsertAuthRecord(key, value);
  }
  absl::StatusOr<std::string> GetAuthRecord(std::string_view key) override {
    return base_.GetAuthRecord(key);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
  ListAuthRecords(std::string_view prefix) override {
    return base_.ListAuthRecords(prefix);
  }

  std::string fail_key;  // reads of this key fail with DataLoss
  size_t max_read = 0;
  int opened = 0;
  std::string counted_run;  // bytes read from this run's tensors:
  std::atomic<uint64_t> counted_bytes{0};

 private:
  class Reader : public storage::TensorReader {
   public:
    Reader(ObservedStore& owner, std::unique_ptr<storage::TensorReader> base,
           bool fail, bool counted)
        : owner_(owner), base_(std::move(base)), fail_(fail), counted_(counted) {}
    const storage::TensorMeta& meta() const override { return base_->meta(); }
    absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) override {
      if (fail_ && offset > 0) return absl::DataLossError("chunk 7 is gone");
      if (counted_) owner_.counted_bytes += dst.size();
      owner_.max_read = std::max(owner_.max_read, dst.size());
      return base_->Read(offset, dst);
    }

   private:
    ObservedStore& owner_;
    std::unique_ptr<storage::TensorReader> base_;
    bool fail_;
    bool counted_;
  };

  storage::Store& base_;
};

TEST_F(StoreCompareTest, ReadsStayWithinTheWindowAndErrorsNameTheTensor) {
  Runs runs = MixedRuns(9);
  const core::Policy policy = MixedPolicy();
  ObservedStore observed(*runs.store);
  StoreCompareOptions options;
  options.small_pair_bytes = 0;
  options.window_bytes = 256;
  ASSERT_OK_AND_ASSIGN(
      core::Report memory,
      core::CompareRuns(runs.ref, runs.cand, policy, backend_));
  ASSERT_OK_AND_ASSIGN(core::Report stored,
                       CompareStoredRuns(observed, "team/torch", "team/paddle",
                                         policy, backend_, options));
  ExpectSameReport(stored, memory, /*exact=*/false);
  EXPECT_GT(observed.max_read, 0u);
  EXPECT_LE(observed.max_read, options.window_bytes);
  EXPECT_GT(observed.opened, 0);

  observed.fail_key = "f32_4099";  // fails on its second window
  EXPECT_THAT(CompareStoredRuns(observed, "team/torch", "team/paddle", policy,
                                backend_, options),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("ref run 'team/torch' tensor "
                                 "forward/f32_4099: chunk 7 is gone")));
}

// A backend with a resident-ref cache (the cuda backend's contract, kept in
// host memory by the stand-in): the first compare reads every ref and
// fills the cache; the second reads no ref byte the cache holds, and both
// give the report of the data in memory. Batched and windowed pairs, a
// cache too small for everything, and new data under the same run names.
TEST_F(StoreCompareTest, ResidentRefsAreNotReadAgain) {
  const core::Policy policy = MixedPolicy();
  struct Case {
    const char* name;
    size_t small_pair_bytes, window_bytes;
    bool exact;
  };
  for (const Case& c : {Case{"batched", size_t{4} << 20, size_t{16} << 20, true},
                        Case{"windowed", 0, 1000, false}}) {
    SCOPED_TRACE(c.name);
    Runs runs = MixedRuns(21);
    ASSERT_OK_AND_ASSIGN(core::Report memory,
                         core::CompareRuns(runs.ref, runs.cand, policy, backend_));
    ObservedStore observed(*runs.store);
    observed.counted_run = "team/torch";
    // Named like the oracle, so reports compare equal field by field.
    kernels::testing::HostResidentBackend resident(size_t{64} << 20, "cpu");
    StoreCompareOptions options;
    options.small_pair_bytes = c.small_pair_bytes;
    options.window_bytes = c.window_bytes;

    ASSERT_OK_AND_ASSIGN(core::Report first, CompareStoredRuns(observed, "team/torch",
                                                               "team/paddle", policy,
                                                               resident, options));
    ExpectSameReport(first, memory, c.exact);
    const uint64_t ref_bytes = observed.counted_bytes.load();
    const kernels::ResidentStats after_first = resident.resident_stats();
    // Every ref read once, and all of it admitted. A pair under several
    // tolerances is several tasks with one key: the first misses, the
    // others hit what it left.
    EXPECT_GT(ref_bytes, 0u);
    EXPECT_GT(after_first.misses, 0u);
    EXPECT_EQ(after_first.admitted_bytes, ref_bytes);
    const uint64_t keyed_tasks = after_first.hits + after_first.misses;

    ASSERT_OK_AND_ASSIGN(core::Report second, CompareStoredRuns(observed, "team/torch",
                                                                "team/paddle", policy,
                                                                resident, options));
    ExpectSameReport(second, memory, c.exact);
    EXPECT_EQ(observed.counted_bytes.load(), ref_bytes) << "a resident ref was read again";
    const kernels::ResidentStats after_second = resident.resident_stats();
    EXPECT_EQ(after_second.hits, after_first.hits + keyed_tasks);
    EXPECT_EQ(after_second.misses, after_first.misses);

    // Room for part of the refs only: what is resident is skipped, the rest
    // read; the report is the same.
    kernels::testing::HostResidentBackend small(ref_bytes / 2, "cpu");
    ASSERT_OK_AND_ASSIGN(core::Report a, CompareStoredRuns(observed, "team/torch",
                                                           "team/paddle", policy, small,
                                                           options));
    const uint64_t before = observed.counted_bytes.load();
    ASSERT_OK_AND_ASSIGN(core::Report b, CompareStoredRuns(observed, "team/torch",
                                                           "team/paddle", policy, small,
                                                           options));
    ExpectSameReport(a, memory, c.exact);
    ExpectSameReport(b, memory, c.exact);
    const uint64_t reread = observed.counted_bytes.load() - before;
    EXPECT_GT(reread, 0u);
    EXPECT_LT(reread, ref_bytes);
    EXPECT_GT(small.resident_stats().hits, 0u);

    // Other bytes under the same run names and addresses (another store,
    // as after a run is deleted and logged again): never a stale hit.
    Runs other = MixedRuns(22);
    ASSERT_OK_AND_ASSIGN(core::Report other_memory,
                         core::CompareRuns(other.ref, other.cand, policy, backend_));
    ASSERT_OK_AND_ASSIGN(core::Report other_stored,
                         CompareStoredRuns(*other.store, "team/torch", "team/paddle", policy,
                                           resident, options));
    ExpectSameReport(other_stored, other_memory, c.exact);
  }
}

// A store that asks for parallel reads (as postgres+s3 does) over another.
class ParallelReadStore : public ObservedStore {
 public:
  ParallelReadStore(storage::Store& base, int parallelism)
      : ObservedStore(base), base_(base), parallelism_(parallelism) {}
  int read_parallelism() const override { return parallelism_; }
  absl::StatusOr<std::unique_ptr<storage::TensorReader>> OpenTensor(
      std::string_view run, const storage::TensorAddress& address) override {
    ++opened;
    return base_.OpenTensor(run, address);
  }
  std::atomic<int> opened{0};

 private:
  storage::Store& base_;
  const int parallelism_;
};

TEST_F(StoreCompareTest, ParallelReadsGiveTheSameReport) {
  Runs runs = MixedRuns(17);
  const core::Policy policy = MixedPolicy();
  ASSERT_OK_AND_ASSIGN(core::Report serial,
                       CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                                         backend_, StoreCompareOptions{}));
  for (int parallelism : {2, 8}) {
    for (size_t window : {size_t{16} << 20, size_t{40}}) {
      SCOPED_TRACE(absl::StrCat(parallelism, " readers, window ", window));
      ParallelReadStore parallel(*runs.store, parallelism);
      StoreCompareOptions options;
      options.window_bytes = window;
      options.small_pair_bytes = window == 40 ? 64 : options.small_pair_bytes;
      ASSERT_OK_AND_ASSIGN(core::Report report,
                           CompareStoredRuns(parallel, "team/torch", "team/paddle", policy,
                                             backend_, options));
      ExpectSameReport(report, serial, /*exact=*/window != 40);
      EXPECT_GT(parallel.opened.load(), 10);
    }
  }
}

// What several replicas' shared queue does, in one process: batches are
// taken by worker threads standing in for the other replicas.
class LocalWorkQueue : public storage::WorkQueue {
 public:
  absl::StatusOr<uint64_t> Submit(const std::vector<storage::WorkItem>& items) override {
    absl::MutexLock lock(&mu_);
    const uint64_t job = next_job_++;
    for (size_t b = 0; b < items.size(); ++b) {
      Batch batch;
      batch.spec = items[b].spec;
      specs_.push_back(items[b].spec);
      jobs_[job].push_back(std::move(batch));
    }
    ++submitted_;
    return job;
  }
  absl::StatusOr<std::optional<storage::ClaimedWork>> Claim(bool) override {
    absl::MutexLock lock(&mu_);
    for (auto& [job, batches] : jobs_) {
      for (size_t b = 0; b < batches.size(); ++b) {
        if (batches[b].state != storage::WorkResult::State::kPending) continue;
        batches[b].state = storage::WorkResult::State::kClaimed;
        return storage::ClaimedWork{job, static_cast<uint32_t>(b), batches[b].spec};
      }
    }
    return std::nullopt;
  }
  absl::Status Finish(uint64_t job, uint32_t batch,
                      const absl::StatusOr<std::string>& result) override {
    absl::MutexLock lock(&mu_);
    storage::WorkResult& r = jobs_[job][batch].result;
    jobs_[job][batch].state = result.ok() ? storage::WorkResult::State::kDone
                                          : storage::WorkResult::State::kFailed;
    if (result.ok()) r.result = *result;
    if (!result.ok()) r.error = result.status().ToString();
    ++finished_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<storage::WorkResult>> Results(uint64_t job) override {
    absl::MutexLock lock(&mu_);
    std::vector<storage::WorkResult> out;
    for (const Batch& b : jobs_[job]) {
      storage::WorkResult r = b.result;
      r.state = b.state;
      out.push_back(r);
    }
    return out;
  }
  absl::Status Drop(uint64_t job) override {
    absl::MutexLock lock(&mu_);
    jobs_.erase(job);
    return absl::OkStatus();
  }
  absl::StatusOr<int> LiveWorkers() override { return 2; }

  int submitted() {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }
  int finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  // Every batch spec ever submitted.
  std::vector<std::string> specs() {
    absl::MutexLock lock(&mu_);
    return specs_;
  }

 private:
  struct Batch {
    std::string spec;
    storage::WorkResult::State state = storage::WorkResult::State::kPending;
    storage::WorkResult result;
  };
  absl::Mutex mu_;
  std::map<uint64_t, std::vector<Batch>> jobs_ ABSL_GUARDED_BY(mu_);
  uint64_t next_job_ ABSL_GUARDED_BY(mu_) = 1;
  int submitted_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> specs_ ABSL_GUARDED_BY(mu_);
};

// The cpu backend under another name: tells which replica reduced a pair.
class RenamedCpuBackend final : public ForwardingCpuBackend {
 public:
  explicit RenamedCpuBackend(std::string name) : ForwardingCpuBackend(1), name_(std::move(name)) {}
  std::string_view name() const override { return name_; }

 private:
  std::string name_;
};

TEST_F(StoreCompareTest, DistributedCompareGivesTheSameReportBitForBit) {
  Runs runs = MixedRuns(13);
  const core::Policy policy = MixedPolicy();
  StoreCompareOptions local_options;
  ASSERT_OK_AND_ASSIGN(core::Report open_runs,
                       CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                                         backend_, local_options));
  LocalWorkQueue queue;
  StoreCompareOptions options;
  options.work_queue = &queue;
  options.distributed_batch_bytes = 4096;  // many batches
  // Runs still open stay local: nothing is submitted.
  ASSERT_OK_AND_ASSIGN(core::Report still_open,
                       CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                                         backend_, options));
  EXPECT_EQ(queue.submitted(), 0);
  ExpectSameReport(still_open, open_runs, /*exact=*/true);

  ASSERT_THAT(runs.store->SealRun("team/torch", storage::RunState::kSealed).status(), IsOk());
  ASSERT_THAT(runs.store->SealRun("team/paddle", storage::RunState::kSealed).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(core::Report local,
                       CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                                         backend_, local_options));
  // Another "replica" takes batches while the call takes its own.
  std::atomic<bool> stop{false};
  std::atomic<int> taken_elsewhere{0};
  std::thread other([&] {
    RenamedCpuBackend backend("cpu-b");
    while (!stop) {
      absl::StatusOr<std::optional<storage::ClaimedWork>> w = queue.Claim(false);
      if (!w.ok() || !w->has_value()) {
        absl::SleepFor(absl::Microseconds(200));
        continue;
      }
      absl::StatusOr<std::string> r = ReduceWorkBatch(*runs.store, backend, (*w)->spec);
      EXPECT_THAT(r.status(), IsOk());
      ASSERT_THAT(queue.Finish((*w)->job, (*w)->batch, r), IsOk());
      ++taken_elsewhere;
    }
  });
  ASSERT_OK_AND_ASSIGN(core::Report distributed,
                       CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                                         backend_, options));
  stop = true;
  other.join();
  EXPECT_EQ(queue.submitted(), 1);
  EXPECT_GT(queue.finished(), 2);
  ExpectSameReport(distributed, local, /*exact=*/true);
  std::printf("distributed: %d batches, %d reduced by the other worker\n", queue.finished(),
              taken_elsewhere.load());
  // Each compared tensor names the replica's backend that reduced it (the
  // other replica's name travels back with its batch's results).
  int here = 0, elsewhere = 0;
  for (const core::TensorResult& t : distributed.tensors) {
    if (!t.stats.has_value()) {
      EXPECT_EQ(t.reduced_by, "") << t.key;
      continue;
    }
    here += t.reduced_by == "cpu";
    elsewhere += t.reduced_by == "cpu-b";
    EXPECT_THAT(t.reduced_by, ::testing::AnyOf("cpu", "cpu-b")) << t.key;
  }
  EXPECT_EQ(elsewhere > 0, taken_elsewhere > 0) << here << " here, " << elsewhere << " elsewhere";
}

TEST_F(StoreCompareTest, WorkBatchesRefuseChangedRunsAndGarbage) {
  Runs runs = MixedRuns(15);
  ASSERT_THAT(runs.store->SealRun("team/torch", storage::RunState::kSealed).status(), IsOk());
  ASSERT_THAT(runs.store->SealRun("team/paddle", storage::RunState::kSealed).status(), IsOk());
  LocalWorkQueue queue;
  StoreCompareOptions options;
  options.work_queue = &queue;
  options.distributed_batch_bytes = 1;  // a batch per pair
  // The other worker fails every batch it takes, so the submitter reduces
  // them itself (the fallback path).
  std::atomic<bool> stop{false};
  std::thread other([&] {
    while (!stop) {
      absl::StatusOr<std::optional<storage::ClaimedWork>> w = queue.Claim(false);
      if (!w.ok() || !w->has_value()) {
        absl::SleepFor(absl::Microseconds(200));
        continue;
      }
      ASSERT_THAT(queue.Finish((*w)->job, (*w)->batch, absl::UnavailableError("worker died")),
                  IsOk());
    }
  });
  const core::Policy policy = MixedPolicy();
  absl::StatusOr<core::Report> with_failures =
      CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy, backend_, options);
  stop = true;
  other.join();
  ASSERT_THAT(with_failures.status(), IsOk());
  ASSERT_OK_AND_ASSIGN(core::Report local,
                       CompareStoredRuns(*runs.store, "team/torch", "team/paddle", policy,
                                         backend_, StoreCompareOptions{}));
  ExpectSameReport(*with_failures, local, /*exact=*/true);

  ASSERT_GT(queue.specs().size(), 2u);
  const std::string first_spec = queue.specs().front();
  EXPECT_THAT(ReduceWorkBatch(*runs.store, backend_, first_spec).status(), IsOk());
  EXPECT_THAT(ReduceWorkBatch(*runs.store, backend_, "nonsense"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a distributed")));
  std::string cut = first_spec.substr(0, first_spec.size() - 3);
  EXPECT_THAT(ReduceWorkBatch(*runs.store, backend_, cut),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed")));
  // The ref run changes (deleted and made again with one tensor fewer).
  ASSERT_THAT(runs.store->DeleteRun("team/torch").status(), IsOk());
  storage::RunInfo info;
  info.name = "team/torch";
  ASSERT_THAT(runs.store->CreateRun(info), IsOk());
  EXPECT_THAT(ReduceWorkBatch(*runs.store, backend_, first_spec),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("changed")));
}

}  // namespace
}  // namespace reprod::server

#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/half.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/internal/diff_kernel.h"
#include "kernels/diff_stats.h"
#include "kernels/testing/reference_diff.h"
#include "tests/testing/status_matchers.h"

namespace reprod::kernels {
namespace {

using ::reprod::kernels::internal::KernelIsa;
using ::reprod::kernels::testing::ExpectEquivalent;
using ::reprod::kernels::testing::ExpectIdentical;
using ::reprod::kernels::testing::ExpectMatchesReference;
using ::reprod::kernels::testing::HostTensor;
using ::reprod::kernels::testing::MakeHalfTensor;
using ::reprod::kernels::testing::MakeTensor;
using ::reprod::kernels::testing::ReferenceDiff;
using ::reprod::kernels::testing::ReferenceDiffTransposed;
using ::reprod::kernels::testing::RefStats;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kChunk = CpuBackend::kChunkElements;

constexpr std::array<DType, kNumDTypes> kAllDTypes = AllDTypes();

std::vector<KernelIsa> SupportedIsas() {
  std::vector<KernelIsa> isas;
  for (KernelIsa isa : {KernelIsa::kBaseline, KernelIsa::kX86_64_V3, KernelIsa::kX86_64_V4}) {
    if (internal::KernelIsaSupported(isa)) isas.push_back(isa);
  }
  return isas;
}

// Runs the test body once per instruction-set variant this CPU supports,
// restoring the default afterwards.
class PerIsaTest : public ::testing::TestWithParam<KernelIsa> {
 protected:
  void SetUp() override {
    saved_ = internal::ActiveKernelIsa();
    ASSERT_TRUE(internal::SetKernelIsaForTesting(GetParam()));
  }
  void TearDown() override { internal::SetKernelIsaForTesting(saved_); }

  CpuBackend backend_{2};

 private:
  KernelIsa saved_ = KernelIsa::kBaseline;
};

std::string IsaName(const ::testing::TestParamInfo<KernelIsa>& info) {
  std::string name(internal::KernelIsaName(info.param));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(Isa, PerIsaTest, ::testing::ValuesIn(SupportedIsas()), IsaName);

DiffTask Task(const HostTensor& ref, const HostTensor& cand, DiffOptions opt = {}) {
  DiffTask t;
  t.ref = ref.view();
  t.cand = cand.view();
  t.options = opt;
  return t;
}

// Random values suited to `d`: integers in range, floats over many
// magnitudes with a sprinkling of zeros and negatives.
std::vector<double> RandomValues(DType d, size_t n, std::mt19937_64& rng) {
  std::vector<double> v(n);
  std::uniform_int_distribution<int> small(-100, 100);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::uniform_int_distribution<int> expo(-20, 20);
  for (size_t i = 0; i < n; ++i) {
    switch (d) {
      case DType::kBool: v[i] = small(rng) > 0; break;
      case DType::kUInt8: v[i] = std::abs(small(rng)); break;
      case DType::kInt8:
      case DType::kInt16:
      case DType::kInt32: v[i] = small(rng); break;
      case DType::kInt64: v[i] = static_cast<double>(small(rng)) * 1e6; break;
      case DType::kUInt16: v[i] = std::abs(small(rng)) * 600; break;
      case DType::kUInt32: v[i] = std::abs(small(rng)) * 4e7; break;
      case DType::kUInt64: v[i] = std::abs(small(rng)) * 1e17; break;  // past 2^53
      default: {
        const int kind = small(rng);
        if (kind > 95) {
          v[i] = 0.0;
        } else {
          v[i] = std::ldexp(unit(rng), expo(rng));
        }
      }
    }
  }
  return v;
}

// cand = ref perturbed (so d spans many decades), same length.
std::vector<double> Perturb(const std::vector<double>& ref, std::mt19937_64& rng) {
  std::vector<double> c(ref.size());
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::uniform_int_distribution<int> expo(-30, 2);
  std::uniform_int_distribution<int> pick(0, 9);
  for (size_t i = 0; i < ref.size(); ++i) {
    const int k = pick(rng);
    if (k == 0) {
      c[i] = ref[i];  // exact match
    } else if (k == 1) {
      c[i] = std::ldexp(unit(rng), 3);  // unrelated
    } else {
      c[i] = ref[i] + std::ldexp(unit(rng), expo(rng)) * (1 + std::fabs(ref[i]));
    }
  }
  return c;
}

// ---------------------------------------------------------------------------
// Every dtype pair, several lengths (empty, < one step, tails, several
// blocks), on every instruction-set variant.

TEST_P(PerIsaTest, EveryDTypePairMatchesReference) {
  std::mt19937_64 rng(42);
  for (DType rd : kAllDTypes) {
    for (DType cd : kAllDTypes) {
      for (size_t n : {0, 1, 3, 8, 9, 1023, 1024, 1031, 3000}) {
        const std::string where = absl::StrCat(std::string(DTypeName(rd)), " vs ",
                                               std::string(DTypeName(cd)), " n=", n);
        HostTensor ref = MakeTensor(rd, RandomValues(rd, n, rng));
        std::vector<double> cand_values = Perturb(ref.values, rng);
        HostTensor cand = MakeTensor(cd, cand_values);
        DiffOptions opt;
        opt.atol = 1e-6;
        opt.rtol = 1e-4;
        ASSERT_OK_AND_ASSIGN(DiffStats got, backend_.Compare(Task(ref, cand, opt)));
        ExpectMatchesReference(got, ReferenceDiff(ref.values, cand.values, opt), 1e-12, where);
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

// Special values sprinkled into otherwise ordinary float blocks, for every
// floating dtype pair: NaN on one or both sides, same- and opposite-signed
// infinities, infinity against finite, -0.0 against +0.0, in the fast part
// of a block and in its tail, with and without equal_nan.
TEST_P(PerIsaTest, NonFiniteValuesMatchReference) {
  const DType floats[] = {DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64};
  const double specials[][2] = {{kNaN, 1.0},   {1.0, kNaN},   {kNaN, kNaN},  {kInf, kInf},
                                {-kInf, -kInf}, {kInf, -kInf}, {-kInf, kInf}, {kInf, 2.0},
                                {3.0, -kInf},  {-0.0, 0.0},   {0.0, -0.0},   {kNaN, kInf}};
  std::mt19937_64 rng(7);
  for (DType rd : floats) {
    for (DType cd : floats) {
      for (bool equal_nan : {false, true}) {
        for (size_t n : {size_t{5}, size_t{1024 + 5}, size_t{4000}}) {
          std::vector<double> r = RandomValues(DType::kFloat32, n, rng);
          std::vector<double> c = Perturb(r, rng);
          std::uniform_int_distribution<size_t> pos(0, n - 1);
          for (const auto& sp : specials) {
            const size_t i = pos(rng);
            r[i] = sp[0];
            c[i] = sp[1];
          }
          // And one in the last element (tail path).
          r[n - 1] = kNaN;
          HostTensor ref = MakeTensor(rd, r), cand = MakeTensor(cd, c);
          DiffOptions opt;
          opt.equal_nan = equal_nan;
          ASSERT_OK_AND_ASSIGN(DiffStats got, backend_.Compare(Task(ref, cand, opt)));
          ExpectMatchesReference(
              got, ReferenceDiff(ref.values, cand.values, opt), 1e-12,
              absl::StrCat(std::string(DTypeName(rd)), "/", std::string(DTypeName(cd)), " n=", n,
                           " equal_nan=", equal_nan));
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
  }
}

TEST_P(PerIsaTest, InfinityRules) {
  // Same-signed infinities: d = 0. Opposite / against finite: d = r = +inf,
  // a mismatch; cosine is NaN.
  HostTensor ref = MakeTensor(DType::kFloat64, {kInf, -kInf, kInf, 5.0, 1.0, 2.0, 3.0, 4.0});
  HostTensor cand = MakeTensor(DType::kFloat64, {kInf, -kInf, -kInf, kInf, 1.0, 2.0, 3.0, 4.0});
  ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
  EXPECT_EQ(s.inf_diff, 2u);
  EXPECT_EQ(s.mismatches, 2u);
  EXPECT_EQ(s.max_abs, kInf);
  EXPECT_EQ(s.max_index, 2u);  // first +inf d
  EXPECT_EQ(s.max_rel, kInf);
  EXPECT_EQ(s.histogram[0], 6u);
  EXPECT_EQ(s.histogram[kHistogramBins - 1], 2u);
  EXPECT_EQ(s.inf_ref, 3u);
  EXPECT_EQ(s.inf_cand, 4u);
  EXPECT_TRUE(std::isnan(s.cosine()));
  EXPECT_EQ(s.mean_abs(), kInf);
}

TEST_P(PerIsaTest, NanRules) {
  std::vector<double> r(40, 1.0), c(40, 1.0);
  r[13] = kNaN;
  c[20] = kNaN;
  r[30] = c[30] = kNaN;
  HostTensor ref = MakeTensor(DType::kFloat32, r), cand = MakeTensor(DType::kFloat32, c);
  ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
  EXPECT_EQ(s.nan_diff, 3u);
  EXPECT_EQ(s.mismatches, 3u);
  EXPECT_TRUE(std::isnan(s.max_abs));
  EXPECT_EQ(s.max_index, 13u);  // the first NaN
  EXPECT_TRUE(std::isnan(s.mean_abs()));
  EXPECT_TRUE(std::isnan(s.max_abs_value()));
  EXPECT_TRUE(std::isnan(s.cosine()));
  DiffOptions opt;
  opt.equal_nan = true;
  ASSERT_OK_AND_ASSIGN(DiffStats e, backend_.Compare(Task(ref, cand, opt)));
  EXPECT_EQ(e.nan_diff, 2u);  // NaN vs NaN is d = 0 now
  EXPECT_EQ(e.histogram[0], 38u);
  EXPECT_EQ(e.max_index, 13u);
}

TEST_P(PerIsaTest, RelativeErrorRules) {
  // d = 0 -> r = 0 (also where ref = 0); ref = 0, d > 0 -> r = +inf;
  // otherwise d / |ref|.
  HostTensor ref = MakeTensor(DType::kFloat32, {0, 0, 2, -4, 1, 1, 1, 1, 0});
  HostTensor cand = MakeTensor(DType::kFloat32, {0, 1, 3, -5, 1, 1, 1, 1, 0});
  ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
  EXPECT_EQ(s.max_rel, kInf);
  EXPECT_EQ(s.sum_rel, kInf);
  HostTensor ref2 = MakeTensor(DType::kFloat32, {0, 2, -4, 1, 1, 1, 1, 1, 0});
  HostTensor cand2 = MakeTensor(DType::kFloat32, {0, 3, -5, 1, 1, 1, 1, 1, 0});
  ASSERT_OK_AND_ASSIGN(DiffStats t, backend_.Compare(Task(ref2, cand2)));
  EXPECT_EQ(t.max_rel, 0.5);
  EXPECT_DOUBLE_EQ(t.sum_rel, 0.75);
  EXPECT_EQ(t.min_abs, 0.0);
}

TEST_P(PerIsaTest, CosineRules) {
  HostTensor zeros = MakeTensor(DType::kFloat32, std::vector<double>(20, 0.0));
  HostTensor ones = MakeTensor(DType::kFloat32, std::vector<double>(20, 1.0));
  HostTensor twos = MakeTensor(DType::kFloat64, std::vector<double>(20, 2.0));
  ASSERT_OK_AND_ASSIGN(DiffStats both_zero, backend_.Compare(Task(zeros, zeros)));
  EXPECT_EQ(both_zero.cosine(), 1.0);
  ASSERT_OK_AND_ASSIGN(DiffStats one_zero, backend_.Compare(Task(zeros, ones)));
  EXPECT_EQ(one_zero.cosine(), 0.0);
  ASSERT_OK_AND_ASSIGN(DiffStats parallel, backend_.Compare(Task(ones, twos)));
  EXPECT_DOUBLE_EQ(parallel.cosine(), 1.0);
  std::vector<double> neg(20, -1.0);
  HostTensor minus = MakeTensor(DType::kInt8, neg);
  ASSERT_OK_AND_ASSIGN(DiffStats opposite, backend_.Compare(Task(ones, minus)));
  EXPECT_DOUBLE_EQ(opposite.cosine(), -1.0);
}

TEST_P(PerIsaTest, MixedDTypesCompareByValue) {
  // int64 vs float32, bool vs uint8, bfloat16 vs float32: exact values.
  HostTensor i64 = MakeTensor(DType::kInt64, {1, -2, 3, 16777217, 5, 6, 7, 8, 9});
  HostTensor f32 = MakeTensor(DType::kFloat32, {1, -2, 3.5, 16777217, 5, 6, 7, 8, 9});
  ASSERT_OK_AND_ASSIGN(DiffStats a, backend_.Compare(Task(i64, f32)));
  EXPECT_EQ(a.max_abs, 1.0);  // 16777217 is 16777216 in float32
  EXPECT_EQ(a.max_index, 3u);
  EXPECT_EQ(a.ref_at_max, 16777217.0);
  EXPECT_EQ(a.cand_at_max, 16777216.0);
  ExpectMatchesReference(a, ReferenceDiff(i64.values, f32.values, {}));

  HostTensor b = MakeTensor(DType::kBool, {0, 1, 1, 0, 1, 1, 0, 0, 1});
  HostTensor u = MakeTensor(DType::kUInt8, {0, 1, 2, 0, 1, 255, 0, 1, 1});
  ASSERT_OK_AND_ASSIGN(DiffStats bu, backend_.Compare(Task(b, u)));
  EXPECT_EQ(bu.max_abs, 254.0);
  EXPECT_EQ(bu.max_index, 5u);
  EXPECT_EQ(bu.mismatches, 3u);
  ExpectMatchesReference(bu, ReferenceDiff(b.values, u.values, {}));

  // bool bytes other than 0/1 are true.
  HostTensor odd_bool = MakeTensor(DType::kUInt8, {0, 2, 255, 1, 0, 7, 1, 1});
  odd_bool.dtype = DType::kBool;
  HostTensor one_zero = MakeTensor(DType::kBool, {0, 1, 1, 1, 0, 1, 1, 1});
  ASSERT_OK_AND_ASSIGN(DiffStats ob, backend_.Compare(Task(odd_bool, one_zero)));
  EXPECT_EQ(ob.max_abs, 0.0);

  HostTensor bf = MakeTensor(DType::kBFloat16, {1.0, 3.140625, -2.5, 1e-3, 1e30, 0, 7, 8, 9});
  HostTensor f = MakeTensor(DType::kFloat32, {1.0, 3.14159274, -2.5, 1e-3, 1e30, 0, 7, 8, 9});
  ASSERT_OK_AND_ASSIGN(DiffStats bff, backend_.Compare(Task(bf, f)));
  ExpectMatchesReference(bff, ReferenceDiff(bf.values, f.values, {}));
  EXPECT_EQ(bff.max_index, 4u);
}

// uint16/32/64 at their extremes (0, max, max - 1, 2^53 + 1), against the
// same dtype, float64 and int64, at sizes around the kernel's steps and
// chunks. Reference values are C++'s integer -> double conversion, which
// rounds uint64 beyond 2^53 to nearest, the documented rule.
template <typename T>
void ExpectUnsignedMatchesReference(Backend& backend, DType dtype) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{31}, (size_t{1} << 20) + 3}) {
    const std::vector<T> r = testing::UnsignedTestValues<T>(n, 11 + n);
    const HostTensor ref = testing::MakeIntTensor(dtype, r);
    const HostTensor cands[] = {
        testing::MakeIntTensor(dtype, testing::PerturbUnsigned(r, 23 + n)),
        MakeTensor(DType::kFloat64, ref.values),
        testing::MakeIntTensor(DType::kInt64, std::vector<int64_t>(r.begin(), r.end())),
    };
    for (const HostTensor& cand : cands) {
      DiffOptions opt;
      opt.atol = 0.5;
      ASSERT_OK_AND_ASSIGN(DiffStats got, backend.Compare(Task(ref, cand, opt)));
      ExpectMatchesReference(got, ReferenceDiff(ref.values, cand.values, opt), 1e-12,
                             absl::StrCat(std::string(DTypeName(dtype)), " vs ",
                                          std::string(DTypeName(cand.dtype)), " n=", n));
    }
  }
}

TEST_P(PerIsaTest, UnsignedExtremesMatchReference) {
  ExpectUnsignedMatchesReference<uint16_t>(backend_, DType::kUInt16);
  ExpectUnsignedMatchesReference<uint32_t>(backend_, DType::kUInt32);
  ExpectUnsignedMatchesReference<uint64_t>(backend_, DType::kUInt64);
}

TEST_P(PerIsaTest, UnsignedMaximaConvertExactlyOrToNearest) {
  // Hand-computed: 65535 and 2^32 - 1 are exact doubles; 2^64 - 1 and
  // 2^64 - 2 both round to 2^64, so they compare equal (d = 0) by design.
  const HostTensor u16 = testing::MakeIntTensor<uint16_t>(DType::kUInt16, {65535, 0, 1});
  const HostTensor u16z = testing::MakeIntTensor<uint16_t>(DType::kUInt16, {0, 0, 1});
  ASSERT_OK_AND_ASSIGN(DiffStats a, backend_.Compare(Task(u16, u16z)));
  EXPECT_EQ(a.max_abs, 65535.0);
  EXPECT_EQ(a.ref_at_max, 65535.0);

  const HostTensor u32 = testing::MakeIntTensor<uint32_t>(
      DType::kUInt32, {4294967295u, 4294967294u, 2147483648u, 2147483647u, 0, 1, 2, 3, 4});
  const HostTensor f64 = MakeTensor(DType::kFloat64, {0, 4294967294, 2147483648, 0, 0, 1, 2, 3, 4});
  ASSERT_OK_AND_ASSIGN(DiffStats b, backend_.Compare(Task(u32, f64)));
  EXPECT_EQ(b.max_abs, 4294967295.0);
  EXPECT_EQ(b.max_index, 0u);
  EXPECT_EQ(b.ref_at_max, 4294967295.0);
  EXPECT_EQ(b.sum_abs, 4294967295.0 + 2147483647.0);
  EXPECT_EQ(b.mismatches, 2u);

  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  const HostTensor u64 = testing::MakeIntTensor<uint64_t>(
      DType::kUInt64, {kMax, kMax, uint64_t{1} << 63, (uint64_t{1} << 53) + 1, 0, 5, 6, 7, 8});
  const HostTensor u64c = testing::MakeIntTensor<uint64_t>(
      DType::kUInt64, {kMax - 1, 0, uint64_t{1} << 63, uint64_t{1} << 53, 0, 5, 6, 7, 8});
  ASSERT_OK_AND_ASSIGN(DiffStats c, backend_.Compare(Task(u64, u64c)));
  EXPECT_EQ(c.max_abs, 18446744073709551616.0);  // 2^64 - 1 vs 0
  EXPECT_EQ(c.max_index, 1u);
  EXPECT_EQ(c.mismatches, 1u);  // kMax vs kMax - 1 and 2^53 + 1 vs 2^53: d = 0
  EXPECT_EQ(c.histogram[0], 8u);
}

TEST_P(PerIsaTest, EmptyAndZeroDimensional) {
  HostTensor empty_ref = MakeTensor(DType::kFloat32, {}, Shape{0, 3});
  HostTensor empty_cand = MakeTensor(DType::kFloat64, {}, Shape{0});
  ASSERT_OK_AND_ASSIGN(DiffStats e, backend_.Compare(Task(empty_ref, empty_cand)));
  EXPECT_EQ(e.count, 0u);
  EXPECT_EQ(e.mean_abs(), 0.0);
  EXPECT_EQ(e.cosine(), 1.0);
  EXPECT_EQ(e.mismatch_ratio(), 0.0);
  EXPECT_EQ(e.max_abs, -1);

  HostTensor s0 = MakeTensor(DType::kFloat32, {2.5}, Shape{});
  HostTensor s1 = MakeTensor(DType::kFloat16, {2.0}, Shape{});
  ASSERT_OK_AND_ASSIGN(DiffStats z, backend_.Compare(Task(s0, s1)));
  EXPECT_EQ(z.count, 1u);
  EXPECT_EQ(z.max_abs, 0.5);
  EXPECT_EQ(z.max_index, 0u);
  EXPECT_EQ(z.max_rel, 0.2);
}

// Every float16 and bfloat16 bit pattern against a shifted copy of all of
// them: decodes (normals, subnormals, max, ±0, ±Inf, NaN) must be exact.
TEST_P(PerIsaTest, HalfPrecisionEveryBitPattern) {
  for (DType d : {DType::kFloat16, DType::kBFloat16}) {
    std::vector<uint16_t> a(65536), b(65536);
    for (uint32_t i = 0; i < 65536; ++i) {
      a[i] = static_cast<uint16_t>(i);
      b[i] = static_cast<uint16_t>((i * 40503u + 7u) & 0xffffu);
    }
    HostTensor ra = MakeHalfTensor(d, a), rb = MakeHalfTensor(d, b);
    for (DType other : {d, DType::kFloat32, DType::kFloat64}) {
      HostTensor cand = other == d ? rb : MakeTensor(other, rb.values);
      ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ra, cand)));
      ExpectMatchesReference(s, ReferenceDiff(ra.values, cand.values, {}), 1e-12,
                             std::string(DTypeName(d)));
      ASSERT_OK_AND_ASSIGN(DiffStats self, backend_.Compare(Task(ra, ra)));
      ExpectMatchesReference(self, ReferenceDiff(ra.values, ra.values, {}), 1e-12, "self");
    }
  }
  // -0.0 vs +0.0 is d = 0; largest finite and smallest subnormal decode
  // exactly.
  HostTensor signed_zero = MakeHalfTensor(DType::kFloat16, {0x8000, 0x7bff, 0x0001, 0x0400});
  HostTensor plus_zero = MakeTensor(DType::kFloat64, {0.0, 65504.0, 0x1p-24, 0x1p-14});
  ASSERT_OK_AND_ASSIGN(DiffStats z, backend_.Compare(Task(signed_zero, plus_zero)));
  EXPECT_EQ(z.max_abs, 0.0);
  EXPECT_EQ(z.histogram[0], 4u);
}

// Histogram: d placed exactly on, just below and just above every decade
// edge, and at both ends of every binade of double, must land in the bin
// HistogramBin gives (and the independent reference agrees).
TEST_P(PerIsaTest, HistogramBinsExhaustive) {
  std::vector<double> d;
  for (double e : kHistogramEdges) {
    for (double x = e, k = 0; k < 3; ++k, x = std::nextafter(x, kInf)) d.push_back(x);
    for (double x = e, k = 0; k < 3; ++k, x = std::nextafter(x, 0.0)) d.push_back(x);
  }
  for (int e = -1074; e <= 1023; ++e) {
    const double lo = std::ldexp(1.0, e);
    d.push_back(lo);
    d.push_back(std::nextafter(std::ldexp(1.0, e + 1), 0.0));
    d.push_back(lo * 1.37);
  }
  d.push_back(0.0);
  d.push_back(std::numeric_limits<double>::max());
  d.push_back(std::numeric_limits<double>::denorm_min());
  // ref = 0, cand = d: the kernel's d is exactly these values. Values whose
  // square overflows send their whole block to the exact element path, so
  // they get their own tensor; the rest exercise the vector path. Repeat in a
  // few orders so values share blocks with different neighbours.
  std::vector<double> small, large;
  for (double x : d) (x < 1e150 ? small : large).push_back(x);
  std::mt19937_64 rng(3);
  for (int round = 0; round < 6; ++round) {
    d = round % 2 ? large : small;
    std::shuffle(d.begin(), d.end(), rng);
    std::vector<double> zeros(d.size(), 0.0);
    HostTensor ref = MakeTensor(DType::kFloat64, zeros), cand = MakeTensor(DType::kFloat64, d);
    ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
    uint64_t expected[kHistogramBins] = {};
    for (double x : d) {
      ASSERT_EQ(HistogramBin(x), testing::RefBin(x)) << x;
      ++expected[HistogramBin(x)];
    }
    for (int b = 0; b < kHistogramBins; ++b) EXPECT_EQ(s.histogram[b], expected[b]) << b;
    // Also through float32 (values that are floats).
    std::vector<double> df;
    for (double x : d) {
      if (x <= std::numeric_limits<float>::max()) df.push_back(static_cast<float>(x));
    }
    HostTensor ref32 = MakeTensor(DType::kFloat32, std::vector<double>(df.size(), 0.0));
    HostTensor cand32 = MakeTensor(DType::kFloat32, df);
    ASSERT_OK_AND_ASSIGN(DiffStats s32, backend_.Compare(Task(ref32, cand32)));
    ExpectMatchesReference(s32, ReferenceDiff(ref32.values, cand32.values, {}));
  }
}

// Blocks whose d span different decades from one block to the next (and
// sometimes more decades than the fused histogram window holds, or only
// zeros): predicted edge windows miss and the missing edges are counted
// separately. Every bin must still be exact.
TEST_P(PerIsaTest, HistogramAcrossShiftingRanges) {
  std::mt19937_64 rng(19);
  std::uniform_real_distribution<double> unit(1.0, 9.99);
  const size_t blocks = 64, n = blocks * internal::kBlockElements + 37;
  std::vector<double> r(n, 1.0), c(n);
  std::uniform_int_distribution<int> span(0, 8), low(-16, 6);
  for (size_t b = 0; b * internal::kBlockElements < n; ++b) {
    const int lo = low(rng), width = span(rng);
    std::uniform_int_distribution<int> decade(lo, lo + width);
    for (size_t t = b * internal::kBlockElements;
         t < std::min(n, (b + 1) * internal::kBlockElements); ++t) {
      c[t] = b % 9 == 4 ? 1.0 : 1.0 + unit(rng) * std::pow(10.0, decade(rng));
    }
  }
  // Exact edge values and their neighbours inside some blocks.
  for (size_t t = 0; t < 17; ++t) {
    c[3000 + t] = 1.0 + kHistogramEdges[t];
    c[9000 + t] = 1.0 + std::nextafter(kHistogramEdges[t], 0.0);
  }
  for (DType d : {DType::kFloat64, DType::kFloat32}) {
    HostTensor ref = MakeTensor(d, r), cand = MakeTensor(DType::kFloat64, c);
    ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
    ExpectMatchesReference(s, ReferenceDiff(ref.values, cand.values, {}), 1e-12,
                           std::string(DTypeName(d)));
  }
}

// Random data whose relative errors keep growing (and sometimes reach +inf
// through a zero ref), so block maxima of r are re-scanned often: max r must
// stay exact whatever path computed Σr.
TEST_P(PerIsaTest, MaxRelativeErrorIsExact) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> unit(0.5, 1.0);
  for (DType rd : {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32,
                   DType::kFloat64}) {
    const size_t n = 50000;
    std::vector<double> r(n), c(n);
    for (size_t i = 0; i < n; ++i) {
      r[i] = (rd == DType::kInt32 ? std::floor(unit(rng) * 1000) : unit(rng) * 1e-3) *
             ((i % 3) ? 1 : -1);
      c[i] = r[i] + r[i] * 1e-7 * (1.0 + static_cast<double>(i) / n) * unit(rng);
    }
    // Tiny refs (float subnormals) and large ones.
    r[777] = 1e-45;
    c[777] = 1e-3;
    r[12345] = 3e38;
    c[12345] = 3.1e38;
    HostTensor ref = MakeTensor(rd, r), cand = MakeTensor(DType::kFloat64, c);
    ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
    ExpectMatchesReference(s, ReferenceDiff(ref.values, cand.values, {}), 1e-12,
                           std::string(DTypeName(rd)));
    r[40000] = 0.0;
    c[40000] = 1e-9;
    HostTensor ref0 = MakeTensor(rd, r), cand0 = MakeTensor(DType::kFloat64, c);
    ASSERT_OK_AND_ASSIGN(DiffStats s0, backend_.Compare(Task(ref0, cand0)));
    EXPECT_EQ(s0.max_rel, kInf);
    ExpectMatchesReference(s0, ReferenceDiff(ref0.values, cand0.values, {}));
  }
}

// Σ d, Σ d², Σ ref·cand ... on 1e6 random elements agree with an exact
// (long double) sum to 1e-12 relative.
TEST_P(PerIsaTest, SumsAreWellConditioned) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  const size_t n = 1000000;
  std::vector<double> r(n), c(n);
  for (size_t i = 0; i < n; ++i) {
    r[i] = normal(rng);
    c[i] = r[i] + 1e-3 * normal(rng);
  }
  for (DType d : {DType::kFloat32, DType::kFloat64}) {
    HostTensor ref = MakeTensor(d, r), cand = MakeTensor(d, c);
    ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
    ExpectMatchesReference(s, ReferenceDiff(ref.values, cand.values, {}), 1e-12,
                           std::string(DTypeName(d)));
  }
}

// Ties of the max go to the smallest index: within a block, across blocks,
// across chunks (several threads) and with index_base.
TEST_P(PerIsaTest, ArgmaxTiesPickSmallestIndex) {
  const size_t n = static_cast<size_t>(3 * kChunk + 100);
  std::vector<double> r(n, 1.0), c(n, 1.0);
  for (size_t i : {size_t{5000}, size_t{kChunk + 3}, size_t{2 * kChunk}, n - 1}) c[i] = 1.5;
  HostTensor ref = MakeTensor(DType::kFloat32, r), cand = MakeTensor(DType::kFloat32, c);
  DiffTask task = Task(ref, cand);
  task.index_base = 1000;
  ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(task));
  EXPECT_EQ(s.max_abs, 0.5);
  EXPECT_EQ(s.max_index, 6000u);
  // Only the later ties left: the first one of those wins.
  c[5000] = 1.0;
  HostTensor cand2 = MakeTensor(DType::kFloat32, c);
  ASSERT_OK_AND_ASSIGN(DiffStats s2, backend_.Compare(Task(ref, cand2)));
  EXPECT_EQ(s2.max_index, static_cast<uint64_t>(kChunk + 3));
  // All equal: index 0.
  ASSERT_OK_AND_ASSIGN(DiffStats s3, backend_.Compare(Task(ref, ref)));
  EXPECT_EQ(s3.max_abs, 0.0);
  EXPECT_EQ(s3.max_index, 0u);
  // In a batch, each task on its own.
  std::vector<DiffTask> tasks = {Task(ref, cand2), Task(ref, cand), Task(ref, ref)};
  std::vector<DiffStats> out(3);
  ASSERT_THAT(backend_.CompareBatch(tasks, absl::MakeSpan(out)), IsOk());
  EXPECT_EQ(out[0].max_index, static_cast<uint64_t>(kChunk + 3));
  EXPECT_EQ(out[1].max_index, 5000u);
  EXPECT_EQ(out[2].max_index, 0u);
}

// A tensor reduced in random chunks (1-D views with index_base), merged in
// random order, equals the one-shot result.
TEST_P(PerIsaTest, ChunkedEqualsOneShot) {
  std::mt19937_64 rng(9);
  const size_t n = 200000;
  std::vector<double> r = RandomValues(DType::kFloat32, n, rng), c = Perturb(r, rng);
  r[1234] = kNaN;
  c[150000] = kInf;
  for (DType d : {DType::kFloat32, DType::kBFloat16, DType::kInt16}) {
    HostTensor ref = MakeTensor(d, r), cand = MakeTensor(DType::kFloat64, c);
    ASSERT_OK_AND_ASSIGN(DiffStats whole, backend_.Compare(Task(ref, cand)));
    for (int round = 0; round < 5; ++round) {
      std::vector<size_t> cuts = {0, n};
      std::uniform_int_distribution<size_t> pos(0, n);
      for (int k = 0; k < 12; ++k) cuts.push_back(pos(rng));
      std::sort(cuts.begin(), cuts.end());
      std::vector<DiffStats> parts;
      for (size_t k = 0; k + 1 < cuts.size(); ++k) {
        const size_t b = cuts[k], e = cuts[k + 1];
        DiffTask t;
        t.ref = TensorView{d, Shape{static_cast<int64_t>(e - b)},
                           ref.bytes.data() + b * DTypeSize(d)};
        t.cand = TensorView{DType::kFloat64, Shape{static_cast<int64_t>(e - b)},
                            cand.bytes.data() + b * 8};
        t.index_base = b;
        ASSERT_OK_AND_ASSIGN(DiffStats p, backend_.Compare(t));
        parts.push_back(p);
      }
      std::shuffle(parts.begin(), parts.end(), rng);
      DiffStats merged;
      for (const DiffStats& p : parts) merged.Merge(p);
      ExpectEquivalent(merged, whole, 1e-12, absl::StrCat("round ", round));
      ExpectMatchesReference(merged, ReferenceDiff(ref.values, cand.values, {}));
    }
  }
}

// Transposed pairs equal comparing against an explicitly transposed copy,
// with indices in ref's layout; several shapes (one tile, many tiles,
// several chunks) and dtypes.
TEST_P(PerIsaTest, TransposedMatchesExplicitTranspose) {
  std::mt19937_64 rng(13);
  struct Dims {
    int64_t m, n;
  };
  for (Dims dims : {Dims{3, 5}, Dims{5, 3}, Dims{1, 7}, Dims{17, 130}, Dims{300, 257},
                    Dims{2000, 300}}) {
    for (DType cd : {DType::kFloat32, DType::kFloat16, DType::kFloat64, DType::kInt8}) {
      const int64_t m = dims.m, n = dims.n;
      std::vector<double> rv = RandomValues(DType::kFloat32, static_cast<size_t>(m * n), rng);
      std::vector<double> t = Perturb(rv, rng);  // t[i*n+j] pairs with ref[i*n+j]
      if (m * n > 40) t[static_cast<size_t>(m * n / 2)] = kNaN;
      std::vector<double> cv(static_cast<size_t>(m * n));
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) cv[static_cast<size_t>(j * m + i)] = t[i * n + j];
      }
      HostTensor ref = MakeTensor(DType::kFloat32, rv, Shape{m, n});
      HostTensor cand = MakeTensor(cd, cv, Shape{n, m});
      DiffTask task = Task(ref, cand);
      task.transpose_cand = true;
      task.index_base = 7;
      ASSERT_OK_AND_ASSIGN(DiffStats got, backend_.Compare(task));
      const std::string where = absl::StrCat(m, "x", n, " ", std::string(DTypeName(cd)));
      ExpectMatchesReference(got, ReferenceDiffTransposed(ref.values, cand.values, m, n, {}, 7),
                             1e-12, where);
      // Explicit transpose of cand, compared element-wise.
      std::vector<double> ct(static_cast<size_t>(m * n));
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) ct[i * n + j] = cand.values[j * m + i];
      }
      HostTensor cand_t = MakeTensor(cd, ct, Shape{m, n});
      DiffTask flat = Task(ref, cand_t);
      flat.index_base = 7;
      ASSERT_OK_AND_ASSIGN(DiffStats want, backend_.Compare(flat));
      ExpectEquivalent(got, want, 1e-12, where);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

// 10M elements: several chunks on several threads; NaNs and an infinity at
// chunk and block boundaries.
TEST_P(PerIsaTest, LargeTensorWithNanAtChunkBoundary) {
  const size_t n = 10000000;
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::vector<float> r(n), c(n);
  for (size_t i = 0; i < n; ++i) {
    r[i] = unit(rng);
    c[i] = r[i] + 1e-4f * unit(rng);
  }
  const size_t first_nan = static_cast<size_t>(3 * kChunk - 1);
  c[first_nan] = std::numeric_limits<float>::quiet_NaN();       // last of chunk 2
  r[3 * kChunk] = std::numeric_limits<float>::quiet_NaN();      // first of chunk 3
  c[20 * kChunk + 1024] = std::numeric_limits<float>::infinity();  // block boundary
  HostTensor ref, cand;
  ref.dtype = cand.dtype = DType::kFloat32;
  ref.shape = cand.shape = Shape{static_cast<int64_t>(n)};
  ref.bytes.resize(n * 4);
  cand.bytes.resize(n * 4);
  std::memcpy(ref.bytes.data(), r.data(), n * 4);
  std::memcpy(cand.bytes.data(), c.data(), n * 4);
  ref.values.assign(r.begin(), r.end());
  cand.values.assign(c.begin(), c.end());
  ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(Task(ref, cand)));
  EXPECT_EQ(s.nan_diff, 2u);
  EXPECT_EQ(s.max_index, first_nan);
  EXPECT_EQ(s.inf_diff, 1u);
  ExpectMatchesReference(s, ReferenceDiff(ref.values, cand.values, {}));
  // Any thread count gives bit-identical results.
  CpuBackend one(1), three(3), shared(0);
  for (CpuBackend* b : {&one, &three, &shared}) {
    ASSERT_OK_AND_ASSIGN(DiffStats other, b->Compare(Task(ref, cand)));
    ExpectIdentical(other, s, absl::StrCat(b->num_threads(), " threads"));
  }
}

// Thousands of random-size pairs (some empty, some multi-chunk, some
// transposed, mixed dtypes): CompareBatch == Compare one by one, exactly.
TEST_P(PerIsaTest, BatchEqualsOneByOne) {
  std::mt19937_64 rng(21);
  std::uniform_int_distribution<int> size_class(0, 99);
  std::uniform_int_distribution<int> small(0, 5000);
  std::uniform_int_distribution<int> dt(0, kNumDTypes - 1);
  std::vector<HostTensor> refs, cands;
  std::vector<bool> transposed;
  const int kPairs = 3000;
  refs.reserve(kPairs);
  cands.reserve(kPairs);
  for (int i = 0; i < kPairs; ++i) {
    const int cls = size_class(rng);
    size_t n = cls < 2 ? 0 : (cls < 4 ? static_cast<size_t>(kChunk + small(rng)) : small(rng));
    const DType rd = static_cast<DType>(dt(rng)), cd = static_cast<DType>(dt(rng));
    std::vector<double> r = RandomValues(rd, n, rng), c = Perturb(r, rng);
    if (n > 10 && cls % 7 == 0) c[n / 3] = kNaN;
    if (cls >= 95 && n >= 6) {
      const int64_t m = 3, cols = static_cast<int64_t>(n / 3);
      r.resize(static_cast<size_t>(m * cols));
      c.resize(r.size());
      refs.push_back(MakeTensor(rd, r, Shape{m, cols}));
      cands.push_back(MakeTensor(cd, c, Shape{cols, m}));
      transposed.push_back(true);
    } else {
      refs.push_back(MakeTensor(rd, r));
      cands.push_back(MakeTensor(cd, c));
      transposed.push_back(false);
    }
  }
  std::vector<DiffTask> tasks(kPairs);
  for (int i = 0; i < kPairs; ++i) {
    tasks[i] = Task(refs[i], cands[i]);
    tasks[i].transpose_cand = transposed[i];
    tasks[i].index_base = static_cast<uint64_t>(i);
    tasks[i].options.equal_nan = i % 2;
  }
  std::vector<DiffStats> out(kPairs);
  ASSERT_THAT(backend_.CompareBatch(tasks, absl::MakeSpan(out)), IsOk());
  for (int i = 0; i < kPairs; ++i) {
    ASSERT_OK_AND_ASSIGN(DiffStats one, backend_.Compare(tasks[i]));
    ExpectIdentical(out[i], one, absl::StrCat("pair ", i));
    if (::testing::Test::HasFailure()) return;
  }
}

// Views into unaligned memory (pickles can put an array at any offset).
TEST_P(PerIsaTest, UnalignedData) {
  std::mt19937_64 rng(23);
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kInt64}) {
    const size_t n = 5000;
    HostTensor ref = MakeTensor(d, RandomValues(d, n, rng));
    HostTensor cand = MakeTensor(d, Perturb(ref.values, rng));
    std::vector<unsigned char> buf_r(ref.bytes.size() + 3), buf_c(cand.bytes.size() + 5);
    std::memcpy(buf_r.data() + 3, ref.bytes.data(), ref.bytes.size());
    std::memcpy(buf_c.data() + 5, cand.bytes.data(), cand.bytes.size());
    DiffTask t;
    t.ref = TensorView{d, ref.shape, buf_r.data() + 3};
    t.cand = TensorView{d, cand.shape, buf_c.data() + 5};
    ASSERT_OK_AND_ASSIGN(DiffStats s, backend_.Compare(t));
    ExpectMatchesReference(s, ReferenceDiff(ref.values, cand.values, {}));
  }
}

// ---------------------------------------------------------------------------
// Variant-independent tests.

TEST(CpuBackendTest, InstructionSetsAgree) {
  const std::vector<KernelIsa> isas = SupportedIsas();
  const KernelIsa saved = internal::ActiveKernelIsa();
  std::mt19937_64 rng(31);
  const size_t n = 300000;
  std::vector<double> r = RandomValues(DType::kFloat32, n, rng), c = Perturb(r, rng);
  HostTensor ref = MakeTensor(DType::kFloat32, r), cand = MakeTensor(DType::kBFloat16, c);
  CpuBackend backend(2);
  std::vector<DiffStats> results;
  for (KernelIsa isa : isas) {
    ASSERT_TRUE(internal::SetKernelIsaForTesting(isa));
    ASSERT_OK_AND_ASSIGN(DiffStats s, backend.Compare(Task(ref, cand)));
    results.push_back(s);
  }
  internal::SetKernelIsaForTesting(saved);
  for (size_t i = 1; i < results.size(); ++i) ExpectEquivalent(results[i], results[0]);
}

TEST(CpuBackendTest, InvalidTasksAreInvalidArgument) {
  CpuBackend backend(2);
  HostTensor a = MakeTensor(DType::kFloat32, {1, 2, 3, 4, 5, 6}, Shape{2, 3});
  HostTensor b = MakeTensor(DType::kFloat32, {1, 2, 3, 4, 5}, Shape{5});
  EXPECT_THAT(backend.Compare(Task(a, b)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("element counts differ: ref float32 (2, 3) has 6, cand "
                                 "float32 (5,) has 5")));
  // Transposed needs (m, n) vs (n, m); a same-shape pair is not one.
  HostTensor c = MakeTensor(DType::kFloat32, {1, 2, 3, 4, 5, 6}, Shape{2, 3});
  DiffTask t = Task(a, c);
  t.transpose_cand = true;
  EXPECT_THAT(backend.Compare(t),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("transposed")));
  HostTensor flat = MakeTensor(DType::kFloat32, {1, 2, 3, 4, 5, 6}, Shape{6});
  t = Task(a, flat);
  t.transpose_cand = true;
  EXPECT_THAT(backend.Compare(t), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(6,)")));
  // No data.
  DiffTask nodata = Task(a, a);
  nodata.cand.data = nullptr;
  EXPECT_THAT(backend.Compare(nodata),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no data")));
  // Bad shape / dtype.
  DiffTask neg = Task(a, a);
  neg.ref.shape = Shape{-1, 3};
  neg.cand.shape = Shape{-1, 3};
  EXPECT_THAT(backend.Compare(neg),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative dimension")));
  DiffTask bad_dtype = Task(a, a);
  bad_dtype.ref.dtype = static_cast<DType>(42);
  EXPECT_THAT(backend.Compare(bad_dtype),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid dtype")));
  DiffTask overflow = Task(a, a);
  overflow.index_base = std::numeric_limits<uint64_t>::max() - 2;
  EXPECT_THAT(backend.Compare(overflow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index_base")));
  // Batches name the failing task; output size must match.
  std::vector<DiffTask> tasks = {Task(a, a), Task(a, a), Task(a, b)};
  std::vector<DiffStats> out(3);
  EXPECT_THAT(backend.CompareBatch(tasks, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task 2: element counts")));
  std::vector<DiffStats> short_out(2);
  EXPECT_THAT(backend.CompareBatch(tasks, absl::MakeSpan(short_out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3 tasks but 2 outputs")));
  // An empty batch is fine.
  EXPECT_THAT(backend.CompareBatch({}, {}), IsOk());
}

TEST(CpuBackendTest, ConcurrentCallersShareThePool) {
  CpuBackend backend(0);
  std::mt19937_64 rng(41);
  const size_t n = 1500000;
  std::vector<double> r = RandomValues(DType::kFloat32, n, rng), c = Perturb(r, rng);
  HostTensor ref = MakeTensor(DType::kFloat32, r), cand = MakeTensor(DType::kFloat32, c);
  ASSERT_OK_AND_ASSIGN(DiffStats want, backend.Compare(Task(ref, cand)));
  std::vector<std::thread> threads;
  std::vector<DiffStats> got(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<DiffStats> s = backend.Compare(Task(ref, cand));
      if (s.ok()) got[i] = *s;
    });
  }
  for (std::thread& t : threads) t.join();
  for (const DiffStats& g : got) ExpectIdentical(g, want);
}

TEST(CpuBackendTest, Name) {
  CpuBackend backend;
  EXPECT_EQ(backend.name(), "cpu");
  EXPECT_GE(backend.num_threads(), 1);
}

}  // namespace
}  // namespace reprod::kernels

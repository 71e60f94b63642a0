// GPU tests aimed at the fused kernel's shortcuts (kernels/cuda/internal/
// fused_reduce.cuh): the reciprocal with exact re-division for max r, the
// binade histogram, tile-wise max with a rescan, the finite check on raw
// bits, and the persistent grid. The oracle is the cpu backend (exact on
// counts, extrema, indices, histogram; sums to 1e-12) plus hand-computed
// values. The whole CudaBackendTest suite also runs with the fused kernel
// (cuda_backend_test.cc). Label `gpu`; every test skips visibly without a
// device.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/diff_stats.h"
#include "kernels/testing/reference_diff.h"

namespace reprod::kernels {
namespace {

using ::reprod::kernels::testing::ExpectEquivalent;
using ::reprod::kernels::testing::ExpectIdentical;
using ::reprod::kernels::testing::HostTensor;
using ::reprod::kernels::testing::MakeTensor;
using ::reprod::kernels::testing::RefBin;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kTile = 4096;  // kFusedTileElements

DiffTask MakeTask(const HostTensor& ref, const HostTensor& cand) {
  DiffTask t;
  t.ref = ref.view();
  t.cand = cand.view();
  return t;
}

class FusedKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gpu_ = Make(0);
    if (gpu_ == nullptr) GTEST_SKIP() << "no CUDA device: " << status_;
  }

  // The fused kernel on a grid of `grid` CTAs (0 = fill the device).
  std::unique_ptr<Backend> Make(int grid, int64_t chunk_elements = int64_t{1} << 24) {
    CudaBackendOptions o;
    o.kernel = CudaKernel::kFused;
    o.fused_grid = grid;
    o.chunk_elements = chunk_elements;
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
    if (!b.ok()) {
      status_ = b.status();
      return nullptr;
    }
    return std::move(*b);
  }

  DiffStats Expect(const DiffTask& task, const std::string& where, double tol = 1e-12) {
    SCOPED_TRACE(where);
    absl::StatusOr<DiffStats> want = cpu_.Compare(task);
    EXPECT_TRUE(want.ok()) << want.status();
    absl::StatusOr<DiffStats> got = gpu_->Compare(task);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!want.ok() || !got.ok()) return DiffStats();
    ExpectEquivalent(*got, *want, tol, where);
    return *got;
  }

  absl::Status status_;
  std::unique_ptr<Backend> gpu_;
  CpuBackend cpu_;
};

// max r is exact although Σr uses d * rcp(|ref|): refs at every power of two
// of float32 and float64 (subnormals included), FLT_MAX, ±0, and d from
// 2^-149 up to 2^129.
TEST_F(FusedKernelTest, ReciprocalEdgesKeepMaxRelExact) {
  std::vector<double> r32, c32;
  for (int e = -149; e <= 127; ++e) {
    const double ref = std::ldexp(1.0, e);
    r32.push_back(ref);
    c32.push_back(ref * (1.0 + std::ldexp(1.0, -20)));  // exact in float32 only for normals
    r32.push_back(-ref);
    c32.push_back(0.0);
  }
  r32.push_back(std::numeric_limits<float>::max());
  c32.push_back(std::numeric_limits<float>::max() / 2);
  r32.push_back(0.0);
  c32.push_back(1.0);  // r = inf
  r32.push_back(-0.0);
  c32.push_back(0.0);  // d = 0, r = 0
  while (r32.size() < 3 * kTile) {  // full tiles take the fast path
    r32.push_back(0.5);
    c32.push_back(0.5 + std::ldexp(1.0, -(static_cast<int>(r32.size()) % 23)));
  }
  Expect(MakeTask(MakeTensor(DType::kFloat32, r32), MakeTensor(DType::kFloat32, c32)),
         "float32 powers of two");

  std::vector<double> r64, c64;
  for (int e = -1074; e <= 1023; e += 3) {
    const double ref = std::ldexp(1.0, e);
    r64.push_back(ref);
    c64.push_back(std::ldexp(1.0, std::min(e + 129, 1021)));  // d up to 2^129 * ref
  }
  for (double v : {std::numeric_limits<double>::min(), std::numeric_limits<double>::denorm_min(),
                   std::ldexp(1.0, -1021), std::ldexp(1.0, 1020), std::ldexp(1.0, 1021)}) {
    r64.push_back(v);
    c64.push_back(v * 3);
  }
  while (r64.size() < 3 * kTile) {
    r64.push_back(3.0);
    c64.push_back(3.0 + std::ldexp(1.0, -(static_cast<int>(r64.size()) % 50)));
  }
  Expect(MakeTask(MakeTensor(DType::kFloat64, r64), MakeTensor(DType::kFloat64, c64)),
         "float64 powers of two and d up to 2^129");
}

// Two r one ulp apart (in either order, in the same thread, across threads,
// tiles and logical blocks): the larger one must win, exactly.
TEST_F(FusedKernelTest, MaxRelTiesOneUlpApart) {
  const int64_t n = 40 * kTile;
  // ref = 3 (1/3 is inexact, so d * rcp(3) is rounded); d = k * 2^-30.
  std::vector<double> r(static_cast<size_t>(n), 3.0), c(static_cast<size_t>(n), 3.0);
  const double big = 3.0 + 0x1.8p-10;
  const double bigger = std::nextafter(big, 4.0);
  const std::pair<int64_t, int64_t> spots[] = {
      {5, 6}, {6, 5}, {100, 100 + 16}, {kTile - 1, kTile}, {kTile + 3, 3},
      {20 * kTile + 1, 2 * kTile + 7}, {n - 1, n - 2}};
  for (auto [lo, hi] : spots) {
    std::vector<double> cc = c;
    cc[lo] = big;
    cc[hi] = bigger;
    const DiffStats s = Expect(MakeTask(MakeTensor(DType::kFloat64, r), MakeTensor(DType::kFloat64, cc)),
                               absl::StrCat("bigger at ", hi, ", big at ", lo));
    EXPECT_EQ(s.max_rel, (bigger - 3.0) / 3.0);
    EXPECT_EQ(s.max_index, static_cast<uint64_t>(hi));
  }
}

// d just below, at and just above every decade edge, in float64 (ref = 0 so
// d = |cand|), through full tiles: each bin against RefBin by hand.
TEST_F(FusedKernelTest, HistogramEdgesBothSides) {
  std::vector<double> r, c;
  for (int k = 0; k < kHistogramBins - 2; ++k) {
    const double e = HistogramEdge(k);
    for (double v : {std::nextafter(e, 0.0), e, std::nextafter(e, 1e300)}) {
      r.push_back(0.5);
      c.push_back(0.5);  // d = 0, bin 0
      r.push_back(-v);
      c.push_back(0.0);  // d = v exactly
    }
  }
  for (double v : {std::ldexp(1.0, -1074), std::ldexp(1.0, -41), std::ldexp(1.0, -40),
                   std::ldexp(1.0, 14), 1e300}) {
    r.push_back(v);
    c.push_back(0.0);
  }
  while (r.size() < 2 * kTile) {
    r.push_back(1.0);
    c.push_back(1.0);
  }
  HistogramCounts want;
  for (size_t i = 0; i < r.size(); ++i) ++want[RefBin(std::fabs(c[i] - r[i]))];
  const DiffStats s = Expect(MakeTask(MakeTensor(DType::kFloat64, r), MakeTensor(DType::kFloat64, c)),
                             "edges");
  EXPECT_TRUE(s.histogram == want);
  // The same through float32 (edges rounded to float32 first).
  std::vector<double> rf, cf;
  for (int k = 0; k < kHistogramBins - 2; ++k) {
    const float e = static_cast<float>(HistogramEdge(k));
    for (float v : {std::nextafter(e, 0.0f), e, std::nextafter(e, 1e30f)}) {
      rf.push_back(-static_cast<double>(v));
      cf.push_back(0.0);
    }
  }
  while (rf.size() < 2 * kTile) {
    rf.push_back(2.0);
    cf.push_back(2.0 + 1.0 / (1 + rf.size() % 1000));
  }
  Expect(MakeTask(MakeTensor(DType::kFloat32, rf), MakeTensor(DType::kFloat32, cf)), "float32 edges");
}

// Equal maxima in lanes of one vector, in two threads, two tiles, two
// logical blocks and two pieces: the smallest index wins everywhere.
TEST_F(FusedKernelTest, MaxTiesAcrossLanesTilesBlocksPieces) {
  const int64_t n = 3 * 16384 * 4 + 123;
  const std::vector<std::vector<int64_t>> cases = {
      {2, 1}, {1, 3, 2}, {4 + 256 * 4, 4}, {kTile + 1, 2 * kTile + 1},
      {16384 * 4 + 9, 16384 + 9}, {n - 1, n - 100}};
  for (const auto& spots : cases) {
    std::vector<double> r(static_cast<size_t>(n), 1.0), c = r;
    int64_t first = n;
    for (int64_t i : spots) {
      c[static_cast<size_t>(i)] = 2.5;
      first = std::min(first, i);
    }
    for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
      const DiffTask task = MakeTask(MakeTensor(dt, r), MakeTensor(dt, c));
      const DiffStats s = Expect(task, absl::StrCat(std::string(DTypeName(dt)), " first tie at ", first));
      EXPECT_EQ(s.max_index, static_cast<uint64_t>(first));
      std::unique_ptr<Backend> pieces = Make(0, 10000);  // pieces of 10,000 pairs
      ASSERT_NE(pieces, nullptr);
      absl::StatusOr<DiffStats> p = pieces->Compare(task);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_EQ(p->max_index, static_cast<uint64_t>(first));
    }
  }
}

// A NaN (or an infinity) at every position a thread holds in a tile, with
// equal_nan off and on: the tile falls back to the exact path.
TEST_F(FusedKernelTest, NanAnywhereInATile) {
  const int64_t n = 3 * kTile;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> base(static_cast<size_t>(n));
  for (double& x : base) x = dist(rng);
  for (int64_t pos : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{4}, int64_t{15}, int64_t{255 * 4 + 3},
                      int64_t{1023 * 4 + 1}, kTile - 1, kTile + 17, n - 1}) {
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<double> r = base, c = base;
      for (size_t i = 0; i < c.size(); ++i) c[i] += 1e-6 * std::fabs(c[i]);
      if (kind == 0) r[pos] = kNaN;
      if (kind == 1) r[pos] = c[pos] = kNaN;
      if (kind == 2) c[pos] = std::numeric_limits<double>::infinity();
      for (DType dt : {DType::kFloat32, DType::kFloat16}) {
        for (bool equal_nan : {false, true}) {
          DiffTask task = MakeTask(MakeTensor(dt, r), MakeTensor(dt, c));
          task.options.equal_nan = equal_nan;
          Expect(task, absl::StrCat(std::string(DTypeName(dt)), " kind ", kind, " at ", pos,
                                    " equal_nan=", equal_nan));
        }
      }
    }
  }
}

// The persistent grid: 1 CTA, 7 CTAs and a full device give bit-identical
// results (logical blocks, not CTAs, decide every rounding).
TEST_F(FusedKernelTest, BitIdenticalAcrossGridSizes) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> dist(0.0, 0.02);
  const int64_t n = (int64_t{1} << 22) + 999;
  std::vector<double> r(static_cast<size_t>(n)), c(static_cast<size_t>(n));
  for (size_t i = 0; i < r.size(); ++i) {
    r[i] = dist(rng);
    c[i] = r[i] * (1.0 + 1e-6 * dist(rng) * 50);
  }
  std::vector<HostTensor> keep;
  std::vector<DiffTask> tasks;
  for (DType dt : {DType::kFloat32, DType::kBFloat16, DType::kFloat64}) {
    keep.push_back(MakeTensor(dt, r));
    keep.push_back(MakeTensor(dt, c));
  }
  for (size_t k = 0; k < keep.size(); k += 2) tasks.push_back(MakeTask(keep[k], keep[k + 1]));
  // A transposed pair too.
  const int64_t m = 1500, w = 700;
  HostTensor tr = MakeTensor(DType::kFloat32, std::vector<double>(r.begin(), r.begin() + m * w),
                             Shape{m, w});
  std::vector<double> tc(static_cast<size_t>(m * w));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < w; ++j) tc[j * m + i] = c[i * w + j];
  }
  HostTensor tcand = MakeTensor(DType::kFloat32, tc, Shape{w, m});
  DiffTask t;
  t.ref = tr.view();
  t.cand = tcand.view();
  t.transpose_cand = true;
  tasks.push_back(t);

  std::vector<DiffStats> full(tasks.size());
  ASSERT_TRUE(gpu_->CompareBatch(tasks, absl::MakeSpan(full)).ok());
  for (size_t i = 0; i < tasks.size(); ++i) {
    absl::StatusOr<DiffStats> want = cpu_.Compare(tasks[i]);
    ASSERT_TRUE(want.ok());
    ExpectEquivalent(full[i], *want, 1e-12, absl::StrCat("task ", i, " vs cpu"));
  }
  for (int grid : {1, 7}) {
    std::unique_ptr<Backend> small = Make(grid);
    ASSERT_NE(small, nullptr);
    std::vector<DiffStats> got(tasks.size());
    ASSERT_TRUE(small->CompareBatch(tasks, absl::MakeSpan(got)).ok());
    for (size_t i = 0; i < tasks.size(); ++i) {
      ExpectIdentical(got[i], full[i], absl::StrCat("grid ", grid, " task ", i));
    }
  }
}

}  // namespace
}  // namespace reprod::kernels

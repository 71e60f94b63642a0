// GPU tests of the CUDA backend: every statistic against the cpu backend
// (counts, extrema, indices, histogram exactly; sums to 1e-12 relative).
// Label `gpu`; every test skips (visibly) when no CUDA device answers.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/internal/device_resident_timing.h"
#include "kernels/diff_stats.h"
#include "kernels/testing/reference_diff.h"
#include "kernels/testing/windowed_reduce.h"
#include "tests/testing/status_matchers.h"

namespace reprod::kernels {
namespace {

using ::reprod::kernels::testing::ExpectEquivalent;
using ::reprod::kernels::testing::ExpectIdentical;
using ::reprod::kernels::testing::HostTensor;
using ::reprod::kernels::testing::MakeHalfTensor;
using ::reprod::kernels::testing::MakeTensor;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

constexpr std::array<DType, kNumDTypes> kAllDTypes = AllDTypes();

// Block-related sizes of the kernel (256 threads, >= 4096 elements a block).
constexpr int64_t kSizes[] = {0,    1,    31,   32,   33,    255,   256,    257,
                              4095, 4096, 4097, 8191, 65537, 1 << 20, (1 << 22) + 3};

std::vector<double> RandomValues(int64_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(rng);
  return v;
}

std::vector<double> Perturb(const std::vector<double>& v, uint32_t seed, double eps) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-eps, eps);
  std::vector<double> out = v;
  for (double& x : out) x += dist(rng) * (1.0 + std::fabs(x));
  return out;
}

DiffTask MakeTask(const TensorView& ref, const TensorView& cand, bool transpose = false,
                  uint64_t index_base = 0) {
  DiffTask t;
  t.ref = ref;
  t.cand = cand;
  t.transpose_cand = transpose;
  t.index_base = index_base;
  return t;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend();
    if (!b.ok()) GTEST_SKIP() << "no CUDA device: " << b.status();
    gpu_ = std::move(*b);
  }

  // A backend that streams in small pieces (several rounds per pair).
  std::unique_ptr<Backend> Chunked(int64_t chunk_elements, size_t budget = size_t{8} << 20) {
    CudaBackendOptions o;
    o.chunk_elements = chunk_elements;
    o.device_budget_bytes = budget;
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }

  // GPU (this backend, twice: run-to-run identical) against the cpu.
  void ExpectSameAsCpu(const DiffTask& task, const std::string& where, Backend* gpu = nullptr,
                       double tol = 1e-12) {
    SCOPED_TRACE(where);
    if (gpu == nullptr) gpu = gpu_.get();
    absl::StatusOr<DiffStats> want = cpu_.Compare(task);
    ASSERT_TRUE(want.ok()) << want.status();
    absl::StatusOr<DiffStats> got = gpu->Compare(task);
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectEquivalent(*got, *want, tol, where);
    absl::StatusOr<DiffStats> again = gpu->Compare(task);
    ASSERT_TRUE(again.ok()) << again.status();
    ExpectIdentical(*got, *again, where + " (run to run)");
  }

  std::unique_ptr<Backend> gpu_;
  CpuBackend cpu_;
};

TEST_F(CudaBackendTest, NameAndFactoryErrors) {
  EXPECT_EQ(gpu_->name(), "cuda");
  CudaBackendOptions bad;
  bad.device_budget_bytes = 1024;
  EXPECT_THAT(CreateCudaBackend(bad), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  bad = CudaBackendOptions();
  bad.device = 1 << 20;
  EXPECT_THAT(CreateCudaBackend(bad), StatusIs(absl::StatusCode::kFailedPrecondition,
                                               HasSubstr("does not exist")));
}

TEST_F(CudaBackendTest, RegistryGivesCuda) {
  absl::StatusOr<std::unique_ptr<Backend>> b = CreateBackend(BackendKind::kCuda);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->name(), "cuda");
  // auto with a device: both backends, routed by the start-up calibration
  // (kernels/auto_backend.h); transposed pairs always to cuda.
  b = CreateBackend(BackendKind::kAuto);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(std::string((*b)->name()),
              ::testing::MatchesRegex("auto \\(element-wise: (cpu|cuda), transposed: cuda\\)"));
  EXPECT_TRUE(BuiltWithCuda());
}

TEST_F(CudaBackendTest, RandomFloat32AllSizes) {
  for (int64_t n : kSizes) {
    const std::vector<double> r = RandomValues(n, 1 + static_cast<uint32_t>(n));
    HostTensor ref = MakeTensor(DType::kFloat32, r);
    HostTensor cand = MakeTensor(DType::kFloat32, Perturb(r, 7, 1e-4));
    ExpectSameAsCpu(MakeTask(ref.view(), cand.view()), absl::StrCat("n=", n));
  }
}

TEST_F(CudaBackendTest, EveryDTypePair) {
  const std::vector<double> r = RandomValues(5000, 3, 40.0);
  std::vector<double> c = Perturb(r, 4, 0.05);
  for (DType a : kAllDTypes) {
    for (DType b : kAllDTypes) {
      HostTensor ref = MakeTensor(a, r);
      HostTensor cand = MakeTensor(b, c);
      ExpectSameAsCpu(MakeTask(ref.view(), cand.view()),
                      absl::StrCat(std::string(DTypeName(a)), " vs ", std::string(DTypeName(b))));
    }
  }
}

// uint16/32/64 at their extremes (0, max, max - 1, 2^53 + 1) against the
// same dtype and float64, across block and warp boundaries.
template <typename T>
std::vector<HostTensor> UnsignedPair(DType dtype, int64_t n, uint64_t seed) {
  const std::vector<T> r = testing::UnsignedTestValues<T>(static_cast<size_t>(n), seed);
  HostTensor ref = testing::MakeIntTensor(dtype, r);
  HostTensor same = testing::MakeIntTensor(dtype, testing::PerturbUnsigned(r, seed + 1));
  HostTensor f64 = MakeTensor(DType::kFloat64, ref.values, Shape{n});
  return {ref, same, f64};
}

TEST_F(CudaBackendTest, UnsignedExtremes) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{31}, int64_t{4097}, (int64_t{1} << 20) + 3}) {
    const std::vector<HostTensor> sets[] = {UnsignedPair<uint16_t>(DType::kUInt16, n, 1),
                                            UnsignedPair<uint32_t>(DType::kUInt32, n, 2),
                                            UnsignedPair<uint64_t>(DType::kUInt64, n, 3)};
    for (const std::vector<HostTensor>& set : sets) {
      for (size_t c = 1; c < set.size(); ++c) {
        ExpectSameAsCpu(MakeTask(set[0].view(), set[c].view()),
                        absl::StrCat(std::string(DTypeName(set[0].dtype)), " vs ",
                                     std::string(DTypeName(set[c].dtype)), " n=", n));
      }
    }
  }
}

TEST_F(CudaBackendTest, NonFiniteAtBlockAndWarpBoundaries) {
  const int64_t n = 3 * 4096 + 77;
  std::vector<double> r = RandomValues(n, 11);
  std::vector<double> c = Perturb(r, 12, 1e-6);
  const int64_t spots[] = {0, 31, 32, 33, 255, 256, 4095, 4096, 8191, 8192, n - 1};
  int k = 0;
  for (int64_t i : spots) {
    switch (k++ % 5) {
      case 0: r[i] = kNaN; break;
      case 1: c[i] = kNaN; break;
      case 2: r[i] = kInf; c[i] = kInf; break;
      case 3: r[i] = -kInf; c[i] = kInf; break;
      case 4: r[i] = 0.0; c[i] = kInf; break;
    }
  }
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    HostTensor ref = MakeTensor(dt, r);
    HostTensor cand = MakeTensor(dt, c);
    for (bool equal_nan : {false, true}) {
      DiffTask task = MakeTask(ref.view(), cand.view());
      task.options.equal_nan = equal_nan;
      ExpectSameAsCpu(task, absl::StrCat(std::string(DTypeName(dt)), " equal_nan=", equal_nan));
    }
  }
  // Only infinities (no NaN): max must land on the first +inf d.
  std::vector<double> r2 = RandomValues(n, 13), c2 = r2;
  c2[4097] = kInf;
  c2[300] = -kInf;
  HostTensor ref2 = MakeTensor(DType::kFloat64, r2), cand2 = MakeTensor(DType::kFloat64, c2);
  ExpectSameAsCpu(MakeTask(ref2.view(), cand2.view()), "inf only");
}

TEST_F(CudaBackendTest, MaxTiesAcrossBlocksAndPieces) {
  const int64_t n = (1 << 22) + 5;
  std::vector<double> r(static_cast<size_t>(n), 1.0), c = r;
  for (int64_t i : {int64_t{5000}, int64_t{70000}, int64_t{1} << 21, n - 1}) c[i] = 3.0;
  HostTensor ref = MakeTensor(DType::kFloat32, r), cand = MakeTensor(DType::kFloat32, c);
  const DiffTask task = MakeTask(ref.view(), cand.view());
  ExpectSameAsCpu(task, "one shot");
  std::unique_ptr<Backend> chunked = Chunked(10000);
  ASSERT_NE(chunked, nullptr);
  ExpectSameAsCpu(task, "chunked", chunked.get());
  absl::StatusOr<DiffStats> s = gpu_->Compare(task);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->max_index, 5000u);
  EXPECT_EQ(s->max_abs, 2.0);
}

TEST_F(CudaBackendTest, Subnormals) {
  std::vector<double> r, c;
  for (int i = 0; i < 3000; ++i) {
    r.push_back(std::ldexp(1.0 + i, -1074 + (i % 40)));
    c.push_back(std::ldexp(1.0 + 2 * i, -1074 + (i % 45)));
  }
  HostTensor ref = MakeTensor(DType::kFloat64, r), cand = MakeTensor(DType::kFloat64, c);
  ExpectSameAsCpu(MakeTask(ref.view(), cand.view()), "float64 subnormals");
  std::vector<double> rf, cf;
  for (int i = 0; i < 3000; ++i) {
    rf.push_back(std::ldexp(1.0 + i % 100, -149 + (i % 20)));
    cf.push_back(std::ldexp(1.0 + i % 70, -149 + (i % 23)));
  }
  HostTensor ref32 = MakeTensor(DType::kFloat32, rf), cand32 = MakeTensor(DType::kFloat32, cf);
  ExpectSameAsCpu(MakeTask(ref32.view(), cand32.view()), "float32 subnormals");
}

TEST_F(CudaBackendTest, HalfAndBFloat16AllBitPatterns) {
  std::vector<uint16_t> a(65536), b(65536);
  for (int i = 0; i < 65536; ++i) {
    a[i] = static_cast<uint16_t>(i);
    b[i] = static_cast<uint16_t>((i * 40503u + 17u) & 0xffffu);
  }
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    HostTensor ref = MakeHalfTensor(dt, a), cand = MakeHalfTensor(dt, b);
    // Random bit patterns make Σ ref·cand a sum of mixed-sign terms up to
    // 1e77 (ill-conditioned): sums get 1e-10, exact fields stay exact.
    ExpectSameAsCpu(MakeTask(ref.view(), cand.view()), std::string(DTypeName(dt)), nullptr,
                    1e-10);
    HostTensor same = MakeHalfTensor(dt, a);
    for (bool equal_nan : {false, true}) {
      DiffTask task = MakeTask(ref.view(), same.view());
      task.options.equal_nan = equal_nan;
      ExpectSameAsCpu(task, absl::StrCat(std::string(DTypeName(dt)), " self, equal_nan=", equal_nan));
    }
  }
}

TEST_F(CudaBackendTest, TransposedAndIndexBase) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{3, 5}, {37, 129}, {1000, 333}, {1, 7000}}) {
    const std::vector<double> r = RandomValues(m * n, 21);
    std::vector<double> ct(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) ct[j * m + i] = r[i * n + j] * (1 + 1e-5 * ((i + j) % 7));
    }
    HostTensor ref = MakeTensor(DType::kFloat32, r, Shape{m, n});
    HostTensor cand = MakeTensor(DType::kFloat64, ct, Shape{n, m});
    DiffTask task = MakeTask(ref.view(), cand.view(), /*transpose_cand=*/true, /*index_base=*/1000);
    ExpectSameAsCpu(task, absl::StrCat("transposed ", m, "x", n));
    std::unique_ptr<Backend> chunked = Chunked(2 * n + 1);
    ASSERT_NE(chunked, nullptr);
    ExpectSameAsCpu(task, absl::StrCat("transposed chunked ", m, "x", n), chunked.get());
  }
}

TEST_F(CudaBackendTest, OptionsVary) {
  const std::vector<double> r = RandomValues(20000, 31);
  HostTensor ref = MakeTensor(DType::kFloat64, r);
  HostTensor cand = MakeTensor(DType::kFloat64, Perturb(r, 32, 1e-5));
  for (double atol : {0.0, 1e-8, 1e-5}) {
    for (double rtol : {0.0, 1e-5, 1e-3}) {
      DiffTask task = MakeTask(ref.view(), cand.view());
      task.options.atol = atol;
      task.options.rtol = rtol;
      ExpectSameAsCpu(task, absl::StrCat("atol=", atol, " rtol=", rtol));
    }
  }
}

TEST_F(CudaBackendTest, BatchEqualsOneByOne) {
  std::vector<HostTensor> refs, cands;
  std::mt19937 rng(41);
  for (int i = 0; i < 300; ++i) {
    const int64_t n = i % 37 == 0 ? 0 : static_cast<int64_t>(rng() % 9000);
    const DType a = kAllDTypes[rng() % kNumDTypes], b = kAllDTypes[rng() % kNumDTypes];
    const std::vector<double> r = RandomValues(n, 100 + i, 10.0);
    refs.push_back(MakeTensor(a, r, Shape{n}));
    cands.push_back(MakeTensor(b, Perturb(r, 200 + i, 1e-3), Shape{n}));
  }
  std::vector<DiffTask> tasks;
  for (size_t i = 0; i < refs.size(); ++i) {
    tasks.push_back(MakeTask(refs[i].view(), cands[i].view()));
    tasks.back().index_base = i;
  }
  for (Backend* b : {gpu_.get()}) {
    std::vector<DiffStats> batch(tasks.size()), cpu(tasks.size());
    ASSERT_TRUE(b->CompareBatch(tasks, absl::MakeSpan(batch)).ok());
    ASSERT_TRUE(cpu_.CompareBatch(tasks, absl::MakeSpan(cpu)).ok());
    for (size_t i = 0; i < tasks.size(); ++i) {
      absl::StatusOr<DiffStats> one = b->Compare(tasks[i]);
      ASSERT_TRUE(one.ok());
      ExpectIdentical(batch[i], *one, absl::StrCat("task ", i));
      ExpectEquivalent(batch[i], cpu[i], 1e-12, absl::StrCat("cpu task ", i));
    }
  }
  // A small budget forces many rounds through both slots.
  std::unique_ptr<Backend> chunked = Chunked(3000, size_t{4} << 20);
  ASSERT_NE(chunked, nullptr);
  std::vector<DiffStats> batch(tasks.size());
  ASSERT_TRUE(chunked->CompareBatch(tasks, absl::MakeSpan(batch)).ok());
  for (size_t i = 0; i < tasks.size(); ++i) {
    absl::StatusOr<DiffStats> cpu = cpu_.Compare(tasks[i]);
    ASSERT_TRUE(cpu.ok());
    ExpectEquivalent(batch[i], *cpu, 1e-12, absl::StrCat("chunked task ", i));
  }
}

TEST_F(CudaBackendTest, ChunkedPipelinedEqualsOneShot) {
  const int64_t n = (1 << 22) + 12345;
  const std::vector<double> r = RandomValues(n, 51);
  HostTensor ref = MakeTensor(DType::kFloat32, r);
  HostTensor cand = MakeTensor(DType::kBFloat16, Perturb(r, 52, 1e-2));
  const DiffTask task = MakeTask(ref.view(), cand.view());
  absl::StatusOr<DiffStats> one = gpu_->Compare(task);
  ASSERT_TRUE(one.ok());
  for (int64_t chunk : {int64_t{4097}, int64_t{1} << 18}) {
    std::unique_ptr<Backend> chunked = Chunked(chunk, size_t{4} << 20);
    ASSERT_NE(chunked, nullptr);
    absl::StatusOr<DiffStats> got = chunked->Compare(task);
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectEquivalent(*got, *one, 1e-12, absl::StrCat("chunk ", chunk));
  }
}

// Windows as the backend plans them (kernels/chunk_grid.h), reduced with
// Compare / CompareBatch and merged with MergeWindows, against Compare on the
// whole pair: bit for bit when the plan says exact (windows of exactly one
// piece), else counts, extrema, indices and histogram exactly and sums to
// 1e-12. Pieces of 2^16 elements (the budget fits more), NaN / Inf in one
// window.
TEST_F(CudaBackendTest, WindowsOnThePieceGridMatchTheWholePair) {
  constexpr int64_t kPiece = int64_t{1} << 16;
  std::unique_ptr<Backend> gpu = Chunked(kPiece);
  ASSERT_NE(gpu, nullptr);
  const DType f32 = DType::kFloat32, f64 = DType::kFloat64;
  int exact_runs = 0;
  {  // element-wise
    const int64_t n = 5 * kPiece + 17;
    std::vector<double> r = RandomValues(n, 61);
    std::vector<double> c = Perturb(r, 62, 1e-3);
    r[3 * kPiece + 5] = kNaN;
    c[3 * kPiece + 6] = kInf;
    r[3 * kPiece + 7] = -kInf;
    c[3 * kPiece + 7] = -kInf;
    const HostTensor ref = MakeTensor(f32, r);
    const HostTensor cand = MakeTensor(f64, c);
    absl::StatusOr<DiffStats> whole = gpu->Compare(MakeTask(ref.view(), cand.view()));
    ASSERT_TRUE(whole.ok()) << whole.status();
    ASSERT_EQ(whole->nan_diff, 1u);
    bool batch = false;
    for (const int64_t budget : {kPiece, 3 * kPiece, kPiece - 1, int64_t{1000}, n}) {
      const FlatWindowPlan plan = gpu->PlanFlatWindows(f32, f64, n, budget);
      EXPECT_EQ(plan.exact, budget >= kPiece) << budget;
      if (budget >= kPiece && budget < n) {
        EXPECT_EQ(plan.elements, kPiece);
      }
      batch = !batch;
      const DiffStats got = testing::ReduceFlatWindows(*gpu, ref, cand, plan.elements, batch);
      const std::string where = absl::StrCat("flat budget ", budget, batch ? " batch" : "");
      if (plan.exact) {
        ++exact_runs;
        ExpectIdentical(got, *whole, where);
      } else {
        ExpectEquivalent(got, *whole, 1e-12, where);
      }
    }
  }
  {  // transposed: 2^16 / 100 = 655 rows per piece
    const int64_t m = 3000, n = 100;
    std::vector<double> r = RandomValues(m * n, 63);
    std::vector<double> c = Perturb(r, 64, 1e-3);
    r[1000 * n + 3] = kNaN;
    const HostTensor ref = MakeTensor(f32, r, Shape{m, n});
    std::vector<double> ct(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) ct[j * m + i] = c[i * n + j];
    }
    const HostTensor cand = MakeTensor(f32, ct, Shape{n, m});
    absl::StatusOr<DiffStats> whole =
        gpu->Compare(MakeTask(ref.view(), cand.view(), /*transpose=*/true));
    ASSERT_TRUE(whole.ok()) << whole.status();
    bool batch = false;
    for (const int64_t budget : {655 * n, 2000 * n, 600 * n, n - 1, m * n}) {
      const TransposedWindowPlan plan = gpu->PlanTransposedWindows(f32, f32, m, n, budget);
      EXPECT_EQ(plan.exact, budget >= 655 * n) << budget;
      if (budget >= 655 * n && budget < m * n) {
        EXPECT_EQ(plan.rows, 655);
      }
      batch = !batch;
      const DiffStats got = testing::ReduceTransposedTiles(*gpu, ref, cand, plan, batch);
      const std::string where = absl::StrCat("transposed budget ", budget, batch ? " batch" : "");
      if (plan.exact) {
        ++exact_runs;
        ExpectIdentical(got, *whole, where);
      } else {
        ExpectEquivalent(got, *whole, 1e-12, where);
      }
    }
  }
  EXPECT_EQ(exact_runs, 6);
}

// More tasks than one round's descriptor table (4096): several rounds.
TEST_F(CudaBackendTest, ManyTinyTasks) {
  std::vector<HostTensor> refs, cands;
  for (int i = 0; i < 10000; ++i) {
    const std::vector<double> r = RandomValues(i % 6, 300 + i);
    refs.push_back(MakeTensor(DType::kFloat32, r, Shape{static_cast<int64_t>(r.size())}));
    cands.push_back(MakeTensor(DType::kFloat16, Perturb(r, 400 + i, 1e-3),
                               Shape{static_cast<int64_t>(r.size())}));
  }
  std::vector<DiffTask> tasks;
  for (size_t i = 0; i < refs.size(); ++i) tasks.push_back(MakeTask(refs[i].view(), cands[i].view()));
  std::vector<DiffStats> gpu(tasks.size()), cpu(tasks.size());
  ASSERT_TRUE(gpu_->CompareBatch(tasks, absl::MakeSpan(gpu)).ok());
  ASSERT_TRUE(cpu_.CompareBatch(tasks, absl::MakeSpan(cpu)).ok());
  for (size_t i = 0; i < tasks.size(); ++i) {
    ExpectEquivalent(gpu[i], cpu[i], 1e-12, absl::StrCat("task ", i));
  }
}

TEST_F(CudaBackendTest, ConcurrentCallers) {
  const std::vector<double> r = RandomValues(300000, 61);
  HostTensor ref = MakeTensor(DType::kFloat32, r);
  HostTensor cand = MakeTensor(DType::kFloat32, Perturb(r, 62, 1e-4));
  const DiffTask task = MakeTask(ref.view(), cand.view());
  absl::StatusOr<DiffStats> want = gpu_->Compare(task);
  ASSERT_TRUE(want.ok());
  std::vector<DiffStats> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 5; ++k) {
        absl::StatusOr<DiffStats> s = gpu_->Compare(task);
        if (s.ok()) got[t] = *s;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 4; ++t) ExpectIdentical(got[t], *want, absl::StrCat("thread ", t));
}

TEST_F(CudaBackendTest, InvalidTasks) {
  HostTensor a = MakeTensor(DType::kFloat32, RandomValues(10, 1));
  HostTensor b = MakeTensor(DType::kFloat32, RandomValues(11, 2));
  EXPECT_THAT(gpu_->Compare(MakeTask(a.view(), b.view())),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  std::vector<DiffTask> tasks = {MakeTask(a.view(), a.view()), MakeTask(a.view(), b.view())};
  std::vector<DiffStats> out(2);
  EXPECT_THAT(gpu_->CompareBatch(tasks, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task 1:")));
  std::vector<DiffStats> short_out(1);
  EXPECT_THAT(gpu_->CompareBatch(tasks, absl::MakeSpan(short_out)),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

// 2^31 + 7 elements: 64-bit indices end to end. uint8 keeps it at ~4.3 GB
// of host memory; the data is streamed, so device memory needs only the budget.
TEST_F(CudaBackendTest, HugePairBeyondInt32) {
  const int64_t n = (int64_t{1} << 31) + 7;
  size_t free_dev = 0, total_dev = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_dev, &total_dev), cudaSuccess);
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const double host_free = static_cast<double>(pages) * static_cast<double>(page);
  if (free_dev < (size_t{2} << 30) || host_free < 12e9) {
    GTEST_SKIP() << "needs 2 GiB free device memory and 12 GB free host memory";
  }
  std::vector<uint8_t> r(static_cast<size_t>(n)), c;
  for (int64_t i = 0; i < n; ++i) r[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
  c = r;
  c[(int64_t{1} << 31) + 5] = static_cast<uint8_t>(r[(int64_t{1} << 31) + 5] ^ 0x80);
  c[3] = static_cast<uint8_t>(r[3] ^ 0x01);
  const TensorView rv{DType::kUInt8, Shape{n}, r.data()};
  const TensorView cv{DType::kUInt8, Shape{n}, c.data()};
  const DiffTask task = MakeTask(rv, cv);
  absl::StatusOr<DiffStats> got = gpu_->Compare(task);
  ASSERT_TRUE(got.ok()) << got.status();
  absl::StatusOr<DiffStats> want = cpu_.Compare(task);
  ASSERT_TRUE(want.ok());
  ExpectEquivalent(*got, *want, 1e-12, "2^31+7");
  EXPECT_EQ(got->count, static_cast<uint64_t>(n));
  EXPECT_EQ(got->max_index, (uint64_t{1} << 31) + 5);
  EXPECT_EQ(got->max_abs, 128.0);
}

// The timings --backend auto logs at start-up: all three measured, and the
// kernel really reduced the whole pair.
// Resident refs (CudaBackendOptions::resident_bytes, DiffTask::ref_key):
// the same bits as without the cache on both kernels, for element-wise and
// transposed pairs, pieces whose resident ref is 16-byte aligned (read in
// place) and not (copied device to device into the slot); one upload per
// key; a held ref without host data; eviction under a small budget.
TEST_F(CudaBackendTest, ResidentRefsGiveTheSameBitsAndUploadOnce) {
  const int64_t n = (1 << 20) + 3;
  const std::vector<double> r = RandomValues(n, 71);
  HostTensor ref = MakeTensor(DType::kFloat32, r);
  HostTensor cand = MakeTensor(DType::kBFloat16, Perturb(r, 72, 1e-2));
  const int64_t m = 301, cols = 517;  // odd rows: unaligned transposed pieces
  const std::vector<double> tr = RandomValues(m * cols, 73);
  std::vector<double> tc(tr.size());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < cols; ++j) tc[j * m + i] = tr[i * cols + j] * (1 + 1e-6);
  }
  HostTensor t_ref = MakeTensor(DType::kFloat32, tr, Shape{m, cols});
  HostTensor t_cand = MakeTensor(DType::kFloat32, tc, Shape{cols, m});
  for (const CudaKernel kernel : {CudaKernel::kSegmented, CudaKernel::kFused}) {
    // 4097-element pieces: f32 piece offsets of 16388 bytes, so every other
    // piece's resident ref is unaligned; whole-pair pieces: aligned.
    for (const int64_t chunk : {int64_t{4097}, int64_t{1} << 24}) {
      SCOPED_TRACE(absl::StrCat(kernel == CudaKernel::kFused ? "fused" : "segmented",
                                ", chunk ", chunk));
      CudaBackendOptions plain_options;
      plain_options.kernel = kernel;
      plain_options.chunk_elements = chunk;
      CudaBackendOptions cached_options = plain_options;
      cached_options.resident_bytes = size_t{64} << 20;
      absl::StatusOr<std::unique_ptr<Backend>> plain = CreateCudaBackend(plain_options);
      absl::StatusOr<std::unique_ptr<Backend>> cached = CreateCudaBackend(cached_options);
      ASSERT_TRUE(plain.ok() && cached.ok());
      for (const bool transposed : {false, true}) {
        DiffTask task = transposed ? MakeTask(t_ref.view(), t_cand.view(), true)
                                   : MakeTask(ref.view(), cand.view());
        absl::StatusOr<DiffStats> want = (*plain)->Compare(task);
        ASSERT_TRUE(want.ok()) << want.status();
        const std::string key = transposed ? "t" : "flat";
        task.ref_key = key;
        const ResidentStats before = (*cached)->resident_stats();
        for (int i = 0; i < 2; ++i) {  // a miss that uploads, then a hit
          absl::StatusOr<DiffStats> got = (*cached)->Compare(task);
          ASSERT_TRUE(got.ok()) << got.status();
          ExpectIdentical(*got, *want, absl::StrCat(key, " pass ", i));
        }
        const ResidentStats after = (*cached)->resident_stats();
        EXPECT_EQ(after.misses - before.misses, 1u);
        EXPECT_EQ(after.hits - before.hits, 1u);
        EXPECT_EQ(after.admitted_bytes - before.admitted_bytes, task.ref.num_elements() * 4u);
        // Held, the ref needs no host data.
        std::shared_ptr<const void> hold = (*cached)->HoldResidentRef(key);
        ASSERT_NE(hold, nullptr);
        DiffTask bare = task;
        bare.ref.data = nullptr;
        absl::StatusOr<DiffStats> held = (*cached)->Compare(bare);
        ASSERT_TRUE(held.ok()) << held.status();
        ExpectIdentical(*held, *want, key + " held");
      }
    }
  }
}

TEST_F(CudaBackendTest, ResidentRefsEvictUnderTheBudgetAndRefuseBareMisses) {
  CudaBackendOptions o;
  o.resident_bytes = size_t{5} << 20;  // room for one 4 MiB ref
  absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
  ASSERT_TRUE(b.ok()) << b.status();
  const int64_t n = int64_t{1} << 20;  // 4 MiB of float32
  HostTensor a = MakeTensor(DType::kFloat32, RandomValues(n, 81));
  HostTensor c = MakeTensor(DType::kFloat32, RandomValues(n, 82));
  DiffTask first = MakeTask(a.view(), c.view());
  first.ref_key = "a";
  DiffTask second = MakeTask(c.view(), a.view());
  second.ref_key = "c";
  ASSERT_TRUE((*b)->Compare(first).ok());
  EXPECT_NE((*b)->HoldResidentRef("a"), nullptr);
  ASSERT_TRUE((*b)->Compare(second).ok());  // evicts a
  EXPECT_EQ((*b)->HoldResidentRef("a"), nullptr);
  EXPECT_NE((*b)->HoldResidentRef("c"), nullptr);
  const ResidentStats s = (*b)->resident_stats();
  EXPECT_EQ(s.budget_bytes, o.resident_bytes);
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(s.used_bytes, size_t{4} << 20);
  // A ref larger than the budget streams as usual.
  HostTensor big = MakeTensor(DType::kFloat64, RandomValues(n, 83));
  DiffTask large = MakeTask(big.view(), big.view());
  large.ref_key = "big";
  ASSERT_TRUE((*b)->Compare(large).ok());
  EXPECT_EQ((*b)->HoldResidentRef("big"), nullptr);
  // No host data and nothing resident: refused, naming the key.
  DiffTask bare = first;
  bare.ref.data = nullptr;
  EXPECT_THAT((*b)->Compare(bare),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("key 'a'")));
}

TEST_F(CudaBackendTest, DeviceResidentTimingMeasuresKernelCopyAndUpload) {
  const uint64_t n = uint64_t{1} << 22;
  absl::StatusOr<internal::DeviceResidentTiming> t =
      internal::TimeDeviceResidentPair(n, CudaBackendOptions().chunk_elements, 2);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->count, n);
  EXPECT_EQ(t->bytes, 8.0 * static_cast<double>(n));
  EXPECT_GT(t->kernel_ms, 0.0);
  EXPECT_GT(t->d2d_ms, 0.0);
  EXPECT_GT(t->h2d_ms, 0.0);
  // A pinned upload over PCIe/NVLink-C2C is slower than a copy inside HBM.
  EXPECT_GT(t->h2d_ms, t->d2d_ms / 2);
  std::printf("device-resident 2^22 f32 pair: kernel %.3f ms, D2D %.3f ms, pinned H2D %.3f ms\n",
              t->kernel_ms, t->d2d_ms, t->h2d_ms);
}

}  // namespace
}  // namespace reprod::kernels

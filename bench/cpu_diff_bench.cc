// File: bench/cpu_diff_bench.cc
//
// Google Benchmark suite for the cpu backend (binary: reprod_cpu_bench).
// Names are stable; scripts parse `--benchmark_format=json` output by name.
// Every case reports wall-clock time (UseRealTime; process CPU time is not
// measured) and bytes_per_second = bytes of tensor data read per second.
//
//   BM_DiffStats_F32/100M     full DiffStats of a 100M-element float32 pair
//                             (2 x 400 MB) through CpuBackend::Compare, all
//                             hardware threads (the shared default pool).
//   BM_OnePassC_SumMaxMin/100M
//                             the "machine limit" yardstick: a plain C-style
//                             one-pass reduction of the same pair computing
//                             only sum/max/min of |a - b| (float |a-b|, eight
//                             independent accumulators so the compiler can
//                             vectorise it, double sums), split over the same
//                             number of std::threads (created per iteration).
//   BM_OnePassC_SumMaxMin_Simd/100M
//                             the same reduction hand-vectorised with SSE2
//                             intrinsics (GCC leaves the plain loop scalar):
//                             what one pass can reach when only memory
//                             limits it.
//   BM_Batch_5000x16KiB       CompareBatch over 5,000 float32 pairs of 4,096
//                             elements (16 KiB per tensor) in one call.
//   BM_Compare_16KiB          one Compare of a single 4,096-element float32
//                             pair: per-call latency of a small pair.
//   BM_MemoryBandwidth        read-only sum over the same 800 MB, same thread
//                             count: the memory system's streaming limit.
//
// Context keys added to the JSON: threads (the pool's size) and kernel_isa
// (the instruction-set variant the kernels use on this CPU).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "common/dtype.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/internal/diff_kernel.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {
namespace {

constexpr int64_t kLargeElements = 100'000'000;
constexpr int kBatchPairs = 5000;
constexpr int64_t kBatchElements = 4096;

// Fast deterministic fill (xorshift64*): uniform in [-1, 1) for ref, ref
// plus a small perturbation for cand, so d spans several decades.
void FillPair(float* a, float* b, int64_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&s]() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  };
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = next();
    const float x = static_cast<float>(static_cast<int64_t>(r >> 11) - (int64_t{1} << 52)) *
                    0x1p-52f;
    const float noise = static_cast<float>(static_cast<int32_t>(r & 0xffffffu) - (1 << 23)) *
                        0x1p-23f;
    a[i] = x;
    b[i] = x + 1e-3f * noise;
  }
}

struct LargePair {
  std::unique_ptr<float[]> a, b;
  LargePair() : a(new float[kLargeElements]), b(new float[kLargeElements]) {
    // Filled in parallel chunks (first touch spreads pages over the threads).
    const int threads = DefaultThreadPool().num_threads();
    DefaultThreadPool().ParallelFor(threads, [&](int64_t t) {
      const int64_t lo = kLargeElements * t / threads, hi = kLargeElements * (t + 1) / threads;
      FillPair(a.get() + lo, b.get() + lo, hi - lo, static_cast<uint64_t>(t) + 1);
    });
  }
};

const LargePair& Large() {
  static const LargePair* pair = new LargePair();
  return *pair;
}

int Threads() { return DefaultThreadPool().num_threads(); }

void BM_DiffStats_F32(benchmark::State& state) {
  const LargePair& p = Large();
  CpuBackend backend(0);
  DiffTask task;
  task.ref = TensorView{DType::kFloat32, Shape{kLargeElements}, p.a.get()};
  task.cand = TensorView{DType::kFloat32, Shape{kLargeElements}, p.b.get()};
  for (auto _ : state) {
    absl::StatusOr<DiffStats> s = backend.Compare(task);
    if (!s.ok()) {
      state.SkipWithError(std::string(s.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(s->sum_abs);
  }
  state.SetBytesProcessed(state.iterations() * kLargeElements * 2 * 4);
  state.counters["threads"] = backend.num_threads();
}

struct SumMaxMin {
  double sum = 0;
  float max = 0, min = INFINITY;
};

// The yardstick's per-thread loop: what a C programmer writes for speed.
SumMaxMin OnePassC(const float* a, const float* b, int64_t n) {
  double sum[8] = {};
  float mx[8] = {}, mn[8];
  for (float& m : mn) m = INFINITY;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) {
      const float d = std::fabs(a[i + j] - b[i + j]);
      sum[j] += d;
      mx[j] = d > mx[j] ? d : mx[j];
      mn[j] = d < mn[j] ? d : mn[j];
    }
  }
  SumMaxMin r;
  for (; i < n; ++i) {
    const float d = std::fabs(a[i] - b[i]);
    r.sum += d;
    r.max = std::max(r.max, d);
    r.min = std::min(r.min, d);
  }
  for (int j = 0; j < 8; ++j) {
    r.sum += sum[j];
    r.max = std::max(r.max, mx[j]);
    r.min = std::min(r.min, mn[j]);
  }
  return r;
}

#if defined(__SSE2__)
// OnePassC with SSE2 intrinsics: 8 floats per step, double sums.
SumMaxMin OnePassSimd(const float* a, const float* b, int64_t n) {
  const __m128 sign = _mm_set1_ps(-0.0f);
  __m128d s0 = _mm_setzero_pd(), s1 = _mm_setzero_pd(), s2 = _mm_setzero_pd(),
          s3 = _mm_setzero_pd();
  __m128 mx0 = _mm_setzero_ps(), mx1 = _mm_setzero_ps();
  __m128 mn0 = _mm_set1_ps(INFINITY), mn1 = _mm_set1_ps(INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128 d0 = _mm_andnot_ps(sign, _mm_sub_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
    const __m128 d1 =
        _mm_andnot_ps(sign, _mm_sub_ps(_mm_loadu_ps(a + i + 4), _mm_loadu_ps(b + i + 4)));
    s0 = _mm_add_pd(s0, _mm_cvtps_pd(d0));
    s1 = _mm_add_pd(s1, _mm_cvtps_pd(_mm_movehl_ps(d0, d0)));
    s2 = _mm_add_pd(s2, _mm_cvtps_pd(d1));
    s3 = _mm_add_pd(s3, _mm_cvtps_pd(_mm_movehl_ps(d1, d1)));
    mx0 = _mm_max_ps(mx0, d0);
    mx1 = _mm_max_ps(mx1, d1);
    mn0 = _mm_min_ps(mn0, d0);
    mn1 = _mm_min_ps(mn1, d1);
  }
  SumMaxMin r = OnePassC(a + i, b + i, n - i);
  double sums[2];
  _mm_storeu_pd(sums, _mm_add_pd(_mm_add_pd(s0, s1), _mm_add_pd(s2, s3)));
  float mx[4], mn[4];
  _mm_storeu_ps(mx, _mm_max_ps(mx0, mx1));
  _mm_storeu_ps(mn, _mm_min_ps(mn0, mn1));
  r.sum += sums[0] + sums[1];
  for (int j = 0; j < 4; ++j) {
    r.max = std::max(r.max, mx[j]);
    r.min = std::min(r.min, mn[j]);
  }
  return r;
}
#else
SumMaxMin OnePassSimd(const float* a, const float* b, int64_t n) { return OnePassC(a, b, n); }
#endif

// Runs `fn` over the large pair on Threads() std::threads (one chunk each).
template <typename Fn>
void RunOnePass(benchmark::State& state, Fn fn) {
  const LargePair& p = Large();
  const int threads = Threads();
  for (auto _ : state) {
    std::vector<SumMaxMin> part(static_cast<size_t>(threads));
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const int64_t lo = kLargeElements * t / threads, hi = kLargeElements * (t + 1) / threads;
        part[t] = fn(p.a.get() + lo, p.b.get() + lo, hi - lo);
      });
    }
    for (std::thread& w : workers) w.join();
    SumMaxMin total;
    for (const SumMaxMin& s : part) {
      total.sum += s.sum;
      total.max = std::max(total.max, s.max);
      total.min = std::min(total.min, s.min);
    }
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(state.iterations() * kLargeElements * 2 * 4);
  state.counters["threads"] = threads;
}

void BM_OnePassC_SumMaxMin(benchmark::State& state) { RunOnePass(state, OnePassC); }
void BM_OnePassC_SumMaxMin_Simd(benchmark::State& state) { RunOnePass(state, OnePassSimd); }

void BM_MemoryBandwidth(benchmark::State& state) {
  const LargePair& p = Large();
  const int threads = Threads();
  for (auto _ : state) {
    std::vector<double> part(static_cast<size_t>(threads));
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const int64_t lo = kLargeElements * t / threads, hi = kLargeElements * (t + 1) / threads;
        float acc[16] = {};
        for (const float* x : {p.a.get(), p.b.get()}) {
          int64_t i = lo;
          for (; i + 16 <= hi; i += 16) {
            for (int j = 0; j < 16; ++j) acc[j] += x[i + j];
          }
          for (; i < hi; ++i) acc[0] += x[i];
        }
        double s = 0;
        for (float v : acc) s += v;
        part[t] = s;
      });
    }
    for (std::thread& w : workers) w.join();
    double total = 0;
    for (double v : part) total += v;
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(state.iterations() * kLargeElements * 2 * 4);
  state.counters["threads"] = threads;
}

struct BatchData {
  std::vector<float> a, b;
  std::vector<DiffTask> tasks;
  BatchData()
      : a(static_cast<size_t>(kBatchPairs * kBatchElements)),
        b(static_cast<size_t>(kBatchPairs * kBatchElements)) {
    FillPair(a.data(), b.data(), kBatchPairs * kBatchElements, 99);
    tasks.resize(kBatchPairs);
    for (int i = 0; i < kBatchPairs; ++i) {
      tasks[i].ref = TensorView{DType::kFloat32, Shape{kBatchElements}, a.data() + i * kBatchElements};
      tasks[i].cand = TensorView{DType::kFloat32, Shape{kBatchElements}, b.data() + i * kBatchElements};
    }
  }
};

void BM_Batch_5000x16KiB(benchmark::State& state) {
  static const BatchData* data = new BatchData();
  CpuBackend backend(0);
  std::vector<DiffStats> out(kBatchPairs);
  for (auto _ : state) {
    absl::Status s = backend.CompareBatch(data->tasks, absl::MakeSpan(out));
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * kBatchPairs * kBatchElements * 2 * 4);
  state.SetItemsProcessed(state.iterations() * kBatchPairs);
  state.counters["threads"] = backend.num_threads();
}

void BM_Compare_16KiB(benchmark::State& state) {
  static const BatchData* data = new BatchData();
  CpuBackend backend(0);
  for (auto _ : state) {
    absl::StatusOr<DiffStats> s = backend.Compare(data->tasks[0]);
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(state.iterations() * kBatchElements * 2 * 4);
  state.SetItemsProcessed(state.iterations());
}

}  // namespace
}  // namespace reprod::kernels

int main(int argc, char** argv) {
  using namespace reprod::kernels;  // NOLINT(build/namespaces)
  benchmark::RegisterBenchmark("BM_DiffStats_F32/100M", BM_DiffStats_F32)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_OnePassC_SumMaxMin/100M", BM_OnePassC_SumMaxMin)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_OnePassC_SumMaxMin_Simd/100M", BM_OnePassC_SumMaxMin_Simd)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_Batch_5000x16KiB", BM_Batch_5000x16KiB)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_Compare_16KiB", BM_Compare_16KiB)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_MemoryBandwidth", BM_MemoryBandwidth)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("threads", std::to_string(DefaultThreadPool().num_threads()));
  benchmark::AddCustomContext(
      "kernel_isa", std::string(internal::KernelIsaName(internal::ActiveKernelIsa())));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

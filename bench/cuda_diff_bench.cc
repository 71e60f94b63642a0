// reprod_cuda_bench: times the cuda backend against the cpu backend on a few
// representative workloads (host data, so every GPU time includes the
// host->device transfer). Plain main, no Google Benchmark, so the binary
// carries to the GPU machine with few shared libraries
// (scripts/gpu-check.sh --build bundles it, --run runs it).
//
//   reprod_cuda_bench [--quick]
//
// Per case: median of 5 timed runs after one warm-up; GB/s counts the bytes
// of both inputs. Also checks that both backends agree on count, max_index
// and mismatches, and prints "MISMATCH" otherwise.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/half.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {
namespace {

double MedianMs(const std::function<void()>& fn) {
  fn();  // warm-up
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

struct Case {
  std::string name;
  std::vector<DiffTask> tasks;
  double bytes = 0;
};

void Run(const Case& c, Backend& gpu, Backend& cpu) {
  std::vector<DiffStats> g(c.tasks.size()), h(c.tasks.size());
  bool ok = true;
  auto run = [&](Backend& b, std::vector<DiffStats>& out) {
    ok = ok && b.CompareBatch(c.tasks, absl::MakeSpan(out)).ok();
  };
  const double gpu_ms = MedianMs([&] { run(gpu, g); });
  const double cpu_ms = MedianMs([&] { run(cpu, h); });
  bool agree = ok;
  for (size_t i = 0; i < g.size() && agree; ++i) {
    agree = g[i].count == h[i].count && g[i].max_index == h[i].max_index &&
            g[i].mismatches == h[i].mismatches && g[i].histogram == h[i].histogram;
  }
  std::printf("%-34s gpu %9.2f ms %7.2f GB/s | cpu %9.2f ms %7.2f GB/s | x%5.2f %s\n",
              c.name.c_str(), gpu_ms, c.bytes / gpu_ms / 1e6, cpu_ms, c.bytes / cpu_ms / 1e6,
              cpu_ms / gpu_ms, agree ? "" : "MISMATCH");
}

DiffTask Task(DType rd, const void* r, DType cd, const void* c, Shape rs, Shape cs,
              bool transpose = false) {
  DiffTask t;
  t.ref = TensorView{rd, std::move(rs), r};
  t.cand = TensorView{cd, std::move(cs), c};
  t.transpose_cand = transpose;
  return t;
}

int Main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  absl::StatusOr<std::unique_ptr<Backend>> gpu = CreateCudaBackend();
  if (!gpu.ok()) {
    std::printf("no CUDA device: %s\n", gpu.status().ToString().c_str());
    return 0;
  }
  CpuBackend cpu(0);
  const size_t big = quick ? (size_t{1} << 24) : (size_t{1} << 27);
  const std::vector<float> a = RandomFloats(big, 1), b = RandomFloats(big, 2);
  std::vector<uint16_t> b16(big);
  for (size_t i = 0; i < big; ++i) b16[i] = FloatToBFloat16(b[i]);
  const int64_t n = static_cast<int64_t>(big);

  std::vector<Case> cases;
  cases.push_back({"f32 vs f32, 1 pair", {Task(DType::kFloat32, a.data(), DType::kFloat32,
                                               b.data(), Shape{n}, Shape{n})}, big * 8.0});
  cases.push_back({"f32 vs bf16, 1 pair", {Task(DType::kFloat32, a.data(), DType::kBFloat16,
                                                b16.data(), Shape{n}, Shape{n})}, big * 6.0});
  const int64_t rows = 8192, cols = n / rows;
  cases.push_back({"f32 transposed (8192, n/8192)",
                   {Task(DType::kFloat32, a.data(), DType::kFloat32, b.data(), Shape{rows, cols},
                         Shape{cols, rows}, true)},
                   big * 8.0});
  Case small{"20000 pairs x 1000 f32 (batch)", {}, 0};
  for (int i = 0; i < 20000; ++i) {
    const size_t off = static_cast<size_t>(i) * 1000 % (big - 1000);
    small.tasks.push_back(Task(DType::kFloat32, a.data() + off, DType::kFloat32, b.data() + off,
                               Shape{1000}, Shape{1000}));
    small.bytes += 8000;
  }
  cases.push_back(std::move(small));
  for (const Case& c : cases) Run(c, **gpu, cpu);
  return 0;
}

}  // namespace
}  // namespace reprod::kernels

int main(int argc, char** argv) { return reprod::kernels::Main(argc, argv); }

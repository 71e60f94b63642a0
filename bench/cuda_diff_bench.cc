// reprod_cuda_bench: times the cuda backend against the cpu backend on a few
// representative workloads (host data, so every GPU time includes the
// host->device transfer). Plain main, no Google Benchmark, so the binary
// carries to the GPU machine with few shared libraries
// (scripts/gpu-check.sh --build bundles it, --run runs it).
//
//   reprod_cuda_bench [--quick] [--huge]
//
// Per case: median of 5 timed runs after one warm-up; GB/s counts the bytes
// of both inputs. Also checks that both backends agree on count, max_index
// and mismatches, and prints "MISMATCH" otherwise.
//
// Baselines measured in the same run (the machine's limits): pinned and
// pageable host->device cudaMemcpy, device-to-device cudaMemcpy. Each GPU
// case prints its ratio to the pageable host->device copy of the same bytes,
// which bounds any backend whose data starts in ordinary host memory.
// --huge adds one 16 GiB pair (2 x 8 GiB float32 in host memory; GPU only).
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "cuda_runtime.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/half.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/internal/device_resident_timing.h"
#include "kernels/cuda/internal/fused_bench.h"
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

// Copy bandwidths (GB/s, bytes moved / time), median of 5.
struct CopyLimits {
  double h2d_pinned = 0, h2d_pageable = 0, d2d = 0;
};

CopyLimits MeasureCopyLimits(size_t bytes) {
  CopyLimits l;
  void* dev_a = nullptr;
  void* dev_b = nullptr;
  void* pinned = nullptr;
  if (cudaMalloc(&dev_a, bytes) != cudaSuccess || cudaMalloc(&dev_b, bytes) != cudaSuccess ||
      cudaMallocHost(&pinned, bytes) != cudaSuccess) {
    std::printf("copy baseline: allocation of %zu bytes failed\n", bytes);
    return l;
  }
  std::vector<uint8_t> pageable(bytes, 1);
  std::memset(pinned, 1, bytes);
  auto gbs = [&](const std::function<void()>& copy) {
    return bytes / MedianMs([&] {
             copy();
             cudaDeviceSynchronize();
           }) / 1e6;
  };
  l.h2d_pinned = gbs([&] { cudaMemcpy(dev_a, pinned, bytes, cudaMemcpyHostToDevice); });
  l.h2d_pageable =
      gbs([&] { cudaMemcpy(dev_a, pageable.data(), bytes, cudaMemcpyHostToDevice); });
  // A device copy reads and writes every byte: count both, as the diff
  // kernel's GB/s counts both inputs it reads.
  l.d2d = 2 * gbs([&] { cudaMemcpy(dev_b, dev_a, bytes, cudaMemcpyDeviceToDevice); });
  cudaFree(dev_a);
  cudaFree(dev_b);
  cudaFreeHost(pinned);
  return l;
}

double g_h2d_pageable = 0;  // GB/s, for the ratio column

// Issue [G] item 3's table: `auto` against the faster of cpu and cuda on
// the same case (goal: never more than 10 % slower).
struct AutoRow {
  std::string name;
  double cpu_ms = 0, gpu_ms = 0, auto_ms = 0;
};
std::vector<AutoRow> g_auto_rows;

void Run(const Case& c, Backend& gpu, Backend* cpu, Backend* auto_backend = nullptr) {
  std::vector<DiffStats> g(c.tasks.size()), h(c.tasks.size());
  bool ok = true;
  auto run = [&](Backend& b, std::vector<DiffStats>& out) {
    ok = ok && b.CompareBatch(c.tasks, absl::MakeSpan(out)).ok();
  };
  const double gpu_ms = MedianMs([&] { run(gpu, g); });
  const double gpu_gbs = c.bytes / gpu_ms / 1e6;
  if (cpu == nullptr) {
    std::printf("%-34s gpu %9.2f ms %7.2f GB/s = %3.0f%% of pageable H2D copy | cpu not run %s\n",
                c.name.c_str(), gpu_ms, gpu_gbs, 100 * gpu_gbs / g_h2d_pageable,
                ok ? "" : "ERROR");
    return;
  }
  const double cpu_ms = MedianMs([&] { run(*cpu, h); });
  bool agree = ok;
  for (size_t i = 0; i < g.size() && agree; ++i) {
    agree = g[i].count == h[i].count && g[i].max_index == h[i].max_index &&
            g[i].mismatches == h[i].mismatches && g[i].histogram == h[i].histogram;
  }
  std::printf(
      "%-34s gpu %9.2f ms %7.2f GB/s = %3.0f%% of pageable H2D copy | cpu %9.2f ms %7.2f GB/s "
      "| x%5.2f %s\n",
      c.name.c_str(), gpu_ms, gpu_gbs, 100 * gpu_gbs / g_h2d_pageable, cpu_ms,
      c.bytes / cpu_ms / 1e6, cpu_ms / gpu_ms, agree ? "" : "MISMATCH");
  if (auto_backend != nullptr) {
    std::vector<DiffStats> a(c.tasks.size());
    const double auto_ms = MedianMs([&] { run(*auto_backend, a); });
    g_auto_rows.push_back({c.name, cpu_ms, gpu_ms, auto_ms});
  }
}

void PrintAutoTable() {
  if (g_auto_rows.empty()) return;
  std::printf("\nauto vs the faster of cpu and cuda (goal: auto <= 1.10 x best)\n");
  std::printf("%-40s %10s %10s %10s %9s %s\n", "case", "cpu ms", "cuda ms", "auto ms",
              "auto/best", "");
  for (const AutoRow& r : g_auto_rows) {
    const double best = std::min(r.cpu_ms, r.gpu_ms);
    const double ratio = r.auto_ms / best;
    std::printf("%-40s %10.2f %10.2f %10.2f %9.2f %s\n", r.name.c_str(), r.cpu_ms, r.gpu_ms,
                r.auto_ms, ratio, ratio <= 1.10 ? "ok" : "SLOWER");
  }
}

DiffTask Task(DType rd, const void* r, DType cd, const void* c, Shape rs, Shape cs,
              bool transpose = false) {
  DiffTask t;
  t.ref = TensorView{rd, std::move(rs), r};
  t.cand = TensorView{cd, std::move(cs), c};
  t.transpose_cand = transpose;
  return t;
}

// True when `got` equals the cpu backend's `want` as docs/design.md
// requires: counts, extrema, indices and histogram exactly, sums to 1e-12.
bool SameAsCpu(const DiffStats& got, const DiffStats& want, std::string* why) {
  auto rel = [](double a, double b) {
    if (a == b || (a != a && b != b)) return true;
    return std::fabs(a - b) <= 1e-12 * std::max(std::fabs(a), std::fabs(b));
  };
  const bool max_same = got.max_abs == want.max_abs || (got.max_abs != got.max_abs &&
                                                        want.max_abs != want.max_abs);
  const std::pair<const char*, bool> checks[] = {
      {"count", got.count == want.count}, {"nan_diff", got.nan_diff == want.nan_diff},
      {"inf_diff", got.inf_diff == want.inf_diff}, {"mismatches", got.mismatches == want.mismatches},
      {"max_abs", max_same}, {"max_index", got.max_index == want.max_index},
      {"min_abs", got.min_abs == want.min_abs}, {"max_rel", got.max_rel == want.max_rel},
      {"histogram", got.histogram == want.histogram}, {"sum_abs", rel(got.sum_abs, want.sum_abs)},
      {"sum_sq", rel(got.sum_sq, want.sum_sq)}, {"sum_rel", rel(got.sum_rel, want.sum_rel)},
      {"dot", rel(got.dot, want.dot)}, {"ref_sq", rel(got.ref_sq, want.ref_sq)},
      {"cand_sq", rel(got.cand_sq, want.cand_sq)}};
  for (const auto& [name, ok] : checks) {
    if (!ok) {
      *why = name;
      return false;
    }
  }
  return true;
}

// Issue [G] item 2's acceptance: compares of a host-resident cand against a
// ref kept on the device (CudaBackendOptions::resident_bytes) move only
// cand; their rate (cand bytes / time) against the same run's pinned H2D.
void RunResidentRefSection(const std::vector<float>& ref, const std::vector<float>& cand,
                           const CopyLimits& limits, Backend& cpu) {
  CudaBackendOptions o;
  o.resident_bytes = ref.size() * sizeof(float) + (size_t{64} << 20);
  absl::StatusOr<std::unique_ptr<Backend>> gpu = CreateCudaBackend(o);
  if (!gpu.ok()) {
    std::printf("resident ref: %s\n", gpu.status().ToString().c_str());
    return;
  }
  const int64_t n = static_cast<int64_t>(ref.size());
  DiffTask task = Task(DType::kFloat32, ref.data(), DType::kFloat32, cand.data(), Shape{n},
                       Shape{n});
  task.ref_key = "bench/ref";
  std::vector<DiffStats> out(1);
  bool ok = true;
  // MedianMs's warm-up is the miss that uploads the ref; the timed runs hit.
  const double ms = MedianMs([&] { ok = ok && (*gpu)->CompareBatch({task}, absl::MakeSpan(out)).ok(); });
  const ResidentStats rs = (*gpu)->resident_stats();
  absl::StatusOr<DiffStats> want = cpu.Compare(task);
  std::string why;
  const bool same = ok && want.ok() && SameAsCpu(out[0], *want, &why);
  const double cand_gbs = static_cast<double>(n) * sizeof(float) / ms / 1e6;
  // The same keyed pair on cpu and on auto with the same cache, for the
  // auto table (the device-resident case).
  std::vector<DiffStats> other(1);
  const double cpu_ms = MedianMs([&] { (void)cpu.CompareBatch({task}, absl::MakeSpan(other)); });
  absl::StatusOr<std::unique_ptr<Backend>> auto_cached =
      CreateBackend(BackendKind::kAuto, 0, o.resident_bytes);
  if (auto_cached.ok()) {
    const double auto_ms =
        MedianMs([&] { (void)(*auto_cached)->CompareBatch({task}, absl::MakeSpan(other)); });
    g_auto_rows.push_back({"f32 pair, resident ref (keyed)", cpu_ms, ms, auto_ms});
  }
  std::printf("\nresident ref (f32 pair, %.0f MiB per side; ref on the device, cand from pageable "
              "host memory): %.2f ms, cand %.2f GB/s = %.0f%% of pinned H2D (goal >= 80%%), "
              "%.0f%% of pageable H2D | hits %llu misses %llu | cpu gate %s\n",
              n * 4.0 / (1 << 20), ms, cand_gbs, 100 * cand_gbs / limits.h2d_pinned,
              100 * cand_gbs / limits.h2d_pageable, static_cast<unsigned long long>(rs.hits),
              static_cast<unsigned long long>(rs.misses), same ? "PASS" : ("FAIL " + why).c_str());
}

// Issue [G] item 6: the fused kernel on device-resident realistic data, next
// to the same run's D2D copy and a read-only 16-byte-load sum kernel over
// the same bytes; a cpu correctness gate at 2^24 (2^20 with --quick) and a
// run-to-run bit-identity check on every case. Returns false on a failed
// gate.
bool RunFusedSection(bool quick, CpuBackend& cpu) {
  struct PairKind {
    const char* name;
    DType ref, cand;
  };
  const PairKind kinds[] = {{"f32", DType::kFloat32, DType::kFloat32},
                            {"bf16", DType::kBFloat16, DType::kBFloat16},
                            {"f16", DType::kFloat16, DType::kFloat16},
                            {"f32 vs bf16", DType::kFloat32, DType::kBFloat16}};
  const int logs[] = {24, 26, 28};
  const int quick_logs[] = {20, 22};
  bool all_ok = true;
  std::printf("\nfused kernel, device-resident (realistic data: ref 0.02 N(0,1), cand ref(1+1e-6 "
              "N(0,1)) rounded, 5%% equal, 0.1%% zero refs)\n");
  std::printf("%-12s %-6s %-9s %10s %9s %9s %9s %9s %7s %s\n", "pair", "n", "nonfinite",
              "fused ms", "GB/s", "%D2D", "%readsum", "D2D GB/s", "rerun", "cpu gate");
  auto one = [&](const PairKind& k, uint64_t n, uint64_t pairs, bool nonfinite, bool gate,
                 const char* label) {
    internal::FusedBenchCase c;
    c.ref = k.ref;
    c.cand = k.cand;
    c.elements = n;
    c.pairs = pairs;
    c.nonfinite = nonfinite;
    c.copy_back = gate;
    c.repeats = quick ? 3 : 10;
    absl::StatusOr<internal::FusedBenchResult> r = internal::RunFusedBench(c);
    if (!r.ok()) {
      std::printf("%-12s %-6s ERROR %s\n", k.name, label, r.status().ToString().c_str());
      all_ok = false;
      return;
    }
    const double gbs = r->bytes / r->fused_ms / 1e6;
    const double d2d = 2 * r->bytes / r->d2d_ms / 1e6;  // reads + writes
    const double read_sum = r->bytes / r->read_sum_ms / 1e6;
    std::string gate_text = "-";
    if (gate) {
      bool ok = true;
      std::string why;
      for (uint64_t p = 0; p < pairs && ok; ++p) {
        DiffTask t;
        t.ref = TensorView{k.ref, Shape{static_cast<int64_t>(n)},
                           r->host_ref.data() + p * r->ref_stride};
        t.cand = TensorView{k.cand, Shape{static_cast<int64_t>(n)},
                            r->host_cand.data() + p * r->cand_stride};
        absl::StatusOr<DiffStats> want = cpu.Compare(t);
        ok = want.ok() && SameAsCpu(r->stats[p], *want, &why);
      }
      gate_text = ok ? "PASS" : "FAIL (" + why + ")";
      all_ok = all_ok && ok;
    }
    all_ok = all_ok && r->rerun_identical;
    std::printf("%-12s %-6s %-9s %10.3f %9.1f %8.0f%% %8.0f%% %9.1f %7s %s\n", k.name, label,
                nonfinite ? "yes" : "no", r->fused_ms, gbs, 100 * gbs / d2d,
                100 * gbs / read_sum, d2d, r->rerun_identical ? "same" : "DIFFERS",
                gate_text.c_str());
  };
  for (const PairKind& k : kinds) {
    for (int lg : quick ? absl::MakeConstSpan(quick_logs) : absl::MakeConstSpan(logs)) {
      const std::string label = "2^" + std::to_string(lg);
      const bool gate = lg == (quick ? 20 : 24);
      one(k, uint64_t{1} << lg, 1, false, gate, label.c_str());
      if (lg == (quick ? 22 : 26)) one(k, uint64_t{1} << lg, 1, true, gate, label.c_str());
    }
  }
  // Batched: 5,000 pairs of 16 KiB of float32 (4,096 elements) in one launch.
  one(kinds[0], 4096, 5000, false, true, "5000x16K");
  return all_ok;
}

int Main(int argc, char** argv) {
  bool quick = false, huge = false;
  for (int i = 1; i < argc; ++i) {
    quick = quick || std::strcmp(argv[i], "--quick") == 0;
    huge = huge || std::strcmp(argv[i], "--huge") == 0;
  }
  absl::StatusOr<std::unique_ptr<Backend>> gpu = CreateCudaBackend();
  if (!gpu.ok()) {
    std::printf("no CUDA device: %s\n", gpu.status().ToString().c_str());
    return 0;
  }
  CpuBackend cpu(0);
  const CopyLimits limits = MeasureCopyLimits(size_t{256} << 20);
  g_h2d_pageable = limits.h2d_pageable;
  std::printf("copy limits (256 MiB): H2D pinned %.2f GB/s, H2D pageable %.2f GB/s, "
              "D2D %.2f GB/s (read+write)\n",
              limits.h2d_pinned, limits.h2d_pageable, limits.d2d);
  // The fused kernel alone on a device-resident pair (256 MiB per side), next
  // to a D2D copy of the same bytes: the kernel reads 512 MiB, the copy reads
  // and writes 512 MiB, so the DRAM-traffic ratio is copy_ms / (2 kernel_ms).
  {
    const uint64_t n = quick ? (uint64_t{1} << 22) : (uint64_t{1} << 26);
    absl::StatusOr<internal::DeviceResidentTiming> t = internal::TimeDeviceResidentPair(
        n, CudaBackendOptions().chunk_elements, 10);
    if (!t.ok()) {
      std::printf("device-resident kernel: %s\n", t.status().ToString().c_str());
    } else {
      const double kernel_gbs = t->bytes / t->kernel_ms / 1e6;
      const double copy_gbs = 2 * t->bytes / t->d2d_ms / 1e6;
      std::printf("fused kernel, device-resident f32 pair (%.0f MiB per side, count %llu): "
                  "%.3f ms, %.1f GB/s read | D2D copy of the same bytes %.3f ms, %.1f GB/s "
                  "read+write | kernel = %.0f%% of copy bandwidth\n",
                  t->bytes / 2 / (1 << 20), static_cast<unsigned long long>(t->count),
                  t->kernel_ms, kernel_gbs, t->d2d_ms, copy_gbs, 100 * kernel_gbs / copy_gbs);
    }
  }
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
  // Many small pairs, as a per-parameter gradient dump gives: 5,000 pairs of
  // 16 KiB (4096 f32), where launch and copy overheads dominate.
  Case k16{"5000 pairs x 16 KiB f32 (batch)", {}, 0};
  for (int i = 0; i < 5000; ++i) {
    const size_t off = static_cast<size_t>(i) * 4096 % (big - 4096);
    k16.tasks.push_back(Task(DType::kFloat32, a.data() + off, DType::kFloat32, b.data() + off,
                             Shape{4096}, Shape{4096}));
    k16.bytes += 2 * 16384;
  }
  cases.push_back(std::move(k16));
  absl::StatusOr<std::unique_ptr<Backend>> auto_backend = CreateBackend(BackendKind::kAuto);
  for (const Case& c : cases) {
    Run(c, **gpu, &cpu, auto_backend.ok() ? auto_backend->get() : nullptr);
  }
  RunResidentRefSection(a, b, limits, cpu);
  PrintAutoTable();
  const bool fused_ok = RunFusedSection(quick, cpu);
  if (huge) {
    // 2 x 8 GiB float32; a cheap deterministic fill (random generation of
    // 4G values would dominate the run).
    const size_t hn = size_t{1} << 31;
    std::vector<float> ha(hn), hb(hn);
    for (size_t i = 0; i < hn; ++i) {
      ha[i] = static_cast<float>(i & 0xffff) * 0.25f;
      hb[i] = ha[i] + ((i % 7) == 0 ? 0.5f : 0.0f);
    }
    const int64_t hn64 = static_cast<int64_t>(hn);
    Case h{"16 GiB pair f32 (host-resident)",
           {Task(DType::kFloat32, ha.data(), DType::kFloat32, hb.data(), Shape{hn64},
                 Shape{hn64})},
           hn * 8.0};
    Run(h, **gpu, nullptr);
  }
  if (!fused_ok) std::printf("\nFUSED KERNEL CHECKS FAILED (cpu gate or rerun identity)\n");
  return fused_ok ? 0 : 1;
}

}  // namespace
}  // namespace reprod::kernels

int main(int argc, char** argv) { return reprod::kernels::Main(argc, argv); }

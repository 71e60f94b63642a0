// File: kernels/cuda/fused_bench.cu
//
// See internal/fused_bench.h.
#include "kernels/cuda/internal/fused_bench.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "kernels/cuda/internal/cuda_status.h"
#include "kernels/cuda/internal/fused_launch.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels::internal {
namespace {

__device__ uint64_t Mix(uint64_t x) {  // splitmix64
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__device__ double Uniform(uint64_t h) {  // (0, 1)
  return (static_cast<double>(h >> 11) + 0.5) * 0x1p-53;
}

__device__ double Normal(uint64_t a, uint64_t b) {  // Box-Muller
  return sqrt(-2.0 * log(Uniform(a))) * cospi(2.0 * Uniform(b));
}

__device__ void Store(DType dt, unsigned char* p, uint64_t i, double v) {
  switch (dt) {
    case DType::kFloat64: reinterpret_cast<double*>(p)[i] = v; break;
    case DType::kFloat32: reinterpret_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::kBFloat16:
      reinterpret_cast<uint16_t*>(p)[i] = FloatToBFloat16(static_cast<float>(v));
      break;
    default:
      reinterpret_cast<uint16_t*>(p)[i] = __half_as_ushort(__float2half_rn(static_cast<float>(v)));
      break;
  }
}

__global__ void FillKernel(DType rdt, unsigned char* ref, DType cdt, unsigned char* cand,
                           uint64_t n, bool nonfinite) {
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t h0 = Mix(4 * i), h1 = Mix(4 * i + 1), h2 = Mix(4 * i + 2), h3 = Mix(4 * i + 3);
    double r = 0.02 * Normal(h0, h1);
    if (h2 % 1000 == 0) r = 0.0;
    // Rounded to the ref dtype first, so "equal" pairs are equal after both
    // roundings.
    float rf = static_cast<float>(r);
    if (rdt == DType::kBFloat16) rf = BFloat16ToFloat(FloatToBFloat16(rf));
    if (rdt == DType::kFloat16) rf = __half2float(__float2half_rn(rf));
    const double rr = rdt == DType::kFloat64 ? r : static_cast<double>(rf);
    double c = (h2 >> 32) % 100 < 5 ? rr : rr * (1.0 + 1e-6 * Normal(h3, h2 ^ h1));
    if (nonfinite && (h3 >> 40) % 100000 == 0) {
      const double special[3] = {__longlong_as_double(0x7ff8000000000000LL),
                                 __longlong_as_double(0x7ff0000000000000LL),
                                 __longlong_as_double(static_cast<long long>(0xfff0000000000000ull))};
      const double s = special[(h3 >> 20) % 3];
      if ((h3 >> 10) & 1) c = s; else r = s;
      Store(rdt, ref, i, r);
    } else {
      Store(rdt, ref, i, rr);
    }
    Store(cdt, cand, i, c);
  }
}

// Reads every 16-byte word of [p, p + words) and writes one value (so the
// loads cannot be dropped): the read-only ceiling of the kernel.
__global__ void ReadSumKernel(const uint4* __restrict__ a, uint64_t words_a,
                              const uint4* __restrict__ b, uint64_t words_b,
                              unsigned int* out) {
  unsigned int acc = 0;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < words_a;
       i += stride) {
    const uint4 v = __ldcs(a + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < words_b;
       i += stride) {
    const uint4 v = __ldcs(b + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *out = acc;  // practically never; keeps the loads
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Device allocations freed on every return path.
struct DeviceMemory {
  std::vector<void*> ptrs;
  ~DeviceMemory() {
    for (void* p : ptrs) cudaFree(p);
  }
  template <typename T>
  absl::Status Alloc(T** p, size_t bytes) {
    REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(p), std::max<size_t>(bytes, 16)));
    ptrs.push_back(*p);
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<FusedBenchResult> RunFusedBench(const FusedBenchCase& c) {
  if (c.elements == 0 || c.pairs == 0 || c.repeats < 1) {
    return absl::InvalidArgumentError("RunFusedBench: empty case");
  }
  REPROD_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  const size_t rs = DTypeSize(c.ref), cs = DTypeSize(c.cand);
  // Each pair's sides start on 256-byte boundaries.
  auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  const size_t ref_stride = align(c.elements * rs), cand_stride = align(c.elements * cs);
  const uint64_t total = c.elements * c.pairs;
  DeviceMemory mem;
  unsigned char *ref = nullptr, *cand = nullptr, *copy = nullptr;
  REPROD_RETURN_IF_ERROR(mem.Alloc(&ref, ref_stride * c.pairs));
  REPROD_RETURN_IF_ERROR(mem.Alloc(&cand, cand_stride * c.pairs));
  REPROD_RETURN_IF_ERROR(mem.Alloc(&copy, (ref_stride + cand_stride) * c.pairs));
  for (uint64_t p = 0; p < c.pairs; ++p) {
    FillKernel<<<1024, 256>>>(c.ref, ref + p * ref_stride, c.cand, cand + p * cand_stride,
                              c.elements, c.nonfinite);
  }
  REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());

  std::vector<FusedSegment> segs(c.pairs);
  uint32_t blocks = 0;
  for (uint64_t p = 0; p < c.pairs; ++p) {
    FusedSegment& s = segs[p];
    s = FusedSegment{};
    s.ref = ref + p * ref_stride;
    s.cand = cand + p * cand_stride;
    s.count = c.elements;
    s.options = DiffOptions();
    s.first_block = blocks;
    s.num_blocks = static_cast<uint32_t>(FusedNumBlocks(c.elements, false, 0, 0));
    s.ref_dtype = static_cast<uint8_t>(c.ref);
    s.cand_dtype = static_cast<uint8_t>(c.cand);
    blocks += s.num_blocks;
  }
  FusedSegment* d_segs = nullptr;
  DiffStats *partials = nullptr, *out = nullptr;
  unsigned int* tickets = nullptr;
  unsigned int* sink = nullptr;
  REPROD_RETURN_IF_ERROR(mem.Alloc(&d_segs, segs.size() * sizeof(FusedSegment)));
  REPROD_RETURN_IF_ERROR(mem.Alloc(&partials, blocks * sizeof(DiffStats)));
  REPROD_RETURN_IF_ERROR(mem.Alloc(&out, c.pairs * sizeof(DiffStats)));
  REPROD_RETURN_IF_ERROR(mem.Alloc(&tickets, c.pairs * sizeof(unsigned int)));
  REPROD_RETURN_IF_ERROR(mem.Alloc(&sink, sizeof(unsigned int)));
  REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(d_segs, segs.data(), segs.size() * sizeof(FusedSegment),
                                         cudaMemcpyHostToDevice));
  FusedLaunch launch;
  launch.segments = d_segs;
  launch.num_segments = static_cast<int>(c.pairs);
  launch.total_blocks = blocks;
  launch.ref_dtype = c.ref;
  launch.cand_dtype = c.cand;
  launch.partials = partials;
  launch.tickets = tickets;
  launch.out = out;

  cudaEvent_t start = nullptr, stop = nullptr;
  REPROD_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  REPROD_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  struct Events {
    cudaEvent_t a, b;
    ~Events() {
      cudaEventDestroy(a);
      cudaEventDestroy(b);
    }
  } events{start, stop};
  int device = 0, sms = 0;
  REPROD_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  REPROD_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));

  enum Work { kFused, kCopy, kReadSum };
  auto time_ms = [&](Work w) -> absl::StatusOr<double> {
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventRecord(start));
    if (w == kFused) {
      REPROD_RETURN_IF_ERROR(LaunchFused(launch, nullptr));
    } else if (w == kCopy) {
      REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(copy, ref, ref_stride * c.pairs,
                                                  cudaMemcpyDeviceToDevice));
      REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(copy + ref_stride * c.pairs, cand,
                                                  cand_stride * c.pairs,
                                                  cudaMemcpyDeviceToDevice));
    } else {
      ReadSumKernel<<<sms * 8, 256>>>(reinterpret_cast<const uint4*>(ref),
                                      ref_stride * c.pairs / 16,
                                      reinterpret_cast<const uint4*>(cand),
                                      cand_stride * c.pairs / 16, sink);
      REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());
    }
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop));
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float ms = 0;
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms);
  };
  std::vector<double> fused, d2d, read_sum;
  std::vector<DiffStats> first(c.pairs), again(c.pairs);
  for (int i = 0; i <= c.repeats; ++i) {  // i == 0: warm-up
    absl::StatusOr<double> f = time_ms(kFused);
    if (!f.ok()) return f.status();
    if (i == 0) {
      REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(first.data(), out, c.pairs * sizeof(DiffStats),
                                             cudaMemcpyDeviceToHost));
    }
    absl::StatusOr<double> d = time_ms(kCopy);
    if (!d.ok()) return d.status();
    absl::StatusOr<double> r = time_ms(kReadSum);
    if (!r.ok()) return r.status();
    if (i > 0) {
      fused.push_back(*f);
      d2d.push_back(*d);
      read_sum.push_back(*r);
    }
  }
  REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(again.data(), out, c.pairs * sizeof(DiffStats),
                                         cudaMemcpyDeviceToHost));
  FusedBenchResult res;
  res.fused_ms = Median(fused);
  res.d2d_ms = Median(d2d);
  res.read_sum_ms = Median(read_sum);
  res.bytes = static_cast<double>(total) * static_cast<double>(rs + cs);
  res.rerun_identical =
      std::memcmp(first.data(), again.data(), c.pairs * sizeof(DiffStats)) == 0;
  res.stats = std::move(again);
  res.ref_stride = ref_stride;
  res.cand_stride = cand_stride;
  if (c.copy_back) {
    res.host_ref.resize(ref_stride * c.pairs);
    res.host_cand.resize(cand_stride * c.pairs);
    REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(res.host_ref.data(), ref, res.host_ref.size(),
                                           cudaMemcpyDeviceToHost));
    REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(res.host_cand.data(), cand, res.host_cand.size(),
                                           cudaMemcpyDeviceToHost));
  }
  return res;
}

}  // namespace reprod::kernels::internal

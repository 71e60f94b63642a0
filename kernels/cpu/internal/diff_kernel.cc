#include "kernels/cpu/internal/diff_kernel.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/dtype.h"
#include "common/element.h"
#include "kernels/diff_stats.h"

#if !defined(__GNUC__)
#error "the cpu kernels use GCC/Clang vector extensions"
#endif

#if defined(__x86_64__)
#define REPROD_KERNELS_HAVE_X86_VARIANTS 1
#else
#define REPROD_KERNELS_HAVE_X86_VARIANTS 0
#endif

namespace reprod::kernels::internal {
namespace {

namespace baseline {
#define REPROD_ISA_ATTR
#define REPROD_ISA_LANES 2
#include "kernels/cpu/internal/diff_kernel_impl.inc"
#undef REPROD_ISA_ATTR
#undef REPROD_ISA_LANES
}  // namespace baseline

#if REPROD_KERNELS_HAVE_X86_VARIANTS
namespace v3 {
#define REPROD_ISA_ATTR __attribute__((target("arch=x86-64-v3")))
#define REPROD_ISA_LANES 4
#include "kernels/cpu/internal/diff_kernel_impl.inc"
#undef REPROD_ISA_ATTR
#undef REPROD_ISA_LANES
}  // namespace v3

// GCC 12's avx512fintrin.h self-initialises _mm512_undefined_pd() (`__Y = __Y`),
// which -Wmaybe-uninitialized reports wherever _mm512_max_pd & co. inline.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace v4 {
#define REPROD_ISA_ATTR __attribute__((target("arch=x86-64-v4")))
#define REPROD_ISA_LANES 8
#include "kernels/cpu/internal/diff_kernel_impl.inc"
#undef REPROD_ISA_ATTR
#undef REPROD_ISA_LANES
}  // namespace v4
#pragma GCC diagnostic pop
#endif

KernelIsa BestKernelIsa() {
#if REPROD_KERNELS_HAVE_X86_VARIANTS
  if (__builtin_cpu_supports("x86-64-v4")) return KernelIsa::kX86_64_V4;
  if (__builtin_cpu_supports("x86-64-v3")) return KernelIsa::kX86_64_V3;
#endif
  return KernelIsa::kBaseline;
}

std::atomic<KernelIsa>& IsaSlot() {
  static std::atomic<KernelIsa> isa{BestKernelIsa()};
  return isa;
}

}  // namespace

std::string_view KernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kBaseline: return "baseline";
    case KernelIsa::kX86_64_V3: return "x86-64-v3";
    case KernelIsa::kX86_64_V4: return "x86-64-v4";
  }
  return "unknown";
}

bool KernelIsaSupported(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kBaseline: return true;
    case KernelIsa::kX86_64_V3: return BestKernelIsa() != KernelIsa::kBaseline;
    case KernelIsa::kX86_64_V4: return BestKernelIsa() == KernelIsa::kX86_64_V4;
  }
  return false;
}

KernelIsa ActiveKernelIsa() { return IsaSlot().load(std::memory_order_relaxed); }

bool SetKernelIsaForTesting(KernelIsa isa) {
  if (!KernelIsaSupported(isa)) return false;
  IsaSlot().store(isa, std::memory_order_relaxed);
  return true;
}

void ReduceFlatRange(DType ref_dtype, const void* ref, DType cand_dtype, const void* cand,
                     int64_t begin, int64_t end, uint64_t index_base,
                     const DiffOptions& options, DiffStats* stats) {
  if (end <= begin) return;
  const auto* r = static_cast<const unsigned char*>(ref) +
                  static_cast<size_t>(begin) * DTypeSize(ref_dtype);
  const auto* c = static_cast<const unsigned char*>(cand) +
                  static_cast<size_t>(begin) * DTypeSize(cand_dtype);
  const uint64_t index0 = index_base + static_cast<uint64_t>(begin);
  const int64_t len = end - begin;
  switch (ActiveKernelIsa()) {
#if REPROD_KERNELS_HAVE_X86_VARIANTS
    case KernelIsa::kX86_64_V4:
      return v4::ReduceFlat(ref_dtype, r, cand_dtype, c, len, index0, options, stats);
    case KernelIsa::kX86_64_V3:
      return v3::ReduceFlat(ref_dtype, r, cand_dtype, c, len, index0, options, stats);
#endif
    default:
      return baseline::ReduceFlat(ref_dtype, r, cand_dtype, c, len, index0, options, stats);
  }
}

void ReduceTransposedRows(DType ref_dtype, const void* ref, DType cand_dtype, const void* cand,
                          int64_t m, int64_t n, int64_t row_begin, int64_t row_end,
                          uint64_t index_base, const DiffOptions& options, DiffStats* stats) {
  if (row_end <= row_begin || n == 0) return;
  const auto* r = static_cast<const unsigned char*>(ref);
  const auto* c = static_cast<const unsigned char*>(cand);
  switch (ActiveKernelIsa()) {
#if REPROD_KERNELS_HAVE_X86_VARIANTS
    case KernelIsa::kX86_64_V4:
      return v4::ReduceTransposed(ref_dtype, r, cand_dtype, c, m, n, row_begin, row_end,
                                  index_base, options, stats);
    case KernelIsa::kX86_64_V3:
      return v3::ReduceTransposed(ref_dtype, r, cand_dtype, c, m, n, row_begin, row_end,
                                  index_base, options, stats);
#endif
    default:
      return baseline::ReduceTransposed(ref_dtype, r, cand_dtype, c, m, n, row_begin, row_end,
                                        index_base, options, stats);
  }
}

}  // namespace reprod::kernels::internal

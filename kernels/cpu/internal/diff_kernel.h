// File: kernels/cpu/internal/diff_kernel.h
//
// The cpu backend's single-threaded reduction kernels: one fused pass over a
// range of element pairs from memory, accumulated into a DiffStats. The only
// scratch is a 16 KiB per-call stack block (|d| of the current block, kept
// in L1); nothing proportional to the tensor is ever materialised.
// CpuBackend splits pairs into chunks, runs these on its thread pool and
// merges the partials.
//
// How a range is reduced: in blocks of kBlockElements pairs.
//   1. Fast path, branch-free over double vectors, assuming every value is
//      finite: d, |ref|, Σd, Σd², Σref·cand, Σref², Σcand², r and Σr, max r,
//      smallest positive d, max d, zero count, allclose failures; |d| is
//      stored in the block buffer. AVX-512 does this in one fused pass (32
//      registers, mask registers, FMA for the sums of products); SSE and
//      AVX2 in two passes over the block (16 registers).
//   2. Finite check: Σref² + Σcand² is finite in every lane iff every value
//      is finite (and |value| < ~1e154, so d cannot overflow). Otherwise the
//      block is discarded and redone element by element with the exact
//      DiffStats::Add (also used for the < 8 trailing pairs of a range).
//   3. Histogram: for each decade edge between the block's smallest
//      positive d and its max, #{d >= edge} by exact double compares; bins
//      are differences of these counts, so each element lands exactly where
//      HistogramBin puts it. With AVX-512 the counts for a window of four
//      edges (predicted from the previous block) are taken inside the fused
//      pass; other edges, and other instruction sets, count over the
//      buffered |d|.
//   4. Max index: only when the block's max beats (or ties at a smaller
//      index) the running max, the buffer is scanned for its first index.
// Per element the fast path performs the same IEEE operations as
// DiffStats::Add (d = |cand - ref|, r = d / |ref| by true division, the
// allclose bound as a separate multiply and add), so counts, max/min (value
// and index), max r and the histogram never depend on the path or the
// instruction set.
//
// Dtype pairs: every floating pair and every integer type against itself
// have their own instantiation; other pairs (mixed integers, integer vs
// float, bool vs anything else) are widened to float64 a block at a time
// (as common/element.h converts: exactly, but for 64-bit integers past 2^53)
// and reduced by the float64 kernel.
//
// Sums: per-lane partial sums within a block (well conditioned: at most
// kBlockElements / lanes terms each), block sums added to the range's sums;
// the backend merges ranges in a fixed tree order. Run-to-run the result is
// bit-for-bit reproducible for a given machine and range partition; across
// instruction sets, sums differ only by rounding (lane counts differ).
//
// Instruction sets: baseline (the build's target, SSE2..SSE4.2 on x86-64-v2),
// and on x86-64 also x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512), chosen
// at run time from the CPU's features (__builtin_cpu_supports), so the
// binary runs on any x86-64-v2 machine. Each variant is compiled into its
// own anonymous namespace from diff_kernel_impl.inc.
//
// Thread-safety: the Reduce* functions are reentrant (no shared state);
// SetKernelIsaForTesting must not race with running reductions.
//
// Performance (2-core AMD EPYC Zen 5 VM, 3.6 GHz, float32 pair resident
// in L2, one thread, best of 3,000 runs of 32K pairs): 0.394 ns per element
// pair with AVX-512 (~11 cycles per 8 pairs; 0.411 ns before the port
// balancing described in ReduceBlock). Earlier, on a Zen 4 VM from memory:
// AVX-512 ~0.65 ns, AVX2 ~1.0 ns, SSE4.2 ~2.1 ns.
#ifndef REPROD_KERNELS_CPU_INTERNAL_DIFF_KERNEL_H_
#define REPROD_KERNELS_CPU_INTERNAL_DIFF_KERNEL_H_

#include <cstdint>
#include <string_view>

#include "common/dtype.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels::internal {

// Element pairs per fast-path block.
inline constexpr int64_t kBlockElements = 1024;

// Instruction-set variant of the kernels.
enum class KernelIsa {
  kBaseline,   // compiled for the build's target (x86-64-v2 or generic)
  kX86_64_V3,  // AVX2 + FMA, selected at run time
  kX86_64_V4,  // AVX-512 (F, BW, CD, DQ, VL), selected at run time
};

std::string_view KernelIsaName(KernelIsa isa);

// True when this binary has `isa` and the CPU can run it.
bool KernelIsaSupported(KernelIsa isa);

// The variant used by the Reduce* functions: the best supported one unless
// a test forced another.
KernelIsa ActiveKernelIsa();

// Tests: forces `isa`; returns false (and changes nothing) when unsupported.
bool SetKernelIsaForTesting(KernelIsa isa);

// Reduces the pairs (ref[i], cand[i]) for i in [begin, end) into *stats
// (adding to what it holds), reporting flat index index_base + i. `ref` and
// `cand` point at element 0 of packed arrays of their dtypes; no alignment
// needed. Preconditions (not checked): 0 <= begin <= end, both arrays have
// at least `end` elements, valid dtypes.
void ReduceFlatRange(DType ref_dtype, const void* ref, DType cand_dtype,
                     const void* cand, int64_t begin, int64_t end,
                     uint64_t index_base, const DiffOptions& options,
                     DiffStats* stats);

// Transposed pair: ref is (m, n), cand is (n, m); ref[i, j] pairs with
// cand[j, i] and reports index index_base + i * n + j. Reduces ref rows
// [row_begin, row_end) into *stats, in cache tiles (a tile of cand is copied
// transposed into a small stack buffer). Preconditions as above.
void ReduceTransposedRows(DType ref_dtype, const void* ref, DType cand_dtype,
                          const void* cand, int64_t m, int64_t n,
                          int64_t row_begin, int64_t row_end,
                          uint64_t index_base, const DiffOptions& options,
                          DiffStats* stats);

// Row granularity the transposed kernel tiles by; chunk boundaries that are
// multiples of it keep tiles whole.
inline constexpr int64_t kTransposedRowAlign = 64;

}  // namespace reprod::kernels::internal

#endif  // REPROD_KERNELS_CPU_INTERNAL_DIFF_KERNEL_H_

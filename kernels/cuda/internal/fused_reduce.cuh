// File: kernels/cuda/internal/fused_reduce.cuh
//
// The fused reduction kernel of the CUDA backend (issue [G] item 1), written
// to reach memory speed on device-resident pairs. Same semantics as
// DiffStats::Add (docs/design.md §Diff semantics): counts, extrema, indices
// and the histogram are exact. Sums stay within 1e-12 relative of the cpu
// backend. Status (2026-12-03): compiled (ptxas -v in
// bench/results/gpu-fused-ptxas-2026-12-03.txt) but NOT yet run on a GPU.
// CudaBackendOptions::kernel selects it; the default stays the verified
// segmented kernel until scripts/gpu-check.sh has passed with it.
//
// Grid: a launch reduces segments of ONE dtype pair and one layout
// (element-wise or transposed), so the kernel is templated on
// <RefT, CandT> and has no per-element dtype switch. Pairs of other dtypes
// (integers, bool, mixed integer/float) go through the same kernel with
// RefT = CandT = GenericElement, which converts with VisitDType as before.
// Each segment is cut into fixed LOGICAL BLOCKS whose size depends only on
// the segment's shape (FusedBlockElements, FusedTransposedBlocks). A
// persistent grid of CTAs walks the logical blocks; every logical block
// yields one DiffStats partial computed the same way whichever CTA takes
// it, and the last CTA to finish a segment (ticket counter) merges that
// segment's partials in a fixed pairwise tree inside the same launch. So
// results are bit-identical for any grid size and on any GPU.
//
// Per thread, per tile of kFusedTileElements element pairs (element-wise):
//   - 16 pairs per thread, loaded as 16-byte (or narrower, for the wider
//     side's partner) streaming loads, the next tile's loads issued before
//     this tile is reduced (register double buffer);
//   - all 16 finite (checked on the raw bits): the fast path. d, the sums
//     (FMA for the sums of products, as the AVX-512 cpu kernel), the
//     allclose bound as a separate multiply and add (exact counts),
//     r = d * __drcp_rn(|ref|) for Σr (see below for max r), the tile's
//     largest d by one max per element (the index is found by rescanning
//     the thread's 16 pairs only when that beats the thread's running max),
//     the histogram bin from d's binary exponent (a 56-entry table of
//     binades: bin = base + (d >= the one decade edge inside the binade));
//   - otherwise the exact DiffMoments::AddUnbinned per pair.
// Relative error without a division per pair: __drcp_rn is the correctly
// rounded reciprocal, so for a normal |ref| in (2^-1021, 2^1020) the
// product r' = RN(d * RN(1/|ref|)) satisfies |r' - d/|ref|| <= (2u + u^2)
// d/|ref| with u = 2^-53, i.e. below 2^-51 relative. Σr uses r' (within
// 1e-12 of the exact sum). max r must be exact: a pair whose r' reaches
// max_r * (1 - 2^-48) is recomputed with the IEEE division, and only the
// exact value can raise max r. Since r > max_r implies r' >= r(1 - 2^-51) >
// max_r (1 - 2^-48), no pair that could change max r is missed. |ref|
// outside that range (zero, float64 subnormals, huge float64) takes the
// exact division directly.
// Transposed pairs: 32 x 32 tiles; cand's matching block goes through shared
// memory (padded against bank conflicts), flat indices are a row base plus
// a column, with no 64-bit division per element.
#ifndef REPROD_KERNELS_CUDA_INTERNAL_FUSED_REDUCE_CUH_
#define REPROD_KERNELS_CUDA_INTERNAL_FUSED_REDUCE_CUH_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <cub/block/block_reduce.cuh>

#include "common/dtype.h"
#include "common/element.h"
#include "common/half.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels::internal {

// ---------------------------------------------------------------------------
// Shape of the work. All of these are part of the determinism contract:
// changing one changes the rounding of sums (never anything else).
inline constexpr int kFusedThreads = 256;
inline constexpr int kFusedPairsPerThread = 16;
// At least two CTAs per SM (<= 128 registers per thread), so that 16 warps
// keep loads in flight on every SM.
inline constexpr int kFusedMinBlocksPerSm = 2;
inline constexpr uint64_t kFusedTileElements =
    static_cast<uint64_t>(kFusedThreads) * kFusedPairsPerThread;  // 4096
// Element-wise logical blocks hold at least 4 tiles and are sized so that a
// segment has at most ~kFusedTargetBlocks of them (the tail merge stays
// short).
inline constexpr uint64_t kFusedMinBlockElements = 4 * kFusedTileElements;
inline constexpr uint64_t kFusedTargetBlocks = 1024;
// Transposed: tiles of kFusedTransTile x kFusedTransTile; a logical block is
// one tile row band (kFusedTransTile ref rows) times `strip` tiles along it.
inline constexpr int kFusedTransTile = 32;

// Elements per logical block of an element-wise segment of `count` pairs.
__host__ __device__ constexpr uint64_t FusedBlockElements(uint64_t count) {
  const uint64_t want = (count + kFusedTargetBlocks - 1) / kFusedTargetBlocks;
  const uint64_t tiles = (want + kFusedTileElements - 1) / kFusedTileElements;
  const uint64_t elements = tiles * kFusedTileElements;
  return elements < kFusedMinBlockElements ? kFusedMinBlockElements : elements;
}

// Tiles along a band per logical block of a transposed (rows x cols) pair.
__host__ __device__ constexpr uint64_t FusedTransposedStrip(uint64_t rows, uint64_t cols) {
  const uint64_t row_tiles = (rows + kFusedTransTile - 1) / kFusedTransTile;
  const uint64_t col_tiles = (cols + kFusedTransTile - 1) / kFusedTransTile;
  const uint64_t total = row_tiles * col_tiles;
  uint64_t strip = (total + kFusedTargetBlocks - 1) / kFusedTargetBlocks;
  if (strip < 1) strip = 1;
  return strip > col_tiles ? col_tiles : strip;
}

// Logical blocks of a segment.
__host__ __device__ constexpr uint64_t FusedNumBlocks(uint64_t count, bool transposed,
                                                      uint64_t rows, uint64_t cols) {
  if (count == 0) return 0;
  if (!transposed) {
    const uint64_t e = FusedBlockElements(count);
    return (count + e - 1) / e;
  }
  const uint64_t row_tiles = (rows + kFusedTransTile - 1) / kFusedTransTile;
  const uint64_t col_tiles = (cols + kFusedTransTile - 1) / kFusedTransTile;
  const uint64_t strip = FusedTransposedStrip(rows, cols);
  return row_tiles * ((col_tiles + strip - 1) / strip);
}

// One segment of a launch (device pointers). Element-wise: ref[e] pairs with
// cand[e], e < count. Transposed: ref is rows x cols, cand cols x rows,
// ref[i, j] pairs with cand[j, i]. Flat index: index_base + e (ref layout).
// Both sides must be 16-byte aligned (the backend's slots align to 256).
struct FusedSegment {
  const unsigned char* ref;
  const unsigned char* cand;
  uint64_t count;
  uint64_t rows;
  uint64_t cols;
  uint64_t index_base;
  DiffOptions options;
  uint32_t first_block;  // launch-wide number of its first logical block
  uint32_t num_blocks;   // FusedNumBlocks(...)
  uint8_t ref_dtype;     // used by GenericElement only
  uint8_t cand_dtype;
  uint8_t transpose;
};

// Element types of the templated kernels: float64 and float32 as
// themselves, and tags for the two 16-bit floats (stored as uint16_t).
struct BFloat16Tag {};
struct Float16Tag {};
// Marker type: per-element conversion by the segment's dtype bytes.
struct GenericElement {};

// ---------------------------------------------------------------------------
// Device helpers.

// Binade table for the histogram: entry i covers d in [2^(i-41), 2^(i-40)),
// entry 0 also everything smaller than 2^-41 (all in bin 1, < 1e-12), entry
// kFusedBinades - 1 everything from 2^14 = 16384 up (bin 18, >= 1e4).
inline constexpr int kFusedBinadeLo = 982;  // biased exponent of entry 0
inline constexpr int kFusedBinades = 56;

struct BinadeTable {
  int base[kFusedBinades];
  double edge[kFusedBinades];  // the decade edge strictly inside, or +inf
};

__device__ inline void FillBinadeTable(BinadeTable* t) {
  for (int i = threadIdx.x; i < kFusedBinades; i += blockDim.x) {
    const double lo = ldexp(1.0, i + kFusedBinadeLo - 1023);
    const double hi = 2.0 * lo;
    t->base[i] = HistogramBin(lo);
    double edge = __longlong_as_double(0x7ff0000000000000LL);  // +inf
    for (int k = 0; k < kHistogramBins - 2; ++k) {
      if (HistogramEdge(k) > lo && HistogramEdge(k) < hi) edge = HistogramEdge(k);
    }
    t->edge[i] = edge;
  }
}

// HistogramBin(d) for finite d >= 0, from the exponent.
__device__ __forceinline__ int BinOf(double d, const BinadeTable& t) {
  const int e = static_cast<int>(static_cast<uint32_t>(__double2hiint(d)) >> 20);
  int i = e - kFusedBinadeLo;
  i = i < 0 ? 0 : (i > kFusedBinades - 1 ? kFusedBinades - 1 : i);
  const int bin = t.base[i] + (d >= t.edge[i] ? 1 : 0);
  return d == 0.0 ? 0 : bin;
}

// Raw storage of a side and its finiteness test on the bits (float64 also
// requires |x| < 2^1022 so that d = |cand - ref| cannot overflow).
template <typename T> struct Raw;
template <> struct Raw<double> {
  using Bits = unsigned long long;
  __device__ static bool Finite(Bits b) { return ((b >> 52) & 0x7ff) < 0x7fd; }
  __device__ static double Value(Bits b) { return __longlong_as_double(static_cast<long long>(b)); }
};
template <> struct Raw<float> {
  using Bits = unsigned int;
  __device__ static bool Finite(Bits b) { return (b & 0x7f800000u) != 0x7f800000u; }
  __device__ static double Value(Bits b) { return static_cast<double>(__uint_as_float(b)); }
};
template <> struct Raw<BFloat16Tag> {
  using Bits = unsigned short;
  __device__ static bool Finite(Bits b) { return (b & 0x7f80u) != 0x7f80u; }
  __device__ static double Value(Bits b) {
    return static_cast<double>(__uint_as_float(static_cast<unsigned int>(b) << 16));
  }
};
template <> struct Raw<Float16Tag> {
  using Bits = unsigned short;
  __device__ static bool Finite(Bits b) { return (b & 0x7c00u) != 0x7c00u; }
  __device__ static double Value(Bits b) { return static_cast<double>(Float16ToFloat(b)); }
};

// A thread's accumulators for one logical block are split in two, so that
// the hot loop keeps few registers: FastAcc (registers) holds what the fast
// path updates for every pair; the thread's full DiffMoments (`slow`, in
// dynamic shared memory) takes the exact path's pairs, a new running max
// (index and values) and, at the end of the block, FastAcc folded in.
struct FastAcc {
  double sum_abs = 0, sum_sq = 0, sum_rel = 0, dot = 0, ref_sq = 0, cand_sq = 0;
  double min_abs = __builtin_huge_val();
  double max_rel = 0;        // == slow.max_rel
  double rel_threshold = 0;  // max_rel * (1 - 2^-48), at least the smallest double
  double max_abs = -1;       // == slow.max_abs
  uint32_t count = 0, mismatches = 0;

  __device__ void SetMaxRel(double r) {
    max_rel = r;
    const double t = r * (1.0 - 0x1p-48);
    rel_threshold = t > 4.9406564584124654e-324 ? t : 4.9406564584124654e-324;
  }
  // After the exact path changed `slow`.
  __device__ void Sync(const DiffMoments& slow) {
    SetMaxRel(slow.max_rel);
    max_abs = slow.max_abs;
  }
  // End of a logical block: everything into `slow` (fixed order).
  __device__ void FoldInto(DiffMoments& slow) const {
    slow.count += count;
    slow.mismatches += mismatches;
    slow.sum_abs = __dadd_rn(slow.sum_abs, sum_abs);
    slow.sum_sq = __dadd_rn(slow.sum_sq, sum_sq);
    slow.sum_rel = __dadd_rn(slow.sum_rel, sum_rel);
    slow.dot = __dadd_rn(slow.dot, dot);
    slow.ref_sq = __dadd_rn(slow.ref_sq, ref_sq);
    slow.cand_sq = __dadd_rn(slow.cand_sq, cand_sq);
    slow.min_abs = fmin(slow.min_abs, min_abs);
  }
};

// The exact r of AddUnbinned for finite d.
__device__ __forceinline__ double ExactRel(double d, double abs_ref) {
  if (d == 0.0) return 0.0;
  return abs_ref == 0.0 ? __longlong_as_double(0x7ff0000000000000LL) : __ddiv_rn(d, abs_ref);
}

// Fast path for one finite pair whose max-abs bookkeeping the caller does.
// Returns d.
__device__ __forceinline__ double FastPair(double a, double b, double atol, double rtol,
                                           FastAcc& acc, DiffMoments& slow,
                                           uint32_t* hist_row, const BinadeTable& table) {
  const double d = fabs(__dsub_rn(b, a));
  const double x = fabs(a);
  acc.sum_abs = __dadd_rn(acc.sum_abs, d);
  acc.sum_sq = __fma_rn(d, d, acc.sum_sq);
  acc.dot = __fma_rn(a, b, acc.dot);
  acc.ref_sq = __fma_rn(a, a, acc.ref_sq);
  acc.cand_sq = __fma_rn(b, b, acc.cand_sq);
  acc.mismatches += d > AllcloseBound(atol, rtol, x) ? 1 : 0;
  double r;
  if (x > 0x1p-1021 && x < 0x1p1020) {
    r = __dmul_rn(d, __drcp_rn(x));
  } else {
    r = ExactRel(d, x);
  }
  acc.sum_rel = __dadd_rn(acc.sum_rel, r);
  if (r >= acc.rel_threshold) {
    const double exact = ExactRel(d, x);
    if (exact > acc.max_rel) {
      acc.SetMaxRel(exact);
      slow.max_rel = exact;
    }
  }
  acc.min_abs = fmin(acc.min_abs, d);
  hist_row[BinOf(d, table) * kFusedThreads] += 1;
  return d;
}

// Exact path for one pair (any values).
__device__ __forceinline__ void ExactPair(double a, double b, uint64_t index,
                                          const DiffOptions& opt, FastAcc& acc,
                                          DiffMoments& slow, uint32_t* hist_row) {
  const int bin = slow.AddUnbinned(a, b, index, opt);
  if (bin >= 0) hist_row[bin * kFusedThreads] += 1;
  acc.Sync(slow);
}

__device__ __forceinline__ double GenericValue(uint8_t dtype, const unsigned char* p, uint64_t i) {
  return VisitDType(static_cast<DType>(dtype), [p, i](auto tag) {
    constexpr DType kD = decltype(tag)::value;
    return ToDouble<kD>(reinterpret_cast<const StorageT<kD>*>(p)[i]);
  });
}

// A 16-byte-or-narrower vector of N elements of T, loaded with a streaming
// (evict-first) load.
template <typename T, int N>
struct Vec {
  typename Raw<T>::Bits v[N];
};

template <int Bytes> struct LoadWord;
template <> struct LoadWord<16> { using Type = uint4; };
template <> struct LoadWord<8> { using Type = uint2; };
template <> struct LoadWord<4> { using Type = unsigned int; };
template <> struct LoadWord<2> { using Type = unsigned short; };

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> LoadVec(const unsigned char* p) {
  using Word = typename LoadWord<static_cast<int>(sizeof(Vec<T, N>))>::Type;
  const Word w = __ldcs(reinterpret_cast<const Word*>(p));
  Vec<T, N> out;
  static_assert(sizeof(out) == sizeof(w));
  memcpy(&out, &w, sizeof(w));
  return out;
}

// Merge of two partials for cub::BlockReduce (fixed tree order).
struct FusedMergeOp {
  __device__ __forceinline__ DiffMoments operator()(const DiffMoments& a,
                                                    const DiffMoments& b) const {
    DiffMoments r = a;
    r.MergeMoments(b);
    return r;
  }
};

// A DiffStats read around L1 (written by other CTAs of the launch).
__device__ __forceinline__ DiffStats LoadPartial(const DiffStats* p) {
  static_assert(sizeof(DiffStats) % 8 == 0);
  DiffStats out;
  const auto* src = reinterpret_cast<const unsigned long long*>(p);
  auto* dst = reinterpret_cast<unsigned long long*>(&out);
  for (int w = 0; w < static_cast<int>(sizeof(DiffStats) / 8); ++w) dst[w] = __ldcg(src + w);
  return out;
}

// Dynamic shared memory of one CTA: the threads' DiffMoments.
inline constexpr size_t kFusedDynamicShared = sizeof(DiffMoments) * kFusedThreads;

// Static shared memory of one CTA.
template <typename CandT>
struct FusedShared {
  BinadeTable table;
  uint32_t hist[kHistogramBins * kFusedThreads];  // bin * threads + tid
  typename cub::BlockReduce<DiffMoments, kFusedThreads>::TempStorage reduce;
  uint64_t bins[kHistogramBins];
  int segment;
  int last;
  // Transposed: cand's block, [cand row j][cand col i], padded.
  typename Raw<CandT>::Bits cand_tile[kFusedTransTile][kFusedTransTile + 1];
};
template <>
struct FusedShared<GenericElement> {
  BinadeTable table;
  uint32_t hist[kHistogramBins * kFusedThreads];
  typename cub::BlockReduce<DiffMoments, kFusedThreads>::TempStorage reduce;
  uint64_t bins[kHistogramBins];
  int segment;
  int last;
};

// Reduces the CTA's per-thread accumulators into partials[block].
template <typename Shared>
__device__ void WritePartial(Shared& sh, const DiffMoments& acc, DiffStats* partial) {
  __syncthreads();  // every thread's counters are final
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int b = warp; b < kHistogramBins; b += kFusedThreads / 32) {
    uint64_t sum = 0;
    for (int t = lane; t < kFusedThreads; t += 32) sum += sh.hist[b * kFusedThreads + t];
    for (int o = 16; o > 0; o /= 2) sum += __shfl_down_sync(0xffffffffu, sum, o);
    if (lane == 0) sh.bins[b] = sum;
  }
  const DiffMoments moments =
      cub::BlockReduce<DiffMoments, kFusedThreads>(sh.reduce).Reduce(acc, FusedMergeOp{});
  __syncthreads();  // bins written; reduce storage free again
  if (threadIdx.x == 0) {
    DiffStats total;
    static_cast<DiffMoments&>(total) = moments;
    for (int b = 0; b < kHistogramBins; ++b) total.histogram[b] = sh.bins[b];
    *partial = total;
  }
  for (int b = 0; b < kHistogramBins; ++b) sh.hist[b * kFusedThreads + threadIdx.x] = 0;
}

// After a CTA wrote one partial of segment s: the last one merges them all
// in a fixed pairwise tree (in place) and writes out[s].
template <typename Shared>
__device__ void FinishSegment(Shared& sh, const FusedSegment& seg, int s, DiffStats* partials,
                              unsigned int* tickets, DiffStats* out) {
  __threadfence();  // this CTA's partial is visible before its ticket
  __syncthreads();
  if (threadIdx.x == 0) {
    sh.last = atomicAdd(tickets + s, 1u) == seg.num_blocks - 1 ? 1 : 0;
  }
  __syncthreads();
  if (!sh.last) return;
  __threadfence();
  DiffStats* p = partials + seg.first_block;
  const uint32_t n = seg.num_blocks;
  for (uint32_t width = 1; width < n; width *= 2) {
    for (uint32_t i = 2 * width * threadIdx.x; i + width < n; i += 2 * width * kFusedThreads) {
      DiffStats left = LoadPartial(p + i);
      left.Merge(LoadPartial(p + i + width));
      p[i] = left;
    }
    __threadfence_block();
    __syncthreads();
  }
  if (threadIdx.x == 0) out[s] = LoadPartial(p);
}

// Segment holding launch-wide logical block `block` (segments sorted by
// first_block).
__device__ inline int FindSegment(const FusedSegment* segs, int num_segments, uint32_t block) {
  int lo = 0, hi = num_segments - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (segs[mid].first_block <= block) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// ---------------------------------------------------------------------------
// Element-wise tiles.

template <typename RefT, typename CandT>
struct TileTraits {
  static constexpr int kRefSize = sizeof(typename Raw<RefT>::Bits);
  static constexpr int kCandSize = sizeof(typename Raw<CandT>::Bits);
  static constexpr int kWide = kRefSize > kCandSize ? kRefSize : kCandSize;
  static constexpr int kLanes = 16 / kWide;                    // pairs per vector
  static constexpr int kVecs = kFusedPairsPerThread / kLanes;  // vectors per thread
  using RefVec = Vec<RefT, kLanes>;
  using CandVec = Vec<CandT, kLanes>;
  struct Regs {
    RefVec ref[kVecs];
    CandVec cand[kVecs];
  };
  // Pair p = k * kLanes + l of this thread sits at tile offset
  // (k * kFusedThreads + tid) * kLanes + l.
  __device__ static uint64_t Offset(int k, int l) {
    return (static_cast<uint64_t>(k) * kFusedThreads + threadIdx.x) * kLanes + l;
  }
  __device__ static void Load(const FusedSegment& seg, uint64_t tile, Regs* r) {
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const uint64_t e = tile + Offset(k, 0);
      r->ref[k] = LoadVec<RefT, kLanes>(seg.ref + e * kRefSize);
      r->cand[k] = LoadVec<CandT, kLanes>(seg.cand + e * kCandSize);
    }
  }
};

// Reduces one full tile from registers.
template <typename RefT, typename CandT>
__device__ __forceinline__ void ReduceTile(const FusedSegment& seg, uint64_t tile,
                                           const typename TileTraits<RefT, CandT>::Regs& r,
                                           FastAcc& acc, DiffMoments& slow, uint32_t* hist_row,
                                           const BinadeTable& table) {
  using Tr = TileTraits<RefT, CandT>;
  bool finite = true;
#pragma unroll
  for (int k = 0; k < Tr::kVecs; ++k) {
#pragma unroll
    for (int l = 0; l < Tr::kLanes; ++l) {
      finite &= Raw<RefT>::Finite(r.ref[k].v[l]) & Raw<CandT>::Finite(r.cand[k].v[l]);
    }
  }
  const uint64_t index0 = seg.index_base + tile;
  if (!finite) {
#pragma unroll
    for (int k = 0; k < Tr::kVecs; ++k) {
#pragma unroll
      for (int l = 0; l < Tr::kLanes; ++l) {
        ExactPair(Raw<RefT>::Value(r.ref[k].v[l]), Raw<CandT>::Value(r.cand[k].v[l]),
                  index0 + Tr::Offset(k, l), seg.options, acc, slow, hist_row);
      }
    }
    return;
  }
  double tile_max = 0.0;
#pragma unroll
  for (int k = 0; k < Tr::kVecs; ++k) {
#pragma unroll
    for (int l = 0; l < Tr::kLanes; ++l) {
      const double d = FastPair(Raw<RefT>::Value(r.ref[k].v[l]),
                                Raw<CandT>::Value(r.cand[k].v[l]), seg.options.atol,
                                seg.options.rtol, acc, slow, hist_row, table);
      tile_max = fmax(tile_max, d);
    }
  }
  acc.count += kFusedPairsPerThread;
  // The thread's pairs come in increasing index order, so the first pair
  // holding a strictly larger max is the one MaxBeats would keep; NaN in
  // acc.max_abs (from an exact tile) is never beaten.
  if (tile_max > acc.max_abs) {
#pragma unroll
    for (int k = 0; k < Tr::kVecs; ++k) {
#pragma unroll
      for (int l = 0; l < Tr::kLanes; ++l) {
        const double a = Raw<RefT>::Value(r.ref[k].v[l]);
        const double b = Raw<CandT>::Value(r.cand[k].v[l]);
        if (fabs(__dsub_rn(b, a)) == tile_max && tile_max > acc.max_abs) {
          acc.max_abs = tile_max;
          slow.max_abs = tile_max;
          slow.max_index = index0 + Tr::Offset(k, l);
          slow.ref_at_max = a;
          slow.cand_at_max = b;
        }
      }
    }
  }
}

// Pairs [begin, end) of a segment one by one (partial tiles, generic dtypes).
template <typename RefT, typename CandT>
__device__ void ReduceScalar(const FusedSegment& seg, uint64_t begin, uint64_t end,
                             FastAcc& acc, DiffMoments& slow, uint32_t* hist_row) {
  for (uint64_t e = begin + threadIdx.x; e < end; e += kFusedThreads) {
    double a, b;
    if constexpr (std::is_same_v<RefT, GenericElement>) {
      a = GenericValue(seg.ref_dtype, seg.ref, e);
      b = GenericValue(seg.cand_dtype, seg.cand, e);
    } else {
      a = Raw<RefT>::Value(reinterpret_cast<const typename Raw<RefT>::Bits*>(seg.ref)[e]);
      b = Raw<CandT>::Value(reinterpret_cast<const typename Raw<CandT>::Bits*>(seg.cand)[e]);
    }
    ExactPair(a, b, seg.index_base + e, seg.options, acc, slow, hist_row);
  }
}

template <typename RefT, typename CandT>
__device__ void ReduceFlatBlock(const FusedSegment& seg, uint32_t local_block, FastAcc& acc,
                                DiffMoments& slow, uint32_t* hist_row,
                                const BinadeTable& table) {
  const uint64_t size = FusedBlockElements(seg.count);
  const uint64_t begin = static_cast<uint64_t>(local_block) * size;
  const uint64_t end = begin + size < seg.count ? begin + size : seg.count;
  if constexpr (std::is_same_v<RefT, GenericElement>) {
    ReduceScalar<RefT, CandT>(seg, begin, end, acc, slow, hist_row);
  } else {
    using Tr = TileTraits<RefT, CandT>;
    const uint64_t full_end = begin + (end - begin) / kFusedTileElements * kFusedTileElements;
    for (uint64_t tile = begin; tile < full_end; tile += kFusedTileElements) {
      typename Tr::Regs cur;
      Tr::Load(seg, tile, &cur);
      ReduceTile<RefT, CandT>(seg, tile, cur, acc, slow, hist_row, table);
    }
    ReduceScalar<RefT, CandT>(seg, full_end, end, acc, slow, hist_row);
  }
}

// ---------------------------------------------------------------------------
// Transposed tiles.

template <typename RefT, typename CandT, typename Shared>
__device__ void ReduceTransposedBlock(const FusedSegment& seg, uint32_t local_block,
                                      FastAcc& acc, DiffMoments& slow, uint32_t* hist_row,
                                      Shared& sh) {
  constexpr int T = kFusedTransTile;
  constexpr int kRowsPerPass = kFusedThreads / T;  // 8
  const uint64_t rows = seg.rows, cols = seg.cols;
  const uint64_t col_tiles = (cols + T - 1) / T;
  const uint64_t strip = FusedTransposedStrip(rows, cols);
  const uint64_t strips_per_band = (col_tiles + strip - 1) / strip;
  const uint64_t band = local_block / strips_per_band;
  const uint64_t first_tile = (local_block % strips_per_band) * strip;
  const uint64_t last_tile = first_tile + strip < col_tiles ? first_tile + strip : col_tiles;
  const uint64_t r0 = band * T;
  const int tx = threadIdx.x % T, ty = threadIdx.x / T;
  for (uint64_t ct = first_tile; ct < last_tile; ++ct) {
    const uint64_t c0 = ct * T;
    // cand rows c0.. (= ref columns), cand columns r0.. (= ref rows).
    __syncthreads();  // previous tile consumed
#pragma unroll
    for (int k = 0; k < T / kRowsPerPass; ++k) {
      const uint64_t j = c0 + ty + k * kRowsPerPass;  // cand row
      const uint64_t i = r0 + tx;                     // cand column
      if (j < cols && i < rows) {
        sh.cand_tile[ty + k * kRowsPerPass][tx] =
            reinterpret_cast<const typename Raw<CandT>::Bits*>(seg.cand)[j * rows + i];
      }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < T / kRowsPerPass; ++k) {
      const uint64_t i = r0 + ty + k * kRowsPerPass;  // ref row
      const uint64_t j = c0 + tx;                     // ref column
      if (i >= rows || j >= cols) continue;
      const uint64_t flat = i * cols + j;
      const typename Raw<RefT>::Bits rb =
          reinterpret_cast<const typename Raw<RefT>::Bits*>(seg.ref)[flat];
      const typename Raw<CandT>::Bits cb = sh.cand_tile[tx][ty + k * kRowsPerPass];
      const double a = Raw<RefT>::Value(rb), b = Raw<CandT>::Value(cb);
      const uint64_t index = seg.index_base + flat;
      if (Raw<RefT>::Finite(rb) && Raw<CandT>::Finite(cb)) {
        const double d = FastPair(a, b, seg.options.atol, seg.options.rtol, acc, slow,
                                  hist_row, sh.table);
        acc.count += 1;
        // Indices do not increase along a thread here: the full tie-break
        // (a NaN running max compares false and is never replaced).
        if (d >= acc.max_abs && MaxBeats(d, index, slow.max_abs, slow.max_index)) {
          acc.max_abs = d;
          slow.max_abs = d;
          slow.max_index = index;
          slow.ref_at_max = a;
          slow.cand_at_max = b;
        }
      } else {
        ExactPair(a, b, index, seg.options, acc, slow, hist_row);
      }
    }
  }
}

// Transposed pairs of generic dtypes: per element, no tiles.
__device__ inline void ReduceTransposedGeneric(const FusedSegment& seg, uint32_t local_block,
                                               FastAcc& acc, DiffMoments& slow,
                                               uint32_t* hist_row) {
  constexpr int T = kFusedTransTile;
  const uint64_t rows = seg.rows, cols = seg.cols;
  const uint64_t col_tiles = (cols + T - 1) / T;
  const uint64_t strip = FusedTransposedStrip(rows, cols);
  const uint64_t strips_per_band = (col_tiles + strip - 1) / strip;
  const uint64_t band = local_block / strips_per_band;
  const uint64_t c_begin = (local_block % strips_per_band) * strip * T;
  const uint64_t c_end = c_begin + strip * T < cols ? c_begin + strip * T : cols;
  const uint64_t r_end = (band + 1) * T < rows ? (band + 1) * T : rows;
  const uint64_t width = c_end - c_begin;
  for (uint64_t i = band * T; i < r_end; ++i) {
    for (uint64_t jj = threadIdx.x; jj < width; jj += kFusedThreads) {
      const uint64_t j = c_begin + jj;
      const double a = GenericValue(seg.ref_dtype, seg.ref, i * cols + j);
      const double b = GenericValue(seg.cand_dtype, seg.cand, j * rows + i);
      ExactPair(a, b, seg.index_base + i * cols + j, seg.options, acc, slow, hist_row);
    }
  }
}

// ---------------------------------------------------------------------------
// The kernel: a persistent grid over the launch's logical blocks.

template <typename RefT, typename CandT, bool kTransposed>
__global__ void __launch_bounds__(kFusedThreads, kFusedMinBlocksPerSm)
    FusedReduceKernel(const FusedSegment* __restrict__ segs, int num_segments,
                      uint32_t total_blocks, DiffStats* __restrict__ partials,
                      unsigned int* __restrict__ tickets, DiffStats* __restrict__ out) {
  __shared__ FusedShared<CandT> sh;
  // One DiffMoments per thread (kFusedDynamicShared bytes at launch).
  extern __shared__ unsigned char dynamic_shared[];
  DiffMoments& slow = reinterpret_cast<DiffMoments*>(dynamic_shared)[threadIdx.x];
  FillBinadeTable(&sh.table);
  for (int b = 0; b < kHistogramBins; ++b) sh.hist[b * kFusedThreads + threadIdx.x] = 0;
  uint32_t* hist_row = sh.hist + threadIdx.x;
  for (uint32_t block = blockIdx.x; block < total_blocks; block += gridDim.x) {
    __syncthreads();  // table filled / previous block's shared state consumed
    if (threadIdx.x == 0) sh.segment = FindSegment(segs, num_segments, block);
    __syncthreads();
    const int s = sh.segment;
    const FusedSegment seg = segs[s];
    const uint32_t local = block - seg.first_block;
    slow = DiffMoments();
    FastAcc acc;
    acc.Sync(slow);
    if constexpr (kTransposed) {
      if constexpr (std::is_same_v<RefT, GenericElement>) {
        ReduceTransposedGeneric(seg, local, acc, slow, hist_row);
      } else {
        ReduceTransposedBlock<RefT, CandT>(seg, local, acc, slow, hist_row, sh);
      }
    } else {
      ReduceFlatBlock<RefT, CandT>(seg, local, acc, slow, hist_row, sh.table);
    }
    acc.FoldInto(slow);
    WritePartial(sh, slow, partials + block);
    FinishSegment(sh, seg, s, partials, tickets, out);
  }
}

}  // namespace reprod::kernels::internal

#endif  // REPROD_KERNELS_CUDA_INTERNAL_FUSED_REDUCE_CUH_

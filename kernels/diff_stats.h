// File: kernels/diff_stats.h
//
// DiffStats: every statistic of docs/design.md §Diff semantics for one tensor pair
// (ref, cand), as a mergeable accumulator. A backend reduces element pairs
// into DiffStats partials and combines them with Merge(); partials may be
// merged in any order and grouping (chunked == one shot), because every field
// is either a sum, a count, or an extremum with a total-order tie-break.
//
//   DiffStats s;
//   for (uint64_t i = 0; i < n; ++i) s.Add(ref[i], cand[i], i, options);
//   double mean = s.mean_abs();   // NaN when any d is NaN
//
// Per element (both values converted to double first):
//   d = |cand - ref|, except: same-signed infinities at the same position give
//   d = 0; with equal_nan, NaN against NaN gives d = 0. Otherwise any NaN makes
//   d NaN ("nan_diff").
//   r = 0 where d == 0; +inf where d > 0 and (ref == 0 or d == +inf);
//   else d / |ref| (IEEE division, so a tiny |ref| may also give +inf).
//   mismatch: d is NaN or +inf, or d > atol + rtol * |ref| (numpy allclose).
//   The bound atol + rtol * |ref| is a separately rounded multiply and add
//   (AllcloseBound): never contracted into an FMA, so every backend counts
//   exactly the same mismatches. Compile host code with -ffp-contract=off.
//
// Stored fields accumulate over elements whose d is not NaN; the accessors
// (mean_abs() ...) return NaN as soon as one d is NaN, so a NaN can never
// pass a check. max_abs orders NaN above +inf, ties go to the smallest flat
// index, so max_abs_index points at the first NaN when there is one.
//
// Determinism, per field:
//   - exact and backend-independent (any chunking, merge order, thread count):
//     every count (count, nan_*, inf_*, mismatches, histogram), max_abs with
//     max_index / ref_at_max / cand_at_max, min_abs, max_rel.
//   - sums (sum_abs, sum_sq, sum_rel, dot, ref_sq, cand_sq) are double sums of
//     exactly computed terms; only the rounding of the additions depends on
//     the grouping. Two backends (or two chunkings) agree to ~1e-12 relative
//     for well-conditioned inputs. A given backend documents whether it is
//     run-to-run deterministic (the cpu backend is, independent of threads).
//
// Add/Merge are REPROD_HOST_DEVICE and use no std:: facility that is not
// device-safe, so the CUDA backend shares them.
//
// Thread-safety: a plain value type.
#ifndef REPROD_KERNELS_DIFF_STATS_H_
#define REPROD_KERNELS_DIFF_STATS_H_

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common/half.h"

namespace reprod::kernels {

// Histogram of d by decade. Bin 0: d == 0. Bin 1: 0 < d < 1e-12.
// Bin 2 + k (k = 0..15): 1e(-12+k) <= d < 1e(-11+k). Bin 18: d >= 1e4
// (including +inf). NaN d is not binned (see nan_diff).
inline constexpr int kHistogramBins = 19;

// Lower edges of bins 2..18 (1e-12 ... 1e4), as the doubles nearest to them.
// Host-side copy for reports and tests; HistogramEdge() is the device-safe
// accessor with the same values.
inline constexpr std::array<double, kHistogramBins - 2> kHistogramEdges = {
    1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4,
    1e-3,  1e-2,  1e-1,  1e0,  1e1,  1e2,  1e3,  1e4};

// Lower edge of bin i + 2 (i = 0..16). Usable on host and device.
REPROD_HOST_DEVICE constexpr double HistogramEdge(int i) {
  constexpr double kEdges[kHistogramBins - 2] = {
      1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4,
      1e-3,  1e-2,  1e-1,  1e0,  1e1,  1e2,  1e3,  1e4};
  return kEdges[i];
}

// The bin of d >= 0 (d not NaN). This definition is the contract; a backend
// may compute the bin differently (the cpu backend uses the binary exponent)
// but must return exactly this value for every d.
REPROD_HOST_DEVICE inline int HistogramBin(double d) {
  if (d == 0.0) return 0;
  int bin = 1;
  // 17 comparisons, branch-light; identical on every backend.
  for (int i = 0; i < kHistogramBins - 2; ++i) bin += (d >= HistogramEdge(i)) ? 1 : 0;
  return bin;
}

// Histogram counts: a fixed array of kHistogramBins counters, indexable on
// host and device (std::array's accessors are host-only under nvcc), and
// iterable / comparable like std::array on the host.
struct HistogramCounts {
  uint64_t bins[kHistogramBins] = {};

  REPROD_HOST_DEVICE uint64_t& operator[](int i) { return bins[i]; }
  REPROD_HOST_DEVICE const uint64_t& operator[](int i) const { return bins[i]; }
  static constexpr size_t size() { return kHistogramBins; }
  uint64_t* begin() { return bins; }
  uint64_t* end() { return bins + kHistogramBins; }
  const uint64_t* begin() const { return bins; }
  const uint64_t* end() const { return bins + kHistogramBins; }
  friend bool operator==(const HistogramCounts&, const HistogramCounts&) = default;
};

// Per-pair options that change element-wise results.
struct DiffOptions {
  double atol = 1e-8;   // allclose absolute tolerance (numpy default)
  double rtol = 1e-5;   // allclose relative tolerance (numpy default)
  bool equal_nan = false;
};

// atol + rtol * |ref|, each operation rounded separately (no FMA), on host
// (built with -ffp-contract=off) and device (explicit _rn intrinsics).
REPROD_HOST_DEVICE inline double AllcloseBound(double atol, double rtol, double abs_ref) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(atol, __dmul_rn(rtol, abs_ref));
#else
  return atol + rtol * abs_ref;
#endif
}

// Every statistic of a pair except the error histogram: what one element
// pair updates in registers. DiffStats adds the histogram. Split so that the
// CUDA kernel reduces these ~35 words across a block (registers and shuffles)
// and counts the histogram in shared memory; the rules live here once for
// both backends.
struct DiffMoments {
  uint64_t count = 0;        // elements compared
  uint64_t nan_diff = 0;     // elements whose d is NaN
  uint64_t inf_diff = 0;     // elements whose d is +inf
  uint64_t mismatches = 0;   // allclose failures (NaN and inf d included)
  uint64_t nan_ref = 0, nan_cand = 0;   // NaN count per side
  uint64_t inf_ref = 0, inf_cand = 0;   // ±Inf count per side

  double sum_abs = 0;   // Σ d            (non-NaN d)
  double sum_sq = 0;    // Σ d²           (non-NaN d)
  double sum_rel = 0;   // Σ r            (non-NaN d)
  double max_rel = 0;   // max r          (non-NaN d)
  double min_abs = __builtin_huge_val();  // min d (non-NaN); +inf = none yet

  // max d with NaN ordered above everything; ties -> smallest index.
  double max_abs = -1;          // -1 = no element yet
  uint64_t max_index = 0;       // flat index (in ref's layout) of max_abs
  double ref_at_max = 0, cand_at_max = 0;  // both values there (as doubles)

  // Cosine terms over pairs where both values are finite.
  double dot = 0, ref_sq = 0, cand_sq = 0;

  // Adds one element pair (`index`: flat index in ref's layout) and returns
  // the histogram bin the caller must count for it, or -1 when d is NaN (not
  // binned).
  REPROD_HOST_DEVICE int AddUnbinned(double ref, double cand, uint64_t index,
                                     const DiffOptions& opt);

  // Combines another partial into this one (associative, commutative up to
  // floating-point rounding of the sums; exact for every other field).
  REPROD_HOST_DEVICE void MergeMoments(const DiffMoments& o);
};

struct DiffStats : DiffMoments {
  HistogramCounts histogram;

  // Adds one element pair. `index` is the flat index in ref's layout.
  REPROD_HOST_DEVICE void Add(double ref, double cand, uint64_t index,
                              const DiffOptions& opt);

  // Combines another partial into this one (associative, commutative up to
  // floating-point rounding of the sums; exact for every other field).
  REPROD_HOST_DEVICE void Merge(const DiffStats& o);

  // ---- Finished statistics (NaN whenever nan_diff > 0) ----
  // Empty pairs (count == 0): abs/rel/rmse 0, cosine 1, mismatch_ratio 0.
  double mean_abs() const;       // sum_abs / count
  double max_abs_value() const;  // max_abs; NaN if any NaN d
  double min_abs_value() const;  // min_abs
  double mean_rel() const;       // sum_rel / count
  double max_rel_value() const;  // max_rel
  double rmse() const;           // sqrt(sum_sq / count)
  // Σref·cand / √(Σref² Σcand²) (computed as dot / (√ref_sq · √cand_sq) so
  // the product of the norms cannot overflow, then clamped to [-1, 1]
  // against rounding; NaN if a norm itself overflowed to +inf);
  // 1 when both norms are 0, 0 when exactly one is; NaN when any d is NaN or
  // +inf (an unmatched infinity).
  double cosine() const;
  double mismatch_ratio() const;  // mismatches / count
};

// ---------------------------------------------------------------------------
// Inline definitions (shared by the CPU and CUDA backends).

REPROD_HOST_DEVICE inline bool MaxBeats(double a, uint64_t ia, double b, uint64_t ib) {
  // Does candidate (a, ia) replace current (b, ib)? NaN > +inf > finite.
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan != b_nan) return a_nan;
  if (a_nan || a == b) return ia < ib;
  return a > b;
}

REPROD_HOST_DEVICE inline void DiffStats::Add(double ref, double cand, uint64_t index,
                                              const DiffOptions& opt) {
  const int bin = AddUnbinned(ref, cand, index, opt);
  if (bin >= 0) ++histogram[bin];
}

REPROD_HOST_DEVICE inline int DiffMoments::AddUnbinned(double ref, double cand, uint64_t index,
                                                     const DiffOptions& opt) {
  ++count;
  const bool ref_nan = ref != ref, cand_nan = cand != cand;
  const bool ref_inf = !ref_nan && (ref - ref != ref - ref);
  const bool cand_inf = !cand_nan && (cand - cand != cand - cand);
  nan_ref += ref_nan;
  nan_cand += cand_nan;
  inf_ref += ref_inf;
  inf_cand += cand_inf;

  double d;
  if (ref_nan || cand_nan) {
    d = (opt.equal_nan && ref_nan && cand_nan) ? 0.0 : __builtin_nan("");
  } else if (ref_inf && cand_inf && ref == cand) {
    d = 0.0;
  } else {
    d = std::fabs(cand - ref);
  }

  if (MaxBeats(d, index, max_abs, max_index) || max_abs == -1) {
    max_abs = d;
    max_index = index;
    ref_at_max = ref;
    cand_at_max = cand;
  }
  if (d != d) {
    ++nan_diff;
    ++mismatches;
    return -1;
  }
  const double abs_ref = std::fabs(ref);
  const bool d_inf = d == __builtin_huge_val();
  inf_diff += d_inf;
  mismatches += (d_inf || d > AllcloseBound(opt.atol, opt.rtol, abs_ref)) ? 1 : 0;
  double r = 0.0;
  if (d > 0.0) r = (abs_ref == 0.0 || d_inf) ? __builtin_huge_val() : d / abs_ref;
  sum_abs += d;
  sum_sq += d * d;
  sum_rel += r;
  if (r > max_rel) max_rel = r;
  if (d < min_abs) min_abs = d;
  // Both finite: leaves out matched infinities and, with equal_nan, NaN
  // against NaN (d = 0 there, but NaN products would poison the sums).
  if (!ref_inf && !cand_inf && !ref_nan) {
    dot += ref * cand;
    ref_sq += ref * ref;
    cand_sq += cand * cand;
  }
  return HistogramBin(d);
}

REPROD_HOST_DEVICE inline void DiffStats::Merge(const DiffStats& o) {
  MergeMoments(o);
  for (int i = 0; i < kHistogramBins; ++i) histogram[i] += o.histogram[i];
}

REPROD_HOST_DEVICE inline void DiffMoments::MergeMoments(const DiffMoments& o) {
  if (o.count == 0) return;
  if (count == 0) {
    *this = o;
    return;
  }
  count += o.count;
  nan_diff += o.nan_diff;
  inf_diff += o.inf_diff;
  mismatches += o.mismatches;
  nan_ref += o.nan_ref;
  nan_cand += o.nan_cand;
  inf_ref += o.inf_ref;
  inf_cand += o.inf_cand;
  sum_abs += o.sum_abs;
  sum_sq += o.sum_sq;
  sum_rel += o.sum_rel;
  if (o.max_rel > max_rel) max_rel = o.max_rel;
  if (o.min_abs < min_abs) min_abs = o.min_abs;
  if (MaxBeats(o.max_abs, o.max_index, max_abs, max_index)) {
    max_abs = o.max_abs;
    max_index = o.max_index;
    ref_at_max = o.ref_at_max;
    cand_at_max = o.cand_at_max;
  }
  dot += o.dot;
  ref_sq += o.ref_sq;
  cand_sq += o.cand_sq;
}

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_DIFF_STATS_H_

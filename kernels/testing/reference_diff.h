// File: kernels/testing/reference_diff.h
//
// Test-only helpers for kernels/ tests:
//   - ReferenceDiff: a naive, independent implementation of docs/design.md
//     §Diff semantics (element loop in double, sums in long double), written
//     from the text, not from DiffStats::Add;
//   - ExpectMatchesReference: exact comparison of counts, extrema, indices
//     and histogram, 1e-12 relative for sums;
//   - HostTensor: a tensor of any DType built from doubles, raw bits or
//     exact integers (MakeIntTensor; UnsignedTestValues for uint16/32/64 at
//     their extremes), with the double value of every element for the
//     reference.
//
// Thread-safety: plain functions and values.
#ifndef REPROD_KERNELS_TESTING_REFERENCE_DIFF_H_
#define REPROD_KERNELS_TESTING_REFERENCE_DIFF_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "common/dtype.h"
#include "common/half.h"
#include "common/tensor.h"
#include "gtest/gtest.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels::testing {

// Decade edges written out independently of diff_stats.h.
inline constexpr double kRefEdges[17] = {1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7,
                                         1e-6,  1e-5,  1e-4,  1e-3, 1e-2, 1e-1,
                                         1.0,   10.0,  100.0, 1000.0, 10000.0};

// Histogram bin by docs/design.md: 0 for d == 0, 1 for d < 1e-12, then one bin
// per decade, the last one d >= 1e4.
inline int RefBin(double d) {
  if (d == 0) return 0;
  int bin = 1;
  while (bin - 1 < 17 && d >= kRefEdges[bin - 1]) ++bin;
  return bin;
}

struct RefStats {
  uint64_t count = 0, nan_diff = 0, inf_diff = 0, mismatches = 0;
  uint64_t nan_ref = 0, nan_cand = 0, inf_ref = 0, inf_cand = 0;
  long double sum_abs = 0, sum_sq = 0, sum_rel = 0, dot = 0, ref_sq = 0, cand_sq = 0;
  double max_rel = 0, min_abs = std::numeric_limits<double>::infinity();
  bool have_max = false, max_is_nan = false;
  double max_abs = 0;
  uint64_t max_index = 0;
  double ref_at_max = 0, cand_at_max = 0;
  uint64_t hist[kHistogramBins] = {};
};

// Adds the pair (ref, cand) at flat index `index`. Elements must be added in
// increasing index order (ties keep the first).
inline void RefAdd(RefStats& s, double ref, double cand, uint64_t index,
                   const DiffOptions& opt) {
  ++s.count;
  const bool rn = std::isnan(ref), cn = std::isnan(cand);
  const bool ri = std::isinf(ref), ci = std::isinf(cand);
  s.nan_ref += rn;
  s.nan_cand += cn;
  s.inf_ref += ri;
  s.inf_cand += ci;
  double d;
  if (rn || cn) {
    d = (opt.equal_nan && rn && cn) ? 0.0 : std::numeric_limits<double>::quiet_NaN();
  } else if (ri && ci && std::signbit(ref) == std::signbit(cand)) {
    d = 0.0;
  } else {
    d = std::fabs(cand - ref);
  }
  const bool dn = std::isnan(d);
  // max: NaN above everything, first index wins ties.
  if (!s.have_max || (dn && !s.max_is_nan) || (!dn && !s.max_is_nan && d > s.max_abs)) {
    s.have_max = true;
    s.max_is_nan = dn;
    s.max_abs = d;
    s.max_index = index;
    s.ref_at_max = ref;
    s.cand_at_max = cand;
  }
  if (dn) {
    ++s.nan_diff;
    ++s.mismatches;
    return;
  }
  const bool dinf = std::isinf(d);
  s.inf_diff += dinf;
  const double bound = opt.atol + opt.rtol * std::fabs(ref);
  if (dinf || d > bound) ++s.mismatches;
  double r;
  if (d == 0) {
    r = 0;
  } else if (ref == 0 || dinf) {
    r = std::numeric_limits<double>::infinity();
  } else {
    r = d / std::fabs(ref);
  }
  s.sum_abs += d;
  s.sum_sq += static_cast<long double>(d) * d;
  s.sum_rel += r;
  if (r > s.max_rel) s.max_rel = r;
  if (d < s.min_abs) s.min_abs = d;
  if (std::isfinite(ref) && std::isfinite(cand)) {
    s.dot += static_cast<long double>(ref) * cand;
    s.ref_sq += static_cast<long double>(ref) * ref;
    s.cand_sq += static_cast<long double>(cand) * cand;
  }
  ++s.hist[RefBin(d)];
}

// Element-wise reference over equal-length value arrays.
inline RefStats ReferenceDiff(const std::vector<double>& ref, const std::vector<double>& cand,
                              const DiffOptions& opt, uint64_t index_base = 0) {
  RefStats s;
  for (size_t i = 0; i < ref.size(); ++i) RefAdd(s, ref[i], cand[i], index_base + i, opt);
  return s;
}

// Reference for a transposed pair: ref (m, n), cand (n, m) in C order.
inline RefStats ReferenceDiffTransposed(const std::vector<double>& ref,
                                        const std::vector<double>& cand, int64_t m, int64_t n,
                                        const DiffOptions& opt, uint64_t index_base = 0) {
  RefStats s;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      RefAdd(s, ref[i * n + j], cand[j * m + i], index_base + i * n + j, opt);
    }
  }
  return s;
}

// |a - b| <= tol * max(|a|, |b|), treating equal infinities / NaNs as equal.
inline bool RelClose(long double a, long double b, long double tol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  const long double scale = std::fmax(std::fabs(a), std::fabs(b));
  return std::fabs(a - b) <= tol * scale;
}

// Exact fields equal, sums within `tol` relative (the long double reference
// sums are rounded to double first, so both overflow alike).
inline void ExpectMatchesReference(const DiffStats& got, const RefStats& want,
                                   double tol = 1e-12, const std::string& where = "") {
  SCOPED_TRACE(where);
  EXPECT_EQ(got.count, want.count);
  EXPECT_EQ(got.nan_diff, want.nan_diff);
  EXPECT_EQ(got.inf_diff, want.inf_diff);
  EXPECT_EQ(got.mismatches, want.mismatches);
  EXPECT_EQ(got.nan_ref, want.nan_ref);
  EXPECT_EQ(got.nan_cand, want.nan_cand);
  EXPECT_EQ(got.inf_ref, want.inf_ref);
  EXPECT_EQ(got.inf_cand, want.inf_cand);
  EXPECT_EQ(got.max_rel, want.max_rel);
  EXPECT_EQ(got.min_abs, want.min_abs);
  if (want.have_max) {
    if (want.max_is_nan) {
      EXPECT_TRUE(std::isnan(got.max_abs)) << got.max_abs;
    } else {
      EXPECT_EQ(got.max_abs, want.max_abs);
    }
    EXPECT_EQ(got.max_index, want.max_index);
    EXPECT_TRUE(got.ref_at_max == want.ref_at_max ||
                (std::isnan(got.ref_at_max) && std::isnan(want.ref_at_max)))
        << got.ref_at_max << " vs " << want.ref_at_max;
    EXPECT_TRUE(got.cand_at_max == want.cand_at_max ||
                (std::isnan(got.cand_at_max) && std::isnan(want.cand_at_max)))
        << got.cand_at_max << " vs " << want.cand_at_max;
  } else {
    EXPECT_EQ(got.max_abs, -1);
  }
  for (int b = 0; b < kHistogramBins; ++b) {
    EXPECT_EQ(got.histogram[b], want.hist[b]) << "bin " << b;
  }
  EXPECT_TRUE(RelClose(got.sum_abs, static_cast<double>(want.sum_abs), tol))
      << "sum_abs " << got.sum_abs << " vs " << static_cast<double>(want.sum_abs);
  EXPECT_TRUE(RelClose(got.sum_sq, static_cast<double>(want.sum_sq), tol))
      << "sum_sq " << got.sum_sq << " vs " << static_cast<double>(want.sum_sq);
  EXPECT_TRUE(RelClose(got.sum_rel, static_cast<double>(want.sum_rel), tol))
      << "sum_rel " << got.sum_rel << " vs " << static_cast<double>(want.sum_rel);
  EXPECT_TRUE(RelClose(got.dot, static_cast<double>(want.dot), tol))
      << "dot " << got.dot << " vs " << static_cast<double>(want.dot);
  EXPECT_TRUE(RelClose(got.ref_sq, static_cast<double>(want.ref_sq), tol))
      << "ref_sq " << got.ref_sq << " vs " << static_cast<double>(want.ref_sq);
  EXPECT_TRUE(RelClose(got.cand_sq, static_cast<double>(want.cand_sq), tol))
      << "cand_sq " << got.cand_sq << " vs " << static_cast<double>(want.cand_sq);
}

// Exact equality of every field (same computation twice).
inline void ExpectIdentical(const DiffStats& a, const DiffStats& b, const std::string& where = "") {
  SCOPED_TRACE(where);
  EXPECT_EQ(0, std::memcmp(&a, &b, sizeof(DiffStats)))
      << "count " << a.count << "/" << b.count << " sum_abs " << a.sum_abs << "/" << b.sum_abs
      << " max " << a.max_abs << "@" << a.max_index << "/" << b.max_abs << "@" << b.max_index;
}

// Counts, extrema, indices and histogram equal; sums within `tol` relative.
inline void ExpectEquivalent(const DiffStats& a, const DiffStats& b, double tol = 1e-12,
                             const std::string& where = "") {
  SCOPED_TRACE(where);
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.nan_diff, b.nan_diff);
  EXPECT_EQ(a.inf_diff, b.inf_diff);
  EXPECT_EQ(a.mismatches, b.mismatches);
  EXPECT_EQ(a.nan_ref, b.nan_ref);
  EXPECT_EQ(a.nan_cand, b.nan_cand);
  EXPECT_EQ(a.inf_ref, b.inf_ref);
  EXPECT_EQ(a.inf_cand, b.inf_cand);
  EXPECT_EQ(a.max_rel, b.max_rel);
  EXPECT_EQ(a.min_abs, b.min_abs);
  EXPECT_TRUE(a.max_abs == b.max_abs || (std::isnan(a.max_abs) && std::isnan(b.max_abs)));
  EXPECT_EQ(a.max_index, b.max_index);
  EXPECT_TRUE(a.histogram == b.histogram);
  EXPECT_TRUE(RelClose(a.sum_abs, b.sum_abs, tol)) << a.sum_abs << " vs " << b.sum_abs;
  EXPECT_TRUE(RelClose(a.sum_sq, b.sum_sq, tol)) << a.sum_sq << " vs " << b.sum_sq;
  EXPECT_TRUE(RelClose(a.sum_rel, b.sum_rel, tol)) << a.sum_rel << " vs " << b.sum_rel;
  EXPECT_TRUE(RelClose(a.dot, b.dot, tol)) << a.dot << " vs " << b.dot;
  EXPECT_TRUE(RelClose(a.ref_sq, b.ref_sq, tol)) << a.ref_sq << " vs " << b.ref_sq;
  EXPECT_TRUE(RelClose(a.cand_sq, b.cand_sq, tol)) << a.cand_sq << " vs " << b.cand_sq;
}

// Independent decoders (bit manipulation written here, not common/half.h).
inline double RefDecodeFloat16(uint16_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0x1f) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);
  } else {
    v = std::ldexp(1.0 + mant / 1024.0, exp - 15);
  }
  return sign ? -v : v;
}

inline double RefDecodeBFloat16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// A packed tensor plus the exact double value of every element.
struct HostTensor {
  DType dtype = DType::kFloat32;
  Shape shape;
  std::vector<unsigned char> bytes;
  std::vector<double> values;

  TensorView view() const { return TensorView{dtype, shape, bytes.data()}; }
  int64_t size() const { return static_cast<int64_t>(values.size()); }
};

// Integer conversion for test data: NaN -> 0, out of range saturates, else
// truncation toward zero (C++'s cast, minus its undefined cases).
template <typename T>
T SaturateCast(double v) {
  if (std::isnan(v)) return 0;
  if (v <= static_cast<double>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
  if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}

// Stores `v` (already representable, or converted here: integers saturate,
// floats round to nearest) as element i of `t` and records the stored value.
inline void SetElement(HostTensor& t, size_t i, double v) {
  unsigned char* p = t.bytes.data() + i * DTypeSize(t.dtype);
  switch (t.dtype) {
    case DType::kBool: {
      const uint8_t b = v != 0;
      *p = b;
      t.values[i] = b;
      break;
    }
    case DType::kInt8: {
      const auto x = SaturateCast<int8_t>(v);
      std::memcpy(p, &x, 1);
      t.values[i] = x;
      break;
    }
    case DType::kUInt8: {
      const auto x = SaturateCast<uint8_t>(v);
      std::memcpy(p, &x, 1);
      t.values[i] = x;
      break;
    }
    case DType::kInt16: {
      const auto x = SaturateCast<int16_t>(v);
      std::memcpy(p, &x, 2);
      t.values[i] = x;
      break;
    }
    case DType::kInt32: {
      const auto x = SaturateCast<int32_t>(v);
      std::memcpy(p, &x, 4);
      t.values[i] = x;
      break;
    }
    case DType::kInt64: {
      const auto x = SaturateCast<int64_t>(v);
      std::memcpy(p, &x, 8);
      t.values[i] = static_cast<double>(x);
      break;
    }
    case DType::kFloat16: {
      // Round through float -> binary16 by search (test-only, exact enough:
      // picks the nearest representable value, NaN/Inf preserved).
      uint16_t best = 0;
      if (std::isnan(v)) {
        best = 0x7e00;
      } else if (std::isinf(v)) {
        best = v > 0 ? 0x7c00 : 0xfc00;
      } else {
        double best_err = std::numeric_limits<double>::infinity();
        const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
        // Binary search over the magnitude bit patterns (monotone).
        uint32_t lo = 0, hi = 0x7c00;
        const double a = std::fabs(v);
        while (hi - lo > 1) {
          const uint32_t mid = (lo + hi) / 2;
          if (RefDecodeFloat16(static_cast<uint16_t>(mid)) <= a) lo = mid; else hi = mid;
        }
        for (uint32_t c : {lo, hi}) {
          if (c >= 0x7c00) continue;
          const double err = std::fabs(RefDecodeFloat16(static_cast<uint16_t>(c)) - a);
          if (err < best_err) {
            best_err = err;
            best = static_cast<uint16_t>(c);
          }
        }
        best |= sign;
      }
      std::memcpy(p, &best, 2);
      t.values[i] = RefDecodeFloat16(best);
      break;
    }
    case DType::kBFloat16: {
      const uint16_t h = FloatToBFloat16(static_cast<float>(v));
      std::memcpy(p, &h, 2);
      t.values[i] = RefDecodeBFloat16(h);
      break;
    }
    case DType::kFloat32: {
      const auto x = static_cast<float>(v);
      std::memcpy(p, &x, 4);
      t.values[i] = x;
      break;
    }
    case DType::kFloat64: {
      std::memcpy(p, &v, 8);
      t.values[i] = v;
      break;
    }
    case DType::kUInt16: {
      const auto x = SaturateCast<uint16_t>(v);
      std::memcpy(p, &x, 2);
      t.values[i] = x;
      break;
    }
    case DType::kUInt32: {
      const auto x = SaturateCast<uint32_t>(v);
      std::memcpy(p, &x, 4);
      t.values[i] = x;
      break;
    }
    case DType::kUInt64: {
      const auto x = SaturateCast<uint64_t>(v);
      std::memcpy(p, &x, 8);
      t.values[i] = static_cast<double>(x);  // nearest double beyond 2^53
      break;
    }
  }
}

inline HostTensor MakeTensor(DType dtype, const std::vector<double>& values, Shape shape = {}) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = shape.empty() && values.size() != 1 ? Shape{static_cast<int64_t>(values.size())}
                                                : shape;
  t.bytes.assign(values.size() * DTypeSize(dtype), 0);
  t.values.assign(values.size(), 0);
  for (size_t i = 0; i < values.size(); ++i) SetElement(t, i, values[i]);
  return t;
}

// An integer tensor of `dtype` (whose storage type is T) from exact values,
// for the ones doubles cannot spell (2^64 - 1, 2^63 + 1, ...).
template <typename T>
HostTensor MakeIntTensor(DType dtype, const std::vector<T>& ints) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = Shape{static_cast<int64_t>(ints.size())};
  t.bytes.resize(ints.size() * sizeof(T));
  if (!ints.empty()) std::memcpy(t.bytes.data(), ints.data(), t.bytes.size());
  t.values.resize(ints.size());
  for (size_t i = 0; i < ints.size(); ++i) t.values[i] = static_cast<double>(ints[i]);
  return t;
}

// n values of the unsigned type T: uniform random bits, with 0, 1, max,
// max - 1 and max / 2 + 1 (and 2^53 + 1 for uint64, the first integer a
// double cannot hold) at the start, the middle and the end.
template <typename T>
std::vector<T> UnsignedTestValues(size_t n, uint64_t seed) {
  static_assert(std::is_unsigned_v<T>);
  constexpr T kMax = std::numeric_limits<T>::max();
  std::vector<T> specials = {0, 1, kMax, static_cast<T>(kMax - 1), static_cast<T>(kMax / 2 + 1)};
  if constexpr (sizeof(T) == 8) specials.push_back((T{1} << 53) + 1);
  std::mt19937_64 rng(seed);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(rng());
  for (size_t k = 0; k < specials.size() && n > 0; ++k) {
    v[k % n] = specials[k];
    v[(n / 2 + k) % n] = specials[k];
    v[n - 1 - k % n] = specials[specials.size() - 1 - k];
  }
  return v;
}

// `ref` with some elements moved by one (wrapping), replaced by 0 or max, or
// redrawn; the rest equal.
template <typename T>
std::vector<T> PerturbUnsigned(const std::vector<T>& ref, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<T> c = ref;
  for (T& x : c) {
    switch (rng() % 10) {
      case 5: x = static_cast<T>(x + 1); break;
      case 6: x = static_cast<T>(x - 1); break;
      case 7: x = std::numeric_limits<T>::max(); break;
      case 8: x = 0; break;
      case 9: x = static_cast<T>(rng()); break;
      default: break;
    }
  }
  return c;
}

// A 16-bit float tensor from raw bit patterns.
inline HostTensor MakeHalfTensor(DType dtype, const std::vector<uint16_t>& bits) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = Shape{static_cast<int64_t>(bits.size())};
  t.bytes.resize(bits.size() * 2);
  std::memcpy(t.bytes.data(), bits.data(), t.bytes.size());
  t.values.resize(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    t.values[i] = dtype == DType::kFloat16 ? RefDecodeFloat16(bits[i]) : RefDecodeBFloat16(bits[i]);
  }
  return t;
}

}  // namespace reprod::kernels::testing

#endif  // REPROD_KERNELS_TESTING_REFERENCE_DIFF_H_

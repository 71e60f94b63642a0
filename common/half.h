// File: common/half.h
//
// Exact decoding of IEEE binary16 (float16) and bfloat16 bit patterns to
// float/double. Every float16 and bfloat16 value (subnormals, ±0, ±Inf, NaN)
// is exactly representable as a float, so the decode is lossless. Usable from
// host and device code (REPROD_HOST_DEVICE).
#ifndef REPROD_COMMON_HALF_H_
#define REPROD_COMMON_HALF_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define REPROD_HOST_DEVICE __host__ __device__
#else
#define REPROD_HOST_DEVICE
#endif

namespace reprod {

REPROD_HOST_DEVICE inline float BitsToFloat(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

REPROD_HOST_DEVICE inline uint32_t FloatToBits(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  return bits;
}

// bfloat16 is the upper half of a float32: decoding is a shift.
REPROD_HOST_DEVICE inline float BFloat16ToFloat(uint16_t h) {
  return BitsToFloat(static_cast<uint32_t>(h) << 16);
}

// IEEE binary16 -> float, exact for every input (subnormals renormalised).
REPROD_HOST_DEVICE inline float Float16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) {  // Inf / NaN: keep the payload.
    return BitsToFloat(sign | 0x7f800000u | (mant << 13));
  }
  if (exp != 0) {  // normal
    return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  }
  if (mant == 0) return BitsToFloat(sign);  // ±0
  // Subnormal: value = mant * 2^-24; shift until the hidden bit appears.
  int e = -1;
  do {
    mant <<= 1;
    ++e;
  } while ((mant & 0x400u) == 0);
  mant &= 0x3ffu;
  return BitsToFloat(sign | static_cast<uint32_t>(112 - e) << 23 | (mant << 13));
}

// float -> bfloat16 with round-to-nearest-even (NaN stays NaN). For writers
// and tests; reading never rounds.
REPROD_HOST_DEVICE inline uint16_t FloatToBFloat16(float f) {
  uint32_t bits = FloatToBits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace reprod

#endif  // REPROD_COMMON_HALF_H_

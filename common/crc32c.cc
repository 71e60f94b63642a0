#include "common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace reprod {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;  // 0x1EDC6F41 reflected

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i) {
    for (int s = 1; s < 8; ++s) {
      t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
  return t;
}

constexpr Tables kTables = MakeTables();

// Slicing-by-8 on the raw (pre-inverted) register.
uint32_t ExtendPortable(uint32_t c, const uint8_t* p, size_t n) {
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = kTables[7][lo & 0xFF] ^ kTables[6][(lo >> 8) & 0xFF] ^
        kTables[5][(lo >> 16) & 0xFF] ^ kTables[4][lo >> 24] ^
        kTables[3][hi & 0xFF] ^ kTables[2][(hi >> 8) & 0xFF] ^
        kTables[1][(hi >> 16) & 0xFF] ^ kTables[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return c;
}

// --- Shifting a CRC register past zero bytes ----------------------------
// The raw register after feeding n zero bytes is a linear function (over
// GF(2)) of the register before; it is applied as four 256-entry tables,
// one per byte of the register (Mark Adler's crc32c combination).

using Matrix = std::array<uint32_t, 32>;  // column j: the image of bit j

uint32_t Apply(const Matrix& m, uint32_t v) {
  uint32_t out = 0;
  for (int j = 0; v != 0; ++j, v >>= 1) {
    if (v & 1) out ^= m[j];
  }
  return out;
}

Matrix Square(const Matrix& m) {
  Matrix out{};
  for (int j = 0; j < 32; ++j) out[j] = Apply(m, m[j]);
  return out;
}

// The operator "feed `bytes` zero bytes" (bytes > 0).
Matrix ZerosOperator(size_t bytes) {
  Matrix one_bit{};  // feed one zero bit
  one_bit[0] = kPoly;
  for (int j = 1; j < 32; ++j) one_bit[j] = uint32_t{1} << (j - 1);
  Matrix op = Square(Square(Square(one_bit)));  // one zero byte
  Matrix result{};
  bool have = false;
  for (; bytes != 0; bytes >>= 1, op = Square(op)) {
    if ((bytes & 1) == 0) continue;
    if (!have) {
      result = op;
      have = true;
    } else {
      for (int j = 0; j < 32; ++j) result[j] = Apply(op, result[j]);
    }
  }
  return result;
}

using ShiftTables = std::array<std::array<uint32_t, 256>, 4>;

ShiftTables MakeShiftTables(size_t bytes) {
  const Matrix op = ZerosOperator(bytes);
  ShiftTables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    for (int k = 0; k < 4; ++k) t[k][i] = Apply(op, i << (8 * k));
  }
  return t;
}

uint32_t Shift(const ShiftTables& t, uint32_t c) {
  return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
}

#if defined(__x86_64__)
// Block sizes of the three interleaved streams.
constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;

__attribute__((target("sse4.2"))) uint64_t Crc64Run(uint64_t c, const uint8_t* p,
                                                    size_t n) {
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  return c;
}

// Three independent crc32 streams over consecutive blocks of `block`
// bytes hide the instruction's 3-cycle latency (~3x one stream); their
// registers are joined by shifting past the blocks that follow.
__attribute__((target("sse4.2"))) uint32_t ExtendBlocks3(uint32_t c, const uint8_t** p,
                                                         size_t* n, size_t block,
                                                         const ShiftTables& shift) {
  while (*n >= 3 * block) {
    uint64_t c0 = c, c1 = 0, c2 = 0;
    const uint8_t* a = *p;
    const uint8_t* end = a + block;
    for (; a < end; a += 8) {
      uint64_t v0, v1, v2;
      std::memcpy(&v0, a, 8);
      std::memcpy(&v1, a + block, 8);
      std::memcpy(&v2, a + 2 * block, 8);
      c0 = _mm_crc32_u64(c0, v0);
      c1 = _mm_crc32_u64(c1, v1);
      c2 = _mm_crc32_u64(c2, v2);
    }
    c = Shift(shift, static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1);
    c = Shift(shift, c) ^ static_cast<uint32_t>(c2);
    *p += 3 * block;
    *n -= 3 * block;
  }
  return c;
}

__attribute__((target("sse4.2"))) uint32_t ExtendSse42(uint32_t c,
                                                        const uint8_t* p,
                                                        size_t n) {
  static const ShiftTables* const kLongShift = new ShiftTables(MakeShiftTables(kLong));
  static const ShiftTables* const kShortShift = new ShiftTables(MakeShiftTables(kShort));
  c = ExtendBlocks3(c, &p, &n, kLong, *kLongShift);
  c = ExtendBlocks3(c, &p, &n, kShort, *kShortShift);
  auto c32 = static_cast<uint32_t>(Crc64Run(c, p, n));
  p += n & ~size_t{7};
  n &= 7;
  while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

bool HaveSse42() { return __builtin_cpu_supports("sse4.2"); }
#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  const uint32_t c = ~crc;
#if defined(__x86_64__)
  static const bool sse42 = HaveSse42();
  if (sse42) return ~ExtendSse42(c, p, n);
#endif
  return ~ExtendPortable(c, p, n);
}

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  if (len_b == 0) return crc_a;
  // Callers combine many pieces of one size (blocks of a segment file):
  // the tables for the last size used are kept per thread.
  thread_local uint64_t cached_len = 0;
  thread_local ShiftTables cached;
  if (cached_len != len_b) {
    cached = MakeShiftTables(len_b);
    cached_len = len_b;
  }
  return Shift(cached, crc_a) ^ crc_b;
}

}  // namespace reprod

// File: common/crc32c.h
//
// CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reflected), the checksum every
// tensor carries on the wire and in storage. Same values as RocksDB's,
// google-crc32c's and iSCSI's crc32c:
//
//   uint32_t crc = Crc32c(bytes);                  // one shot
//   uint32_t crc = 0;                              // or incremental:
//   for (chunk : chunks) crc = Crc32cExtend(crc, chunk);
//
// Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run
// time), else a slicing-by-8 table.
//
// Thread-safety: pure functions.
#ifndef REPROD_COMMON_CRC32C_H_
#define REPROD_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace reprod {

// CRC-32C of `crc`'s data followed by [data, data + n). Crc32cExtend(0, ...)
// starts a new checksum.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32cExtend(uint32_t crc, std::string_view data) {
  return Crc32cExtend(crc, data.data(), data.size());
}

inline uint32_t Crc32c(const void* data, size_t n) {
  return Crc32cExtend(0, data, n);
}

inline uint32_t Crc32c(std::string_view data) {
  return Crc32cExtend(0, data.data(), data.size());
}

// CRC-32C of A followed by B, from crc_a = Crc32c(A), crc_b = Crc32c(B) and
// len_b = |B|, without the bytes (Mark Adler's crc32_combine). Lets a writer
// checksum fixed-size blocks once and still know the whole tensor's CRC.
// Costs a table build when len_b differs from this thread's previous call.
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

}  // namespace reprod

#endif  // REPROD_COMMON_CRC32C_H_

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

}  // namespace reprod

#endif  // REPROD_COMMON_CRC32C_H_

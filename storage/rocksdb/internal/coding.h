// File: storage/rocksdb/internal/coding.h
//
// Byte-level encoding of the RocksDB store's keys and values (layouts in
// storage/FORMAT.md): little-endian fixed-width integers and LEB128 varints
// for values, big-endian fixed64 inside keys (so that byte order is numeric
// order), and length-prefixed strings. Decoder reads them back and reports
// truncation or overlong varints by returning false.
//
//   std::string v;
//   PutVarint64(&v, 42);
//   PutLengthPrefixed(&v, "paddle");
//   Decoder d(v);
//   uint64_t n; std::string_view s;
//   if (!d.Varint64(&n) || !d.LengthPrefixed(&s) || !d.done()) /* corrupt */;
//
// Thread-safety: pure functions; a Decoder is used by one thread.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_CODING_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_CODING_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace reprod::storage::internal {

void PutByte(std::string* out, uint8_t value);
void PutFixed32(std::string* out, uint32_t value);  // little-endian
void PutFixed64(std::string* out, uint64_t value);  // little-endian
void PutBigEndian64(std::string* out, uint64_t value);
void PutVarint64(std::string* out, uint64_t value);  // LEB128, 1-10 bytes
void PutLengthPrefixed(std::string* out, std::string_view value);

void EncodeFixed32(char* out, uint32_t value);
uint32_t DecodeFixed32(const char* in);
uint64_t DecodeBigEndian64(const char* in);

// Reads what the Put* functions wrote, front to back. Each getter returns
// false (and leaves the output untouched) when the input is too short or
// malformed; the decoder is then unusable.
class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}

  bool Byte(uint8_t* value);
  bool Fixed32(uint32_t* value);
  bool Fixed64(uint64_t* value);
  bool BigEndian64(uint64_t* value);
  bool Varint64(uint64_t* value);
  bool LengthPrefixed(std::string_view* value);
  // Everything consumed.
  bool done() const { return in_.empty(); }
  std::string_view rest() const { return in_; }

 private:
  std::string_view in_;
};

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_CODING_H_

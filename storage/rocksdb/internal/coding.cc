#include "storage/rocksdb/internal/coding.h"

#include <cstring>

namespace reprod::storage::internal {

void PutByte(std::string* out, uint8_t value) {
  out->push_back(static_cast<char>(value));
}

void EncodeFixed32(char* out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(value >> (8 * i));
}

uint32_t DecodeFixed32(const char* in) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    value |= static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  }
  return value;
}

uint64_t DecodeBigEndian64(const char* in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value = (value << 8) | static_cast<uint8_t>(in[i]);
  return value;
}

void PutFixed32(std::string* out, uint32_t value) {
  char buf[4];
  EncodeFixed32(buf, value);
  out->append(buf, 4);
}

void PutFixed64(std::string* out, uint64_t value) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(value >> (8 * i));
  out->append(buf, 8);
}

void PutBigEndian64(std::string* out, uint64_t value) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(value >> (56 - 8 * i));
  out->append(buf, 8);
}

void PutVarint64(std::string* out, uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

void PutLengthPrefixed(std::string* out, std::string_view value) {
  PutVarint64(out, value.size());
  out->append(value.data(), value.size());
}

bool Decoder::Byte(uint8_t* value) {
  if (in_.empty()) return false;
  *value = static_cast<uint8_t>(in_[0]);
  in_.remove_prefix(1);
  return true;
}

bool Decoder::Fixed32(uint32_t* value) {
  if (in_.size() < 4) return false;
  *value = DecodeFixed32(in_.data());
  in_.remove_prefix(4);
  return true;
}

bool Decoder::Fixed64(uint64_t* value) {
  if (in_.size() < 8) return false;
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
  }
  *value = v;
  in_.remove_prefix(8);
  return true;
}

bool Decoder::BigEndian64(uint64_t* value) {
  if (in_.size() < 8) return false;
  *value = DecodeBigEndian64(in_.data());
  in_.remove_prefix(8);
  return true;
}

bool Decoder::Varint64(uint64_t* value) {
  uint64_t v = 0;
  for (size_t i = 0; i < 10 && i < in_.size(); ++i) {
    const uint64_t byte = static_cast<uint8_t>(in_[i]);
    if (i == 9 && byte > 1) return false;  // more than 64 bits
    v |= (byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      *value = v;
      in_.remove_prefix(i + 1);
      return true;
    }
  }
  return false;
}

bool Decoder::LengthPrefixed(std::string_view* value) {
  Decoder probe = *this;
  uint64_t n;
  if (!probe.Varint64(&n) || n > probe.in_.size()) return false;
  *value = probe.in_.substr(0, n);
  probe.in_.remove_prefix(n);
  *this = probe;
  return true;
}

}  // namespace reprod::storage::internal

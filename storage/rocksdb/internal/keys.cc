#include "storage/rocksdb/internal/keys.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/placement.h"
#include "storage/rocksdb/internal/coding.h"

namespace reprod::storage::internal {
namespace {

constexpr uint64_t kSignBit = uint64_t{1} << 63;
constexpr char kRankTag = '\x02';

void PutBigEndian32(std::string* out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

uint32_t DecodeBigEndian32(const char* in) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value = (value << 8) | static_cast<uint8_t>(in[i]);
  return value;
}

}  // namespace

std::string CounterKey(std::string_view counter) {
  return absl::StrCat("n", std::string(counter));
}

std::string RunKey(std::string_view name) {
  std::string key(1, kRunTag);
  key.append(name);
  return key;
}

std::string RunStatsKey(std::string_view name) {
  std::string key = "s";
  key.append(name);
  return key;
}

std::string TensorPrefix(uint64_t run_id) {
  std::string key(kTensorPrefix);
  PutBigEndian64(&key, run_id);
  return key;
}

std::string CheckpointPrefix(uint64_t run_id, std::string_view checkpoint) {
  std::string key = TensorPrefix(run_id);
  key.append(checkpoint);
  key.push_back('\0');
  return key;
}

std::string TensorKey(uint64_t run_id, const TensorAddress& address) {
  std::string key = CheckpointPrefix(run_id, address.checkpoint);
  key.append(address.key);
  key.push_back('\0');
  if (address.step.has_value()) {
    key.push_back('\x01');
    PutBigEndian64(&key, static_cast<uint64_t>(*address.step) ^ kSignBit);
  } else {
    key.push_back('\0');
  }
  // Rank 0 has no tag: single-process keys are what builds before ranks
  // wrote, and sort before the same address at rank 1, 2, ...
  if (address.rank != 0) {
    key.push_back(kRankTag);
    PutBigEndian32(&key, address.rank);
  }
  return key;
}

absl::StatusOr<TensorAddress> ParseTensorKey(std::string_view key) {
  auto bad = [&] {
    return absl::DataLossError(
        absl::StrCat("malformed tensor index key of ", key.size(), " bytes"));
  };
  if (key.size() < 9 || key[0] != 't') return bad();
  std::string_view rest = key.substr(9);
  const size_t ckpt_end = rest.find('\0');
  if (ckpt_end == std::string_view::npos) return bad();
  TensorAddress address;
  address.checkpoint = std::string(rest.substr(0, ckpt_end));
  rest.remove_prefix(ckpt_end + 1);
  const size_t key_end = rest.find('\0');
  if (key_end == std::string_view::npos) return bad();
  address.key = std::string(rest.substr(0, key_end));
  rest.remove_prefix(key_end + 1);
  if (!rest.empty() && rest[0] == '\0') {
    rest.remove_prefix(1);
  } else if (rest.size() >= 9 && rest[0] == '\x01') {
    address.step =
        static_cast<int64_t>(DecodeBigEndian64(rest.data() + 1) ^ kSignBit);
    rest.remove_prefix(9);
  } else {
    return bad();
  }
  if (rest.empty()) return address;
  // A rank tag is written only for ranks 1 to kMaxRank: a tagged 0 would be
  // a second key for a rank-0 address.
  if (rest.size() != 5 || rest[0] != kRankTag) return bad();
  address.rank = DecodeBigEndian32(rest.data() + 1);
  if (address.rank == 0 || address.rank > kMaxRank) {
    return absl::DataLossError(absl::StrCat(
        "malformed tensor index key of ", key.size(), " bytes: rank tag holds ",
        address.rank, " (written only for ranks 1 to ", kMaxRank, ")"));
  }
  return address;
}

std::string PendingKey(uint64_t blob_id) {
  std::string key(kPendingPrefix);
  PutBigEndian64(&key, blob_id);
  return key;
}

bool ParsePendingKey(std::string_view key, uint64_t* blob_id) {
  if (key.size() != 9 || key[0] != kPendingPrefix[0]) return false;
  *blob_id = DecodeBigEndian64(key.data() + 1);
  return true;
}

std::string ChunkKey(uint64_t run_id, uint64_t blob_id, uint64_t index) {
  std::string key;
  key.reserve(24);
  PutBigEndian64(&key, run_id);
  PutBigEndian64(&key, blob_id);
  PutBigEndian64(&key, index);
  return key;
}

std::string ChunkRunPrefix(uint64_t run_id) {
  std::string key;
  PutBigEndian64(&key, run_id);
  return key;
}

std::string AuthKey(std::string_view key) {
  std::string out(kAuthPrefix);
  out.append(key);
  return out;
}

std::string ReportKey(std::string_view id) {
  std::string key(kReportPrefix);
  key.append(id);
  return key;
}

std::string RenderingPrefix(std::string_view id) {
  std::string key = "r";
  key.append(id);
  key.push_back('\0');
  return key;
}

std::string RenderingKey(std::string_view id, std::string_view format) {
  std::string key = RenderingPrefix(id);
  key.append(format);
  return key;
}

std::string PrefixUpperBound(std::string_view prefix) {
  std::string bound(prefix);
  while (!bound.empty()) {
    const auto last = static_cast<uint8_t>(bound.back());
    if (last != 0xff) {
      bound.back() = static_cast<char>(last + 1);
      return bound;
    }
    bound.pop_back();
  }
  return bound;
}

}  // namespace reprod::storage::internal

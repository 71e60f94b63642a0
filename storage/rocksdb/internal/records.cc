#include "storage/rocksdb/internal/records.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "common/dtype.h"
#include "common/placement.h"
#include "storage/rocksdb/internal/coding.h"

namespace reprod::storage::internal {
namespace {

constexpr std::string_view kFormatMagic = "reprod-store";

absl::Status Corrupt(std::string_view kind, std::string_view why) {
  return absl::DataLossError(absl::StrCat("corrupt ", std::string(kind),
                                          " record: ", std::string(why)));
}

// Consumes and checks the version byte.
absl::Status ReadVersion(Decoder& d, std::string_view kind) {
  uint8_t version;
  if (!d.Byte(&version)) return Corrupt(kind, "empty value");
  if (version != kRecordVersion) {
    return Corrupt(kind, absl::StrCat("unknown version ", version));
  }
  return absl::OkStatus();
}

void PutTime(std::string* out, absl::Time t) {
  PutFixed64(out, static_cast<uint64_t>(absl::ToUnixMicros(t)));
}

bool GetTime(Decoder& d, absl::Time* t) {
  uint64_t micros;
  if (!d.Fixed64(&micros)) return false;
  *t = absl::FromUnixMicros(static_cast<int64_t>(micros));
  return true;
}

bool GetString(Decoder& d, std::string* out) {
  std::string_view s;
  if (!d.LengthPrefixed(&s)) return false;
  *out = std::string(s);
  return true;
}

// The address byte: bit 0 a step follows, bit 1 a rank follows (only for
// rank != 0, so a rank-0 address is what builds before ranks wrote).
constexpr uint8_t kAddressHasStep = 1;
constexpr uint8_t kAddressHasRank = 2;

void PutAddress(std::string* out, const TensorAddress& a) {
  PutLengthPrefixed(out, a.checkpoint);
  PutLengthPrefixed(out, a.key);
  const uint8_t flags = (a.step.has_value() ? kAddressHasStep : 0) |
                        (a.rank != 0 ? kAddressHasRank : 0);
  PutByte(out, flags);
  if (a.step.has_value()) PutFixed64(out, static_cast<uint64_t>(*a.step));
  if (a.rank != 0) PutVarint64(out, a.rank);
}

bool GetAddress(Decoder& d, TensorAddress* a) {
  uint8_t flags;
  if (!GetString(d, &a->checkpoint) || !GetString(d, &a->key) ||
      !d.Byte(&flags) || (flags & ~(kAddressHasStep | kAddressHasRank)) != 0) {
    return false;
  }
  if ((flags & kAddressHasStep) != 0) {
    uint64_t step;
    if (!d.Fixed64(&step)) return false;
    a->step = static_cast<int64_t>(step);
  }
  if ((flags & kAddressHasRank) != 0) {
    uint64_t rank;
    // Rank 0 is written without the bit: a present 0 is damage.
    if (!d.Varint64(&rank) || rank == 0 || rank > kMaxRank) return false;
    a->rank = static_cast<uint32_t>(rank);
  }
  return true;
}

void PutPlacement(std::string* out, const Placement& p) {
  PutByte(out, static_cast<uint8_t>(p.kind));
  PutVarint64(out, static_cast<uint64_t>(static_cast<uint32_t>(p.dim)));
  PutVarint64(out, p.global_shape.size());
  for (int64_t g : p.global_shape) PutVarint64(out, static_cast<uint64_t>(g));
  for (int64_t o : p.offset) PutVarint64(out, static_cast<uint64_t>(o));
}

bool GetDims(Decoder& d, uint64_t n, Shape* out) {
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t v;
    if (!d.Varint64(&v) || v > static_cast<uint64_t>(INT64_MAX)) return false;
    out->push_back(static_cast<int64_t>(v));
  }
  return true;
}

// Reads what PutPlacement wrote; kNone is never written (no flag instead).
bool GetPlacement(Decoder& d, size_t value_size, Placement* p) {
  uint8_t kind;
  uint64_t dim, n;
  if (!d.Byte(&kind) || kind == static_cast<uint8_t>(PlacementKind::kNone) ||
      kind > static_cast<uint8_t>(PlacementKind::kPartial) || !d.Varint64(&dim) ||
      dim > static_cast<uint64_t>(INT32_MAX) || !d.Varint64(&n) || n > value_size) {
    return false;
  }
  p->kind = static_cast<PlacementKind>(kind);
  p->dim = static_cast<int32_t>(dim);
  return GetDims(d, n, &p->global_shape) && GetDims(d, n, &p->offset);
}

}  // namespace

std::string EncodeFormatRecord() {
  std::string out;
  PutByte(&out, kFormatVersion);
  out.append(kFormatMagic);
  return out;
}

absl::Status CheckFormatRecord(std::string_view value) {
  if (value.empty() || value.substr(1) != kFormatMagic) {
    return absl::DataLossError("corrupt format record");
  }
  const auto version = static_cast<uint8_t>(value[0]);
  if (version < kOldestFormatVersion || version > kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store format version ", version,
        " is not readable by this build (reads versions ",
        kOldestFormatVersion, " to ", kFormatVersion, ")"));
  }
  return absl::OkStatus();
}

std::string EncodeCounter(uint64_t next) {
  std::string out;
  PutByte(&out, kRecordVersion);
  PutVarint64(&out, next);
  return out;
}

absl::StatusOr<uint64_t> DecodeCounter(std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "counter"); !s.ok()) return s;
  uint64_t next;
  if (!d.Varint64(&next) || !d.done()) return Corrupt("counter", "bad value");
  return next;
}

std::string EncodeRunRecord(const RunRecord& r) {
  std::string out;
  PutByte(&out, kRecordVersion);
  PutVarint64(&out, r.run_id);
  PutVarint64(&out, r.next_sequence);
  PutByte(&out, static_cast<uint8_t>(r.info.state));
  PutByte(&out, r.info.overwrite ? 1 : 0);
  PutVarint64(&out, r.info.tensor_count);
  PutVarint64(&out, r.info.total_bytes);
  PutTime(&out, r.info.created);
  PutLengthPrefixed(&out, r.info.framework);
  PutLengthPrefixed(&out, r.info.framework_version);
  PutLengthPrefixed(&out, r.info.device);
  PutLengthPrefixed(&out, r.info.owner);
  PutVarint64(&out, r.info.labels.size());
  for (const auto& [k, v] : r.info.labels) {
    PutLengthPrefixed(&out, k);
    PutLengthPrefixed(&out, v);
  }
  // Optional trailer, written only when non-zero so that a run without flags
  // stays readable by builds that predate it.
  const uint64_t flags = r.info.reference ? kRunFlagReference : 0;
  if (flags != 0) PutVarint64(&out, flags);
  return out;
}

absl::StatusOr<RunRecord> DecodeRunRecord(std::string_view name,
                                          std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "run"); !s.ok()) return s;
  RunRecord r;
  r.info.name = std::string(name);
  uint8_t state, overwrite;
  uint64_t labels;
  if (!d.Varint64(&r.run_id) || !d.Varint64(&r.next_sequence) ||
      !d.Byte(&state) || state > static_cast<uint8_t>(RunState::kAborted) ||
      !d.Byte(&overwrite) || overwrite > 1 ||
      !d.Varint64(&r.info.tensor_count) || !d.Varint64(&r.info.total_bytes) ||
      !GetTime(d, &r.info.created) || !GetString(d, &r.info.framework) ||
      !GetString(d, &r.info.framework_version) ||
      !GetString(d, &r.info.device) || !GetString(d, &r.info.owner) ||
      !d.Varint64(&labels) || labels > value.size()) {
    return Corrupt("run", "truncated or out-of-range field");
  }
  r.info.state = static_cast<RunState>(state);
  r.info.overwrite = overwrite == 1;
  for (uint64_t i = 0; i < labels; ++i) {
    std::string k, v;
    if (!GetString(d, &k) || !GetString(d, &v)) {
      return Corrupt("run", "truncated label");
    }
    r.info.labels.emplace(std::move(k), std::move(v));
  }
  if (!d.done()) {
    uint64_t flags = 0;
    // Zero is never written (no trailer instead), so it is damage too.
    if (!d.Varint64(&flags) || flags == 0 ||
        (flags & ~kRunFlagReference) != 0) {
      return Corrupt("run", "unknown flags");
    }
    r.info.reference = (flags & kRunFlagReference) != 0;
  }
  if (!d.done()) return Corrupt("run", "trailing bytes");
  return r;
}

std::string EncodeRunStats(const RunStats& stats) {
  std::string out;
  PutByte(&out, kRecordVersion);
  PutVarint64(&out, stats.run_id);
  PutVarint64(&out, stats.next_sequence);
  PutVarint64(&out, stats.tensor_count);
  PutVarint64(&out, stats.total_bytes);
  return out;
}

absl::StatusOr<RunStats> DecodeRunStats(std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "run stats"); !s.ok()) return s;
  RunStats stats;
  if (!d.Varint64(&stats.run_id) || !d.Varint64(&stats.next_sequence) ||
      !d.Varint64(&stats.tensor_count) || !d.Varint64(&stats.total_bytes) ||
      !d.done()) {
    return Corrupt("run stats", "truncated or trailing bytes");
  }
  return stats;
}

RunStats StatsOf(const RunRecord& record) {
  return RunStats{record.run_id, record.next_sequence,
                  record.info.tensor_count, record.info.total_bytes};
}

absl::Status ApplyRunStats(std::string_view value, RunRecord& record) {
  absl::StatusOr<RunStats> stats = DecodeRunStats(value);
  if (!stats.ok()) {
    return absl::DataLossError(absl::StrCat(
        "run ", record.info.name, ": ", stats.status().message()));
  }
  // DeleteRun removes both records in one batch and CreateRun writes both,
  // so stats of another run id are damage, not a leftover.
  if (stats->run_id != record.run_id) {
    return absl::DataLossError(absl::StrCat(
        "run ", record.info.name, ": corrupt run stats record: it counts run id ",
        stats->run_id, ", the run record has id ", record.run_id));
  }
  record.next_sequence = stats->next_sequence;
  record.info.tensor_count = stats->tensor_count;
  record.info.total_bytes = stats->total_bytes;
  return absl::OkStatus();
}

std::string EncodeIndexEntry(const IndexEntry& e) {
  std::string out;
  PutByte(&out, kRecordVersion);
  PutByte(&out, static_cast<uint8_t>(e.header.dtype));
  PutVarint64(&out, e.header.shape.size());
  for (int64_t dim : e.header.shape)
    PutVarint64(&out, static_cast<uint64_t>(dim));
  PutVarint64(&out, e.header.byte_length);
  PutFixed32(&out, e.header.crc32c);
  PutVarint64(&out, e.sequence);
  PutVarint64(&out, e.blob_id);
  PutVarint64(&out, e.chunk_size);
  // Only when non-zero: an entry of a chunked tensor without a placement is
  // byte-identical to what builds before segment files wrote.
  const bool has_placement = e.header.placement.kind != PlacementKind::kNone;
  const uint64_t flags = (e.in_segment ? kIndexFlagSegment : 0) |
                         (has_placement ? kIndexFlagPlacement : 0);
  if (flags != 0) PutVarint64(&out, flags);
  if (has_placement) PutPlacement(&out, e.header.placement);
  return out;
}

absl::StatusOr<IndexEntry> DecodeIndexEntry(const TensorAddress& address,
                                            std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "tensor index"); !s.ok()) return s;
  IndexEntry e;
  e.header.address = address;
  uint8_t dtype;
  uint64_t rank;
  if (!d.Byte(&dtype) || dtype >= kNumDTypes || !d.Varint64(&rank) ||
      rank > value.size()) {
    return Corrupt("tensor index", "bad dtype or rank");
  }
  e.header.dtype = static_cast<DType>(dtype);
  for (uint64_t i = 0; i < rank; ++i) {
    uint64_t dim;
    if (!d.Varint64(&dim) || dim > static_cast<uint64_t>(INT64_MAX)) {
      return Corrupt("tensor index", "bad dimension");
    }
    e.header.shape.push_back(static_cast<int64_t>(dim));
  }
  if (!d.Varint64(&e.header.byte_length) || !d.Fixed32(&e.header.crc32c) ||
      !d.Varint64(&e.sequence) || !d.Varint64(&e.blob_id) ||
      !d.Varint64(&e.chunk_size)) {
    return Corrupt("tensor index", "truncated");
  }
  if (!d.done()) {
    uint64_t flags;
    // Zero is never written (no flags instead), so it is damage too.
    if (!d.Varint64(&flags) || flags == 0 ||
        (flags & ~(kIndexFlagSegment | kIndexFlagPlacement)) != 0) {
      return Corrupt("tensor index", "bad flags");
    }
    e.in_segment = (flags & kIndexFlagSegment) != 0;
    if ((flags & kIndexFlagPlacement) != 0) {
      if (!GetPlacement(d, value.size(), &e.header.placement)) {
        return Corrupt("tensor index", "bad placement");
      }
      if (absl::Status s = ValidatePlacement(e.header.placement, e.header.shape);
          !s.ok()) {
        return Corrupt("tensor index", std::string(s.message()));
      }
    }
    if (!d.done()) return Corrupt("tensor index", "trailing bytes");
  }
  if (e.chunk_size == 0 && e.header.byte_length != 0) {
    return Corrupt("tensor index", "zero chunk size");
  }
  return e;
}

std::string EncodePendingMarker(uint64_t run_id) {
  std::string out;
  PutByte(&out, kRecordVersion);
  PutVarint64(&out, run_id);
  return out;
}

absl::StatusOr<uint64_t> DecodePendingMarker(std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "pending upload"); !s.ok()) return s;
  uint64_t run_id;
  if (!d.Varint64(&run_id) || !d.done()) {
    return Corrupt("pending upload", "bad value");
  }
  return run_id;
}

void EncodeChunkHeader(uint32_t payload_crc, char out[kChunkHeaderSize]) {
  out[0] = static_cast<char>(kRecordVersion);
  EncodeFixed32(out + 1, payload_crc);
}

absl::StatusOr<std::string_view> DecodeChunk(std::string_view value,
                                             uint64_t expected_size) {
  if (value.size() < kChunkHeaderSize) {
    return Corrupt("chunk", absl::StrCat("value of ", value.size(), " bytes"));
  }
  if (static_cast<uint8_t>(value[0]) != kRecordVersion) {
    return Corrupt("chunk", absl::StrCat("unknown version ",
                                         static_cast<uint8_t>(value[0])));
  }
  const std::string_view payload = value.substr(kChunkHeaderSize);
  if (payload.size() != expected_size) {
    return absl::DataLossError(absl::StrCat(
        "chunk holds ", payload.size(), " bytes, expected ", expected_size));
  }
  const uint32_t stored = DecodeFixed32(value.data() + 1);
  const uint32_t actual = Crc32c(payload);
  if (stored != actual) {
    return absl::DataLossError(absl::StrFormat(
        "chunk fails its checksum (stored crc32c 0x%08x, computed 0x%08x)",
        stored, actual));
  }
  return payload;
}

std::string EncodeReportSummary(const StoredReport& r) {
  std::string out;
  PutByte(&out, kRecordVersion);
  PutLengthPrefixed(&out, r.ref);
  PutLengthPrefixed(&out, r.cand);
  PutLengthPrefixed(&out, r.policy);
  PutLengthPrefixed(&out, r.backend);
  PutByte(&out, r.passed ? 1 : 0);
  PutTime(&out, r.created);
  for (uint64_t n : {r.tensors, r.passed_tensors, r.warned, r.failed,
                     r.missing_in_ref, r.missing_in_cand}) {
    PutVarint64(&out, n);
  }
  PutByte(&out, r.first_failure.has_value() ? 1 : 0);
  if (r.first_failure.has_value()) PutAddress(&out, *r.first_failure);
  // Optional trailing field (absent in reports written before it existed).
  if (!r.policy_hash.empty()) PutLengthPrefixed(&out, r.policy_hash);
  return out;
}

absl::StatusOr<StoredReport> DecodeReportSummary(std::string_view id,
                                                 std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "report"); !s.ok()) return s;
  StoredReport r;
  r.id = std::string(id);
  uint8_t passed, has_failure;
  if (!GetString(d, &r.ref) || !GetString(d, &r.cand) ||
      !GetString(d, &r.policy) || !GetString(d, &r.backend) ||
      !d.Byte(&passed) || passed > 1 || !GetTime(d, &r.created) ||
      !d.Varint64(&r.tensors) || !d.Varint64(&r.passed_tensors) ||
      !d.Varint64(&r.warned) || !d.Varint64(&r.failed) ||
      !d.Varint64(&r.missing_in_ref) || !d.Varint64(&r.missing_in_cand) ||
      !d.Byte(&has_failure) || has_failure > 1) {
    return Corrupt("report", "truncated or out-of-range field");
  }
  r.passed = passed == 1;
  if (has_failure == 1) {
    TensorAddress a;
    if (!GetAddress(d, &a)) return Corrupt("report", "bad first_failure");
    r.first_failure = std::move(a);
  }
  if (!d.done() && (!GetString(d, &r.policy_hash) || r.policy_hash.empty())) {
    return Corrupt("report", "bad policy_hash");
  }
  if (!d.done()) return Corrupt("report", "trailing bytes");
  return r;
}

std::string EncodeRendering(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 1);
  PutByte(&out, kRecordVersion);
  out.append(text);
  return out;
}

std::string EncodeAuthRecord(std::string_view value) {
  std::string out;
  out.reserve(value.size() + 1);
  PutByte(&out, kRecordVersion);
  out.append(value);
  return out;
}

absl::StatusOr<std::string> DecodeAuthRecord(std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "auth record"); !s.ok()) return s;
  return std::string(d.rest());
}

absl::StatusOr<std::string> DecodeRendering(std::string_view value) {
  Decoder d(value);
  if (absl::Status s = ReadVersion(d, "rendering"); !s.ok()) return s;
  return std::string(d.rest());
}

}  // namespace reprod::storage::internal

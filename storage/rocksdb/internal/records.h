// File: storage/rocksdb/internal/records.h
//
// Values of the RocksDB store (storage/FORMAT.md). Every value starts with
// the format version byte kRecordVersion; decoders return DataLoss for an
// unknown version, a truncated or overlong value, or an out-of-range field,
// with a message naming the record kind (callers add the run or address).
//
//   std::string v = EncodeRunRecord(record);
//   REPROD_ASSIGN_OR_RETURN(RunRecord back, DecodeRunRecord(name, v));
//
// Thread-safety: pure functions.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_RECORDS_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_RECORDS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/store.h"

namespace reprod::storage::internal {

inline constexpr uint8_t kRecordVersion = 1;

// meta 'f': the layout version of the whole store (its first byte; the
// value bytes of all other records stay kRecordVersion). Version 2 added the
// run stats record: an older build would read stale counters from the run
// record, so it must refuse such a store; this build reads version 1 stores
// and rewrites the format record to version 2 when it opens them writable.
//
// Version 3 added segment files (a tensor's bytes in a file of its own, the
// index entry's location flag): an older build would find no chunks for
// such a tensor, so it must refuse the store. Version 1 and 2 stores are
// read as they are and rewritten to version 3 when opened writable.
inline constexpr uint8_t kFormatVersion = 3;
inline constexpr uint8_t kOldestFormatVersion = 1;
std::string EncodeFormatRecord();  // of kFormatVersion
// FailedPrecondition when the store was written by an unknown layout.
absl::Status CheckFormatRecord(std::string_view value);

// meta 'n': a counter (the next id to hand out).
std::string EncodeCounter(uint64_t next);
absl::StatusOr<uint64_t> DecodeCounter(std::string_view value);

// meta 'r': a run. The name lives in the key.
struct RunRecord {
  uint64_t run_id = 0;         // internal id, keys the run's tensors/chunks
  uint64_t next_sequence = 0;  // sequence of the next committed tensor
  RunInfo info;
};
std::string EncodeRunRecord(const RunRecord& record);
absl::StatusOr<RunRecord> DecodeRunRecord(std::string_view name,
                                          std::string_view value);

// Bits of the run record's optional trailing flags field (FORMAT.md).
inline constexpr uint64_t kRunFlagReference = 1;

// meta 's': the counters of a run that every commit changes. They live apart
// from the run record so that a commit rewrites a few bytes, not the run's
// metadata (up to 64 KiB of labels). The run record keeps a copy as of its
// last write; a run without a stats record (format version 1) counts with
// that copy.
struct RunStats {
  uint64_t run_id = 0;  // the run they belong to (checked against the record)
  uint64_t next_sequence = 0;
  uint64_t tensor_count = 0;
  uint64_t total_bytes = 0;
};
std::string EncodeRunStats(const RunStats& stats);
absl::StatusOr<RunStats> DecodeRunStats(std::string_view value);
// The counters of `record` (after ApplyRunStats: the current ones).
RunStats StatsOf(const RunRecord& record);
// Decodes a stats value into `record`'s counters; DataLoss when it is corrupt
// or belongs to another run id (message names the run).
absl::Status ApplyRunStats(std::string_view value, RunRecord& record);

// meta 't': a committed tensor. The address lives in the key.
struct IndexEntry {
  TensorHeader header;
  uint64_t sequence = 0;
  uint64_t blob_id = 0;     // its chunks: ChunkKey(run_id, blob_id, i)
  uint64_t chunk_size = 0;  // bytes per chunk (the last one may be shorter)
  // The bytes are in the segment file named by blob_id (segment_file.h),
  // not in chunks; chunk_size is then the file's checksum block size.
  bool in_segment = false;

  uint64_t num_chunks() const {
    if (in_segment) return 0;
    return chunk_size == 0 ? 0
                           : (header.byte_length + chunk_size - 1) / chunk_size;
  }
};
// The index entry's optional trailing flags field (FORMAT.md): written only
// when non-zero. Bit 0: the tensor is in a segment file; bit 1: its
// placement (kind other than kNone) follows the flags.
inline constexpr uint64_t kIndexFlagSegment = 1;
inline constexpr uint64_t kIndexFlagPlacement = 2;
std::string EncodeIndexEntry(const IndexEntry& entry);
absl::StatusOr<IndexEntry> DecodeIndexEntry(const TensorAddress& address,
                                            std::string_view value);

// meta 'p': an upload in progress. Value: the run id its chunks live under.
std::string EncodePendingMarker(uint64_t run_id);
absl::StatusOr<uint64_t> DecodePendingMarker(std::string_view value);

// chunks: version byte, crc32c of the payload (fixed32), payload.
inline constexpr size_t kChunkHeaderSize = 5;
void EncodeChunkHeader(uint32_t payload_crc, char out[kChunkHeaderSize]);
// The payload of a chunk value after checking its version, its size
// (expected_size) and its crc32c; DataLoss describing the mismatch otherwise.
absl::StatusOr<std::string_view> DecodeChunk(std::string_view value,
                                             uint64_t expected_size);

// reports 's': everything but id (in the key) and renderings.
std::string EncodeReportSummary(const StoredReport& report);
absl::StatusOr<StoredReport> DecodeReportSummary(std::string_view id,
                                                 std::string_view value);
// meta 'a': an auth record (version byte, then the value's bytes).
std::string EncodeAuthRecord(std::string_view value);
absl::StatusOr<std::string> DecodeAuthRecord(std::string_view value);

// reports 'r': one rendering.
std::string EncodeRendering(std::string_view text);
absl::StatusOr<std::string> DecodeRendering(std::string_view value);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_RECORDS_H_

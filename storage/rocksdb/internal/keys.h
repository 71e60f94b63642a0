// File: storage/rocksdb/internal/keys.h
//
// Keys of the RocksDB store's three column families (storage/FORMAT.md).
// Each family's keys start with a one-byte tag, except "chunks" which holds
// only chunk keys; numbers inside keys are big-endian so that prefix scans
// come back in numeric order.
//
//   meta:    'f'                                   format record
//            'n' counter-name                      counters
//            'r' run-name                          run record
//            's' run-name                          run stats (counters)
//            't' run-id:be64 address               tensor index entry
//            'p' blob-id:be64                      pending upload marker
//            'a' auth-key                          auth record (server/auth)
//   chunks:  run-id:be64 blob-id:be64 index:be64   one chunk of a tensor
//   reports: 's' report-id                         report summary
//            'r' report-id 0x00 format             one rendering
//
// An address encodes as  checkpoint 0x00 key 0x00 step-tag [rank-tag]
// where step-tag is 0x00 (no step) or 0x01 followed by the step as
// big-endian fixed64 with its sign bit flipped (so negative steps sort
// first), and rank-tag, present only for rank != 0, is 0x02 followed by the
// rank as big-endian fixed32 (rank-0 keys are those of builds before ranks;
// keys sort by checkpoint, key, step, rank). Names hold no NUL byte
// (common/names.h), which keeps the encoding unambiguous.
//
// Thread-safety: pure functions.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_KEYS_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_KEYS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/store.h"

namespace reprod::storage::internal {

// --- meta -----------------------------------------------------------------
inline constexpr std::string_view kFormatKey = "f";
std::string CounterKey(std::string_view counter);  // "blob", "run"
std::string RunKey(std::string_view name);         // also a ListRuns prefix
inline constexpr char kRunTag = 'r';
// The counters commits update (records.h RunStats); also a ListRuns prefix.
std::string RunStatsKey(std::string_view name);
std::string TensorKey(uint64_t run_id, const TensorAddress& address);
// All index entries of a run; TensorPrefix(run_id + 1) bounds them above.
std::string TensorPrefix(uint64_t run_id);
// All index entries of every run.
inline constexpr std::string_view kTensorPrefix = "t";
// Index entries of one checkpoint of a run.
std::string CheckpointPrefix(uint64_t run_id, std::string_view checkpoint);
// Inverse of TensorKey; DataLoss on a malformed key (a rank tag holding 0
// or a rank above kMaxRank included).
absl::StatusOr<TensorAddress> ParseTensorKey(std::string_view key);
std::string PendingKey(uint64_t blob_id);
inline constexpr std::string_view kPendingPrefix = "p";
// Blob id of a PendingKey; false on a malformed key.
bool ParsePendingKey(std::string_view key, uint64_t* blob_id);

// Auth records (Store::PutAuthRecord); AuthKey(prefix) is a scan prefix.
std::string AuthKey(std::string_view key);
inline constexpr std::string_view kAuthPrefix = "a";

// --- chunks ---------------------------------------------------------------
std::string ChunkKey(uint64_t run_id, uint64_t blob_id, uint64_t index);
// All chunks of a run: [ChunkRunPrefix(id), ChunkRunPrefix(id + 1)).
std::string ChunkRunPrefix(uint64_t run_id);

// --- reports --------------------------------------------------------------
std::string ReportKey(std::string_view id);
inline constexpr std::string_view kReportPrefix = "s";
std::string RenderingPrefix(std::string_view id);
std::string RenderingKey(std::string_view id, std::string_view format);

// The smallest key greater than every key starting with `prefix` ("" when
// there is none: prefix is all 0xff bytes).
std::string PrefixUpperBound(std::string_view prefix);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_KEYS_H_

// File: storage/rocksdb/internal/rocksdb_store_impl.h
//
// RocksDbStore: the Store behind OpenRocksDbStore(), shared by the tensor
// writer and reader (internal/tensor_writer.h, internal/tensor_reader.h) and
// the test hooks. Not part of the storage API.
//
// Locking: mu_ serialises every read-check-write of run records, the tensor
// index and the id counters (CreateRun, SealRun, DeleteRun, StartUpload,
// CommitUpload). Chunk writes and all reads run without it. The commit
// critical section reads the run (record and stats) and the index entry and
// writes one small batch (the run's stats, never its metadata); the only
// chunk data written under it is a tail of at most kMaxInlineTail bytes.
//
// Thread-safety: as storage/store.h.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_ROCKSDB_STORE_IMPL_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_ROCKSDB_STORE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "rocksdb/db.h"
#include "storage/rocksdb/internal/records.h"
#include "storage/rocksdb/internal/segment_file.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "storage/store.h"

namespace reprod::storage::internal {

// A tail chunk this small is written inside the commit batch (so a tensor
// that fits in it costs one write and no pending marker); a larger one is
// written before the commit, outside the lock.
inline constexpr size_t kMaxInlineTail = 64 << 10;

// What a writer hands to CommitUpload.
struct UploadCommit {
  std::string_view run;
  uint64_t run_id = 0;
  const TensorHeader* header = nullptr;  // verified length and crc32c
  uint64_t chunk_size = 0;
  // An identical tensor was stored at BeginTensor; no bytes were kept.
  bool verify_only = false;
  // Set once StartUpload recorded a pending marker; chunks [0,
  // chunks_written) exist under it.
  std::optional<uint64_t> blob_id;
  uint64_t chunks_written = 0;
  // The bytes are in the segment file of blob_id, finished (fdatasync'd,
  // its directory entry synced): no chunks.
  bool in_segment = false;
  // The final chunk, written in the commit batch (empty: none).
  absl::Span<const uint8_t> tail;
};

class RocksDbStore final : public Store {
 public:
  static absl::StatusOr<std::unique_ptr<RocksDbStore>> Open(
      const std::string& dir, const RocksDbStoreOptions& options);
  ~RocksDbStore() override;

  RocksDbStore(const RocksDbStore&) = delete;
  RocksDbStore& operator=(const RocksDbStore&) = delete;

  // Store.
  absl::Status CreateRun(const RunInfo& run) override;
  absl::StatusOr<RunInfo> GetRun(std::string_view name) override;
  absl::StatusOr<std::vector<RunInfo>> ListRuns(
      std::string_view prefix) override;
  absl::StatusOr<RunInfo> SealRun(std::string_view name,
                                  RunState final_state) override;
  absl::StatusOr<uint64_t> DeleteRun(std::string_view name) override;
  absl::StatusOr<RunInfo> SetRunReference(std::string_view name,
                                          bool reference) override;
  absl::StatusOr<std::unique_ptr<TensorWriter>> BeginTensor(
      std::string_view run, const TensorHeader& header) override;
  absl::StatusOr<std::vector<TensorMeta>> ListTensors(
      std::string_view run, std::string_view checkpoint) override;
  absl::StatusOr<std::unique_ptr<TensorReader>> OpenTensor(
      std::string_view run, const TensorAddress& address) override;
  absl::Status PutReport(const StoredReport& report) override;
  absl::StatusOr<StoredReport> GetReport(std::string_view id) override;
  absl::StatusOr<std::vector<StoredReport>> ListReports(std::string_view run,
                                                        size_t limit) override;
  absl::Status InsertAuthRecord(std::string_view key,
                                std::string_view value) override;
  absl::Status PutAuthRecord(std::string_view key,
                             std::string_view value) override;
  absl::StatusOr<std::string> GetAuthRecord(std::string_view key) override;
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
  ListAuthRecords(std::string_view prefix) override;
  // rocksdb_store_maintenance.cc: a checkpoint; a manual compaction.
  absl::StatusOr<BackupInfo> Backup(const std::string& dir) override;
  absl::StatusOr<CompactInfo> Compact() override;

  // --- for writers --------------------------------------------------------
  // Allocates a blob id for an upload into run `run_id` and records its
  // pending marker (not synced: chunks go through the WAL after it, and a
  // segment file that outlives a lost marker is deleted by the next open,
  // which keeps only files the index names).
  absl::StatusOr<uint64_t> StartUpload(uint64_t run_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Re-checks the run and the address and publishes the tensor in one synced
  // batch (see storage/store.h for the outcomes).
  absl::StatusOr<CommitResult> CommitUpload(const UploadCommit& upload)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Best effort: deletes an abandoned upload's chunks (or segment file) and
  // marker.
  void AbandonUpload(uint64_t run_id, uint64_t blob_id, uint64_t chunks,
                     bool in_segment);
  // Deletes segment files whose tensors are gone (after the batch that
  // removed their index entries). While a backup links segment files the
  // deletions wait until it is done, so that the backup's index never names
  // a file it could not link.
  void RemoveSegments(const std::vector<uint64_t>& blob_ids)
      ABSL_LOCKS_EXCLUDED(unlink_mu_);
  // Gives back the bytes ReserveSpace reserved for a writer (its destructor).
  void ReleaseSpace(uint64_t bytes) { reserved_bytes_.fetch_sub(bytes); }
  // Remembers a failed write: after ENOSPC RocksDB refuses writes until
  // DB::Resume(), which the next ReserveSpace with enough free space calls.
  void NoteWriteError(const rocksdb::Status& s) {
    if (s.IsNoSpace()) needs_resume_.store(true);
  }

  // --- for readers, writers and test hooks --------------------------------
  // The run record with its current counters (the stats record merged in,
  // read at one sequence number); NotFound when there is none.
  absl::StatusOr<RunRecord> ReadRun(std::string_view name,
                                    const rocksdb::Snapshot* snapshot);
  // The index entry at `address`, nullopt when there is none.
  absl::StatusOr<std::optional<IndexEntry>> ReadIndex(
      uint64_t run_id, const TensorAddress& address,
      const rocksdb::Snapshot* snapshot);

  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* meta() const { return meta_; }
  rocksdb::ColumnFamilyHandle* chunks() const { return chunks_; }
  SegmentDirectory& segments() { return segments_; }
  const RocksDbStoreOptions& options() const { return options_; }

 private:
  RocksDbStore(std::string dir, const RocksDbStoreOptions& options)
      : dir_(std::move(dir)), options_(options) {}

  absl::Status Init(const rocksdb::DBOptions& db_options,
                    const std::vector<rocksdb::ColumnFamilyDescriptor>& cfs);
  absl::Status CheckFormat();
  absl::Status LoadCounters() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status RecoverPendingUploads();
  // Blob ids of segment files that index entries (and, with
  // `with_pending`, pending markers) name, read at `snapshot`.
  absl::StatusOr<std::vector<uint64_t>> LiveSegments(const rocksdb::Snapshot* snapshot,
                                                     bool with_pending);
  // Deletes segment files nothing names: at open every unnamed file; while
  // serving (Compact) only files of blob ids handed out before the scan.
  // Returns the number deleted.
  absl::StatusOr<uint64_t> SweepSegments(bool at_open) ABSL_LOCKS_EXCLUDED(mu_);
  // A reader of a tensor in a segment file; NotFound when the tensor was
  // deleted since `entry` was read, DataLoss when its file is missing.
  absl::StatusOr<std::unique_ptr<TensorReader>> OpenSegmentTensor(std::string_view run,
                                                                  uint64_t run_id,
                                                                  const IndexEntry& entry);
  // Appends the blob ids of the segment files that index entries under
  // `prefix` name, read at `snapshot` (nullptr: now).
  absl::Status AddSegments(std::string_view prefix, const rocksdb::Snapshot* snapshot,
                           std::vector<uint64_t>& ids);
  // The segment files of a run's tensors (DeleteRun).
  absl::StatusOr<std::vector<uint64_t>> RunSegments(uint64_t run_id);
  // Adds the deletion of chunks [0, count) of a blob to `batch`.
  void DeleteChunks(rocksdb::WriteBatch& batch, uint64_t run_id,
                    uint64_t blob_id, uint64_t count);
  absl::Status Write(rocksdb::WriteBatch& batch, bool sync,
                     std::string_view context);
  // Bytes free for this process on the directory's filesystem.
  absl::StatusOr<uint64_t> FreeBytes() const;
  // After a write met ENOSPC: DB::Resume() once min_free_bytes are free
  // again (ResourceExhausted naming free bytes before that). OK at once
  // when no write failed; ResourceExhausted when the store was opened
  // read-only on a full disk.
  absl::Status MaybeResume() ABSL_LOCKS_EXCLUDED(resume_mu_);
  // Reserves header.byte_length bytes of the directory's filesystem for a
  // writer when min_free_bytes stay free after it and after every other
  // writer's reservation; ResourceExhausted naming the run, tensor, free and
  // needed bytes otherwise. Calls MaybeResume() first.
  absl::Status ReserveSpace(std::string_view run, const TensorHeader& header);

  const std::string dir_;
  const RocksDbStoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned; closed first
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* chunks_ = nullptr;
  rocksdb::ColumnFamilyHandle* reports_ = nullptr;

  absl::Mutex mu_;
  uint64_t next_run_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_blob_id_ ABSL_GUARDED_BY(mu_) = 1;

  // Opened with DB::OpenForReadOnly because the disk was full: every write
  // is ResourceExhausted. Set by Init only.
  bool read_only_ = false;
    // Bytes of tensors being written (ReserveSpace .. ReleaseSpace).
  std::atomic<uint64_t> reserved_bytes_{0};
  // A write met ENOSPC; DB::Resume() is due once space is back.
  std::atomic<bool> needs_resume_{false};
  absl::Mutex resume_mu_;  // one DB::Resume() at a time
  absl::Mutex auth_insert_mu_;  // InsertAuthRecord's look-then-put
  SegmentDirectory segments_{dir_ + "/segments"};
  absl::Mutex unlink_mu_;
  int backups_running_ ABSL_GUARDED_BY(unlink_mu_) = 0;
  std::vector<uint64_t> deferred_unlinks_ ABSL_GUARDED_BY(unlink_mu_);
};

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_ROCKSDB_STORE_IMPL_H_

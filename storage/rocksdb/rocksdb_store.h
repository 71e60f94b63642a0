// File: storage/rocksdb/rocksdb_store.h
//
// The embedded Store: RocksDB in a local directory (layout in
// storage/FORMAT.md). No RocksDB type appears here.
//
//   RocksDbStoreOptions options;              // 1 MiB chunks, synced commits
//   REPROD_ASSIGN_OR_RETURN(std::unique_ptr<Store> store,
//                           OpenRocksDbStore("/var/lib/reprod", options));
//
// Layout: three column families. "meta" holds run records, the tensor index,
// pending-upload markers and id counters; "chunks" holds the bytes of
// tensors under segment_tensor_bytes in values of chunk_size bytes (blob
// files, no compression); "reports" holds reports. Larger tensors have a
// segment file each in `segments/`. A tensor's chunks are written as they arrive (only the partial
// tail is buffered, so memory stays bounded for tensors of any size); Commit
// publishes the index entry and the run's new counts in one write batch,
// synced to the WAL, which also makes the earlier chunk writes durable.
//
// Crash safety: an upload records a pending marker before its first chunk
// write or segment file. A writer destroyed without Commit deletes its
// chunks (or file) and marker; after a crash, opening the store deletes the
// chunks of every marker left behind and every segment file no index entry
// names. Nothing half-written is ever visible.
//
// Integrity: every chunk carries its own crc32c, checked on each read
// (DataLoss naming the run, tensor and chunk on mismatch); every record
// starts with a format version byte.
//
// Performance: a byte of a small tensor passes RocksDB's crc32c twice (WAL
// record, blob record); Debian's portable librocksdb computes it in software
// (about 1 GB/s). Segment files (segment_tensor_bytes) avoid both for large
// tensors. Reads skip RocksDB's blob checksum (each
// chunk's own crc32c is checked with SSE4.2). RocksDB allocates a fresh
// buffer per blob read; with glibc's default malloc settings those are
// mmap'd and page-faulted every time, so a process that streams tensors
// should raise M_MMAP_THRESHOLD / M_TRIM_THRESHOLD (mallopt) — measured
// 0.6 → 2.7-3.2 GB/s for reads of 1 MiB chunks.
//
// Errors: opening a directory that another process (or another store in
// this process) holds → FailedPrecondition naming the directory; RocksDB
// faults → Unavailable (I/O) or Internal, with RocksDB's message.
//
// Full disk: BeginTensor refuses tensors before the filesystem fills
// (min_free_bytes); a write that still meets ENOSPC (another process filled
// the disk) answers ResourceExhausted ("disk full: ..."), and RocksDB stops
// writing. ENOSPC in a background flush of a memtable into a blob file
// stops writes the same way; the flushed bytes stay in the WAL, so nothing
// acknowledged is lost, and the log (error) says which write met the full
// disk. The next write that finds min_free_bytes (at least 1 MiB) free again
// calls DB::Resume(), which flushes the memtables: ingest continues once
// space is freed, without a restart (until then each try answers
// ResourceExhausted with the free bytes and why resuming failed).
// Opening on a full disk (RocksDB must flush the recovered WAL) falls back
// to a read-only store: reads are served, every write is ResourceExhausted
// until the process reopens it with space free; the log says so (error).
// RocksDB's info log goes to spdlog ("rocksdb DIR: ..."), not to a LOG file.
//
// Thread-safety: as storage/store.h. TensorWriters and TensorReaders must be
// destroyed before the store. Only one store may have a directory open.
#ifndef REPROD_STORAGE_ROCKSDB_ROCKSDB_STORE_H_
#define REPROD_STORAGE_ROCKSDB_ROCKSDB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "storage/store.h"

namespace reprod::storage {

struct RocksDbStoreOptions {
  // Bytes of tensor data per stored chunk value (the last chunk of a tensor
  // may be shorter). 1 B .. 64 MiB. Fixed per tensor when it is written, so
  // it may change between opens.
  uint32_t chunk_size = 1 << 20;
  // fsync the WAL when a tensor commits and when runs are created, sealed or
  // deleted. Off: a crash of the machine (not of the process) may lose the
  // latest commits, never leave one half-written.
  bool sync_commits = true;
  // Create the directory and an empty store when there is none.
  bool create_if_missing = true;
  // Memtable size of the "chunks" family: the write buffer of tensor bytes
  // before they are flushed to blob files. Up to 4 such buffers may exist.
  uint64_t chunk_write_buffer_bytes = 64 << 20;
  // Target size of a blob file.
  uint64_t blob_file_bytes = 256 << 20;
  // Let compactions relocate live chunks out of old blob files so that files
  // shared with deleted runs or replaced tensors can be reclaimed. Off: a
  // blob file is reclaimed once none of its chunks is live (deleting a whole
  // run frees the files only it wrote). Measured: with it on, background
  // relocation (software crc32c in Debian's RocksDB) cut read throughput
  // 3-10x on a 2-core machine while it ran.
  bool blob_garbage_collection = false;
  // Block cache shared by all families (index and metadata blocks).
  uint64_t block_cache_bytes = 32 << 20;
  // RocksDB background flush + compaction threads.
  int background_jobs = 2;
  // Tensors of at least this many bytes are written to a segment file of
  // their own (`segments/` in the directory; storage/FORMAT.md) instead of
  // into RocksDB: appended once, checksummed once with the hardware CRC
  // (1 MiB blocks), fdatasync'd at commit, and published by the index entry
  // in RocksDB's synced commit batch. Through RocksDB every byte went to the
  // disk twice (WAL, then blob file) and through Debian RocksDB's software
  // CRC twice. 0: every tensor goes into RocksDB.
  uint64_t segment_tensor_bytes = uint64_t{1} << 20;
  // Free bytes BeginTensor keeps on the directory's filesystem: a tensor is
  // refused (ResourceExhausted naming free and needed bytes) when free space
  // minus the bytes of tensors still being written minus its own length
  // would fall below this, so RocksDB itself (WAL, memtable flushes into
  // blob files, compactions) never meets a full disk. 0: no check. The
  // default covers two chunk write buffers being flushed.
  uint64_t min_free_bytes = uint64_t{256} << 20;
};

// Opens (or creates) the store in `dir`. InvalidArgument for bad options;
// FailedPrecondition when `dir` is locked by another store or was written by
// an unknown format version; DataLoss for a corrupt store; Unavailable for
// I/O errors. Recovers from a crash: deletes the chunks of uploads that
// never committed.
absl::StatusOr<std::unique_ptr<Store>> OpenRocksDbStore(
    const std::string& dir, const RocksDbStoreOptions& options = {});

// Runs and tensors of a store.
struct StoreCounts {
  uint64_t runs = 0;
  uint64_t tensors = 0;
};

// Opens the existing store in `dir` once (never creating one; recovery runs
// as on any open, dropping the bytes of uploads left in flight) and counts
// its runs and tensors. The open's errors otherwise (FailedPrecondition for
// a newer format, ...).
absl::StatusOr<StoreCounts> CountRocksDbStore(const std::string& dir);

// What RestoreRocksDbStore did.
struct RestoreInfo {
  uint64_t files = 0;   // files in the restored store
  uint64_t linked = 0;  // of them, hard links to the backup's (immutable) files
  uint64_t bytes = 0;
  uint64_t runs = 0;
  uint64_t tensors = 0;
};

// Makes `dir` a store holding what the backup in `backup_dir` holds (a
// folder Store::Backup wrote). Table and blob files, which RocksDB never
// changes, are hard-linked when both folders share a filesystem, the rest
// is copied, so the backup stays as it was. Works in `dir`.restoring and
// renames it to `dir` only after the result opened as a store (which also
// drops uploads that were in flight at backup time): a failed restore
// leaves no `dir`. FailedPrecondition when `dir` exists and is not an
// empty folder, when `backup_dir` is not a store, or the store's format is
// newer than this build reads (naming both versions); Unavailable for I/O.
absl::StatusOr<RestoreInfo> RestoreRocksDbStore(const std::string& backup_dir,
                                                const std::string& dir);

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_ROCKSDB_ROCKSDB_STORE_H_

// File: storage/rocksdb/internal/segment_file.h
//
// Segment files: the bytes of one large tensor in a file of their own, next
// to the RocksDB files (storage/FORMAT.md, "Segment files"). The tensor's
// index entry in RocksDB says where its bytes are; this file knows only
// bytes and checksums.
//
//   REPROD_ASSIGN_OR_RETURN(auto w, SegmentWriter::Create(path, what));
//   REPROD_RETURN_IF_ERROR(w->Append(bytes));       // any number of times
//   REPROD_ASSIGN_OR_RETURN(uint32_t crc, w->Finish());  // fdatasync'd
//   ...
//   REPROD_ASSIGN_OR_RETURN(auto r, SegmentReader::Open(path, length, what));
//   REPROD_RETURN_IF_ERROR(r->Read(offset, dst));   // verified blocks
//
// Layout: the payload, then one fixed32 crc32c per block of kSegmentBlock
// bytes (the last block may be shorter), then a 32-byte footer:
// fixed64(payload length) fixed32(block size) fixed32(crc32c of the block
// crc array) fixed32(format version 1) fixed32(crc32c of the footer's first
// 20 bytes) and the magic "rpdseg01". The payload is contiguous, so a
// reader reads whole blocks straight into its caller's buffer; every byte is
// checksummed once on write (the block CRCs are combined into the tensor's
// CRC, common/crc32c.h Crc32cCombine) and once per read.
//
// Errors name the file and `what` (the tensor): ResourceExhausted for
// ENOSPC/EDQUOT ("disk full: ..."), Unavailable for other I/O errors,
// DataLoss for a file whose size, footer or block checksum is wrong.
//
// Thread-safety: one thread at a time per writer or reader.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_SEGMENT_FILE_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_SEGMENT_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "storage/store.h"

namespace reprod::storage::internal {

// Bytes per checksummed block.
inline constexpr uint32_t kSegmentBlock = 1 << 20;
inline constexpr size_t kSegmentFooterSize = 32;

// Writes one segment file from start to end. The file is created (or
// truncated) by Create; a writer destroyed before Finish leaves a partial
// file, which the store deletes (the upload's pending marker names it).
class SegmentWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SegmentWriter>> Create(std::string path,
                                                               std::string what);
  ~SegmentWriter();
  SegmentWriter(const SegmentWriter&) = delete;
  SegmentWriter& operator=(const SegmentWriter&) = delete;

  // Writes the next payload bytes and checksums them.
  absl::Status Append(absl::Span<const uint8_t> data);
  // Writes the block CRCs and the footer and fdatasyncs the file. Returns
  // the crc32c of the whole payload. The directory entry is not synced
  // here (SegmentDirectory::SyncEntries).
  absl::StatusOr<uint32_t> Finish();

  uint64_t bytes() const { return bytes_; }

 private:
  SegmentWriter(int fd, std::string path, std::string what)
      : fd_(fd), path_(std::move(path)), what_(std::move(what)) {}
  absl::Status WriteAll(const void* data, size_t n);
  absl::Status IoError(const char* op, int err) const;

  int fd_;
  const std::string path_;
  const std::string what_;
  uint64_t bytes_ = 0;
  uint64_t unsynced_ = 0;        // bytes written since the last writeback kick
  uint64_t synced_through_ = 0;  // writeback started for [0, this)
  uint32_t block_crc_ = 0;       // of the current block's bytes so far
  uint32_t whole_crc_ = 0;       // of every completed block
  std::vector<uint32_t> block_crcs_;
};

// Reads one segment file with pread(2): a read of whole blocks lands in the
// caller's buffer and is verified there; a block read in part is read and
// verified whole into a block buffer once and served from it while reads
// stay in it. Not mapped: mapped pages of a 2 GiB pair counted in the
// server's RSS (4.2 GB in large_tensor_test), and a file truncated under a
// mapping would raise SIGBUS.
class SegmentReader {
 public:
  // Opens `path`, checks its size against `length` payload bytes and its
  // footer and block CRC array. NotFound when the file does not exist.
  static absl::StatusOr<std::unique_ptr<SegmentReader>> Open(const std::string& path,
                                                             uint64_t length,
                                                             std::string what);
  ~SegmentReader();
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;

  // Copies payload bytes [offset, offset + dst.size()) into dst, verifying
  // every block the range touches (DataLoss naming the block). The caller
  // checks the range.
  absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst);

  // Maps payload bytes [offset, offset + size) read-only (MAP_POPULATE),
  // verifying every block the range touches that this reader has not
  // verified before. The mapping covers whole blocks and lives as long as
  // the returned object: a caller holds only the windows it uses, so the
  // server's RSS stays bounded. The caller checks the range.
  absl::StatusOr<std::unique_ptr<MappedBytes>> Map(uint64_t offset, uint64_t size);

 private:
  SegmentReader(std::string path, std::string what) : path_(std::move(path)), what_(std::move(what)) {}
  // Reads blocks [first, first + n) into `out` and verifies each.
  absl::Status ReadBlocks(uint64_t first, uint64_t n, uint8_t* out);
  // DataLoss naming the block unless `data` (the block's bytes) has the
  // block's stored crc32c.
  absl::Status VerifyBlock(uint64_t index, const uint8_t* data) const;
  // Makes block `index` the verified content of block_buffer_.
  absl::Status LoadBlock(uint64_t index);
  uint64_t BlockSize(uint64_t index) const;

  const std::string path_;
  const std::string what_;
  int fd_ = -1;
  uint64_t length_ = 0;
  uint64_t block_ = kSegmentBlock;  // as the footer says
  std::vector<uint32_t> block_crcs_;
  std::vector<bool> mapped_verified_;  // blocks Map has verified
  std::vector<uint8_t> block_buffer_;
  uint64_t buffered_block_ = ~uint64_t{0};  // none
};

// The folder of segment files, `<store dir>/segments`. File names are the
// blob id in 16 hex digits plus ".seg".
class SegmentDirectory {
 public:
  explicit SegmentDirectory(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  std::string PathOf(uint64_t blob_id) const;
  // The blob id a file name stands for; false for other names.
  static bool ParseName(const std::string& name, uint64_t* blob_id);

  // Creates the folder (and syncs its parent) when it does not exist.
  absl::Status Ensure();
  // Makes the directory entries of files created before this call durable
  // (fsync of the folder). Concurrent callers share one fsync: a caller
  // whose file was created before an fsync that started after it returns
  // without another.
  absl::Status SyncEntries();
  // Blob ids of the files in the folder (empty when there is none).
  absl::StatusOr<std::vector<uint64_t>> List() const;
  // Unlinks a file; a missing file is not an error.
  void Remove(uint64_t blob_id) const;
  // Files and bytes in the folder.
  void Count(uint64_t* files, uint64_t* bytes) const;

  // For SyncEntries: called by writers right after creating a file.
  void NoteCreated() {
    absl::MutexLock lock(&mu_);
    ++created_;
  }

 private:
  const std::string dir_;
  absl::Mutex mu_;       // guards the generations
  absl::Mutex sync_mu_;  // one folder fsync at a time
  // Entry generations: created_ counts files created; synced_ is the count
  // the last completed fsync covers.
  uint64_t created_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t synced_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_SEGMENT_FILE_H_

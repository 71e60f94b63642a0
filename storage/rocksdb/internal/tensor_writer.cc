#include "storage/rocksdb/internal/tensor_writer.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "rocksdb/slice.h"
#include "storage/internal/tensor_checks.h"
#include "storage/rocksdb/internal/keys.h"
#include "storage/rocksdb/internal/records.h"
#include "storage/rocksdb/internal/segment_file.h"
#include "storage/rocksdb/internal/status.h"

namespace reprod::storage::internal {
namespace {

// Full chunks of one Append are batched into writes of about this many
// bytes: fewer WAL records for small chunk sizes, bounded batch memory for
// huge appends.
constexpr size_t kTargetBatchBytes = 4 << 20;

class RocksDbTensorWriter : public TensorWriter {
 public:
  RocksDbTensorWriter(RocksDbStore* store, std::string run, uint64_t run_id,
                      TensorHeader header, bool verify_only,
                      uint64_t reserved_bytes)
      : store_(store),
        run_id_(run_id),
        chunk_size_(store->options().chunk_size),
        verify_only_(verify_only),
        in_segment_(!verify_only && store->options().segment_tensor_bytes > 0 &&
                    header.byte_length >= store->options().segment_tensor_bytes),
        reserved_bytes_(reserved_bytes),
        tally_(std::move(run), std::move(header)) {}

  ~RocksDbTensorWriter() override {
    segment_.reset();  // closed before it is deleted
    if (blob_id_.has_value() && !published_) {
      store_->AbandonUpload(run_id_, *blob_id_, chunks_written_, in_segment_);
    }
    store_->ReleaseSpace(reserved_bytes_);
  }

  absl::Status Append(absl::Span<const uint8_t> data) override {
    if (done_) {
      return CommittedTwiceError(tally_.run(), tally_.header().address);
    }
    REPROD_RETURN_IF_ERROR(failed_);
    if (in_segment_) {
      // The segment writer checksums the bytes as it writes them.
      REPROD_RETURN_IF_ERROR(tally_.Count(data));
      failed_ = AppendToSegment(data);
      return failed_;
    }
    REPROD_RETURN_IF_ERROR(tally_.Add(data));
    if (verify_only_) return absl::OkStatus();
    failed_ = Chunk(data);
    return failed_;
  }

  absl::StatusOr<CommitResult> Commit() override {
    if (done_) {
      return CommittedTwiceError(tally_.run(), tally_.header().address);
    }
    done_ = true;
    REPROD_RETURN_IF_ERROR(failed_);
    if (in_segment_) {
      REPROD_RETURN_IF_ERROR(FinishSegment());
    } else {
      REPROD_RETURN_IF_ERROR(tally_.Verify());
    }
    if (tail_.size() > kMaxInlineTail) {
      REPROD_RETURN_IF_ERROR(AddToBatch(tail_));
      REPROD_RETURN_IF_ERROR(FlushBatch());
      tail_.clear();
    }
    UploadCommit upload;
    upload.run = tally_.run();
    upload.run_id = run_id_;
    upload.header = &tally_.header();
    upload.chunk_size = chunk_size_;
    upload.verify_only = verify_only_;
    upload.blob_id = blob_id_;
    upload.chunks_written = chunks_written_;
    upload.in_segment = in_segment_ && blob_id_.has_value();
    upload.tail = tail_;
    absl::StatusOr<CommitResult> result = store_->CommitUpload(upload);
    if (result.ok()) published_ = true;
    return result;
  }

 private:
  // Cuts `data` into chunks behind the buffered tail; writes full ones.
  absl::Status Chunk(absl::Span<const uint8_t> data) {
    if (!tail_.empty()) {
      const size_t take = std::min(chunk_size_ - tail_.size(), data.size());
      tail_.insert(tail_.end(), data.begin(), data.begin() + take);
      data.remove_prefix(take);
      if (tail_.size() == chunk_size_) {
        REPROD_RETURN_IF_ERROR(AddToBatch(tail_));
        tail_.clear();
      }
    }
    while (data.size() >= chunk_size_) {
      REPROD_RETURN_IF_ERROR(AddToBatch(data.first(chunk_size_)));
      data.remove_prefix(chunk_size_);
    }
    REPROD_RETURN_IF_ERROR(FlushBatch());
    if (!data.empty()) {
      if (tail_.capacity() == 0) {
        tail_.reserve(
            std::min<uint64_t>(chunk_size_, tally_.header().byte_length));
      }
      tail_.insert(tail_.end(), data.begin(), data.end());
    }
    return absl::OkStatus();
  }

  // Writes bytes to the tensor's segment file, creating it first.
  absl::Status AppendToSegment(absl::Span<const uint8_t> data) {
    if (segment_ == nullptr) {
      REPROD_ASSIGN_OR_RETURN(blob_id_, store_->StartUpload(run_id_));
      SegmentDirectory& dir = store_->segments();
      REPROD_ASSIGN_OR_RETURN(
          segment_,
          SegmentWriter::Create(dir.PathOf(*blob_id_),
                                DescribeTensor(tally_.run(), tally_.header().address)));
      dir.NoteCreated();
    }
    return segment_->Append(data);
  }

  // Checks the length, finishes the file (fdatasync) and checks the CRC of
  // its blocks against the header; then makes its directory entry durable.
  absl::Status FinishSegment() {
    REPROD_RETURN_IF_ERROR(tally_.VerifyLength());
    if (segment_ == nullptr) return absl::OkStatus();  // no bytes: nothing to keep
    REPROD_ASSIGN_OR_RETURN(const uint32_t crc, segment_->Finish());
    REPROD_RETURN_IF_ERROR(tally_.Verify(crc));
    return store_->segments().SyncEntries();
  }

  // Adds the next chunk to the pending batch (flushing a full one first).
  absl::Status AddToBatch(absl::Span<const uint8_t> chunk) {
    if (!blob_id_.has_value()) {
      REPROD_ASSIGN_OR_RETURN(blob_id_, store_->StartUpload(run_id_));
    }
    if (batch_.GetDataSize() >= kTargetBatchBytes) {
      REPROD_RETURN_IF_ERROR(FlushBatch());
    }
    REPROD_RETURN_IF_ERROR(AddChunk(
        batch_, store_->chunks(),
        ChunkKey(run_id_, *blob_id_, chunks_written_ + batched_), chunk));
    ++batched_;
    return absl::OkStatus();
  }

  // Writes the batched chunks, unsynced: the commit's WAL sync covers them.
  absl::Status FlushBatch() {
    if (batched_ == 0) return absl::OkStatus();
    rocksdb::WriteOptions wo;
    const rocksdb::Status s = store_->db()->Write(wo, &batch_);
    // A new batch frees the buffer (Clear keeps its capacity): a stream
    // waiting for its next chunk holds no copy of the last one.
    batch_ = rocksdb::WriteBatch();
    if (!s.ok()) {
      store_->NoteWriteError(s);
      return FromRocksDb(
          s, absl::StrCat(DescribeTensor(tally_.run(), tally_.header().address),
                          ": write chunks"));
    }
    chunks_written_ += batched_;
    batched_ = 0;
    return absl::OkStatus();
  }

  RocksDbStore* const store_;
  const uint64_t run_id_;
  const size_t chunk_size_;
  const bool verify_only_;
  // The bytes go to a segment file (RocksDbStoreOptions::segment_tensor_bytes).
  const bool in_segment_;
  const uint64_t reserved_bytes_;
  ByteTally tally_;
  std::optional<uint64_t> blob_id_;  // set by the first chunk or file write
  std::unique_ptr<SegmentWriter> segment_;
  uint64_t chunks_written_ = 0;      // durable-on-commit chunks [0, n)
  uint64_t batched_ = 0;             // chunks in batch_, not yet written
  rocksdb::WriteBatch batch_;
  std::vector<uint8_t> tail_;  // < chunk_size_ bytes not yet written
  absl::Status failed_;        // sticky: a chunk write failed
  bool done_ = false;          // Commit was called
  bool published_ = false;     // Commit succeeded; nothing to abandon
};

}  // namespace

absl::Status AddChunk(rocksdb::WriteBatch& batch,
                      rocksdb::ColumnFamilyHandle* cf, std::string_view key,
                      absl::Span<const uint8_t> payload) {
  char header[kChunkHeaderSize];
  EncodeChunkHeader(Crc32c(payload.data(), payload.size()), header);
  const rocksdb::Slice key_slice(key.data(), key.size());
  const rocksdb::Slice parts[2] = {
      rocksdb::Slice(header, kChunkHeaderSize),
      rocksdb::Slice(reinterpret_cast<const char*>(payload.data()),
                     payload.size())};
  return FromRocksDb(batch.Put(cf, rocksdb::SliceParts(&key_slice, 1),
                               rocksdb::SliceParts(parts, 2)),
                     "batch chunk");
}

std::unique_ptr<TensorWriter> NewRocksDbTensorWriter(RocksDbStore* store,
                                                     std::string run,
                                                     uint64_t run_id,
                                                     TensorHeader header,
                                                     bool verify_only,
                                                     uint64_t reserved_bytes) {
  return std::make_unique<RocksDbTensorWriter>(store, std::move(run), run_id,
                                               std::move(header), verify_only,
                                               reserved_bytes);
}

}  // namespace reprod::storage::internal

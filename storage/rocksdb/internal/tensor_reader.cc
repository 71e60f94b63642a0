#include "storage/rocksdb/internal/tensor_reader.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/db.h"
#include "storage/internal/tensor_checks.h"
#include "storage/rocksdb/internal/keys.h"
#include "storage/rocksdb/internal/status.h"

namespace reprod::storage::internal {
namespace {

class RocksDbTensorReader : public TensorReader {
 public:
  RocksDbTensorReader(RocksDbStore* store, std::string run, uint64_t run_id,
                      IndexEntry entry,
                      std::unique_ptr<rocksdb::ManagedSnapshot> snapshot)
      : store_(store),
        run_(std::move(run)),
        run_id_(run_id),
        entry_(std::move(entry)),
        meta_{entry_.header, entry_.sequence},
        snapshot_(std::move(snapshot)) {
    read_options_.snapshot = snapshot_->snapshot();
    // Every chunk carries its own crc32c, checked in Fetch() with the SSE4.2
    // instruction. RocksDB's own check of blob records would checksum the
    // same bytes again, in software in portable builds (Debian's): a
    // measured 2x on reads.
    read_options_.verify_checksums = false;
  }

  const TensorMeta& meta() const override { return meta_; }

  absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) override {
    REPROD_RETURN_IF_ERROR(CheckReadRange(run_, meta_, offset, dst.size()));
    while (!dst.empty()) {
      const uint64_t index = offset / entry_.chunk_size;
      const uint64_t within = offset % entry_.chunk_size;
      REPROD_RETURN_IF_ERROR(Fetch(index));
      const size_t n = static_cast<size_t>(
          std::min<uint64_t>(payload_.size() - within, dst.size()));
      std::memcpy(dst.data(), payload_.data() + within, n);
      dst.remove_prefix(n);
      offset += n;
    }
    return absl::OkStatus();
  }

 private:
  // Makes chunk `index` the current, verified payload_.
  absl::Status Fetch(uint64_t index) {
    if (cached_ && cached_index_ == index) return absl::OkStatus();
    cached_ = false;
    value_.Reset();
    const uint64_t chunks = entry_.num_chunks();
    const std::string what =
        absl::StrCat(DescribeTensor(run_, meta_.header.address), ": chunk ",
                     index, " of ", chunks);
    const rocksdb::Status s =
        store_->db()->Get(read_options_, store_->chunks(),
                          ChunkKey(run_id_, entry_.blob_id, index), &value_);
    if (s.IsNotFound()) return absl::DataLossError(what + " is missing");
    REPROD_RETURN_IF_ERROR(FromRocksDb(s, what));
    const uint64_t expected =
        index + 1 < chunks
            ? entry_.chunk_size
            : meta_.header.byte_length - index * entry_.chunk_size;
    absl::StatusOr<std::string_view> payload =
        DecodeChunk(std::string_view(value_.data(), value_.size()), expected);
    if (!payload.ok()) {
      return absl::DataLossError(
          absl::StrCat(what, ": ", std::string(payload.status().message())));
    }
    payload_ = *payload;
    cached_index_ = index;
    cached_ = true;
    return absl::OkStatus();
  }

  RocksDbStore* const store_;
  const std::string run_;
  const uint64_t run_id_;
  const IndexEntry entry_;
  const TensorMeta meta_;
  std::unique_ptr<rocksdb::ManagedSnapshot> snapshot_;
  rocksdb::ReadOptions read_options_;
  rocksdb::PinnableSlice value_;  // the last chunk fetched
  std::string_view payload_;      // its verified payload
  uint64_t cached_index_ = 0;
  bool cached_ = false;
};

// A tensor in a segment file: reads come from its mapping, each block
// verified the first time it is read.
class SegmentTensorReader : public TensorReader {
 public:
  SegmentTensorReader(std::string run, TensorMeta meta, std::unique_ptr<SegmentReader> file)
      : run_(std::move(run)), meta_(std::move(meta)), file_(std::move(file)) {}

  const TensorMeta& meta() const override { return meta_; }

  absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) override {
    REPROD_RETURN_IF_ERROR(CheckReadRange(run_, meta_, offset, dst.size()));
    return file_->Read(offset, dst);
  }

  absl::StatusOr<std::unique_ptr<MappedBytes>> Map(uint64_t offset, uint64_t size) override {
    REPROD_RETURN_IF_ERROR(CheckReadRange(run_, meta_, offset, size));
    return file_->Map(offset, size);
  }

 private:
  const std::string run_;
  const TensorMeta meta_;
  std::unique_ptr<SegmentReader> file_;
};

}  // namespace

std::unique_ptr<TensorReader> NewSegmentTensorReader(std::string run, const IndexEntry& entry,
                                                     std::unique_ptr<SegmentReader> file) {
  return std::make_unique<SegmentTensorReader>(
      std::move(run), TensorMeta{entry.header, entry.sequence}, std::move(file));
}

std::unique_ptr<TensorReader> NewRocksDbTensorReader(
    RocksDbStore* store, std::string run, uint64_t run_id, IndexEntry entry,
    std::unique_ptr<rocksdb::ManagedSnapshot> snapshot) {
  return std::make_unique<RocksDbTensorReader>(
      store, std::move(run), run_id, std::move(entry), std::move(snapshot));
}

}  // namespace reprod::storage::internal

// The postgres+s3 store's TensorWriter and TensorReader
// (postgres_s3_store.h says what they promise).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "storage/internal/tensor_checks.h"
#include "storage/postgres_s3/internal/context.h"
#include "storage/rocksdb/internal/coding.h"
#include "storage/rocksdb/internal/records.h"

namespace reprod::storage::internal {
namespace {

class PgS3TensorWriter : public TensorWriter {
 public:
  PgS3TensorWriter(std::shared_ptr<PgS3Context> ctx, std::string run,
                   int64_t run_id, TensorHeader header, bool verify_only)
      : ctx_(std::move(ctx)),
        run_id_(run_id),
        verify_only_(verify_only),
        multipart_(header.byte_length > ctx_->options.part_size),
        tally_(std::move(run), std::move(header)) {}

  ~PgS3TensorWriter() override {
    // Parts still going up finish before the upload is given up.
    for (auto& part : inflight_) part.wait();
    if (!object_key_.empty() && !published_) {
      DiscardUpload(*ctx_, object_key_, upload_id_);
    }
  }

  absl::Status Append(absl::Span<const uint8_t> data) override {
    REPROD_RETURN_IF_ERROR(tally_.Add(data));
    if (verify_only_) return absl::OkStatus();
    AddToBlocks(data);
    if (!multipart_) {
      if (buffer_.empty()) buffer_.reserve(tally_.header().byte_length);
      buffer_.insert(buffer_.end(), data.begin(), data.end());
      return absl::OkStatus();
    }
    const uint64_t part_size = ctx_->options.part_size;
    while (!data.empty()) {
      if (buffer_.empty()) buffer_.reserve(part_size);
      const size_t take =
          std::min<size_t>(data.size(), part_size - buffer_.size());
      buffer_.insert(buffer_.end(), data.begin(), data.begin() + take);
      data.remove_prefix(take);
      if (buffer_.size() == part_size) REPROD_RETURN_IF_ERROR(FlushPart());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<CommitResult> Commit() override {
    if (committed_) {
      return CommittedTwiceError(tally_.run(), tally_.header().address);
    }
    committed_ = true;
    REPROD_RETURN_IF_ERROR(tally_.Verify());
    if (!verify_only_ && tally_.header().byte_length > 0) {
      if (multipart_) {
        if (!buffer_.empty()) REPROD_RETURN_IF_ERROR(FlushPart());
        REPROD_RETURN_IF_ERROR(AwaitParts());
        REPROD_RETURN_IF_ERROR(ctx_->s3->CompleteMultipartUpload(
            object_key_, upload_id_, part_etags_));
      } else {
        REPROD_RETURN_IF_ERROR(Register());
        REPROD_RETURN_IF_ERROR(ctx_->s3->PutObject(object_key_, buffer_));
        std::vector<uint8_t>().swap(buffer_);
      }
      if (block_filled_ > 0) FinishBlock();
    }
    absl::StatusOr<CommitResult> result = Publish();
    if (result.ok()) published_ = true;
    // A tensor that was already present (or a failed publish) leaves the
    // uploaded object unnamed; the destructor gives it up.
    if (result.ok() && result->kind == CommitKind::kAlreadyPresent &&
        !object_key_.empty()) {
      published_ = false;
    }
    return result;
  }

 private:
  // Records the object in `uploads` before its first byte goes to S3.
  absl::Status Register() {
    object_key_ = NewObjectKey(*ctx_, run_id_);
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    return conn
        ->Exec("INSERT INTO uploads (object_key, replica, started_us) "
               "VALUES ($1, $2, $3)",
               PgParams().Text(object_key_).Int(ctx_->replica).Int(NowMicros()))
        .status();
  }

  absl::Status FlushPart() {
    if (upload_id_.empty()) {
      REPROD_RETURN_IF_ERROR(Register());
      REPROD_ASSIGN_OR_RETURN(upload_id_,
                              ctx_->s3->CreateMultipartUpload(object_key_));
      REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
      REPROD_RETURN_IF_ERROR(
          conn->Exec("UPDATE uploads SET upload_id = $2 WHERE object_key = $1",
                     PgParams().Text(object_key_).Text(upload_id_))
              .status());
    }
    // Parts go up while the next arrives (the wire and S3 both busy): at
    // most kPartsInFlight at once, each on a thread of its own.
    if (inflight_.size() >= kPartsInFlight) REPROD_RETURN_IF_ERROR(AwaitPart());
    const int part_number = static_cast<int>(part_etags_.size() + inflight_.size()) + 1;
    // async | deferred: where no thread can be started, libstdc++ uploads
    // the part on this thread at get() instead.
    inflight_.push_back(std::async(
        std::launch::async | std::launch::deferred,
        [ctx = ctx_, key = object_key_, id = upload_id_, part_number,
         data = std::move(buffer_)]() -> absl::StatusOr<std::string> {
          return ctx->s3->UploadPart(key, id, part_number, data);
        }));
    buffer_ = std::vector<uint8_t>();
    return absl::OkStatus();
  }

  // Waits for every part going up.
  absl::Status AwaitParts() {
    while (!inflight_.empty()) REPROD_RETURN_IF_ERROR(AwaitPart());
    return absl::OkStatus();
  }

  // Waits for the oldest part going up, if any, and keeps its ETag.
  absl::Status AwaitPart() {
    if (inflight_.empty()) return absl::OkStatus();
    absl::StatusOr<std::string> etag = inflight_.front().get();
    inflight_.pop_front();
    if (!etag.ok()) return etag.status();
    part_etags_.push_back(*std::move(etag));
    return absl::OkStatus();
  }

  void AddToBlocks(absl::Span<const uint8_t> data) {
    const uint64_t block_size = ctx_->options.block_size;
    while (!data.empty()) {
      const size_t take =
          std::min<size_t>(data.size(), block_size - block_filled_);
      block_crc_ = Crc32cExtend(block_crc_, data.data(), take);
      block_filled_ += take;
      data.remove_prefix(take);
      if (block_filled_ == block_size) FinishBlock();
    }
  }

  void FinishBlock() {
    PutFixed32(&block_crcs_, block_crc_);
    block_crc_ = 0;
    block_filled_ = 0;
  }

  // The commit transaction: checks the run and the address again, inserts
  // the index row, updates the run's counters and deletes the uploads row.
  absl::StatusOr<CommitResult> Publish() {
    const std::string& run = tally_.run();
    const TensorHeader& header = tally_.header();
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(PgTransaction txn, PgTransaction::Begin(conn.get()));
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        txn.Exec("SELECT id, state, overwrite FROM runs WHERE name = $1 "
                 "FOR UPDATE",
                 PgParams().Bytes(run)));
    if (r.rows() == 0 || r.Int(0, 0) != run_id_) {
      return RunDeletedError(run, header.address);
    }
    const auto state = static_cast<RunState>(r.Int(0, 1));
    if (state != RunState::kOpen) return RunNotOpenError(run, state);
    const bool overwrite = r.Bool(0, 2);

    PgParams where;
    AddAddress(where, run_id_, header.address);
    REPROD_ASSIGN_OR_RETURN(
        PgResult old,
        txn.Exec(absl::StrCat("SELECT sequence, entry, object_key FROM tensors "
                              "WHERE ",
                              AddressWhere(1)),
                 where));
    CommitKind kind = CommitKind::kStored;
    uint64_t replaced_bytes = 0;
    if (old.rows() == 1) {
      REPROD_ASSIGN_OR_RETURN(IndexEntry stored,
                              DecodeIndexEntry(header.address, old.Bytes(0, 1)));
      if (SameContent(stored.header, header)) {
        return CommitResult{CommitKind::kAlreadyPresent,
                            static_cast<uint64_t>(old.Int(0, 0))};
      }
      if (!overwrite) return ConflictError(run, stored.header, header);
      kind = CommitKind::kReplaced;
      replaced_bytes = stored.header.byte_length;
      if (!old.IsNull(0, 2)) {
        REPROD_RETURN_IF_ERROR(
            txn.Exec("INSERT INTO garbage (object_key, delete_after_us, bytes) "
                     "VALUES ($1, $2, $3)",
                     PgParams()
                         .Text(old.Text(0, 2))
                         .Int(NowMicros() + absl::ToInt64Microseconds(
                                                ctx_->options.delete_grace))
                         .Int(static_cast<int64_t>(replaced_bytes)))
                .status());
      }
      REPROD_RETURN_IF_ERROR(
          txn.Exec(absl::StrCat("DELETE FROM tensors WHERE ", AddressWhere(1)),
                   where)
              .status());
    }
    if (verify_only_) {
      // Verify-only writer whose identical tensor disappeared or changed.
      return absl::AbortedError(absl::StrCat(
          DescribeTensor(run, header.address),
          ": the stored tensor changed while an identical copy was resent; "
          "send it again"));
    }
    REPROD_ASSIGN_OR_RETURN(
        PgResult seq,
        txn.Exec("UPDATE runs SET next_sequence = next_sequence + 1, "
                 "tensor_count = tensor_count + $2, "
                 "total_bytes = total_bytes + $3 WHERE id = $1 "
                 "RETURNING next_sequence - 1",
                 PgParams()
                     .Int(run_id_)
                     .Int(kind == CommitKind::kReplaced ? 0 : 1)
                     .Int(static_cast<int64_t>(header.byte_length) -
                          static_cast<int64_t>(replaced_bytes))));
    const auto sequence = static_cast<uint64_t>(seq.Int(0, 0));
    IndexEntry entry;
    entry.header = header;
    entry.sequence = sequence;
    entry.chunk_size = ctx_->options.block_size;
    PgParams insert = where;
    insert.Int(static_cast<int64_t>(sequence))
        .Int(static_cast<int64_t>(header.byte_length))
        .Bytes(EncodeIndexEntry(entry));
    if (object_key_.empty()) {
      insert.Null();
    } else {
      insert.Text(object_key_);
    }
    insert.Bytes(block_crcs_);
    REPROD_RETURN_IF_ERROR(
        txn.Exec("INSERT INTO tensors (run_id, checkpoint, key, has_step, "
                 "step, rank, sequence, byte_length, entry, object_key, "
                 "block_crcs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                 "$10, $11)",
                 insert)
            .status());
    if (!object_key_.empty()) {
      REPROD_ASSIGN_OR_RETURN(
          PgResult gone, txn.Exec("DELETE FROM uploads WHERE object_key = $1",
                                  PgParams().Text(object_key_)));
      if (gone.affected() != 1) {
        return absl::AbortedError(absl::StrCat(
            DescribeTensor(run, header.address),
            ": the upload was reclaimed by another replica's sweep (this "
            "process lost its PostgreSQL session meanwhile); send it again"));
      }
    }
    REPROD_RETURN_IF_ERROR(txn.Commit());
    return CommitResult{kind, sequence, replaced_bytes};
  }

  std::shared_ptr<PgS3Context> ctx_;
  const int64_t run_id_;
  const bool verify_only_;
  const bool multipart_;
  ByteTally tally_;
  bool committed_ = false;
  bool published_ = false;
  std::string object_key_;  // set once registered in `uploads`
  std::string upload_id_;   // of the multipart upload
  std::vector<std::string> part_etags_;
  std::vector<uint8_t> buffer_;  // the whole tensor, or the current part
  // Parts going up while buffer_ fills, oldest first (multipart only).
  static constexpr size_t kPartsInFlight = 2;
  std::deque<std::future<absl::StatusOr<std::string>>> inflight_;
  std::string block_crcs_;
  uint32_t block_crc_ = 0;
  uint64_t block_filled_ = 0;
};

class PgS3TensorReader : public TensorReader {
 public:
  PgS3TensorReader(std::shared_ptr<PgS3Context> ctx, std::string run,
                   TensorMeta meta, std::string object_key,
                   uint64_t block_size, std::string block_crcs)
      : ctx_(std::move(ctx)),
        run_(std::move(run)),
        meta_(std::move(meta)),
        object_key_(std::move(object_key)),
        block_size_(block_size),
        block_crcs_(std::move(block_crcs)) {}

  const TensorMeta& meta() const override { return meta_; }

  absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) override {
    REPROD_RETURN_IF_ERROR(CheckReadRange(run_, meta_, offset, dst.size()));
    if (dst.empty()) return absl::OkStatus();
    const uint64_t length = meta_.header.byte_length;
    const uint64_t num_blocks =
        block_size_ == 0 ? 0 : (length + block_size_ - 1) / block_size_;
    if (num_blocks == 0 || block_crcs_.size() != num_blocks * 4) {
      return absl::DataLossError(absl::StrCat(
          DescribeTensor(run_, meta_.header.address), ": the index holds ",
          block_crcs_.size() / 4, " block checksums for ", num_blocks,
          " blocks"));
    }
    const uint64_t end = offset + dst.size();
    uint64_t pos = offset;
    std::vector<uint8_t> scratch;
    while (pos < end) {
      const uint64_t block = pos / block_size_;
      const uint64_t block_begin = block * block_size_;
      const uint64_t block_end = std::min(block_begin + block_size_, length);
      if (pos == block_begin && block_end <= end) {
        // Whole blocks straight into dst: as many as fit.
        const uint64_t last = end == length ? num_blocks : end / block_size_;
        const uint64_t run_end = std::min(last * block_size_, length);
        absl::Span<uint8_t> out = dst.subspan(pos - offset, run_end - pos);
        REPROD_RETURN_IF_ERROR(ctx_->s3->GetObjectRange(object_key_, pos, out));
        REPROD_RETURN_IF_ERROR(VerifyBlocks(block, out));
        pos = run_end;
        continue;
      }
      // A block only partly wanted: read it whole, verify, copy the part.
      scratch.resize(block_end - block_begin);
      REPROD_RETURN_IF_ERROR(ctx_->s3->GetObjectRange(
          object_key_, block_begin, absl::MakeSpan(scratch)));
      REPROD_RETURN_IF_ERROR(VerifyBlocks(block, scratch));
      const uint64_t take = std::min(block_end, end) - pos;
      std::memcpy(dst.data() + (pos - offset), scratch.data() + (pos - block_begin),
                  take);
      pos += take;
    }
    return absl::OkStatus();
  }

 private:
  // `bytes` are whole blocks from `first_block` on.
  absl::Status VerifyBlocks(uint64_t first_block,
                            absl::Span<const uint8_t> bytes) const {
    uint64_t block = first_block;
    while (!bytes.empty()) {
      const size_t n = std::min<size_t>(bytes.size(), block_size_);
      const uint32_t got = Crc32c(bytes.data(), n);
      const uint32_t want = DecodeFixed32(block_crcs_.data() + block * 4);
      if (got != want) {
        return absl::DataLossError(absl::StrFormat(
            "%s: block %d (bytes %d..%d) of object %s fails its crc32c: "
            "stored %08x, read %08x",
            DescribeTensor(run_, meta_.header.address), block,
            block * block_size_, block * block_size_ + n, object_key_, want,
            got));
      }
      bytes.remove_prefix(n);
      ++block;
    }
    return absl::OkStatus();
  }

  std::shared_ptr<PgS3Context> ctx_;
  std::string run_;
  TensorMeta meta_;
  std::string object_key_;
  uint64_t block_size_;
  std::string block_crcs_;
};

}  // namespace

std::unique_ptr<TensorWriter> NewPgS3TensorWriter(
    std::shared_ptr<PgS3Context> ctx, std::string run, int64_t run_id,
    TensorHeader header, bool verify_only) {
  return std::make_unique<PgS3TensorWriter>(std::move(ctx), std::move(run),
                                            run_id, std::move(header),
                                            verify_only);
}

std::unique_ptr<TensorReader> NewPgS3TensorReader(
    std::shared_ptr<PgS3Context> ctx, std::string run, TensorMeta meta,
    std::string object_key, uint64_t block_size, std::string block_crcs) {
  return std::make_unique<PgS3TensorReader>(
      std::move(ctx), std::move(run), std::move(meta), std::move(object_key),
      block_size, std::move(block_crcs));
}

}  // namespace reprod::storage::internal

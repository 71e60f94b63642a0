// File: storage/internal/tensor_checks.h
//
// Checks and error messages shared by every Store implementation, so that the
// memory and RocksDB stores agree on semantics and wording:
//
//   REPROD_RETURN_IF_ERROR(CheckHeader(run, header));
//   if (!SameContent(stored, header)) return ConflictError(run, stored,
//   header); ByteTally tally(run, header);
//   REPROD_RETURN_IF_ERROR(tally.Add(bytes));   // per Append
//   REPROD_RETURN_IF_ERROR(tally.Verify());     // at Commit
//
// Not part of the storage API: only storage/ includes it.
//
// Thread-safety: pure functions; a ByteTally is used by one thread at a time.
#ifndef REPROD_STORAGE_INTERNAL_TENSOR_CHECKS_H_
#define REPROD_STORAGE_INTERNAL_TENSOR_CHECKS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "storage/store.h"

namespace reprod::storage::internal {

// "run team42/x, tensor ckpt/key@3": how messages name a tensor. Run and
// address go through VisibleName (escaped; a 10 KB key shows ~200 bytes), as
// every run, tensor or report name in the stores' messages does.
std::string DescribeTensor(std::string_view run, const TensorAddress& address);

// InvalidArgument unless header.byte_length == itemsize(dtype) * prod(shape)
// (negative or overflowing shapes included), the rank is at most kMaxRank
// and the placement fits the shape (common/placement.h).
absl::Status CheckHeader(std::string_view run, const TensorHeader& header);

// True when dtype, shape, byte_length, crc32c and placement agree (the
// address is not compared): a resend of the same tensor.
bool SameContent(const TensorHeader& a, const TensorHeader& b);

// AlreadyExists naming the run, the address and every field that differs.
absl::Status ConflictError(std::string_view run, const TensorHeader& stored,
                           const TensorHeader& incoming);

// NotFound for an unknown run; FailedPrecondition for a run that is not OPEN
// when a tensor is written into it.
absl::Status RunNotFoundError(std::string_view run);
absl::Status RunNotOpenError(std::string_view run, RunState state);
// NotFound for a run deleted (and perhaps re-created) while a tensor was
// being written into it.
absl::Status RunDeletedError(std::string_view run,
                             const TensorAddress& address);
absl::Status TensorNotFoundError(std::string_view run,
                                 const TensorAddress& address);
// FailedPrecondition for a second Commit.
absl::Status CommittedTwiceError(std::string_view run,
                                 const TensorAddress& address);
// OutOfRange unless [offset, offset + size) lies within [0, byte_length).
absl::Status CheckReadRange(std::string_view run, const TensorMeta& meta,
                            uint64_t offset, uint64_t size);

// InvalidArgument for an auth record key that is empty or holds a NUL byte;
// NotFound for an absent one. Neither message shows the key (it may be
// derived from a credential), only its length.
absl::Status CheckAuthKey(std::string_view key);
absl::Status AuthRecordNotFoundError(std::string_view key);
absl::Status AuthRecordExistsError(std::string_view key);

// Times are kept with microsecond precision by every store (RocksDB records
// them as Unix microseconds); `t` truncated accordingly.
absl::Time TruncateToMicros(absl::Time t);

// Counts the bytes and crc32c of a tensor as they arrive.
class ByteTally {
 public:
  ByteTally(std::string run, TensorHeader header)
      : run_(std::move(run)), header_(std::move(header)) {}

  // Adds the next bytes; InvalidArgument (naming the address, the declared
  // length and the offset) when they would run past byte_length. Nothing is
  // counted on error.
  absl::Status Add(absl::Span<const uint8_t> data);

  // As Add, but counts the bytes only: their crc32c is computed by the
  // caller (a segment writer checksums its blocks) and given to Verify.
  absl::Status Count(absl::Span<const uint8_t> data);

  // InvalidArgument unless exactly byte_length bytes arrived and their
  // crc32c (`crc`, or the one Add computed) is the header's (the message
  // names both values).
  absl::Status Verify(std::optional<uint32_t> crc = std::nullopt) const;

  // The first half of Verify: InvalidArgument unless exactly byte_length
  // bytes arrived.
  absl::Status VerifyLength() const;

  uint64_t received() const { return received_; }
  uint32_t crc32c() const { return crc_; }
  const std::string& run() const { return run_; }
  const TensorHeader& header() const { return header_; }

 private:
  std::string run_;
  TensorHeader header_;
  uint64_t received_ = 0;
  uint32_t crc_ = 0;
};

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_INTERNAL_TENSOR_CHECKS_H_

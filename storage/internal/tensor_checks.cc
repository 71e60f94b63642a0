#include "storage/internal/tensor_checks.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "common/dtype.h"
#include "common/placement.h"
#include "common/tensor.h"
#include "common/visible.h"

namespace reprod::storage::internal {

std::string DescribeTensor(std::string_view run, const TensorAddress& address) {
  return absl::StrCat("run ", VisibleName(run), ", tensor ",
                      VisibleName(AddressToString(address)));
}

absl::Status CheckHeader(std::string_view run, const TensorHeader& header) {
  for (const absl::Status& s : {ValidateRank(header.address.rank),
                                ValidatePlacement(header.placement, header.shape)}) {
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          DescribeTensor(run, header.address), ": ", std::string(s.message())));
    }
  }
  const absl::StatusOr<int64_t> n =
      CheckedNumElements(header.shape, header.dtype);
  if (!n.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(DescribeTensor(run, header.address), ": ",
                     std::string(n.status().message())));
  }
  const uint64_t expected = static_cast<uint64_t>(*n) * DTypeSize(header.dtype);
  if (expected != header.byte_length) {
    return absl::InvalidArgumentError(
        absl::StrCat(DescribeTensor(run, header.address), ": byte_length ",
                     header.byte_length, " does not match ",
                     std::string(DTypeName(header.dtype)), " shape ",
                     ShapeToString(header.shape), " (", expected, " bytes)"));
  }
  return absl::OkStatus();
}

bool SameContent(const TensorHeader& a, const TensorHeader& b) {
  return a.dtype == b.dtype && a.shape == b.shape &&
         a.byte_length == b.byte_length && a.crc32c == b.crc32c &&
         a.placement == b.placement;
}

absl::Status ConflictError(std::string_view run, const TensorHeader& stored,
                           const TensorHeader& incoming) {
  std::vector<std::string> diffs;
  if (stored.dtype != incoming.dtype) {
    diffs.push_back(absl::StrCat("dtype ", std::string(DTypeName(stored.dtype)),
                                 " vs ",
                                 std::string(DTypeName(incoming.dtype))));
  }
  if (stored.shape != incoming.shape) {
    diffs.push_back(absl::StrCat("shape ", ShapeToString(stored.shape), " vs ",
                                 ShapeToString(incoming.shape)));
  }
  if (stored.byte_length != incoming.byte_length) {
    diffs.push_back(absl::StrCat("byte_length ", stored.byte_length, " vs ",
                                 incoming.byte_length));
  }
  if (stored.crc32c != incoming.crc32c) {
    diffs.push_back(absl::StrFormat("crc32c 0x%08x vs 0x%08x", stored.crc32c,
                                    incoming.crc32c));
  }
  if (stored.placement != incoming.placement) {
    auto name = [](const Placement& p) {
      return p.kind == PlacementKind::kNone ? std::string("none") : PlacementToString(p);
    };
    diffs.push_back(absl::StrCat("placement ", name(stored.placement), " vs ",
                                 name(incoming.placement)));
  }
  return absl::AlreadyExistsError(absl::StrCat(
      DescribeTensor(run, incoming.address),
      ": a different tensor is already stored there and the run does not "
      "allow overwrite (stored vs incoming: ",
      absl::StrJoin(diffs, ", "), ")"));
}

absl::Status CheckAuthKey(std::string_view key) {
  if (key.empty() || key.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("auth record key of ", key.size(),
                     " bytes is empty or holds a NUL byte"));
  }
  return absl::OkStatus();
}

absl::Status AuthRecordNotFoundError(std::string_view key) {
  return absl::NotFoundError(
      absl::StrCat("auth record (", key.size(), "-byte key) not found"));
}

absl::Status AuthRecordExistsError(std::string_view key) {
  return absl::AlreadyExistsError(
      absl::StrCat("auth record (", key.size(), "-byte key) exists already"));
}

absl::Status RunNotFoundError(std::string_view run) {
  return absl::NotFoundError(
      absl::StrCat("run ", VisibleName(run), " not found"));
}

absl::Status RunNotOpenError(std::string_view run, RunState state) {
  return absl::FailedPreconditionError(
      absl::StrCat("run ", VisibleName(run), " is ",
                   std::string(RunStateName(state)), ", not open"));
}

absl::Status RunDeletedError(std::string_view run,
                             const TensorAddress& address) {
  return absl::NotFoundError(
      absl::StrCat(DescribeTensor(run, address),
                   ": the run was deleted while the tensor was written"));
}

absl::Status TensorNotFoundError(std::string_view run,
                                 const TensorAddress& address) {
  return absl::NotFoundError(
      absl::StrCat(DescribeTensor(run, address), ": not found"));
}

absl::Status CommittedTwiceError(std::string_view run,
                                 const TensorAddress& address) {
  return absl::FailedPreconditionError(absl::StrCat(
      DescribeTensor(run, address), ": Commit was already called"));
}

absl::Status CheckReadRange(std::string_view run, const TensorMeta& meta,
                            uint64_t offset, uint64_t size) {
  const uint64_t length = meta.header.byte_length;
  if (offset > length || size > length - offset) {
    return absl::OutOfRangeError(absl::StrCat(
        DescribeTensor(run, meta.header.address), ": read of ", size,
        " bytes at offset ", offset, " passes the length ", length));
  }
  return absl::OkStatus();
}

absl::Time TruncateToMicros(absl::Time t) {
  return absl::FromUnixMicros(absl::ToUnixMicros(t));
}

absl::Status ByteTally::Count(absl::Span<const uint8_t> data) {
  if (data.size() > header_.byte_length - received_) {
    return absl::InvalidArgumentError(
        absl::StrCat(DescribeTensor(run_, header_.address), ": append of ",
                     data.size(), " bytes at offset ", received_,
                     " runs past the declared length ", header_.byte_length));
  }
  received_ += data.size();
  return absl::OkStatus();
}

absl::Status ByteTally::Add(absl::Span<const uint8_t> data) {
  REPROD_RETURN_IF_ERROR(Count(data));
  crc_ = Crc32cExtend(crc_, data.data(), data.size());
  return absl::OkStatus();
}

absl::Status ByteTally::VerifyLength() const {
  if (received_ != header_.byte_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        DescribeTensor(run_, header_.address), ": received ", received_,
        " bytes, declared byte_length ", header_.byte_length));
  }
  return absl::OkStatus();
}

absl::Status ByteTally::Verify(std::optional<uint32_t> crc) const {
  REPROD_RETURN_IF_ERROR(VerifyLength());
  const uint32_t got = crc.value_or(crc_);
  if (got != header_.crc32c) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: crc32c of the received bytes is 0x%08x, declared 0x%08x",
        DescribeTensor(run_, header_.address), got, header_.crc32c));
  }
  return absl::OkStatus();
}

}  // namespace reprod::storage::internal

#include "server/shm_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/visible.h"

namespace reprod::server {
namespace {

constexpr std::string_view kShmPrefix = "/reprod-";
constexpr size_t kMaxShmSuffixBytes = 200;

bool IsNameByte(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// Reads exactly n bytes at `offset` of `fd` into `dst` unless the object
// ends first; returns the bytes read (short: the object is shorter).
absl::StatusOr<size_t> PreadFully(int fd, uint8_t* dst, size_t n, uint64_t offset,
                                  std::string_view name) {
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, dst + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("reading shared-memory region ", VisibleName(name),
                                              ": ", std::strerror(errno)));
    }
    if (got == 0) break;  // end of the object
    done += static_cast<size_t>(got);
  }
  return done;
}

absl::Status Shrunk(std::string_view name, uint64_t now, uint64_t end) {
  return absl::InvalidArgumentError(absl::StrCat(
      "shared-memory region ", VisibleName(name), " shrank to ", now,
      " bytes, below the end of the tensor at ", end, " (was it truncated after registering?)"));
}

}  // namespace

absl::Status ValidateShmName(std::string_view name) {
  if (!name.starts_with(kShmPrefix) || name.size() == kShmPrefix.size() ||
      name.size() - kShmPrefix.size() > kMaxShmSuffixBytes ||
      !std::all_of(name.begin() + kShmPrefix.size(), name.end(), IsNameByte)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid shared-memory region name '", VisibleName(name),
        "': must be \"/reprod-\" followed by 1-", kMaxShmSuffixBytes, " bytes of [A-Za-z0-9_.-]"));
  }
  return absl::OkStatus();
}

absl::Status CheckShmRange(uint64_t region_bytes, uint64_t offset, uint64_t length) {
  // offset <= region_bytes first, so that region_bytes - offset cannot wrap.
  if (offset > region_bytes || length > region_bytes - offset) {
    return absl::InvalidArgumentError(absl::StrCat("bytes [", offset, ", ", offset, " + ", length,
                                                   ") run past the region's ", region_bytes,
                                                   " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ShmRegion>> ShmRegion::Open(std::string_view name,
                                                           uint64_t byte_size,
                                                           std::string_view key) {
  if (absl::Status s = ValidateShmName(name); !s.ok()) return s;
  const std::string shown = VisibleName(name);
  if (byte_size < kMinShmRegionBytes || byte_size > kMaxShmRegionBytes) {
    return absl::InvalidArgumentError(absl::StrCat("shared-memory region ", shown, ": byte_size ",
                                                   byte_size, " is outside [", kMinShmRegionBytes,
                                                   ", ", kMaxShmRegionBytes, "]"));
  }
  if (key.size() != kShmKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("shared-memory region ", shown, ": key of ",
                                                   key.size(), " bytes, expected ", kShmKeyBytes));
  }
  const std::string path(name);
  // O_NONBLOCK: a FIFO planted under the name must not block the open
  // (glibc's shm_open passes the flag to open(2) and adds O_NOFOLLOW and
  // O_CLOEXEC itself); the S_ISREG check below refuses it.
  const int fd = ::shm_open(path.c_str(), O_RDONLY | O_NONBLOCK, 0);
  if (fd < 0) {
    const int err = errno;
    const std::string why =
        absl::StrCat("cannot open shared-memory region ", shown, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(why);
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(why);
    if (err == ELOOP || err == ENAMETOOLONG || err == EINVAL) {
      return absl::InvalidArgumentError(why);
    }
    return absl::InternalError(why);
  }
  // Owns fd from here on.
  std::unique_ptr<ShmRegion> region(new ShmRegion(path, fd, byte_size, 0));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return absl::InternalError(
        absl::StrCat("fstat of shared-memory region ", shown, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared-memory region ", shown, " is not a regular shared-memory object"));
  }
  region->object_bytes_ = static_cast<uint64_t>(st.st_size);
  if (region->object_bytes_ < byte_size) {
    return absl::InvalidArgumentError(absl::StrCat("shared-memory region ", shown, " holds ",
                                                   region->object_bytes_,
                                                   " bytes, fewer than its byte_size ", byte_size));
  }
  uint8_t head[kShmKeyBytes];
  absl::StatusOr<size_t> got = PreadFully(fd, head, sizeof(head), 0, name);
  if (!got.ok()) return got.status();
  // Not constant-time: the key only proves that the caller could read the
  // object; a caller that can time reprodd's compares can read /dev/shm.
  if (*got != sizeof(head) || std::memcmp(head, key.data(), sizeof(head)) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "shared-memory region ", shown, ": the key does not match the object's first ",
        kShmKeyBytes, " bytes (a region can be registered only by a client that wrote it)"));
  }
  return region;
}

ShmRegion::~ShmRegion() { ::close(fd_); }

absl::StatusOr<uint64_t> ShmRegion::CurrentBytes() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    return absl::InternalError(absl::StrCat("fstat of shared-memory region ", VisibleName(name_),
                                            ": ", std::strerror(errno)));
  }
  return static_cast<uint64_t>(st.st_size);
}

absl::Status ShmRegion::Read(
    uint64_t offset, uint64_t length, absl::Span<uint8_t> buffer,
    absl::FunctionRef<absl::Status(absl::Span<const uint8_t>)> sink) const {
  if (absl::Status s = CheckShmRange(byte_size_, offset, length); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared-memory region ", VisibleName(name_), ": ", s.message()));
  }
  if (buffer.empty()) return absl::InvalidArgumentError("ShmRegion::Read with an empty buffer");
  const uint64_t end = offset + length;  // <= byte_size_: cannot overflow
  absl::StatusOr<uint64_t> now = CurrentBytes();
  if (!now.ok()) return now.status();
  if (*now < end) return Shrunk(name_, *now, end);
  uint64_t at = offset;
  while (at < end) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), end - at));
    absl::StatusOr<size_t> got = PreadFully(fd_, buffer.data(), n, at, name_);
    if (!got.ok()) return got.status();
    if (*got != n) {
      absl::StatusOr<uint64_t> later = CurrentBytes();
      return Shrunk(name_, later.ok() ? *later : at + *got, end);
    }
    if (absl::Status s = sink(absl::MakeConstSpan(buffer.data(), n)); !s.ok()) return s;
    at += n;
  }
  return absl::OkStatus();
}

}  // namespace reprod::server

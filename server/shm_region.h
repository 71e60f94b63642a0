// File: server/shm_region.h
//
// ShmRegion: a producer's POSIX shared-memory object opened read-only by
// reprodd for SharedMemoryService (proto/reprod/v1/shm.proto). The checks
// of a region and of each reference into it live here, free of gRPC:
//
//   REPROD_RETURN_IF_ERROR(ValidateShmName(name));
//   REPROD_ASSIGN_OR_RETURN(std::unique_ptr<ShmRegion> region,
//                           ShmRegion::Open(name, byte_size, key));
//   REPROD_RETURN_IF_ERROR(CheckShmRange(region->byte_size(), offset, length));
//   REPROD_RETURN_IF_ERROR(region->Read(offset, length, buffer, sink));
//
// The object is never mapped: Read copies with pread(2), which returns
// short on an object that a client shrank (ftruncate) meanwhile, where a
// read through a mapping would raise SIGBUS and kill reprodd. Unlinking the
// object's name does not affect an open region.
//
// Thread-safety: a region is used by one session at a time; the free
// functions are pure.
#ifndef REPROD_SERVER_SHM_REGION_H_
#define REPROD_SERVER_SHM_REGION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace reprod::server {

// Bounds of RegisterRegion.byte_size, and the size of its key.
inline constexpr uint64_t kMinShmRegionBytes = 64;
inline constexpr uint64_t kMaxShmRegionBytes = uint64_t{256} << 30;
inline constexpr size_t kShmKeyBytes = 32;

// "/reprod-" and 1-200 bytes of [A-Za-z0-9_.-] (no further '/', so the name
// is one entry of /dev/shm). InvalidArgument naming the rule otherwise.
absl::Status ValidateShmName(std::string_view name);

// OK when [offset, offset + length) lies within a region of `region_bytes`,
// computed without overflow: InvalidArgument naming the three numbers when
// offset > region_bytes or length > region_bytes - offset (so an offset +
// length that would wrap around uint64 is refused too).
absl::Status CheckShmRange(uint64_t region_bytes, uint64_t offset, uint64_t length);

class ShmRegion {
 public:
  // Opens `name` (shm_open O_RDONLY), checks the byte_size bounds, that the
  // object holds at least `byte_size` bytes now and that its first 32 bytes
  // equal `key`. InvalidArgument (name, size, key length, object too small,
  // not a regular object), NotFound (no such object), PermissionDenied
  // (EACCES, key mismatch), Internal for other errno values.
  static absl::StatusOr<std::unique_ptr<ShmRegion>> Open(std::string_view name, uint64_t byte_size,
                                                         std::string_view key);
  ~ShmRegion();
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;

  const std::string& name() const { return name_; }
  // The registered size (the bound of every reference).
  uint64_t byte_size() const { return byte_size_; }
  // The object's size when it was opened.
  uint64_t object_bytes() const { return object_bytes_; }

  // Copies bytes [offset, offset + length) through `buffer` (non-empty),
  // one buffer-full at a time, handing each piece to `sink` in order; the
  // first error of `sink` stops the read and is returned. Checks the range
  // against byte_size() (CheckShmRange) and the object's current size
  // (fstat) first: InvalidArgument when the object shrank below
  // offset + length, before or during the read (then `sink` may have
  // received a prefix).
  absl::Status Read(uint64_t offset, uint64_t length, absl::Span<uint8_t> buffer,
                    absl::FunctionRef<absl::Status(absl::Span<const uint8_t>)> sink) const;

 private:
  ShmRegion(std::string name, int fd, uint64_t byte_size, uint64_t object_bytes)
      : name_(std::move(name)), fd_(fd), byte_size_(byte_size), object_bytes_(object_bytes) {}

  // The object's current size (fstat).
  absl::StatusOr<uint64_t> CurrentBytes() const;

  std::string name_;
  int fd_;
  uint64_t byte_size_;
  uint64_t object_bytes_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_SHM_REGION_H_

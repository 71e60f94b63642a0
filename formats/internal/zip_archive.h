// File: formats/internal/zip_archive.h
//
// A read-only zip archive over bytes already in memory (internal API): the
// one zip reader behind the .npz and torch.save readers.
//
//   REPROD_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Open(file->bytes(), file->path()));
//   for (const ZipArchive::Member& m : zip.members()) ...
//   REPROD_ASSIGN_OR_RETURN(ByteSource member, zip.Read(m, &budget));
//
// The archive is opened with libzip directly over the bytes (no temp files)
// with its consistency checks on. Open lists every entry and requires a name
// that is valid UTF-8 and known sizes and method for each. Read decompresses
// one member into its own buffer: encrypted members and methods other than
// stored and deflated are refused, and the declared uncompressed size is
// checked against the archive size (deflate cannot expand more than ~1032:1)
// and ReadOptions::max_alloc_bytes before anything is allocated, and a member
// over 64 MiB against ReadOptions::max_compression_ratio; the member
// must then yield exactly its declared size (one byte past it is read to
// prove EOF) and libzip verifies its CRC-32.
//
// Errors name the file and the member ("a.npz:x.npy: ..."): InvalidArgument
// (not a zip, inconsistent archive, unsupported member, impossible size),
// DataLoss (truncated, larger than declared, CRC mismatch), ResourceExhausted
// (over ReadOptions, including the compression ratio). Readers whose members
// carry their own header (.npz) or whose index declares the sizes (torch's
// data.pkl) compare those with the zip's declared size before Read, so the
// zip's size alone is never trusted.
//
// Thread-safety: a ZipArchive is used by one thread at a time.
#ifndef REPROD_FORMATS_INTERNAL_ZIP_ARCHIVE_H_
#define REPROD_FORMATS_INTERNAL_ZIP_ARCHIVE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/visible.h"
#include "formats/internal/array.h"

namespace reprod::formats::internal {

class ZipArchive {
 public:
  struct Member {
    uint64_t index = 0;      // libzip's entry index
    std::string name;        // valid UTF-8; directories end with '/'
    uint64_t size = 0;       // declared uncompressed size
    uint64_t comp_size = 0;  // declared compressed size
    uint16_t method = 0;     // ZIP_CM_*
    bool encrypted = false;
    bool IsDirectory() const { return !name.empty() && name.back() == '/'; }
  };

  // Opens the archive held by `bytes`, which must stay alive and unchanged
  // for the archive's lifetime; `path` names it in messages.
  static absl::StatusOr<ZipArchive> Open(std::string_view bytes, std::string path);

  ZipArchive(ZipArchive&&) noexcept;
  ZipArchive& operator=(ZipArchive&&) noexcept;
  ~ZipArchive();

  // Every entry, in archive order.
  const std::vector<Member>& members() const { return members_; }
  // The first member named `name`, or nullptr.
  const Member* Find(std::string_view name) const;
  // "path:name", for messages.
  std::string What(const Member& m) const { return path_ + ":" + VisibleName(m.name); }

  // Decompresses `m` into a new buffer (see the file comment for the checks),
  // charging its size to budget->ChargeAlloc. The returned source owns the
  // buffer; its `what` is What(m).
  absl::StatusOr<ByteSource> Read(const Member& m, ReadBudget* budget) const;

  // The first min(n, m.size) bytes of `m` decompressed (fewer when the
  // member is shorter than declared), without reading the rest: enough to
  // learn the size a member's own header declares before trusting the zip's.
  // The caller bounds `n`. Refuses what Read refuses for the member's kind.
  absl::StatusOr<std::string> ReadPrefix(const Member& m, uint64_t n) const;

 private:
  // Encrypted members, methods other than stored and deflated, and declared
  // sizes impossible for the archive (deflate expands at most ~1032:1).
  absl::Status CheckMember(const Member& m) const;
  // The ReadOptions::max_compression_ratio bound on m.size.
  absl::Status CheckRatio(const Member& m, const ReadOptions& options) const;

  struct Handle;
  ZipArchive() = default;

  std::unique_ptr<Handle> handle_;
  std::string path_;
  uint64_t archive_size_ = 0;
  std::vector<Member> members_;
};

// True when `bytes` starts like a zip archive ("PK\3\4" or, for an empty
// one, "PK\5\6").
bool HasZipMagic(std::string_view bytes);

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_ZIP_ARCHIVE_H_

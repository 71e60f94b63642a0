#include "storage/rocksdb/internal/segment_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "spdlog/spdlog.h"
#include "storage/rocksdb/internal/coding.h"

namespace reprod::storage::internal {
namespace {

constexpr std::string_view kMagic = "rpdseg01";
constexpr uint32_t kSegmentVersion = 1;
// Writeback of a segment's dirty pages is started every this many bytes, so
// that the final fdatasync waits for a little, not the whole tensor.
constexpr uint64_t kWritebackBytes = 8 << 20;

uint64_t DecodeFixed64(const char* in) {
  return uint64_t{DecodeFixed32(in)} | (uint64_t{DecodeFixed32(in + 4)} << 32);
}

uint64_t NumBlocks(uint64_t length, uint64_t block) { return (length + block - 1) / block; }

// "disk full: ..." for ENOSPC/EDQUOT (the server answers RESOURCE_EXHAUSTED),
// Unavailable for other errors.
absl::Status ErrnoStatus(const std::string& what, const std::string& path, const char* op,
                         int err) {
  const std::string message =
      absl::StrCat(what, ": ", op, " segment file ", path, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) {
    return absl::ResourceExhaustedError(absl::StrCat("disk full: ", message));
  }
  return absl::UnavailableError(message);
}

absl::Status Corrupt(const std::string& what, const std::string& path, std::string_view why) {
  return absl::DataLossError(absl::StrCat(what, ": segment file ", path, " is corrupt: ", std::string(why)));
}

bool PreadAll(int fd, char* out, size_t n, uint64_t offset) {
  while (n > 0) {
    const ssize_t got = pread(fd, out, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    out += got;
    n -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return true;
}

}  // namespace

// --- SegmentWriter ---------------------------------------------------------

absl::StatusOr<std::unique_ptr<SegmentWriter>> SegmentWriter::Create(std::string path,
                                                                     std::string what) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(what, path, "create", errno);
  return std::unique_ptr<SegmentWriter>(new SegmentWriter(fd, std::move(path), std::move(what)));
}

SegmentWriter::~SegmentWriter() {
  if (fd_ >= 0) close(fd_);
}

absl::Status SegmentWriter::IoError(const char* op, int err) const {
  return ErrnoStatus(what_, path_, op, err);
}

absl::Status SegmentWriter::WriteAll(const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t put = write(fd_, p, n);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) return IoError("write", errno);
    p += put;
    n -= static_cast<size_t>(put);
  }
  return absl::OkStatus();
}

absl::Status SegmentWriter::Append(absl::Span<const uint8_t> data) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(what_, ": segment finished"));
  const absl::Span<const uint8_t> all = data;
  while (!data.empty()) {
    const uint64_t fill = bytes_ % kSegmentBlock;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(kSegmentBlock - fill, data.size()));
    block_crc_ = Crc32cExtend(block_crc_, data.data(), take);
    bytes_ += take;
    data.remove_prefix(take);
    if (bytes_ % kSegmentBlock == 0) {
      block_crcs_.push_back(block_crc_);
      whole_crc_ = Crc32cCombine(whole_crc_, block_crc_, kSegmentBlock);
      block_crc_ = 0;
    }
  }
  absl::Status written = WriteAll(all.data(), all.size());
  if (!written.ok()) return written;
  unsynced_ += all.size();
  if (unsynced_ >= kWritebackBytes) {
    // Advisory: starts writeback without waiting (RocksDB's bytes_per_sync).
    sync_file_range(fd_, static_cast<off_t>(synced_through_),
                    static_cast<off_t>(bytes_ - synced_through_), SYNC_FILE_RANGE_WRITE);
    synced_through_ = bytes_;
    unsynced_ = 0;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> SegmentWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(what_, ": segment finished"));
  const uint64_t tail = bytes_ % kSegmentBlock;
  if (tail != 0) {
    block_crcs_.push_back(block_crc_);
    whole_crc_ = Crc32cCombine(whole_crc_, block_crc_, tail);
  }
  std::string trailer;
  trailer.reserve(block_crcs_.size() * 4 + kSegmentFooterSize);
  for (uint32_t crc : block_crcs_) PutFixed32(&trailer, crc);
  const uint32_t array_crc = Crc32c(trailer);
  const size_t footer_at = trailer.size();
  PutFixed64(&trailer, bytes_);
  PutFixed32(&trailer, kSegmentBlock);
  PutFixed32(&trailer, array_crc);
  PutFixed32(&trailer, kSegmentVersion);
  PutFixed32(&trailer, Crc32c(std::string_view(trailer).substr(footer_at, 20)));
  trailer.append(kMagic);
  absl::Status written = WriteAll(trailer.data(), trailer.size());
  if (!written.ok()) return written;
  if (fdatasync(fd_) != 0) return IoError("fdatasync", errno);
  if (close(fd_) != 0) {
    fd_ = -1;
    return IoError("close", errno);
  }
  fd_ = -1;
  return whole_crc_;
}

// --- SegmentReader ---------------------------------------------------------

absl::StatusOr<std::unique_ptr<SegmentReader>> SegmentReader::Open(const std::string& path,
                                                                   uint64_t length,
                                                                   std::string what) {
  std::unique_ptr<SegmentReader> reader(new SegmentReader(path, std::move(what)));
  const std::string& w = reader->what_;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(w, ": segment file ", path, " does not exist"));
    }
    return ErrnoStatus(w, path, "open", errno);
  }
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) close(fd);
    }
  } closer{fd};
  struct stat st{};
  if (fstat(fd, &st) != 0) return ErrnoStatus(w, path, "stat", errno);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < kSegmentFooterSize) {
    return Corrupt(w, path, absl::StrCat("it has ", size, " bytes, less than a footer"));
  }
  char footer[kSegmentFooterSize];
  if (!PreadAll(fd, footer, sizeof footer, size - kSegmentFooterSize)) {
    return ErrnoStatus(w, path, "read", errno == 0 ? EIO : errno);
  }
  if (std::string_view(footer + 24, 8) != kMagic ||
      DecodeFixed32(footer + 20) != Crc32c(footer, 20)) {
    return Corrupt(w, path, "bad footer (magic or checksum)");
  }
  if (DecodeFixed32(footer + 16) != kSegmentVersion) {
    return Corrupt(w, path, absl::StrCat("unknown version ", DecodeFixed32(footer + 16)));
  }
  const uint64_t payload = DecodeFixed64(footer);
  const uint32_t block = DecodeFixed32(footer + 8);
  if (payload != length || block == 0) {
    return Corrupt(w, path, absl::StrCat("it holds ", payload, " bytes in blocks of ", block,
                                         ", the index says ", length, " bytes"));
  }
  const uint64_t blocks = NumBlocks(length, block);
  if (size != length + 4 * blocks + kSegmentFooterSize) {
    return Corrupt(w, path, absl::StrCat("its size is ", size, " bytes, expected ",
                                         length + 4 * blocks + kSegmentFooterSize));
  }
  std::string crcs(4 * blocks, '\0');
  if (!PreadAll(fd, crcs.data(), crcs.size(), length)) {
    return ErrnoStatus(w, path, "read", errno == 0 ? EIO : errno);
  }
  if (Crc32c(crcs) != DecodeFixed32(footer + 12)) {
    return Corrupt(w, path, "block checksum array fails its checksum");
  }
  reader->block_crcs_.resize(blocks);
  for (uint64_t i = 0; i < blocks; ++i) reader->block_crcs_[i] = DecodeFixed32(&crcs[4 * i]);
  reader->length_ = length;
  reader->block_ = block;
  reader->fd_ = fd;
  closer.fd = -1;  // the reader keeps it
  return reader;
}

SegmentReader::~SegmentReader() {
  if (fd_ >= 0) close(fd_);
}

uint64_t SegmentReader::BlockSize(uint64_t index) const {
  return std::min<uint64_t>(block_, length_ - index * block_);
}

absl::Status SegmentReader::ReadBlocks(uint64_t first, uint64_t n, uint8_t* out) {
  // Block by block, each checksummed right after its read while it is still
  // in the CPU's cache (one pass over memory instead of two).
  for (uint64_t i = first; i < first + n; ++i, out += block_) {
    const uint64_t begin = i * block_;
    const uint64_t size = BlockSize(i);
    if (!PreadAll(fd_, reinterpret_cast<char*>(out), size, begin)) {
      const int err = errno == 0 ? EIO : errno;
      return absl::DataLossError(absl::StrCat(what_, ": segment file ", path_, ": cannot read ",
                                              size, " bytes at ", begin, ": ",
                                              std::strerror(err)));
    }
    absl::Status verified = VerifyBlock(i, out);
    if (!verified.ok()) return verified;
  }
  return absl::OkStatus();
}

absl::Status SegmentReader::VerifyBlock(uint64_t index, const uint8_t* data) const {
  const uint64_t size = BlockSize(index);
  const uint32_t crc = Crc32c(data, size);
  if (crc == block_crcs_[index]) return absl::OkStatus();
  return absl::DataLossError(absl::StrFormat(
      "%s: segment file %s, block %d of %d (bytes %d..%d): crc32c 0x%08x, stored 0x%08x", what_,
      path_, index, block_crcs_.size(), index * block_, index * block_ + size, crc,
      block_crcs_[index]));
}

absl::Status SegmentReader::LoadBlock(uint64_t index) {
  if (buffered_block_ == index) return absl::OkStatus();
  buffered_block_ = ~uint64_t{0};
  block_buffer_.resize(block_);
  absl::Status read = ReadBlocks(index, 1, block_buffer_.data());
  if (read.ok()) buffered_block_ = index;
  return read;
}

namespace {

class SegmentMapping final : public MappedBytes {
 public:
  SegmentMapping(void* base, size_t size, absl::Span<const uint8_t> bytes)
      : base_(base), size_(size), bytes_(bytes) {}
  ~SegmentMapping() override {
    if (base_ != nullptr) munmap(base_, size_);
  }
  absl::Span<const uint8_t> bytes() const override { return bytes_; }

 private:
  void* const base_;
  const size_t size_;
  const absl::Span<const uint8_t> bytes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MappedBytes>> SegmentReader::Map(uint64_t offset, uint64_t size) {
  if (size == 0) return std::make_unique<SegmentMapping>(nullptr, 0, absl::Span<const uint8_t>());
  const uint64_t first = offset / block_;
  const uint64_t last = (offset + size - 1) / block_;
  const uint64_t begin = first * block_;  // blocks are page multiples
  const uint64_t end = last * block_ + BlockSize(last);
  void* base = mmap(nullptr, end - begin, PROT_READ, MAP_SHARED | MAP_POPULATE, fd_,
                    static_cast<off_t>(begin));
  if (base == MAP_FAILED) return ErrnoStatus(what_, path_, "mmap", errno);
  auto mapping = std::make_unique<SegmentMapping>(
      base, end - begin,
      absl::Span<const uint8_t>(static_cast<const uint8_t*>(base) + (offset - begin), size));
  if (mapped_verified_.size() != block_crcs_.size()) {
    mapped_verified_.assign(block_crcs_.size(), false);
  }
  const auto* p = static_cast<const uint8_t*>(base);
  for (uint64_t i = first; i <= last; ++i) {
    if (mapped_verified_[i]) continue;
    absl::Status verified = VerifyBlock(i, p + (i * block_ - begin));
    if (!verified.ok()) return verified;
    mapped_verified_[i] = true;
  }
  return mapping;
}

absl::Status SegmentReader::Read(uint64_t offset, absl::Span<uint8_t> dst) {
  const uint64_t end = offset + dst.size();
  uint8_t* out = dst.data();
  uint64_t at = offset;
  while (at < end) {
    const uint64_t index = at / block_;
    const uint64_t block_begin = index * block_;
    if (at == block_begin && std::min(end, length_) >= block_begin + BlockSize(index)) {
      // Whole blocks from here: one pread straight into dst.
      uint64_t n = 1;
      while (index + n < block_crcs_.size() &&
             (index + n) * block_ + BlockSize(index + n) <= end) {
        ++n;
      }
      absl::Status read = ReadBlocks(index, n, out);
      if (!read.ok()) return read;
      const uint64_t bytes = std::min<uint64_t>(n * block_, length_ - block_begin);
      out += bytes;
      at += bytes;
      continue;
    }
    absl::Status loaded = LoadBlock(index);
    if (!loaded.ok()) return loaded;
    const uint64_t take = std::min(end, block_begin + BlockSize(index)) - at;
    std::memcpy(out, block_buffer_.data() + (at - block_begin), take);
    out += take;
    at += take;
  }
  return absl::OkStatus();
}

// --- SegmentDirectory ------------------------------------------------------

std::string SegmentDirectory::PathOf(uint64_t blob_id) const {
  return absl::StrFormat("%s/%016x.seg", dir_, blob_id);
}

bool SegmentDirectory::ParseName(const std::string& name, uint64_t* blob_id) {
  if (name.size() != 20 || !name.ends_with(".seg")) return false;
  uint64_t id = 0;
  for (size_t i = 0; i < 16; ++i) {
    const char c = name[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return false;
    }
    id = (id << 4) | static_cast<uint64_t>(digit);
  }
  *blob_id = id;
  return true;
}

absl::Status SegmentDirectory::Ensure() {
  if (mkdir(dir_.c_str(), 0750) != 0) {
    if (errno == EEXIST) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("cannot create segment folder ", dir_, ": ", std::strerror(errno)));
  }
  const std::string parent = std::filesystem::path(dir_).parent_path().string();
  const int fd = open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  return absl::OkStatus();
}

absl::Status SegmentDirectory::SyncEntries() {
  uint64_t want;
  {
    absl::MutexLock lock(&mu_);
    want = created_;
    if (synced_ >= want) return absl::OkStatus();
  }
  absl::MutexLock one_at_a_time(&sync_mu_);
  uint64_t target;
  {
    absl::MutexLock lock(&mu_);
    if (synced_ >= want) return absl::OkStatus();  // another caller's fsync
    target = created_;
  }
  const int fd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("fsync of segment folder ", dir_, ": ", std::strerror(err)));
  }
  close(fd);
  absl::MutexLock lock(&mu_);
  synced_ = std::max(synced_, target);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> SegmentDirectory::List() const {
  std::vector<uint64_t> ids;
  std::error_code ec;
  if (!std::filesystem::exists(dir_, ec)) return ids;
  std::filesystem::directory_iterator it(dir_, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    uint64_t id;
    if (ParseName(it->path().filename().string(), &id)) ids.push_back(id);
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot list segment folder ", dir_, ": ", ec.message()));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

void SegmentDirectory::Remove(uint64_t blob_id) const {
  const std::string path = PathOf(blob_id);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("cannot delete segment file {}: {}", path, std::strerror(errno));
  }
}

void SegmentDirectory::Count(uint64_t* files, uint64_t* bytes) const {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir_, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::error_code gone;
    const uintmax_t size = it->file_size(gone);
    if (gone) continue;  // deleted while listed
    ++*files;
    *bytes += size;
  }
}

}  // namespace reprod::storage::internal

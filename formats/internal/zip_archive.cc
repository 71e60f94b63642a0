#include "formats/internal/zip_archive.h"

#include <zip.h>

#include <algorithm>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reprod::formats::internal {
namespace {

// Deflate cannot expand data by more than about 1032:1; a larger declared
// ratio is a lie, refused before allocating.
constexpr uint64_t kMaxDeflateRatio = 1032;
// The most bytes asked of libzip in one zip_fread.
constexpr uint64_t kMaxReadChunk = uint64_t{1} << 30;

struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

// libzip's message for `code`.
std::string ZipErrorString(int code) {
  zip_error_t err;
  zip_error_init_with_code(&err, code);
  std::string msg = zip_error_strerror(&err);
  zip_error_fini(&err);
  return msg;
}

absl::Status ZipError(const std::string& what, int code) {
  const std::string msg = absl::StrCat(what, ": ", ZipErrorString(code));
  switch (code) {
    case ZIP_ER_CRC:
    case ZIP_ER_EOF:
    case ZIP_ER_READ:
    case ZIP_ER_ZLIB:
      return absl::DataLossError(msg);
    case ZIP_ER_MEMORY:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InvalidArgumentError(msg);
  }
}

}  // namespace

struct ZipArchive::Handle {
  zip_t* zip = nullptr;
  ~Handle() {
    if (zip != nullptr) zip_discard(zip);
  }
};

ZipArchive::ZipArchive(ZipArchive&&) noexcept = default;
ZipArchive& ZipArchive::operator=(ZipArchive&&) noexcept = default;
ZipArchive::~ZipArchive() = default;

bool HasZipMagic(std::string_view bytes) {
  return bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4) ||
         bytes.substr(0, 4) == std::string_view("PK\x05\x06", 4);
}

absl::StatusOr<ZipArchive> ZipArchive::Open(std::string_view bytes, std::string path) {
  if (!HasZipMagic(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a zip archive (first bytes ", HexPrefix(bytes), ")"));
  }
  ZipArchive a;
  a.path_ = std::move(path);
  a.archive_size_ = bytes.size();
  a.handle_ = std::make_unique<Handle>();
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &err);
  if (source == nullptr) {
    const int code = zip_error_code_zip(&err);
    zip_error_fini(&err);
    return ZipError(a.path_, code);
  }
  a.handle_->zip = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (a.handle_->zip == nullptr) {
    const int code = zip_error_code_zip(&err);
    zip_error_fini(&err);
    zip_source_free(source);
    return ZipError(absl::StrCat(a.path_, ": cannot open zip archive"), code);
  }
  zip_error_fini(&err);

  zip_t* zip = a.handle_->zip;
  const zip_int64_t count = zip_get_num_entries(zip, 0);
  for (zip_int64_t i = 0; i < count; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(zip, static_cast<zip_uint64_t>(i), 0, &st) != 0) {
      return ZipError(absl::StrCat(a.path_, ": member ", i),
                      zip_error_code_zip(zip_get_error(zip)));
    }
    const zip_uint64_t need = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE |
                              ZIP_STAT_COMP_METHOD | ZIP_STAT_ENCRYPTION_METHOD;
    if ((st.valid & need) != need || st.name == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.path_, ": member ", i, " lacks name, sizes or method"));
    }
    Member m;
    m.index = static_cast<uint64_t>(i);
    m.name = st.name;
    if (!IsValidUtf8(m.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.path_, ": member name ", Quote(m.name), " is not valid UTF-8"));
    }
    m.size = st.size;
    m.comp_size = st.comp_size;
    m.method = st.comp_method;
    m.encrypted = st.encryption_method != ZIP_EM_NONE;
    a.members_.push_back(std::move(m));
  }
  return a;
}

const ZipArchive::Member* ZipArchive::Find(std::string_view name) const {
  for (const Member& m : members_) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

absl::Status ZipArchive::CheckMember(const Member& m) const {
  if (m.encrypted) {
    return absl::InvalidArgumentError(
        absl::StrCat(What(m), ": encrypted members are not supported"));
  }
  if (m.method != ZIP_CM_STORE && m.method != ZIP_CM_DEFLATE) {
    return absl::InvalidArgumentError(absl::StrCat(What(m), ": unsupported compression method ",
                                                   m.method, " (only stored and deflated)"));
  }
  const uint64_t max_size =
      m.method == ZIP_CM_STORE ? m.comp_size : m.comp_size * kMaxDeflateRatio + 1024;
  if (m.comp_size > archive_size_ || m.size > max_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        What(m), ": declared size ", m.size, " (", m.comp_size,
        " compressed) is impossible for a ", archive_size_, "-byte archive"));
  }
  return absl::OkStatus();
}

absl::Status ZipArchive::CheckRatio(const Member& m, const ReadOptions& options) const {
  const uint64_t ratio = options.max_compression_ratio;
  if (ratio == 0 || m.size <= options.compression_ratio_free_bytes) return absl::OkStatus();
  // comp_size <= archive size (CheckMember ran first), so no overflow for
  // any sensible ratio; saturate anyway.
  const uint64_t allowed =
      m.comp_size > ~uint64_t{0} / ratio ? ~uint64_t{0} : m.comp_size * ratio;
  if (m.size <= allowed) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      What(m), ": member expands ", m.comp_size == 0 ? m.size : m.size / m.comp_size,
      ":1 (", m.size, " bytes from ", m.comp_size, " compressed), over the ", ratio,
      ":1 limit for members over ", options.compression_ratio_free_bytes,
      " bytes (ReadOptions::max_compression_ratio); refused as a likely zip bomb (reprodctl: "
      "--max-expansion-ratio N raises the limit, 0 turns it off)"));
}

absl::StatusOr<std::string> ZipArchive::ReadPrefix(const Member& m, uint64_t n) const {
  const std::string what = What(m);
  REPROD_RETURN_IF_ERROR(CheckMember(m));
  n = std::min(n, m.size);
  std::string out(static_cast<size_t>(n), '\0');
  std::unique_ptr<zip_file_t, ZipFileCloser> file(zip_fopen_index(handle_->zip, m.index, 0));
  if (file == nullptr) return ZipError(what, zip_error_code_zip(zip_get_error(handle_->zip)));
  uint64_t got = 0;
  while (got < n) {
    const zip_int64_t r = zip_fread(file.get(), out.data() + got, n - got);
    if (r < 0) return ZipError(what, zip_error_code_zip(zip_file_get_error(file.get())));
    if (r == 0) break;
    got += static_cast<uint64_t>(r);
  }
  out.resize(static_cast<size_t>(got));
  return out;
}

absl::StatusOr<ByteSource> ZipArchive::Read(const Member& m, ReadBudget* budget) const {
  const std::string what = What(m);
  REPROD_RETURN_IF_ERROR(CheckMember(m));
  const uint64_t size = m.size;
  REPROD_RETURN_IF_ERROR(CheckRatio(m, budget->options()));
  REPROD_RETURN_IF_ERROR(budget->ChargeAlloc(size, what));
  std::shared_ptr<char[]> buffer(new (std::nothrow) char[size == 0 ? 1 : size]);
  if (buffer == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": cannot allocate ", size, " bytes"));
  }
  std::unique_ptr<zip_file_t, ZipFileCloser> file(zip_fopen_index(handle_->zip, m.index, 0));
  if (file == nullptr) return ZipError(what, zip_error_code_zip(zip_get_error(handle_->zip)));
  uint64_t got = 0;
  for (;;) {
    // Read one byte past the declared size: the extra read must hit EOF
    // (and makes libzip verify the CRC). Requests stay under 1 GiB, well
    // inside what every layer below (zlib's 32-bit counts) handles.
    char probe;
    char* dst = got < size ? buffer.get() + got : &probe;
    const uint64_t want = got < size ? std::min<uint64_t>(size - got, kMaxReadChunk) : 1;
    const zip_int64_t r = zip_fread(file.get(), dst, want);
    if (r < 0) return ZipError(what, zip_error_code_zip(zip_file_get_error(file.get())));
    if (r == 0) break;
    if (got >= size) {
      return absl::DataLossError(
          absl::StrCat(what, ": member is larger than its declared ", size, " bytes"));
    }
    got += static_cast<uint64_t>(r);
  }
  if (got != size) {
    return absl::DataLossError(absl::StrCat(what, ": member has ", got, " bytes, declared ", size));
  }
  ByteSource src;
  src.bytes = std::string_view(buffer.get(), static_cast<size_t>(size));
  src.owner = std::shared_ptr<const void>(buffer, buffer.get());
  src.what = what;
  return src;
}

}  // namespace reprod::formats::internal

#include "formats/internal/zip_archive.h"

#include <zip.h>

#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reprod::formats::internal {
namespace {

// Deflate cannot expand data by more than about 1032:1; a larger declared
// ratio is a lie, refused before allocating.
constexpr uint64_t kMaxDeflateRatio = 1032;

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

absl::StatusOr<ByteSource> ZipArchive::Read(const Member& m, ReadBudget* budget) const {
  const std::string what = What(m);
  if (m.encrypted) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": encrypted members are not supported"));
  }
  if (m.method != ZIP_CM_STORE && m.method != ZIP_CM_DEFLATE) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unsupported compression method ",
                                                   m.method, " (only stored and deflated)"));
  }
  const uint64_t size = m.size;
  const uint64_t max_size =
      m.method == ZIP_CM_STORE ? m.comp_size : m.comp_size * kMaxDeflateRatio + 1024;
  if (m.comp_size > archive_size_ || size > max_size) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": declared size ", size, " (",
                                                   m.comp_size, " compressed) is impossible for a ",
                                                   archive_size_, "-byte archive"));
  }
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
    // (and makes libzip verify the CRC).
    char probe;
    char* dst = got < size ? buffer.get() + got : &probe;
    const uint64_t want = got < size ? size - got : 1;
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

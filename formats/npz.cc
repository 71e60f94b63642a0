#include "formats/npz.h"

#include <zip.h>

#include <new>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/internal/array.h"
#include "formats/internal/npy_reader.h"

namespace reprod::formats {
namespace {

// Deflate cannot expand data by more than about 1032:1; a larger declared
// ratio is a lie, refused before allocating.
constexpr uint64_t kMaxDeflateRatio = 1032;

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
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

absl::StatusOr<TensorFile> ReadNpz(std::shared_ptr<const MappedFile> file,
                                   const ReadOptions& options) {
  const std::string& path = file->path();
  TensorFile out;
  out.path = path;
  out.format = FileFormat::kNpz;
  internal::ReadBudget budget(options);
  const std::string_view bytes = file->bytes();
  if (bytes.substr(0, 4) != std::string_view("PK\x03\x04", 4) &&
      bytes.substr(0, 4) != std::string_view("PK\x05\x06", 4)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a zip archive (first bytes ", internal::HexPrefix(bytes), ")"));
  }

  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* source = zip_source_buffer_create(file->data(), file->size(), 0, &err);
  if (source == nullptr) {
    const int code = zip_error_code_zip(&err);
    zip_error_fini(&err);
    return ZipError(path, code);
  }
  zip_t* raw = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (raw == nullptr) {
    const int code = zip_error_code_zip(&err);
    zip_error_fini(&err);
    zip_source_free(source);
    return ZipError(absl::StrCat(path, ": cannot open zip archive"), code);
  }
  zip_error_fini(&err);
  std::unique_ptr<zip_t, ZipCloser> archive(raw);

  const zip_int64_t count = zip_get_num_entries(archive.get(), 0);
  absl::flat_hash_set<std::string> keys;
  for (zip_int64_t i = 0; i < count; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive.get(), static_cast<zip_uint64_t>(i), 0, &st) != 0) {
      return ZipError(absl::StrCat(path, ": member ", i),
                      zip_error_code_zip(zip_get_error(archive.get())));
    }
    const zip_uint64_t need = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE |
                              ZIP_STAT_COMP_METHOD | ZIP_STAT_ENCRYPTION_METHOD;
    if ((st.valid & need) != need || st.name == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": member ", i, " lacks name, sizes or method"));
    }
    const std::string name = st.name;
    const std::string what = absl::StrCat(path, ":", name);
    if (!internal::IsValidUtf8(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": member name ", internal::Quote(name), " is not valid UTF-8"));
    }
    if (absl::EndsWith(name, "/")) continue;  // directory entry
    if (!absl::EndsWith(name, ".npy")) {
      out.skipped.push_back(absl::StrCat(name, ": archive member is not an .npy file"));
      continue;
    }
    const std::string key = name.substr(0, name.size() - 4);
    if (!keys.insert(key).second) {
      out.skipped.push_back(absl::StrCat(key, ": duplicate archive member (first one kept)"));
      continue;
    }
    if (st.encryption_method != ZIP_EM_NONE) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": encrypted members are not supported"));
    }
    if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": unsupported compression method ", st.comp_method,
          " (only stored and deflated)"));
    }
    const uint64_t size = st.size;
    const uint64_t max_size = st.comp_method == ZIP_CM_STORE
                                  ? st.comp_size
                                  : st.comp_size * kMaxDeflateRatio + 1024;
    if (st.comp_size > file->size() || size > max_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": declared size ", size, " (", st.comp_size,
          " compressed) is impossible for a ", file->size(), "-byte archive"));
    }
    REPROD_RETURN_IF_ERROR(budget.ChargeAlloc(size, what));
    std::shared_ptr<char[]> buffer(new (std::nothrow) char[size == 0 ? 1 : size]);
    if (buffer == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat(what, ": cannot allocate ", size, " bytes"));
    }
    std::unique_ptr<zip_file_t, ZipFileCloser> member(
        zip_fopen_index(archive.get(), static_cast<zip_uint64_t>(i), 0));
    if (member == nullptr) {
      return ZipError(what, zip_error_code_zip(zip_get_error(archive.get())));
    }
    uint64_t got = 0;
    for (;;) {
      // Read one byte past the declared size: the extra read must hit EOF
      // (and makes libzip verify the CRC).
      char probe;
      char* dst = got < size ? buffer.get() + got : &probe;
      const uint64_t want = got < size ? size - got : 1;
      const zip_int64_t r = zip_fread(member.get(), dst, want);
      if (r < 0) {
        return ZipError(what, zip_error_code_zip(zip_file_get_error(member.get())));
      }
      if (r == 0) break;
      if (got >= size) {
        return absl::DataLossError(absl::StrCat(what, ": member is larger than its declared ",
                                                size, " bytes"));
      }
      got += static_cast<uint64_t>(r);
    }
    if (got != size) {
      return absl::DataLossError(absl::StrCat(what, ": member has ", got,
                                              " bytes, declared ", size));
    }
    internal::ByteSource src;
    src.bytes = std::string_view(buffer.get(), static_cast<size_t>(size));
    src.owner = std::shared_ptr<const void>(buffer, buffer.get());
    src.what = what;
    bool pickled = false;
    REPROD_RETURN_IF_ERROR(internal::ReadNpyInto(src, key, /*skip_unsupported=*/true, &budget,
                                                 &out, &pickled));
  }
  return out;
}

}  // namespace reprod::formats

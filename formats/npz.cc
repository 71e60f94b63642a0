#include "formats/npz.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "formats/internal/array.h"
#include "formats/internal/npy_reader.h"
#include "formats/internal/zip_archive.h"

namespace reprod::formats {
namespace {

using internal::ZipArchive;

// Reads member `m`, an .npy, trusting the zip's declared size only when the
// npy header agrees with it: the header is decompressed first, and a numeric
// array's member must be exactly header plus shape times itemsize, so
// decompression never runs past what the header declares.
absl::StatusOr<internal::ByteSource> ReadNpyMember(const ZipArchive& zip,
                                                   const ZipArchive::Member& m,
                                                   internal::ReadBudget* budget) {
  constexpr uint64_t kUsualHeadBytes = 4096;  // numpy's headers are far shorter
  std::string head;
  REPROD_ASSIGN_OR_RETURN(head, zip.ReadPrefix(m, kUsualHeadBytes));
  std::string desc;
  absl::StatusOr<std::optional<uint64_t>> size =
      internal::NpyDeclaredSize(head, zip.What(m), &desc);
  if (size.status().code() == absl::StatusCode::kDataLoss && head.size() == kUsualHeadBytes) {
    REPROD_ASSIGN_OR_RETURN(head, zip.ReadPrefix(m, internal::MaxNpyHeaderBytes()));
    size = internal::NpyDeclaredSize(head, zip.What(m), &desc);
  }
  if (!size.ok()) return size.status();
  if (size->has_value() && **size != m.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        zip.What(m), ": npy header declares ", desc, " (", **size,
        " bytes with the header) but the zip declares ", m.size,
        " bytes uncompressed; refused without decompressing past the header"));
  }
  return zip.Read(m, budget);
}

}  // namespace

absl::StatusOr<TensorFile> ReadNpz(std::shared_ptr<const MappedFile> file,
                                   const ReadOptions& options) {
  TensorFile out;
  out.path = file->path();
  out.format = FileFormat::kNpz;
  internal::ReadBudget budget(options);
  REPROD_ASSIGN_OR_RETURN(internal::ZipArchive zip,
                          internal::ZipArchive::Open(file->bytes(), file->path()));
  absl::flat_hash_set<std::string> keys;
  for (const internal::ZipArchive::Member& m : zip.members()) {
    if (m.IsDirectory()) continue;
    if (!absl::EndsWith(m.name, ".npy")) {
      out.skipped.push_back(
          absl::StrCat(VisibleName(m.name), ": archive member is not an .npy file"));
      continue;
    }
    const std::string key = m.name.substr(0, m.name.size() - 4);
    if (!keys.insert(key).second) {
      out.skipped.push_back(
          absl::StrCat(VisibleName(key), ": duplicate archive member (first one kept)"));
      continue;
    }
    REPROD_ASSIGN_OR_RETURN(internal::ByteSource src, ReadNpyMember(zip, m, &budget));
    bool pickled = false;
    REPROD_RETURN_IF_ERROR(
        internal::ReadNpyInto(src, key, /*skip_unsupported=*/true, &budget, &out, &pickled));
  }
  return out;
}

}  // namespace reprod::formats

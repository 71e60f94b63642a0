#include "formats/npz.h"

#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/internal/array.h"
#include "formats/internal/npy_reader.h"
#include "formats/internal/zip_archive.h"

namespace reprod::formats {

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
      out.skipped.push_back(absl::StrCat(m.name, ": archive member is not an .npy file"));
      continue;
    }
    const std::string key = m.name.substr(0, m.name.size() - 4);
    if (!keys.insert(key).second) {
      out.skipped.push_back(absl::StrCat(key, ": duplicate archive member (first one kept)"));
      continue;
    }
    REPROD_ASSIGN_OR_RETURN(internal::ByteSource src, zip.Read(m, &budget));
    bool pickled = false;
    REPROD_RETURN_IF_ERROR(
        internal::ReadNpyInto(src, key, /*skip_unsupported=*/true, &budget, &out, &pickled));
  }
  return out;
}

}  // namespace reprod::formats

#include "formats/pickle.h"

#include <utility>

#include "common/status_macros.h"
#include "formats/internal/array.h"
#include "formats/internal/unpickler.h"

namespace reprod::formats {

absl::StatusOr<TensorFile> ReadPickle(std::shared_ptr<const MappedFile> file,
                                      const ReadOptions& options) {
  TensorFile out;
  out.path = file->path();
  out.format = FileFormat::kPickle;
  internal::ByteSource src;
  src.bytes = file->bytes();
  src.what = file->path();
  src.owner = std::move(file);
  internal::ReadBudget budget(options);
  budget.AllowCopies(src.bytes.size());
  REPROD_RETURN_IF_ERROR(internal::UnpickleAndFlatten(src, "", &budget, &out));
  return out;
}

}  // namespace reprod::formats

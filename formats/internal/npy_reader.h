// File: formats/internal/npy_reader.h
//
// The .npy reader over a byte range (internal API), shared by ReadNpy and the
// .npz reader (whose members are .npy files).
//
// Thread-safety: reentrant.
#ifndef REPROD_FORMATS_INTERNAL_NPY_READER_H_
#define REPROD_FORMATS_INTERNAL_NPY_READER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "formats/internal/array.h"
#include "formats/tensor_file.h"

namespace reprod::formats::internal {

// Reads the .npy in `src` and appends its tensors to `out` (a numeric array
// under `key`, or "output" when `key` is empty; an object array's pickle
// flattened under `key`). Sets *pickled when the array held a pickle. With
// `skip_unsupported`, an array of a dtype reprod lacks is listed in
// out->skipped instead of failing the read.
absl::Status ReadNpyInto(const ByteSource& src, const std::string& key,
                         bool skip_unsupported, ReadBudget* budget, TensorFile* out,
                         bool* pickled);

// The byte size of the whole .npy (header and data) that begins with `head`,
// when its header fixes it (a numeric array of a supported dtype), with
// *desc set to "shape (2, 3) of '<f4'" for messages; nullopt for object
// arrays and unsupported dtypes. DataLoss when `head` ends inside the
// header; other errors as ReadNpyInto's.
absl::StatusOr<std::optional<uint64_t>> NpyDeclaredSize(std::string_view head,
                                                        const std::string& what,
                                                        std::string* desc);

// The longest .npy prefix NpyDeclaredSize may need: magic, version, length
// and the largest header the reader accepts.
uint64_t MaxNpyHeaderBytes();

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_NPY_READER_H_

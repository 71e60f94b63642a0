// File: formats/safetensors.h
//
// Hugging Face safetensors: reading (zero copy) and writing.
//
//   absl::StatusOr<TensorFile> f = ReadSafetensors(file);
//   absl::StatusOr<std::string> bytes = EncodeSafetensors(tensors);
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//  "__metadata__": {...}}, then the data; offsets are relative to the data.
//
// Reading: N must be <= 100 MB and fit in the file; the JSON is parsed
// without exceptions; every entry's dtype, shape and offsets are validated
// (offsets in range and end - begin == elements * itemsize, all without
// overflow; no two non-empty tensors' bytes overlap, skipped entries
// included; at most 64 dimensions) before any tensor is made. Tensors are returned in the order of
// their data offsets (the producer's order; the JSON keys are usually
// sorted) and borrow from the file when aligned to their element size
// (otherwise copied). "__metadata__" is ignored. Supported dtypes: BOOL U8 I8
// U16 I16 U32 I32 U64 I64 F16 BF16 F32 F64; entries of other dtypes (F8_E4M3,
// C64, ...) are listed in TensorFile::skipped with the dtype's name.
//
// Errors name the file (and the key): DataLoss (file shorter than the header
// or the data it declares), InvalidArgument (malformed JSON or entries),
// ResourceExhausted (sizes over ReadOptions).
//
// Thread-safety: all functions are reentrant.
#ifndef REPROD_FORMATS_SAFETENSORS_H_
#define REPROD_FORMATS_SAFETENSORS_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/tensor.h"
#include "formats/tensor_file.h"

namespace reprod::formats {

// Largest header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Reads the safetensors file held by `file`. Returned tensors may borrow
// from `file`, which they keep alive.
absl::StatusOr<TensorFile> ReadSafetensors(std::shared_ptr<const MappedFile> file,
                                           const ReadOptions& options = {});

// The safetensors dtype name of `dtype` ("F32", "BF16", "BOOL", ...).
std::string_view SafetensorsDTypeName(DType dtype);

// Inverse of SafetensorsDTypeName; nullopt for names reprod does not support.
std::optional<DType> SafetensorsDTypeFromName(std::string_view name);

// Encodes `tensors` (keys must be unique and non-empty) with the data in the
// given order and the header padded with spaces to a multiple of 8 bytes.
// InvalidArgument for duplicate or empty keys or invalid shapes.
absl::StatusOr<std::string> EncodeSafetensors(const std::vector<NamedTensor>& tensors);

}  // namespace reprod::formats

#endif  // REPROD_FORMATS_SAFETENSORS_H_

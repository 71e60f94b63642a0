// File: formats/npy.h
//
// numpy's .npy format (versions 1.0, 2.0 and 3.0): reading and writing.
//
//   absl::StatusOr<TensorFile> f = ReadNpy(file);        // via MappedFile
//   absl::StatusOr<std::string> bytes = EncodeNpy(view);  // v1 header
//
// Reading: the header (a Python dict literal) is parsed without evaluating
// anything. Numeric arrays with descr b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8 in
// any byte order ('<', '>', '|', '=') are returned under the key "output"; C-order
// little-endian data aligned to the element size is borrowed from the file
// (zero copy), Fortran-order or big-endian data is converted into a new
// C-order little-endian buffer. Object arrays ('|O', what np.save writes for
// a dict and reprod_log writes) hold a pickle, which is read by the
// restricted unpickler of formats/pickle.h and flattened into one tensor per
// leaf (format kNpyPickledDict). Other descrs (complex, strings, datetimes,
// structured) are refused with InvalidArgument naming the descr. Trailing
// bytes after the array data are ignored, as numpy does.
//
// Errors name the file: InvalidArgument (bad magic, malformed header,
// unsupported descr or version, header over 1 MiB), DataLoss (truncated
// header or data), ResourceExhausted (sizes over ReadOptions), and the
// pickle reader's errors (PermissionDenied for refused globals).
//
// Thread-safety: all functions are reentrant.
#ifndef REPROD_FORMATS_NPY_H_
#define REPROD_FORMATS_NPY_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/tensor.h"
#include "formats/tensor_file.h"

namespace reprod::formats {

// reprod::formats::NpyHeader — the parsed header of an .npy file.
struct NpyHeader {
  int major_version = 1;
  int minor_version = 0;
  std::string descr;           // e.g. "<f4", "|O"
  bool fortran_order = false;
  Shape shape;                 // validated: no negative dims, no overflow
  size_t data_offset = 0;      // where the array bytes (or pickle) start
  // The element type for numeric descrs; nullopt for '|O'.
  std::optional<DType> dtype;
  bool is_object = false;      // '|O': the data is a pickle
  bool big_endian = false;     // '>' byte order on a multi-byte dtype
};

// Parses the header at the start of `bytes`. `what` names the file in error
// messages. Refuses unsupported descrs (InvalidArgument naming the descr).
absl::StatusOr<NpyHeader> ParseNpyHeader(std::string_view bytes,
                                         const std::string& what);

// Reads the whole .npy held by `file` (see the file comment). Returned
// tensors may borrow from `file`, which they keep alive.
absl::StatusOr<TensorFile> ReadNpy(std::shared_ptr<const MappedFile> file,
                                   const ReadOptions& options = {});

// numpy's descr for `dtype` ("<f4", "|b1", ...); nullopt for bfloat16, which
// numpy has no type for.
std::optional<std::string> NpyDescr(DType dtype);

// Encodes `tensor` (C-order, packed, little-endian, as every TensorView is)
// as a version 1.0 .npy (2.0 when the header needs it), with the header
// padded so the data starts at a multiple of 64 bytes, like numpy.
// InvalidArgument for bfloat16 (no numpy dtype: convert to float32 first, or
// keep the bits in a uint16 array of your own) or an invalid shape.
absl::StatusOr<std::string> EncodeNpy(const TensorView& tensor);

// EncodeNpy, written to `path` (created or truncated). Errors from EncodeNpy,
// or PermissionDenied / NotFound / Internal from the file system, naming
// `path`.
absl::Status WriteNpy(const std::string& path, const TensorView& tensor);

}  // namespace reprod::formats

#endif  // REPROD_FORMATS_NPY_H_

// File: formats/tensor_file.h
//
// Reading tensor files of every supported format into named tensors.
//
//   absl::StatusOr<TensorFile> f = ReadTensorFile("forward_paddle.npy");
//   for (const NamedTensor& t : f->tensors) ...   // in the file's order
//
// Supported: .npy (bare array -> key "output"; 0-d object array holding a
// pickled dict, as reprod_log / np.save(dict) writes -> one tensor per leaf),
// .npz, .pdparams / paddle.save pickles, raw pickles of dicts of arrays,
// .safetensors. The format is detected from the file's magic bytes, not its
// name.
//
// Safety: every reader validates every size before allocating or indexing;
// the pickle reader is a restricted interpreter that accepts only the globals
// numpy/paddle use for arrays, dtypes, scalars and containers, refuses any
// other global with an error naming it, and never executes anything. Array
// bytes of C-order little-endian arrays are borrowed from the memory-mapped
// file (no copy); Fortran-order or big-endian arrays are converted into a new
// C-order little-endian buffer.
//
// Errors: InvalidArgument (malformed or unsupported content), NotFound (no
// such file), DataLoss (truncated), ResourceExhausted (declared sizes over the
// limit), PermissionDenied (refused pickle global). Every message names the
// file, and where it applies the byte offset and the key.
//
// Thread-safety: all functions are reentrant.
#ifndef REPROD_FORMATS_TENSOR_FILE_H_
#define REPROD_FORMATS_TENSOR_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/tensor.h"

namespace reprod::formats {

enum class FileFormat { kNpy, kNpyPickledDict, kNpz, kPickle, kSafetensors };

const char* FileFormatName(FileFormat f);

struct ReadOptions {
  // Upper bound on the sum of declared tensor sizes in one file; larger
  // declarations are refused before allocation (ResourceExhausted).
  uint64_t max_total_bytes = uint64_t{1} << 40;  // 1 TiB (mmap'd, not read)
  // Upper bound on bytes a reader may allocate (copies, decompression).
  uint64_t max_alloc_bytes = uint64_t{64} << 30;  // 64 GiB
};

struct TensorFile {
  std::string path;
  FileFormat format = FileFormat::kNpy;
  // Leaves in file order; nested dicts flatten to "a/b/c", list items to
  // "a/0", "a/1". A bare array has the single key "output".
  std::vector<NamedTensor> tensors;
  // Values that are not tensors (strings, None, ...) and were skipped, each as
  // "key: reason". Callers may show them as notes.
  std::vector<std::string> skipped;
};

// Reads `path`, detecting its format from content.
absl::StatusOr<TensorFile> ReadTensorFile(const std::string& path,
                                          const ReadOptions& options = {});

// Same, over bytes already in memory (fuzzers, network buffers).
absl::StatusOr<TensorFile> ReadTensorBytes(std::shared_ptr<const MappedFile> file,
                                           const ReadOptions& options = {});

}  // namespace reprod::formats

#endif  // REPROD_FORMATS_TENSOR_FILE_H_

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
// torch.save files (.pt / .pth: zip archive or legacy stream), .safetensors.
// The format is detected from the file's content, not its name. Each
// format's reader and its exact rules are in its own header: formats/npy.h
// (also EncodeNpy / WriteNpy), formats/npz.h, formats/pickle.h (the
// restricted unpickler and the flattening rules), formats/torch.h,
// formats/safetensors.h (also EncodeSafetensors). TensorFileTypeForPath
// below is the one table of file-name extensions, for callers that pick
// files by name (directory scans, help texts).
//
// Ownership: returned tensors either borrow from the memory-mapped file
// (keeping it alive through a shared_ptr) or own a converted copy; a
// TensorFile may outlive everything else.
//
// Safety: every reader validates every size before allocating or indexing;
// the pickle reader is a restricted interpreter that accepts only the globals
// numpy/paddle use for arrays, dtypes, scalars and containers (and, for
// torch.save files, those torch uses for tensors and storages), refuses any
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
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/tensor.h"

namespace reprod::formats {

enum class FileFormat { kNpy, kNpyPickledDict, kNpz, kPickle, kSafetensors, kTorch };

// "npy", "npy (pickled dict)", "npz", "pickle", "safetensors", "torch".
const char* FileFormatName(FileFormat f);

// A file-name extension reprod reads, and the format such files usually
// hold (the reader is still chosen by content: a .pt may be a plain pickle).
struct TensorFileType {
  std::string_view extension;  // lower case, with the dot: ".npy"
  FileFormat format;
};

// The one table of tensor-file extensions, in the order help texts list
// them: .npy .npz .pdparams .pdopt .pkl .pt .pth .safetensors.
std::span<const TensorFileType> TensorFileTypes();

// The entry whose extension ends `path` (ASCII case-insensitive), or nullopt.
std::optional<TensorFileType> TensorFileTypeForPath(std::string_view path);

// True when `path` ends with one of TensorFileTypes()' extensions.
bool IsTensorFileName(std::string_view path);

// The extensions joined by `separator`, for help texts: ".npy, .npz, ...".
std::string TensorFileExtensionList(std::string_view separator = ", ");

struct ReadOptions {
  // Upper bound on the sum of declared tensor sizes in one file; larger
  // declarations are refused before allocation (ResourceExhausted).
  uint64_t max_total_bytes = uint64_t{1} << 40;  // 1 TiB (mmap'd, not read)
  // Upper bound on bytes a reader may allocate (copies, decompression).
  // Copies (layout conversions, decoded pickle strings) are additionally
  // bounded by 64 times the size of the bytes parsed, plus 1 MiB.
  uint64_t max_alloc_bytes = uint64_t{64} << 30;  // 64 GiB
  // An archive member (.npz, torch.save zip) larger than
  // compression_ratio_free_bytes may expand to at most max_compression_ratio
  // times its compressed size (ResourceExhausted past it, before anything is
  // decompressed or allocated): a zip bomb's declared sizes may agree with
  // each other and still ask for gigabytes from a few megabytes. Deflate
  // reaches ~1032:1 on constant data, so an archive holding a large all-zero
  // array needs a higher ratio; 0 turns the check off.
  uint64_t max_compression_ratio = 100;
  uint64_t compression_ratio_free_bytes = uint64_t{64} << 20;  // 64 MiB
};

// The most dimensions a shape read from a file may have (numpy's own limit);
// every reader refuses more with InvalidArgument naming the file and key.
inline constexpr size_t kMaxFileRank = 64;

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

// Reads `path`, detecting its format from content (DetectFormat). Returned
// tensors may borrow from the memory-mapped file, which they keep alive.
// NotFound / PermissionDenied when the file cannot be opened, else the
// reader's errors.
absl::StatusOr<TensorFile> ReadTensorFile(const std::string& path,
                                          const ReadOptions& options = {});

// Same, over bytes already in memory (fuzzers, network buffers); messages
// name file->path().
absl::StatusOr<TensorFile> ReadTensorBytes(std::shared_ptr<const MappedFile> file,
                                           const ReadOptions& options = {});

// The format of `bytes` from its magic: "\x93NUMPY" -> kNpy (object arrays are
// only told apart when read); "PK\x03\x04" / "PK\x05\x06" -> kTorch when the
// zip has a member "<archive>/data.pkl" (torch.save), else kNpz; 0x80
// followed by a protocol byte 2..5 -> kTorch when it is the pickle of
// torch.save's legacy magic number, else kPickle; an 8-byte length followed
// by '{' -> kSafetensors. InvalidArgument naming `path` and the first bytes
// in hex otherwise (also for an empty file).
absl::StatusOr<FileFormat> DetectFormat(std::string_view bytes, const std::string& path);

}  // namespace reprod::formats

#endif  // REPROD_FORMATS_TENSOR_FILE_H_

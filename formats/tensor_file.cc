#include "formats/tensor_file.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/internal/array.h"
#include "formats/npy.h"
#include "formats/npz.h"
#include "formats/pickle.h"
#include "formats/safetensors.h"
#include "formats/torch.h"

namespace reprod::formats {

const char* FileFormatName(FileFormat f) {
  switch (f) {
    case FileFormat::kNpy: return "npy";
    case FileFormat::kNpyPickledDict: return "npy (pickled dict)";
    case FileFormat::kNpz: return "npz";
    case FileFormat::kPickle: return "pickle";
    case FileFormat::kSafetensors: return "safetensors";
    case FileFormat::kTorch: return "torch";
  }
  return "unknown";
}

namespace {

constexpr TensorFileType kTensorFileTypes[] = {
    {".npy", FileFormat::kNpy},       {".npz", FileFormat::kNpz},
    {".pdparams", FileFormat::kPickle}, {".pdopt", FileFormat::kPickle},
    {".pkl", FileFormat::kPickle},    {".pt", FileFormat::kTorch},
    {".pth", FileFormat::kTorch},     {".safetensors", FileFormat::kSafetensors},
};

}  // namespace

std::span<const TensorFileType> TensorFileTypes() { return kTensorFileTypes; }

std::optional<TensorFileType> TensorFileTypeForPath(std::string_view path) {
  for (const TensorFileType& t : kTensorFileTypes) {
    if (absl::EndsWithIgnoreCase(absl::string_view(path.data(), path.size()),
                                 absl::string_view(t.extension.data(), t.extension.size()))) {
      return t;
    }
  }
  return std::nullopt;
}

bool IsTensorFileName(std::string_view path) { return TensorFileTypeForPath(path).has_value(); }

std::string TensorFileExtensionList(std::string_view separator) {
  std::string out;
  for (const TensorFileType& t : kTensorFileTypes) {
    if (!out.empty()) out.append(separator);
    out.append(t.extension);
  }
  return out;
}

absl::StatusOr<FileFormat> DetectFormat(std::string_view bytes, const std::string& path) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty file, not a tensor file"));
  }
  if (bytes.substr(0, 6) == std::string_view("\x93NUMPY", 6)) return FileFormat::kNpy;
  if (bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4) ||
      bytes.substr(0, 4) == std::string_view("PK\x05\x06", 4)) {
    return IsTorchZip(bytes) ? FileFormat::kTorch : FileFormat::kNpz;
  }
  if (static_cast<unsigned char>(bytes[0]) == 0x80 && bytes.size() >= 2 &&
      static_cast<unsigned char>(bytes[1]) >= 2 && static_cast<unsigned char>(bytes[1]) <= 5) {
    return IsTorchLegacy(bytes) ? FileFormat::kTorch : FileFormat::kPickle;
  }
  if (bytes.size() >= 9 && bytes[8] == '{') return FileFormat::kSafetensors;
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": unrecognised tensor file format (first bytes ", internal::HexPrefix(bytes),
      "; expected .npy, .npz, a protocol 2-5 pickle, torch.save or safetensors)"));
}

absl::StatusOr<TensorFile> ReadTensorFile(const std::string& path,
                                          const ReadOptions& options) {
  std::shared_ptr<const MappedFile> file;
  REPROD_ASSIGN_OR_RETURN(file, MappedFile::Open(path));
  return ReadTensorBytes(std::move(file), options);
}

absl::StatusOr<TensorFile> ReadTensorBytes(std::shared_ptr<const MappedFile> file,
                                           const ReadOptions& options) {
  FileFormat format;
  REPROD_ASSIGN_OR_RETURN(format, DetectFormat(file->bytes(), file->path()));
  switch (format) {
    case FileFormat::kNpy:
    case FileFormat::kNpyPickledDict:
      return ReadNpy(std::move(file), options);
    case FileFormat::kNpz:
      return ReadNpz(std::move(file), options);
    case FileFormat::kPickle:
      return ReadPickle(std::move(file), options);
    case FileFormat::kSafetensors:
      return ReadSafetensors(std::move(file), options);
    case FileFormat::kTorch:
      return ReadTorch(std::move(file), options);
  }
  return absl::InternalError("unreachable");
}

}  // namespace reprod::formats

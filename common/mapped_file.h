// File: common/mapped_file.h
//
// MappedFile: a read-only memory map of a whole file. Readers return Tensors
// that Borrow from it, so array bytes are never copied; the map lives as long
// as any Tensor (or other holder of the shared_ptr) does.
//
// Thread-safety: immutable after Open; safe to share.
#ifndef REPROD_COMMON_MAPPED_FILE_H_
#define REPROD_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace reprod {

class MappedFile {
 public:
  // Maps `path` read-only. NotFound if it does not exist, PermissionDenied,
  // InvalidArgument for a directory, Internal for other OS errors; every
  // message names the path. An empty file maps to an empty view.
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Open(
      const std::string& path);

  // Wraps bytes already in memory (tests, fuzzers, network buffers).
  static std::shared_ptr<const MappedFile> FromString(std::string bytes,
                                                      std::string name = "<memory>");

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view bytes() const {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::string owned_;  // FromString storage
  std::string path_;
};

}  // namespace reprod

#endif  // REPROD_COMMON_MAPPED_FILE_H_

// File: client/cpp/file_tensor_source.h
//
// FileTensorSource: the tensors of tensor files (every format
// formats::ReadTensorFile reads), one file at a time, for RemoteClient::Push.
// Each file is one checkpoint, named as the offline commands name it
// (CheckpointNameFromPath: "forward_paddle.npy" -> "forward") unless a
// checkpoint is given; dict files give one tensor per leaf, nested keys
// flattened to "a/b/c"; a bare array has the key "output".
//
//   auto source = FileTensorSource::Open({"forward_paddle.npy"}, {});
//   if (!source.ok()) return source.status();   // missing file, bad name
//   client->Push("team42/bert-paddle", **source);
//
// Only the file being sent is open: its tensors borrow from the
// memory-mapped file, so memory stays bounded by what Push keeps in flight.
// A file's keys are all validated (common/names.h) when it is opened, before
// any of its tensors is handed out; an address that an earlier file of the
// same push already produced is refused (two files with the same checkpoint
// and key would overwrite each other).
//
// Thread-safety: not thread-safe (one pushing thread).
#ifndef REPROD_CLIENT_CPP_FILE_TENSOR_SOURCE_H_
#define REPROD_CLIENT_CPP_FILE_TENSOR_SOURCE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cpp/tensor_source.h"
#include "formats/tensor_file.h"

namespace reprod::client {

// reprod::client::FileTensorSource
class FileTensorSource final : public TensorSource {
 public:
  struct Options {
    // Checkpoint of every file; empty = CheckpointNameFromPath(file).
    std::string checkpoint;
    // Step attached to every tensor; none when unset.
    std::optional<int64_t> step;
    // Rank attached to every tensor (common/placement.h).
    uint32_t rank = 0;
    // How every file is read (limits against hostile files).
    formats::ReadOptions read;
  };

  // Checks, without reading them, that `paths` is not empty, that each path
  // is a regular file (NotFound / InvalidArgument naming it) and that each
  // file's checkpoint name is valid (InvalidArgument naming the file).
  static absl::StatusOr<std::unique_ptr<FileTensorSource>> Open(std::vector<std::string> paths,
                                                                Options options);

  // Next tensor in file order, files in the given order. Errors: those of
  // formats::ReadTensorFile (naming the file), InvalidArgument for a key
  // that breaks the name grammar or repeats an address of this push.
  absl::StatusOr<std::optional<PushItem>> Next() override;

  // Tensor bytes of the files opened so far plus the on-disk size of those
  // not opened yet (an estimate until the last file is open).
  uint64_t TotalBytes() const override { return opened_bytes_ + unopened_file_bytes_; }

  // Skipped non-tensor values so far, "path: key: reason".
  const std::vector<std::string>& notes() const { return notes_; }
  // The file the last tensor came from ("" before the first).
  const std::string& current_file() const { return current_path_; }
  // Files opened so far (1-based index of current_file()).
  size_t files_opened() const { return next_file_; }
  size_t num_files() const { return files_.size(); }

 private:
  struct FileEntry {
    std::string path;
    std::string checkpoint;
    uint64_t size = 0;
  };
  FileTensorSource(std::vector<FileEntry> files, std::optional<int64_t> step, uint32_t rank,
                   formats::ReadOptions read);
  // Reads files_[next_file_] and validates its keys.
  absl::Status OpenNextFile();

  const std::vector<FileEntry> files_;
  const std::optional<int64_t> step_;
  const uint32_t rank_;
  const formats::ReadOptions read_;
  size_t next_file_ = 0;
  std::string current_path_;
  std::string current_checkpoint_;
  std::vector<NamedTensor> current_;  // tensors of the open file
  size_t current_index_ = 0;
  // (checkpoint, key) -> file that produced it.
  std::set<std::pair<std::string, std::string>> seen_;
  uint64_t opened_bytes_ = 0;
  uint64_t unopened_file_bytes_ = 0;
  std::vector<std::string> notes_;
};

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_FILE_TENSOR_SOURCE_H_

#include "client/cpp/file_tensor_source.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "client/cpp/file_runs.h"
#include "common/names.h"

namespace reprod::client {

absl::StatusOr<std::unique_ptr<FileTensorSource>> FileTensorSource::Open(
    std::vector<std::string> paths, Options options) {
  if (paths.empty()) return absl::InvalidArgumentError("no files to push");
  if (!options.checkpoint.empty()) {
    if (absl::Status s = ValidateCheckpointName(options.checkpoint); !s.ok()) return s;
  }
  std::vector<FileEntry> files;
  files.reserve(paths.size());
  for (std::string& path : paths) {
    std::error_code ec;
    const std::filesystem::file_status st = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(st)) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    if (!std::filesystem::is_regular_file(st)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    }
    FileEntry entry;
    entry.size = std::filesystem::file_size(path, ec);
    if (ec) entry.size = 0;
    entry.checkpoint =
        options.checkpoint.empty() ? CheckpointNameFromPath(path) : options.checkpoint;
    if (absl::Status s = ValidateCheckpointName(entry.checkpoint); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the checkpoint name taken from the file name is not valid (",
                       std::string(s.message()), "); name one with --checkpoint"));
    }
    entry.path = std::move(path);
    files.push_back(std::move(entry));
  }
  return std::unique_ptr<FileTensorSource>(
      new FileTensorSource(std::move(files), options.step, options.rank, options.read));
}

FileTensorSource::FileTensorSource(std::vector<FileEntry> files, std::optional<int64_t> step,
                                   uint32_t rank, formats::ReadOptions read)
    : files_(std::move(files)), step_(step), rank_(rank), read_(read) {
  for (const FileEntry& f : files_) unopened_file_bytes_ += f.size;
}

absl::Status FileTensorSource::OpenNextFile() {
  const FileEntry& entry = files_[next_file_];
  ++next_file_;
  unopened_file_bytes_ -= entry.size;
  current_.clear();
  current_index_ = 0;
  current_path_ = entry.path;
  current_checkpoint_ = entry.checkpoint;
  absl::StatusOr<formats::TensorFile> file = formats::ReadTensorFile(entry.path, read_);
  if (!file.ok()) return file.status();
  for (const std::string& s : file->skipped) notes_.push_back(absl::StrCat(entry.path, ": ", s));
  if (file->tensors.empty()) notes_.push_back(absl::StrCat(entry.path, ": holds no tensors"));
  for (const NamedTensor& t : file->tensors) {
    if (absl::Status s = ValidateTensorKey(t.key); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(entry.path, ": ", std::string(s.message())));
    }
    auto [it, inserted] = seen_.emplace(entry.checkpoint, t.key);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(entry.path, ": tensor ", entry.checkpoint, "/", t.key,
                       " was already pushed from an earlier file of this push (two files map to "
                       "checkpoint '",
                       entry.checkpoint,
                       "'; push each framework's files to its own run, or name the checkpoint with "
                       "--checkpoint)"));
    }
    opened_bytes_ += t.tensor.num_bytes();
  }
  current_ = std::move(file->tensors);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<PushItem>> FileTensorSource::Next() {
  while (current_index_ >= current_.size()) {
    if (next_file_ >= files_.size()) {
      current_.clear();
      return std::optional<PushItem>();
    }
    if (absl::Status s = OpenNextFile(); !s.ok()) return s;
  }
  NamedTensor& t = current_[current_index_++];
  PushItem item;
  item.checkpoint = current_checkpoint_;
  item.key = std::move(t.key);
  item.step = step_;
  item.rank = rank_;
  item.tensor = std::move(t.tensor);
  return std::optional<PushItem>(std::move(item));
}

}  // namespace reprod::client

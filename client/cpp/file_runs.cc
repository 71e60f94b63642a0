#include "client/cpp/file_runs.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/tensor_file.h"

namespace reprod::client {

const std::vector<std::string>& FrameworkSuffixes() {
  static const auto* suffixes = new std::vector<std::string>{
      "torch", "pytorch", "pt", "paddle", "pd", "benchmark", "ref", "reference",
      "cand", "candidate"};
  return *suffixes;
}

std::string FileStem(std::string_view path) {
  const size_t slash = path.find_last_of('/');
  std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
  const size_t dot = base.find_last_of('.');
  if (dot != std::string_view::npos && dot > 0) base = base.substr(0, dot);
  return std::string(base);
}

std::string CheckpointNameFromPath(std::string_view path) {
  std::string stem = FileStem(path);
  for (const std::string& suffix : FrameworkSuffixes()) {
    const std::string tail = "_" + suffix;
    if (stem.size() > tail.size() && absl::EndsWith(stem, tail)) {
      return stem.substr(0, stem.size() - tail.size());
    }
  }
  return stem;
}

absl::StatusOr<core::CheckpointData> LoadCheckpointFile(
    const std::string& path, const std::string& checkpoint,
    std::vector<std::string>* notes, const formats::ReadOptions& read) {
  REPROD_ASSIGN_OR_RETURN(formats::TensorFile file, formats::ReadTensorFile(path, read));
  core::CheckpointData data;
  data.name = checkpoint;
  data.tensors.reserve(file.tensors.size());
  for (NamedTensor& t : file.tensors) {
    data.tensors.push_back(core::TensorEntry{std::move(t.key), std::nullopt, std::move(t.tensor)});
  }
  if (notes != nullptr) {
    for (const std::string& s : file.skipped) notes->push_back(absl::StrCat(path, ": ", s));
  }
  return data;
}

}  // namespace reprod::client

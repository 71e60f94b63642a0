// File: client/cpp/file_runs.h
//
// Turning tensor files into core::RunData, the way reprodctl's offline
// commands see them: one file is one checkpoint, named after the file's stem
// without its framework suffix ("forward_torch.npy" -> "forward").
//
// Thread-safety: reentrant functions.
#ifndef REPROD_CLIENT_CPP_FILE_RUNS_H_
#define REPROD_CLIENT_CPP_FILE_RUNS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/run_data.h"
#include "formats/tensor_file.h"

namespace reprod::client {

// Framework suffixes a reference or candidate file may carry, in the order
// they are tried: torch, pytorch, pt, paddle, pd, benchmark, ref, reference,
// cand, candidate.
const std::vector<std::string>& FrameworkSuffixes();

// "dir/forward_torch.npy" -> "forward"; "x.npz" -> "x". Strips the directory,
// the last extension and one "_<framework>" suffix.
std::string CheckpointNameFromPath(std::string_view path);

// The stem without the last extension ("dir/forward_torch.npy" -> "forward_torch").
std::string FileStem(std::string_view path);

// Reads `path` (any supported format) as one checkpoint named `checkpoint`.
// Skipped non-tensor values are appended to `notes` ("path: key: reason").
// Errors come from formats::ReadTensorFile (with `read`) and name the file.
absl::StatusOr<core::CheckpointData> LoadCheckpointFile(
    const std::string& path, const std::string& checkpoint,
    std::vector<std::string>* notes, const formats::ReadOptions& read = {});

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_FILE_RUNS_H_

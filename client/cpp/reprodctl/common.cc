#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/cpp/reprodctl/commands.h"
#include "common/visible.h"

namespace reprod::reprodctl {

std::string JsonText(const nlohmann::json& json) {
  return json.dump(2, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
}

int ReportError(const absl::Status& status) {
  const std::string shown = VisibleText(std::string(status.message()));
  std::fprintf(stderr, "reprodctl: error: %s\n", shown.c_str());
  return kExitBadInput;
}

int VerdictExitCode(bool passed, int64_t tensors, const std::string& what) {
  if (tensors == 0) {
    std::fprintf(stderr, "reprodctl: error: nothing to compare: %s\n", VisibleText(what).c_str());
    return kExitBadInput;
  }
  return passed ? kExitPass : kExitFail;
}

absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateBackendFromFlags(
    const GlobalOptions& global) {
  auto kind = kernels::ParseBackendKind(global.backend);
  if (!kind.ok()) return kind.status();
  return kernels::CreateBackend(*kind);
}

void AddReadOptionFlags(CLI::App& cmd, formats::ReadOptions* read) {
  cmd.add_option("--max-expansion-ratio", read->max_compression_ratio,
                 absl::StrCat("Refuse archive members (.npz, torch zip) over ",
                              read->compression_ratio_free_bytes >> 20,
                              " MiB that decompress to more than N times their compressed "
                              "size (zip-bomb guard; deflate packs an all-zero array ~1000:1); "
                              "0 = no limit"))
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

absl::Status WriteOutput(const std::string& path, const std::string& text) {
  if (path.empty() || path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return absl::OkStatus();
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open for writing"));
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace reprod::reprodctl

#include "storage/rocksdb/internal/status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace reprod::storage::internal {

absl::Status FromRocksDb(const rocksdb::Status& status,
                         std::string_view context) {
  if (status.ok()) return absl::OkStatus();
  const std::string message =
      absl::StrCat("rocksdb: ", std::string(context), ": ", status.ToString());
  if (status.IsCorruption()) return absl::DataLossError(message);
  // ENOSPC, on the write itself or as the background error that stops
  // writes after a failed flush: an answer for the client, not an outage.
  if (status.IsNoSpace()) {
    return absl::ResourceExhaustedError(absl::StrCat("disk full: ", message));
  }
  if (status.IsIOError() || status.IsBusy() || status.IsTimedOut() ||
      status.IsTryAgain() || status.IsIncomplete() ||
      status.IsShutdownInProgress() || status.IsAborted()) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

absl::Status Annotate(const absl::Status& status, std::string_view prefix) {
  if (status.ok()) return status;
  return absl::Status(
      status.code(),
      absl::StrCat(std::string(prefix), ": ", std::string(status.message())));
}

}  // namespace reprod::storage::internal

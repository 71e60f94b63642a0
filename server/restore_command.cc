#include "server/restore_command.h"

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "storage/rocksdb/rocksdb_store.h"

namespace reprod::server {
namespace {

constexpr char kDescription[] = R"(reprodd restore: make a data dir from a backup.

BACKUP is a folder `reprodctl admin backup NAME` wrote under the server's
--backup-root. The new --data-dir must not exist or be an empty folder;
restore never overwrites a store. The backup is left as it was: table and
blob files are hard-linked when both folders are on one filesystem, the
rest is copied. The result is opened once to check it (format version,
uploads that were in flight dropped) before it is renamed into place, so a
failed restore leaves nothing behind. Run it while no reprodd uses the
data dir, then start reprodd on it.

Examples:
  systemctl stop reprodd
  mv /var/lib/reprod /var/lib/reprod.old
  reprodd restore /var/lib/reprod-backups/reprod-20261202T071500Z \
      --data-dir /var/lib/reprod
  systemctl start reprodd

Exit codes: 0 restored, 2 bad usage or input (data dir not empty, not a
backup, a format newer than this build reads), 1 anything else.)";

}  // namespace

int RunRestoreCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app(kDescription, "reprodd restore");
  std::string backup;
  std::string data_dir = "reprod-data";
  app.add_option("backup", backup, "The backup's folder")->required();
  app.add_option("--data-dir", data_dir, "The data dir to create (absent or empty)")
      ->envname("REPROD_DATA_DIR")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e, out, err);
    return code == 0 ? 0 : 2;
  }
  // RocksDB's own log lines only when they matter.
  (void)InitLogging("warn", LogFormat::kText);
  const absl::Time start = absl::Now();
  absl::StatusOr<storage::RestoreInfo> info = storage::RestoreRocksDbStore(backup, data_dir);
  if (!info.ok()) {
    err << "reprodd restore: " << info.status().message() << "\n";
    const absl::StatusCode code = info.status().code();
    return code == absl::StatusCode::kFailedPrecondition ||
                   code == absl::StatusCode::kInvalidArgument
               ? 2
               : 1;
  }
  out << "restored " << info->runs << " runs, " << info->tensors << " tensors (" << info->files
      << " files, " << info->bytes << " bytes, " << info->linked << " hard-linked) from "
      << backup << " into " << data_dir << " in "
      << absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))) << "\n";
  return 0;
}

}  // namespace reprod::server

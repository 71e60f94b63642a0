#include "server/store_admin_service.h"

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/review_ops.h"
#include "storage/rocksdb/rocksdb_store.h"

namespace reprod::server {
namespace {

constexpr size_t kMaxBackupName = 100;

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

// Opens the backup in `dir` as a store of its own (which also drops the
// bytes of uploads that were in flight) and counts its runs and tensors.
absl::Status CheckBackup(const std::string& dir, v1::BackupResponse* response) {
  absl::StatusOr<storage::StoreCounts> counts = storage::CountRocksDbStore(dir);
  if (!counts.ok()) {
    return absl::DataLossError(absl::StrCat("backup ", dir, " was written but does not open: ",
                                            counts.status().message()));
  }
  response->set_runs(counts->runs);
  response->set_tensors(counts->tensors);
  return absl::OkStatus();
}

absl::Status WriteBackup(const ServiceEnv& env, const std::string& name,
                         v1::BackupResponse* response) {
  if (env.backup_root.empty()) {
    return absl::FailedPreconditionError(
        "backups are off on this server: start reprodd with --backup-root DIR (a folder on the "
        "data dir's filesystem, so that backups hard-link the store's files)");
  }
  const std::string path = (std::filesystem::path(env.backup_root) / name).string();
  const absl::Time start = absl::Now();
  REPROD_ASSIGN_OR_RETURN(storage::BackupInfo info, env.store->Backup(path));
  response->set_path(path);
  response->set_files(info.files);
  response->set_bytes(info.bytes);
  response->set_sequence(info.sequence);
  REPROD_RETURN_IF_ERROR(CheckBackup(path, response));
  response->set_seconds(SecondsSince(start));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> BackupName(std::string_view name, absl::Time now) {
  if (name.empty()) {
    return absl::StrCat("reprod-", absl::FormatTime("%Y%m%dT%H%M%SZ", now, absl::UTCTimeZone()));
  }
  const auto allowed = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
           c == '-';
  };
  if (name.size() > kMaxBackupName || name.front() == '.' ||
      !std::all_of(name.begin(), name.end(), allowed)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backup name must be 1-", kMaxBackupName,
        " letters, digits, '.', '_' or '-', not starting with '.' (it names a folder under "
        "--backup-root); got ",
        name.size(), " bytes"));
  }
  return std::string(name);
}

grpc::Status AdminServiceImpl::Backup(grpc::ServerContext* context,
                                      const v1::BackupRequest* request,
                                      v1::BackupResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteBackup, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<std::string> name = BackupName(request->name(), absl::Now());
  if (!name.ok()) return wire::ToGrpcStatus(name.status());
  const absl::Status work = WriteBackup(env_, *name, response);
  std::map<std::string, std::string> details;
  if (work.ok()) {
    details = {{"path", response->path()},
               {"bytes", absl::StrCat(response->bytes())},
               {"tensors", absl::StrCat(response->tensors())}};
  }
  return wire::ToGrpcStatus(Audited(env_, ActorOf(*who), "backup", *name, work, details));
}

grpc::Status AdminServiceImpl::Compact(grpc::ServerContext* context,
                                       const v1::CompactRequest* request,
                                       v1::CompactResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteCompact, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  const absl::Time start = absl::Now();
  absl::StatusOr<storage::CompactInfo> info = env_.store->Compact();
  std::map<std::string, std::string> details;
  if (info.ok()) {
    response->set_bytes_before(info->bytes_before);
    response->set_bytes_after(info->bytes_after);
    response->set_seconds(SecondsSince(start));
    details = {{"bytes_before", absl::StrCat(info->bytes_before)},
               {"bytes_after", absl::StrCat(info->bytes_after)}};
  }
  return wire::ToGrpcStatus(
      Audited(env_, ActorOf(*who), "compact", "store", info.status(), details));
}

}  // namespace reprod::server

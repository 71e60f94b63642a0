// File: server/store_admin_service.h
//
// AdminService (reprod/v1/admin.proto): store maintenance for admins over
// the wire. Backup writes a consistent copy of the store into a new folder
// under --backup-root while ingest goes on (storage::Store::Backup), opens
// the copy once to check it and counts its runs and tensors; Compact gives
// back the space of deleted runs. Both are recorded in the audit log
// (verbs "backup", "compact").
//
// Thread-safety: handlers run concurrently; the store is thread-safe.
#ifndef REPROD_SERVER_STORE_ADMIN_SERVICE_H_
#define REPROD_SERVER_STORE_ADMIN_SERVICE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "reprod/v1/admin.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

// The backup folder name a request asks for: `name` when it is 1-100 bytes
// of [A-Za-z0-9._-] not starting with '.', "reprod-YYYYMMDDTHHMMSSZ" (UTC
// `now`) when empty; InvalidArgument naming the rule otherwise.
absl::StatusOr<std::string> BackupName(std::string_view name, absl::Time now);

class AdminServiceImpl final : public v1::AdminService::Service {
 public:
  explicit AdminServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status Backup(grpc::ServerContext* context, const v1::BackupRequest* request,
                      v1::BackupResponse* response) override;
  grpc::Status Compact(grpc::ServerContext* context, const v1::CompactRequest* request,
                       v1::CompactResponse* response) override;

 private:
  ServiceEnv env_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_STORE_ADMIN_SERVICE_H_

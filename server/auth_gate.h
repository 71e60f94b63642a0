// File: server/auth_gate.h
//
// AuthGate: the one place reprodd enforces server/auth's table (acl.h) when
// started with `--auth tokens`. Every service method starts with CheckCall
// (below) naming its route; with auth off (ServiceEnv::auth == nullptr, the
// default) CheckCall admits everything and returns no principal.
//
//   absl::StatusOr<std::optional<auth::Principal>> who =
//       CheckCall(env_, context, kRouteGetRun, *request);
//   if (!who.ok()) return wire::ToGrpcStatus(who.status());
//
// A call carries its token as `authorization: Bearer <token>` metadata.
// No token, a malformed, unknown, expired or revoked one: UNAUTHENTICATED;
// a principal outside the table's access: PERMISSION_DENIED naming the
// route, the token's label and role and the run. Messages and logs never
// contain the token.
//
// Not covered by the gate: the reflection service (gRPC's own, so no
// method of ours runs; the table says public) and health checks
// (public).
//
// Thread-safety: thread-safe (TokenStore and the Store are).
#ifndef REPROD_SERVER_AUTH_GATE_H_
#define REPROD_SERVER_AUTH_GATE_H_

#include <grpcpp/server_context.h>

#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "server/auth/acl.h"
#include "server/auth/audit_log.h"
#include "server/auth/token_store.h"
#include "server/service_env.h"
#include "storage/store.h"

namespace reprod::server {

inline constexpr std::string_view kRouteCreateRun = "/reprod.v1.RunService/CreateRun";
inline constexpr std::string_view kRouteGetRun = "/reprod.v1.RunService/GetRun";
inline constexpr std::string_view kRouteListRuns = "/reprod.v1.RunService/ListRuns";
inline constexpr std::string_view kRouteSealRun = "/reprod.v1.RunService/SealRun";
inline constexpr std::string_view kRouteDeleteRun = "/reprod.v1.RunService/DeleteRun";
inline constexpr std::string_view kRouteListTensors = "/reprod.v1.RunService/ListTensors";
inline constexpr std::string_view kRouteReadTensor = "/reprod.v1.RunService/ReadTensor";
inline constexpr std::string_view kRouteIngest = "/reprod.v1.IngestService/Ingest";
inline constexpr std::string_view kRouteShmSession = "/reprod.v1.SharedMemoryService/Session";
inline constexpr std::string_view kRouteCompare = "/reprod.v1.CompareService/Compare";
inline constexpr std::string_view kRouteWatch = "/reprod.v1.CompareService/Watch";
inline constexpr std::string_view kRouteGetReport = "/reprod.v1.ReportService/GetReport";
inline constexpr std::string_view kRouteListReports = "/reprod.v1.ReportService/ListReports";
inline constexpr std::string_view kRouteSetReference = "/reprod.v1.RunService/SetReference";
inline constexpr std::string_view kRouteSignReport = "/reprod.v1.ReportService/SignReport";
inline constexpr std::string_view kRouteCreateToken = "/reprod.v1.TokenService/CreateToken";
inline constexpr std::string_view kRouteListTokens = "/reprod.v1.TokenService/ListTokens";
inline constexpr std::string_view kRouteRevokeToken = "/reprod.v1.TokenService/RevokeToken";
inline constexpr std::string_view kRouteListEvents = "/reprod.v1.AuditService/ListEvents";
inline constexpr std::string_view kRouteVerifyAudit = "/reprod.v1.AuditService/VerifyAudit";
inline constexpr std::string_view kRouteBackup = "/reprod.v1.AdminService/Backup";
inline constexpr std::string_view kRouteCompact = "/reprod.v1.AdminService/Compact";

// The audit verb of a mutating gRPC route ("create", "push", "seal" or
// "abort" by the request's abort flag, "delete", "publish"/"unpublish",
// "sign", "token-create", "token-revoke", "backup", "compact"); empty for
// routes that change nothing.
std::string AuditVerbOfRoute(std::string_view route, const google::protobuf::Message& request);

class AuthGate {
 public:
  // `store`, `tokens` (a TokenStore over the same store) and `audit`
  // (nullptr: refusals are only logged) must outlive the gate.
  AuthGate(storage::Store& store, auth::TokenStore& tokens, auth::AuditLog* audit)
      : store_(store), tokens_(tokens), audit_(audit) {}

  // Refusals are counted in `m` (reprod_auth_failures_total) from now on;
  // nullptr counts nothing. Call before serving.
  void set_metrics(metrics::ServerMetrics* m) { metrics_ = m; }

  // The principal of the call's bearer token (UNAUTHENTICATED otherwise,
  // counted in the metrics).
  absl::StatusOr<auth::Principal> Authenticate(const grpc::ServerContextBase& context);

  // Authenticate, then authorize `request` on `route` (acl.h: ResolveTarget,
  // Authorize). Refusals are logged (warn) with the route and the token's
  // label; an authenticated principal refused on a mutating route
  // (AuditVerbOfRoute) is also recorded in the audit log (result
  // PERMISSION_DENIED). Unauthenticated calls are only logged.
  absl::StatusOr<auth::Principal> Check(const grpc::ServerContext& context,
                                        std::string_view route,
                                        const google::protobuf::Message& request);

  // Authorize one message of a per-message stream (Ingest's BeginTensor)
  // for an already authenticated principal.
  absl::Status CheckMessage(const auth::Principal& who, std::string_view route,
                            const google::protobuf::Message& request);

  // List filters (acl.h CanSeeStoredRun/CanSeeStoredReport); a run that
  // does not exist counts as not reference.
  bool CanSeeRun(const auth::Principal& who, const storage::RunInfo& run) const;
  bool CanSeeReport(const auth::Principal& who, const storage::StoredReport& report);

 private:
  // Authenticate without counting.
  absl::StatusOr<auth::Principal> BearerPrincipal(const grpc::ServerContextBase& context) const;
  absl::Status Refused(std::string_view route, absl::Status status) const;
  void RecordRefusal(const auth::Principal& who, std::string_view route,
                     const google::protobuf::Message& request, const absl::Status& status);

  storage::Store& store_;
  auth::TokenStore& tokens_;
  auth::AuditLog* audit_;
  metrics::ServerMetrics* metrics_ = nullptr;
};

// With auth off (env.auth == nullptr): std::nullopt. Otherwise the checked
// principal or the refusal (see AuthGate::Check).
absl::StatusOr<std::optional<auth::Principal>> CheckCall(const ServiceEnv& env,
                                                         const grpc::ServerContext* context,
                                                         std::string_view route,
                                                         const google::protobuf::Message& request);

}  // namespace reprod::server

#endif  // REPROD_SERVER_AUTH_GATE_H_

#include "server/auth_gate.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "absl/time/clock.h"
#include "server/metrics/server_metrics.h"
#include "spdlog/spdlog.h"

namespace reprod::server {

namespace {

// What a refused call was after, for its audit record: the runs or report
// the table names, else the request's label or id field (tokens).
std::string ObjectOf(std::string_view route, const google::protobuf::Message& request) {
  if (const auth::AclEntry* entry = auth::FindAclEntry(route); entry != nullptr) {
    absl::StatusOr<std::vector<std::string>> values = auth::TargetValues(*entry, request);
    if (values.ok() && !values->empty()) return absl::StrJoin(*values, ",");
  }
  const google::protobuf::Descriptor* d = request.GetDescriptor();
  for (const char* name : {"label", "id", "name"}) {
    const google::protobuf::FieldDescriptor* f = d->FindFieldByName(name);
    if (f != nullptr && f->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
        !f->is_repeated()) {
      return request.GetReflection()->GetString(request, f);
    }
  }
  return std::string(route);
}

bool BoolField(const google::protobuf::Message& request, const char* name) {
  const google::protobuf::FieldDescriptor* f = request.GetDescriptor()->FindFieldByName(name);
  return f != nullptr && f->type() == google::protobuf::FieldDescriptor::TYPE_BOOL &&
         !f->is_repeated() && request.GetReflection()->GetBool(request, f);
}

}  // namespace

std::string AuditVerbOfRoute(std::string_view route, const google::protobuf::Message& request) {
  if (route == kRouteCreateRun) return "create";
  if (route == kRouteIngest || route == kRouteShmSession) return "push";
  if (route == kRouteSealRun) return BoolField(request, "abort") ? "abort" : "seal";
  if (route == kRouteDeleteRun) return "delete";
  if (route == kRouteSetReference) {
    return BoolField(request, "reference") ? "publish" : "unpublish";
  }
  if (route == kRouteSignReport) return "sign";
  if (route == kRouteCreateToken) return "token-create";
  if (route == kRouteRevokeToken) return "token-revoke";
  if (route == kRouteBackup) return "backup";
  if (route == kRouteCompact) return "compact";
  return "";
}

absl::StatusOr<auth::Principal> AuthGate::Authenticate(const grpc::ServerContextBase& context) {
  absl::StatusOr<auth::Principal> who = BearerPrincipal(context);
  if (!who.ok() && metrics_ != nullptr) metrics_->AuthFailed(who.status());
  return who;
}

absl::StatusOr<auth::Principal> AuthGate::BearerPrincipal(
    const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "no token: this server needs 'authorization: Bearer <token>' metadata "
        "(reprodctl --token or REPROD_TOKEN; the Python client's token=)");
  }
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (!value.starts_with(kBearer)) {
    return absl::UnauthenticatedError("the authorization metadata is not 'Bearer <token>'");
  }
  return tokens_.Authenticate(value.substr(kBearer.size()), absl::Now());
}

absl::Status AuthGate::Refused(std::string_view route, absl::Status status) const {
  // The messages name labels and token ids, never the token.
  spdlog::warn("refused {}: {}", route, std::string(status.message()));
  // Authenticate counted the unauthenticated ones already.
  if (metrics_ != nullptr && absl::IsPermissionDenied(status)) metrics_->AuthFailed(status);
  return status;
}

absl::StatusOr<auth::Principal> AuthGate::Check(const grpc::ServerContext& context,
                                                std::string_view route,
                                                const google::protobuf::Message& request) {
  absl::StatusOr<auth::Principal> who = Authenticate(context);
  if (!who.ok()) return Refused(route, who.status());
  if (absl::Status s = CheckMessage(*who, route, request); !s.ok()) return s;
  return who;
}

absl::Status AuthGate::CheckMessage(const auth::Principal& who, std::string_view route,
                                    const google::protobuf::Message& request) {
  const auth::AclEntry* entry = auth::FindAclEntry(route);
  if (entry == nullptr) {
    return Refused(route, absl::PermissionDeniedError(
                              absl::StrCat(std::string(route), " is not in the access table (denied)")));
  }
  absl::StatusOr<auth::Target> target = auth::ResolveTarget(*entry, request, store_);
  if (!target.ok()) return target.status();
  if (absl::Status s = auth::Authorize(&who, route, *target); !s.ok()) {
    RecordRefusal(who, route, request, s);
    return Refused(route, std::move(s));
  }
  return absl::OkStatus();
}

void AuthGate::RecordRefusal(const auth::Principal& who, std::string_view route,
                             const google::protobuf::Message& request,
                             const absl::Status& status) {
  const std::string verb = AuditVerbOfRoute(route, request);
  if (audit_ == nullptr || verb.empty()) return;
  auth::AuditEntry entry;
  entry.actor = auth::AuditActor{who.label, who.role};
  entry.verb = verb;
  entry.object = ObjectOf(route, request);
  entry.result = absl::Status(status.code(), "");
  entry.details = {{"route", std::string(route)}};
  if (absl::StatusOr<auth::AuditRecord> r = audit_->Append(entry, absl::Now()); !r.ok()) {
    spdlog::error("audit record of the refused {} by {} not written: {}", route, who.label,
                  std::string(r.status().message()));
  }
}

bool AuthGate::CanSeeRun(const auth::Principal& who, const storage::RunInfo& run) const {
  return auth::CanSeeStoredRun(who, run);
}

bool AuthGate::CanSeeReport(const auth::Principal& who, const storage::StoredReport& report) {
  return auth::CanSeeStoredReport(who, report, store_);
}

absl::StatusOr<std::optional<auth::Principal>> CheckCall(
    const ServiceEnv& env, const grpc::ServerContext* context, std::string_view route,
    const google::protobuf::Message& request) {
  if (env.auth == nullptr) return std::optional<auth::Principal>();
  absl::StatusOr<auth::Principal> who = env.auth->Check(*context, route, request);
  if (!who.ok()) return who.status();
  return std::optional<auth::Principal>(*std::move(who));
}

}  // namespace reprod::server

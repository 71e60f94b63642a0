#include "server/auth_gate.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace reprod::server {

absl::StatusOr<auth::Principal> AuthGate::Authenticate(const grpc::ServerContext& context) {
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
    return Refused(route, std::move(s));
  }
  return absl::OkStatus();
}

bool AuthGate::CanSeeRun(const auth::Principal& who, const storage::RunInfo& run) const {
  return auth::CanSeeRun(who, auth::RunTarget{run.name, run.reference});
}

auth::RunTarget AuthGate::RunTargetOf(const std::string& name) {
  absl::StatusOr<storage::RunInfo> run = store_.GetRun(name);
  return auth::RunTarget{name, run.ok() && run->reference};
}

bool AuthGate::CanSeeReport(const auth::Principal& who, const storage::StoredReport& report) {
  return auth::CanSeeReport(who, RunTargetOf(report.ref), RunTargetOf(report.cand));
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

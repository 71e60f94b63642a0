#include "server/web/gate.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/metrics/server_metrics.h"
#include "server/review_ops.h"
#include "spdlog/spdlog.h"

namespace reprod::server::web {

absl::StatusOr<Caller> WebGate::Identify(std::string_view session_id, std::string_view bearer) {
  const absl::Time now = absl::Now();
  Caller caller;
  if (!session_id.empty()) caller.session = sessions_.Find(session_id, now);
  if (tokens_ == nullptr) {
    caller.who = LocalPrincipal();
    return caller;
  }
  if (!bearer.empty()) {
    absl::StatusOr<auth::Principal> who = tokens_->Authenticate(bearer, now);
    if (!who.ok()) return who.status();
    caller.who = *std::move(who);
    caller.bearer = true;
    caller.session.reset();  // a bearer request is not a browser session
    return caller;
  }
  if (!caller.session.has_value() || caller.session->token_hash.empty()) {
    return absl::UnauthenticatedError("not logged in: log in with your token at /login");
  }
  absl::StatusOr<auth::Principal> who = tokens_->AuthenticateHash(caller.session->token_hash, now);
  if (!who.ok()) {
    if (absl::IsUnauthenticated(who.status())) sessions_.Erase(caller.session->id);
    return who.status();
  }
  caller.who = *std::move(who);
  return caller;
}

absl::StatusOr<Caller> WebGate::Check(const RouteMatch& match,
                                      std::vector<std::string> target_values,
                                      std::string_view session_id, std::string_view bearer) {
  const std::string_view route = match.entry->route;
  absl::StatusOr<Caller> caller = Identify(session_id, bearer);
  const bool is_public = match.entry->access == auth::Access::kPublic;
  if (!caller.ok()) {
    if (is_public && absl::IsUnauthenticated(caller.status())) {
      Caller anonymous;  // public routes need nobody; keep the session for CSRF
      if (!session_id.empty()) anonymous.session = sessions_.Find(session_id, absl::Now());
      return anonymous;
    }
    if (!absl::IsUnauthenticated(caller.status())) return caller.status();
    spdlog::warn("http {}: refused: {}", std::string(route),
                 std::string(caller.status().message()));
    if (env_.metrics != nullptr) env_.metrics->AuthFailed(caller.status());
    return absl::UnauthenticatedError(
        absl::StrCat(std::string(route), ": ", caller.status().message()));
  }
  if (!auth_on() || is_public) return caller;
  absl::StatusOr<auth::Target> target =
      auth::ResolveTargetValues(*match.entry, std::move(target_values), *env_.store);
  if (!target.ok()) return target.status();
  if (absl::Status s = auth::Authorize(&caller->who, route, *target); !s.ok()) {
    spdlog::warn("http {}: refused token '{}': {}", std::string(route), caller->who.label,
                 std::string(s.message()));
    if (env_.metrics != nullptr) env_.metrics->AuthFailed(s);
    return s;
  }
  return caller;
}

bool WebGate::CanSeeRun(const auth::Principal& who, const storage::RunInfo& run) const {
  return !auth_on() || auth::CanSeeStoredRun(who, run);
}

bool WebGate::CanSeeReport(const auth::Principal& who, const storage::StoredReport& report) const {
  return !auth_on() || auth::CanSeeStoredReport(who, report, *env_.store);
}

}  // namespace reprod::server::web

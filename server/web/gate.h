// File: server/web/gate.h
//
// WebGate: the one place the web UI authenticates a request and checks it
// against server/auth's table (acl.h), like auth_gate.h does for gRPC.
// Every matched route goes through Check before its handler runs:
//
//   absl::StatusOr<Caller> caller = gate.Check(match, target_values,
//                                              cookie_session_id, bearer);
//
// Identity: with `--auth none` everyone is LocalPrincipal() (review_ops.h)
// and the session (if any) only carries a CSRF token. With `--auth tokens`
// the identity comes from `Authorization: Bearer <token>` (only where the
// caller allows it: /api/v1 routes) or from the session cookie, whose token
// hash is re-authenticated against the TokenStore on every request (a
// revoked or expired token's sessions stop working at once).
//
// Results: the caller, or UNAUTHENTICATED (no valid session or token: 401),
// PERMISSION_DENIED naming the route, the token's label and the run out of
// reach (403), NotFound for a report id that does not exist, the store's
// errors. Refusals are logged with the route and label, never a token or
// session id.
//
// Thread-safety: thread-safe (SessionStore, TokenStore and the Store are).
#ifndef REPROD_SERVER_WEB_GATE_H_
#define REPROD_SERVER_WEB_GATE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/auth/token_store.h"
#include "server/service_env.h"
#include "server/web/router.h"
#include "server/web/session.h"

namespace reprod::server::web {

struct Caller {
  auth::Principal who;
  std::optional<Session> session;  // the cookie's live session, if any
  bool bearer = false;             // identified by an Authorization header
};

class WebGate {
 public:
  // `env`, `sessions` and `tokens` must outlive the gate; `tokens` nullptr
  // means `--auth none`.
  WebGate(const ServiceEnv& env, SessionStore& sessions, auth::TokenStore* tokens)
      : env_(env), sessions_(sessions), tokens_(tokens) {}

  bool auth_on() const { return tokens_ != nullptr; }

  // Authenticates (see the file comment; `bearer` is the token of an
  // Authorization header, empty when absent or not accepted) and
  // authorizes `match` on the runs `target_values` name.
  absl::StatusOr<Caller> Check(const RouteMatch& match, std::vector<std::string> target_values,
                               std::string_view session_id, std::string_view bearer);

  // The caller's identity without authorization (the login page uses it to
  // tell a logged-in user); UNAUTHENTICATED as Check.
  absl::StatusOr<Caller> Identify(std::string_view session_id, std::string_view bearer);

  // For listings: acl.h's CanSeeStoredRun / CanSeeStoredReport (everything
  // with --auth none).
  bool CanSeeRun(const auth::Principal& who, const storage::RunInfo& run) const;
  bool CanSeeReport(const auth::Principal& who, const storage::StoredReport& report) const;

 private:
  const ServiceEnv& env_;
  SessionStore& sessions_;
  auth::TokenStore* tokens_;
};

}  // namespace reprod::server::web

#endif  // REPROD_SERVER_WEB_GATE_H_

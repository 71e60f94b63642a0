// File: server/web/session.h
//
// SessionStore: the web UI's logins, in memory only (a restart logs
// everyone out). A session is a random 256-bit id (the cookie's value)
// mapped to the token's hash (never the token) and a CSRF token of its own;
// the web gate re-authenticates the hash against the TokenStore on every
// request (TokenStore::AuthenticateHash), so revoking or expiring a token
// ends its sessions at once. With `--auth none` a session carries no token
// (empty hash) and exists only for its CSRF token.
//
//   SessionStore sessions;
//   absl::StatusOr<Session> s = sessions.Create(HashToken(token), absl::Now());
//   std::optional<Session> found = sessions.Find(cookie_value, absl::Now());
//
// Sessions idle longer than `idle_ttl` are gone; past `max_sessions` the
// least recently used one is dropped.
//
// Thread-safety: thread-safe (one mutex).
#ifndef REPROD_SERVER_WEB_SESSION_H_
#define REPROD_SERVER_WEB_SESSION_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace reprod::server::web {

struct Session {
  std::string id;          // 64 lowercase hex digits (the cookie value)
  std::string token_hash;  // 32 raw bytes; empty with --auth none
  std::string csrf;        // 64 lowercase hex digits
  absl::Time last_used = absl::UnixEpoch();
};

// 32 random bytes (getrandom(2)) as 64 lowercase hex digits; Internal when
// the kernel gives none.
absl::StatusOr<std::string> RandomHex32();

class SessionStore {
 public:
  explicit SessionStore(absl::Duration idle_ttl = absl::Hours(12), size_t max_sessions = 10000)
      : idle_ttl_(idle_ttl), max_sessions_(max_sessions) {}

  // A new session for `token_hash` (empty: anonymous).
  absl::StatusOr<Session> Create(std::string token_hash, absl::Time now);

  // The live session with this id, its last use set to `now`; nullopt for
  // an unknown or idle-expired id (which is then dropped).
  std::optional<Session> Find(std::string_view id, absl::Time now);

  // Ends a session (logout); unknown ids are ignored.
  void Erase(std::string_view id);

  size_t size() const;

 private:
  const absl::Duration idle_ttl_;
  const size_t max_sessions_;
  mutable absl::Mutex mu_;
  std::map<std::string, Session, std::less<>> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reprod::server::web

#endif  // REPROD_SERVER_WEB_SESSION_H_

// File: server/auth/token.h
//
// Bearer tokens of the shared review server: what a token is, how it is
// written, hashed and scoped. Persisting them is TokenStore's job
// (token_store.h); deciding what a token may do is the ACL's (acl.h).
//
//   absl::StatusOr<std::string> token = GenerateToken();  // "rpd_" + 64 hex
//   std::string hash = HashToken(*token);                  // 32 raw bytes
//   absl::StatusOr<Scope> scope = ParseScope("team42/*");
//   scope->Matches("team42/bert-paddle");                   // true
//
// A token is "rpd_" followed by 64 lowercase hex digits: 256 bits from the
// kernel's CSPRNG (getrandom(2)). Only its SHA-256 is stored; the token
// itself is shown once, when it is made, and never logged (messages name a
// token by its label or its id, the first 12 hex digits of its hash).
//
// Roles: a submitter writes and reads runs in its scope and compares them
// against reference runs; a judge reads and compares everything but writes
// no run and never manages tokens; an admin may do everything. acl.h holds
// the one table that says which RPC needs what.
//
// Scopes (submitters only; judges and admins have none): a namespace,
// written "team42" or "team42/*" (the same scope; stored as "team42"). It
// matches a run name "namespace/name" exactly when the run's namespace
// (the part before the one "/") equals it: "team42" matches "team42/bert"
// but not "team42x/bert", "team4/bert" or "team42.b/bert"; there is no
// prefix or wildcard matching inside a namespace, and a submitter has
// exactly one scope. The namespace follows common/names.h.
//
// Thread-safety: pure functions, except GenerateToken (thread-safe).
#ifndef REPROD_SERVER_AUTH_TOKEN_H_
#define REPROD_SERVER_AUTH_TOKEN_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace reprod::server::auth {

enum class Role { kSubmitter, kJudge, kAdmin };

// "submitter", "judge", "admin".
std::string_view RoleName(Role role);
// InvalidArgument naming the accepted values otherwise.
absl::StatusOr<Role> ParseRole(std::string_view name);

inline constexpr std::string_view kTokenPrefix = "rpd_";
inline constexpr size_t kTokenHexDigits = 64;  // 256 bits

// A fresh token: kTokenPrefix + 64 lowercase hex digits of getrandom(2).
// Internal when the kernel gives no randomness.
absl::StatusOr<std::string> GenerateToken();

// True when `token` has the shape GenerateToken gives (prefix, 64 lowercase
// hex digits, nothing else). Says nothing about whether it was issued.
bool IsWellFormedToken(std::string_view token);

// SHA-256 (OpenSSL EVP) of the whole token string: 32 raw bytes.
std::string HashToken(std::string_view token);

// Lowercase hex of raw bytes.
std::string ToHex(std::string_view bytes);

// A token's public id: the first 12 hex digits of its hash. Safe to print
// and log; names a token in `reprodd token list/revoke`.
std::string TokenId(std::string_view hash);
inline constexpr size_t kTokenIdHexDigits = 12;

// Constant-time equality of two byte strings of the same length (OpenSSL
// CRYPTO_memcmp); false, without comparing, when the lengths differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// A submitter's namespace scope (see the file comment).
class Scope {
 public:
  // "team42" or "team42/*"; InvalidArgument for anything else (empty, a run
  // name, another wildcard, characters outside common/names.h).
  static absl::StatusOr<Scope> Parse(std::string_view text);

  // The namespace ("team42").
  const std::string& ns() const { return ns_; }
  // True when `run` is "ns/<name>" with this namespace exactly.
  bool Matches(std::string_view run) const;

 private:
  explicit Scope(std::string ns) : ns_(std::move(ns)) {}
  std::string ns_;
};

// "720h", "90m" (absl::ParseDuration) or whole days "30d"; positive only.
// InvalidArgument naming the text otherwise.
absl::StatusOr<absl::Duration> ParseExpiresIn(std::string_view text);

}  // namespace reprod::server::auth

#endif  // REPROD_SERVER_AUTH_TOKEN_H_

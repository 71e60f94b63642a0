// File: server/auth/token_store.h
//
// TokenStore: issues, looks up, lists and revokes bearer tokens, kept in the
// Store's auth records (storage/store.h) under "token/" + hex(SHA-256).
// The token itself is never stored or logged: Create returns it once.
//
//   TokenStore tokens(*store);
//   absl::StatusOr<IssuedToken> issued =
//       tokens.Create({.role = Role::kSubmitter, .scope = "team42",
//                      .label = "team42 CI"}, absl::Now());
//   std::cout << issued->token;                 // shown once
//   absl::StatusOr<Principal> who = tokens.Authenticate(header, absl::Now());
//
// Authenticate answers UNAUTHENTICATED for a missing, malformed, unknown,
// expired or revoked token (the message names the label when there is one,
// never the token); the hash found by lookup is compared again with
// CRYPTO_memcmp. Other errors are the store's (DataLoss for a damaged
// record names the token id).
//
// Record (JSON, version 1): {"v":1,"hash":hex,"role":..,"scope":..,
// "label":..,"created_us":..,"expires_us":..(absent = never),"revoked":..,
// "quota_bytes":..(absent = the server's --namespace-quota-bytes)}.
//
// Quotas: a submitter token may carry its own limit on the bytes stored in
// its namespace (every run "scope/..." together, whoever pushed them). It
// replaces reprodd's --namespace-quota-bytes for the pushes made with that
// token (0 = no namespace limit for them); --quota-bytes still applies.
// server/quota_ledger.h enforces it.
//
// Thread-safety: every method may be called from several threads; Revoke is
// a read-modify-write serialised by a mutex inside one TokenStore.
#ifndef REPROD_SERVER_AUTH_TOKEN_STORE_H_
#define REPROD_SERVER_AUTH_TOKEN_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth/token.h"
#include "storage/store.h"

namespace reprod::server::auth {

// Who made a call, once its token is authenticated.
struct Principal {
  std::string id;     // TokenId: printable
  std::string label;  // printable
  Role role = Role::kSubmitter;
  std::optional<Scope> scope;  // set exactly for submitters
  // The token's own limit on its namespace's stored bytes (see the file
  // comment); nullopt: the server's --namespace-quota-bytes.
  std::optional<uint64_t> quota_bytes;
};

// A stored token, without the token.
struct TokenRecord {
  std::string hash;  // 32 raw bytes
  Role role = Role::kSubmitter;
  std::string scope;  // namespace for submitters, empty otherwise
  std::string label;
  absl::Time created = absl::UnixEpoch();
  std::optional<absl::Time> expires;
  bool revoked = false;
  std::optional<uint64_t> quota_bytes;  // submitters only (file comment)

  std::string id() const { return TokenId(hash); }
};

struct TokenSpec {
  Role role = Role::kSubmitter;
  std::string scope;  // required for submitters ("team42" or "team42/*"),
                      // refused for judges and admins
  std::string label;  // required, 1-200 printable ASCII bytes
  std::optional<absl::Duration> expires_in;
  // Submitters only (InvalidArgument for judges and admins): the limit on
  // the bytes stored in its namespace (file comment; 0 = none).
  std::optional<uint64_t> quota_bytes;
};

struct IssuedToken {
  std::string token;  // the secret; show once
  TokenRecord record;
};

class TokenStore {
 public:
  // `store` must outlive this object.
  explicit TokenStore(storage::Store& store) : store_(store) {}

  // Issues a token. InvalidArgument for a bad spec (role/scope mismatch, bad
  // scope, bad label); the store's errors otherwise.
  absl::StatusOr<IssuedToken> Create(const TokenSpec& spec, absl::Time now);

  // The principal behind `token` at `now` (see the file comment).
  absl::StatusOr<Principal> Authenticate(std::string_view token, absl::Time now);

  // The same for a token known by its hash (32 raw bytes, HashToken): the
  // web UI's sessions keep the hash, never the token, and re-check it on
  // every request so that a revocation or expiry takes effect at once.
  absl::StatusOr<Principal> AuthenticateHash(std::string_view hash, absl::Time now);

  // Every token, sorted by id.
  absl::StatusOr<std::vector<TokenRecord>> List();

  // Marks the token whose id starts with `id_prefix` (at least 8 hex
  // digits) revoked; returns it. NotFound when none matches,
  // FailedPrecondition when several do. Revoking twice is OK.
  absl::StatusOr<TokenRecord> Revoke(std::string_view id_prefix);

 private:
  storage::Store& store_;
  absl::Mutex revoke_mu_;
};

// The record's JSON and back (DataLoss naming the key on a bad record).
std::string EncodeTokenRecord(const TokenRecord& record);
absl::StatusOr<TokenRecord> DecodeTokenRecord(std::string_view key, std::string_view value);

inline constexpr std::string_view kTokenKeyPrefix = "token/";

}  // namespace reprod::server::auth

#endif  // REPROD_SERVER_AUTH_TOKEN_STORE_H_

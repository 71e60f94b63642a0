// File: server/admin_token_file.h
//
// `reprodd --admin-token-file FILE`: bootstraps an admin token without
// stopping the server to run `reprodd token create`.
//
//   - FILE exists: it holds one token (rpd_ + 64 hex digits, surrounding
//     whitespace ignored). Its hash is registered as an admin token labelled
//     "admin (FILE)" unless the store knows it already; a known token must
//     be a valid admin token (a revoked, expired or non-admin one is
//     refused, not silently re-enabled).
//   - FILE does not exist: a new admin token is created and written to it
//     with mode 0600 (created exclusively; the directory must exist).
//
// The token is never logged; the log names the file and the token id.
//
// Thread-safety: call once at startup, before serving.
#ifndef REPROD_SERVER_ADMIN_TOKEN_FILE_H_
#define REPROD_SERVER_ADMIN_TOKEN_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/auth/token_store.h"
#include "storage/store.h"

namespace reprod::server {

// See the file comment. InvalidArgument naming FILE for an unreadable or
// malformed file or a token that is not a valid admin token; the store's
// and the file system's errors otherwise (naming FILE).
absl::Status EnsureAdminTokenFile(const std::string& path, storage::Store& store,
                                  auth::TokenStore& tokens, absl::Time now);

}  // namespace reprod::server

#endif  // REPROD_SERVER_ADMIN_TOKEN_FILE_H_

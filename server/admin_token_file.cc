#include "server/admin_token_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/auth/token.h"
#include "spdlog/spdlog.h"

namespace reprod::server {
namespace {

std::string LabelFor(const std::string& path) {
  std::string label = absl::StrCat("admin (", path, ")");
  for (char& c : label) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  if (label.size() > 200) label = absl::StrCat("admin (...", path.substr(path.size() - 180), ")");
  return label;
}

// Creates FILE exclusively with mode 0600 and writes `token` + "\n".
absl::Status WriteNewTokenFile(const std::string& path, const std::string& token) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--admin-token-file ", path,
                                                   ": cannot create: ", std::strerror(errno)));
  }
  const std::string line = token + "\n";
  const ssize_t n = ::write(fd, line.data(), line.size());
  const bool synced = ::fsync(fd) == 0;
  const int close_rc = ::close(fd);
  if (n != static_cast<ssize_t>(line.size()) || !synced || close_rc != 0) {
    ::unlink(path.c_str());
    return absl::InternalError(
        absl::StrCat("--admin-token-file ", path, ": cannot write the token"));
  }
  return absl::OkStatus();
}

// Registers an existing token's hash as an admin token (the record format
// of token_store.h; the token itself is not stored).
absl::Status RegisterAdmin(const std::string& token, const std::string& path,
                           storage::Store& store, absl::Time now) {
  auth::TokenRecord r;
  r.hash = auth::HashToken(token);
  r.role = auth::Role::kAdmin;
  r.label = LabelFor(path);
  r.created = absl::FromUnixMicros(absl::ToUnixMicros(now));
  REPROD_RETURN_IF_ERROR(store.PutAuthRecord(
      absl::StrCat(std::string(auth::kTokenKeyPrefix), auth::ToHex(r.hash)),
      auth::EncodeTokenRecord(r)));
  spdlog::info("admin token {} from --admin-token-file {} registered", r.id(), path);
  return absl::OkStatus();
}

}  // namespace

absl::Status EnsureAdminTokenFile(const std::string& path, storage::Store& store,
                                  auth::TokenStore& tokens, absl::Time now) {
  std::ifstream in(path);
  if (!in) {
    if (errno != ENOENT) {
      return absl::InvalidArgumentError(absl::StrCat("--admin-token-file ", path,
                                                     ": cannot read: ", std::strerror(errno)));
    }
    auth::TokenSpec spec;
    spec.role = auth::Role::kAdmin;
    spec.label = LabelFor(path);
    REPROD_ASSIGN_OR_RETURN(auth::IssuedToken issued, tokens.Create(spec, now));
    REPROD_RETURN_IF_ERROR(WriteNewTokenFile(path, issued.token));
    spdlog::info("admin token {} created and written to --admin-token-file {} (mode 0600)",
                 issued.record.id(), path);
    return absl::OkStatus();
  }
  std::stringstream text;
  text << in.rdbuf();
  const std::string token(absl::StripAsciiWhitespace(text.str()));
  if (!auth::IsWellFormedToken(token)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--admin-token-file ", path,
                     " does not hold a token (rpd_ followed by 64 lowercase hex digits); "
                     "delete it to have a new one created"));
  }
  absl::StatusOr<std::string> known = store.GetAuthRecord(
      absl::StrCat(std::string(auth::kTokenKeyPrefix), auth::ToHex(auth::HashToken(token))));
  if (absl::IsNotFound(known.status())) return RegisterAdmin(token, path, store, now);
  if (!known.ok()) return known.status();
  absl::StatusOr<auth::Principal> who = tokens.Authenticate(token, now);
  if (!who.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--admin-token-file ", path, ": ",
                                                   std::string(who.status().message())));
  }
  if (who->role != auth::Role::kAdmin) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--admin-token-file ", path, ": its token ", who->id, " ('", who->label, "') is a ",
        std::string(auth::RoleName(who->role)), " token, not an admin token"));
  }
  spdlog::info("admin token {} of --admin-token-file {} is registered", who->id, path);
  return absl::OkStatus();
}

}  // namespace reprod::server

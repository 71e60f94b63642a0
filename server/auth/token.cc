#include "server/auth/token.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/names.h"
#include "openssl/crypto.h"
#include "openssl/evp.h"

namespace reprod::server::auth {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSubmitter:
      return "submitter";
    case Role::kJudge:
      return "judge";
    case Role::kAdmin:
      return "admin";
  }
  return "invalid";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  for (Role r : {Role::kSubmitter, Role::kJudge, Role::kAdmin}) {
    if (name == RoleName(r)) return r;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("role '", std::string(name), "' is not one of submitter, judge, admin"));
}

std::string ToHex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHexDigits[c >> 4]);
    out.push_back(kHexDigits[c & 15]);
  }
  return out;
}

absl::StatusOr<std::string> GenerateToken() {
  unsigned char buf[kTokenHexDigits / 2];
  size_t got = 0;
  while (got < sizeof(buf)) {
    const ssize_t n = getrandom(buf + got, sizeof(buf) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("getrandom failed: ", std::strerror(errno)));
    }
    got += static_cast<size_t>(n);
  }
  std::string token =
      absl::StrCat(std::string(kTokenPrefix),
                   ToHex(std::string_view(reinterpret_cast<const char*>(buf), sizeof(buf))));
  OPENSSL_cleanse(buf, sizeof(buf));
  return token;
}

bool IsWellFormedToken(std::string_view token) {
  if (token.size() != kTokenPrefix.size() + kTokenHexDigits || !token.starts_with(kTokenPrefix)) {
    return false;
  }
  for (char c : token.substr(kTokenPrefix.size())) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string HashToken(std::string_view token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // EVP_Digest with SHA-256 fails only on allocation failure inside
  // OpenSSL; an empty hash then matches no stored record.
  if (EVP_Digest(token.data(), token.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    return std::string();
  }
  return std::string(reinterpret_cast<const char*>(digest), length);
}

std::string TokenId(std::string_view hash) { return ToHex(hash).substr(0, kTokenIdHexDigits); }

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<Scope> Scope::Parse(std::string_view text) {
  std::string_view ns = text;
  if (ns.ends_with("/*")) ns.remove_suffix(2);
  // A namespace is valid exactly when "ns/x" is a valid run name.
  const absl::Status valid = ValidateRunName(absl::StrCat(std::string(ns), "/x"));
  if (ns.empty() || ns.find('/') != std::string_view::npos || !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("scope '", absl::CEscape(std::string(text)),
                     "' is not a namespace: write NAMESPACE or NAMESPACE/* (e.g. team42 "
                     "or team42/*) with NAMESPACE 1-128 bytes of [A-Za-z0-9_.-]"));
  }
  return Scope(std::string(ns));
}

bool Scope::Matches(std::string_view run) const {
  const size_t slash = run.find('/');
  return slash != std::string_view::npos && run.substr(0, slash) == ns_ && slash + 1 < run.size() &&
         run.find('/', slash + 1) == std::string_view::npos;
}

absl::StatusOr<absl::Duration> ParseExpiresIn(std::string_view text) {
  absl::Duration d;
  int64_t days = 0;
  bool ok = false;
  if (text.ends_with('d') &&
      absl::SimpleAtoi(std::string(text.substr(0, text.size() - 1)), &days) && days > 0 &&
      days <= 365 * 100) {
    d = absl::Hours(24) * days;
    ok = true;
  } else {
    ok = absl::ParseDuration(std::string(text), &d);
  }
  if (!ok || d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expiry '", absl::CEscape(std::string(text)),
                     "' is not a positive duration (e.g. 30d, 720h, 90m)"));
  }
  return d;
}

}  // namespace reprod::server::auth

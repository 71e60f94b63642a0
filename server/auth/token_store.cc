#include "server/auth/token_store.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace reprod::server::auth {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxLabelBytes = 200;

std::string KeyFor(std::string_view hash) {
  return absl::StrCat(std::string(kTokenKeyPrefix), ToHex(hash));
}

absl::Status Unauthenticated(std::string_view why) {
  return absl::UnauthenticatedError(std::string(why));
}

absl::Status CheckLabel(std::string_view label) {
  if (label.empty() || label.size() > kMaxLabelBytes ||
      !std::all_of(label.begin(), label.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
    return absl::InvalidArgumentError(absl::StrCat("token label must be 1-", kMaxLabelBytes,
                                                   " printable ASCII bytes (got ", label.size(),
                                                   " bytes)"));
  }
  return absl::OkStatus();
}

// Hex digits back to bytes; false on an odd length or a non-hex digit.
bool FromHex(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

}  // namespace

std::string EncodeTokenRecord(const TokenRecord& r) {
  Json j = {{"v", 1},
            {"hash", ToHex(r.hash)},
            {"role", std::string(RoleName(r.role))},
            {"scope", r.scope},
            {"label", r.label},
            {"created_us", absl::ToUnixMicros(r.created)},
            {"revoked", r.revoked}};
  if (r.expires.has_value()) j["expires_us"] = absl::ToUnixMicros(*r.expires);
  if (r.quota_bytes.has_value()) j["quota_bytes"] = *r.quota_bytes;
  return j.dump();
}

absl::StatusOr<TokenRecord> DecodeTokenRecord(std::string_view key, std::string_view value) {
  auto corrupt = [&](std::string_view why) {
    return absl::DataLossError(
        absl::StrCat("corrupt token record ", std::string(key), ": ", std::string(why)));
  };
  const Json j = Json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return corrupt("not a JSON object");
  TokenRecord r;
  try {
    if (j.at("v").get<int>() != 1) return corrupt("unknown version");
    if (!FromHex(j.at("hash").get<std::string>(), &r.hash) || r.hash.size() != 32) {
      return corrupt("bad hash");
    }
    absl::StatusOr<Role> role = ParseRole(j.at("role").get<std::string>());
    if (!role.ok()) return corrupt(std::string(role.status().message()));
    r.role = *role;
    r.scope = j.at("scope").get<std::string>();
    r.label = j.at("label").get<std::string>();
    r.created = absl::FromUnixMicros(j.at("created_us").get<int64_t>());
    r.revoked = j.at("revoked").get<bool>();
    if (j.contains("expires_us")) {
      r.expires = absl::FromUnixMicros(j.at("expires_us").get<int64_t>());
    }
    if (j.contains("quota_bytes")) {
      if (!j.at("quota_bytes").is_number_unsigned()) return corrupt("bad quota_bytes");
      r.quota_bytes = j.at("quota_bytes").get<uint64_t>();
    }
  } catch (const Json::exception& e) {
    return corrupt(e.what());
  }
  if (KeyFor(r.hash) != key) return corrupt("hash does not match its key");
  if ((r.role == Role::kSubmitter) == r.scope.empty()) {
    return corrupt("scope present exactly when the role is submitter");
  }
  if (r.quota_bytes.has_value() && r.role != Role::kSubmitter) {
    return corrupt("quota_bytes on a token that is not a submitter's");
  }
  return r;
}

absl::StatusOr<IssuedToken> TokenStore::Create(const TokenSpec& spec, absl::Time now) {
  REPROD_RETURN_IF_ERROR(CheckLabel(spec.label));
  IssuedToken out;
  TokenRecord& r = out.record;
  r.role = spec.role;
  r.label = spec.label;
  if (spec.role == Role::kSubmitter) {
    if (spec.scope.empty()) {
      return absl::InvalidArgumentError("a submitter token needs a scope (e.g. --scope team42)");
    }
    REPROD_ASSIGN_OR_RETURN(Scope scope, Scope::Parse(spec.scope));
    r.scope = scope.ns();
  } else if (!spec.scope.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("a ", std::string(RoleName(spec.role)),
                                                   " token has no scope (it covers every run)"));
  }
  if (spec.quota_bytes.has_value() && spec.role != Role::kSubmitter) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", std::string(RoleName(spec.role)),
        " token has no quota: --quota-bytes limits a submitter's namespace"));
  }
  r.quota_bytes = spec.quota_bytes;
  if (spec.expires_in.has_value()) {
    if (*spec.expires_in <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("token expiry must be in the future");
    }
    r.expires = now + *spec.expires_in;
  }
  r.created = absl::FromUnixMicros(absl::ToUnixMicros(now));
  if (r.expires) r.expires = absl::FromUnixMicros(absl::ToUnixMicros(*r.expires));
  REPROD_ASSIGN_OR_RETURN(out.token, GenerateToken());
  r.hash = HashToken(out.token);
  if (r.hash.size() != 32) return absl::InternalError("SHA-256 failed");
  REPROD_RETURN_IF_ERROR(store_.PutAuthRecord(KeyFor(r.hash), EncodeTokenRecord(r)));
  spdlog::info("token {} created: role {}, label '{}'{}{}", r.id(), RoleName(r.role), r.label,
               r.scope.empty() ? "" : absl::StrCat(", scope ", r.scope),
               r.quota_bytes ? absl::StrCat(", quota ", *r.quota_bytes, " bytes") : "");
  return out;
}

absl::StatusOr<Principal> TokenStore::Authenticate(std::string_view token, absl::Time now) {
  if (token.empty()) return Unauthenticated("no token given");
  if (!IsWellFormedToken(token)) {
    return Unauthenticated("malformed token (expected rpd_ followed by 64 hex digits)");
  }
  return AuthenticateHash(HashToken(token), now);
}

absl::StatusOr<Principal> TokenStore::AuthenticateHash(std::string_view hash, absl::Time now) {
  const std::string key = KeyFor(hash);
  absl::StatusOr<std::string> value = store_.GetAuthRecord(key);
  if (absl::IsNotFound(value.status())) return Unauthenticated("unknown token");
  if (!value.ok()) return value.status();
  REPROD_ASSIGN_OR_RETURN(TokenRecord r, DecodeTokenRecord(key, *value));
  // The lookup matched the hash already; compare again in constant time so
  // that no code path depends on a variable-time comparison of it.
  if (!ConstantTimeEquals(r.hash, hash)) return Unauthenticated("unknown token");
  if (r.revoked) {
    return Unauthenticated(absl::StrCat("token '", r.label, "' was revoked"));
  }
  if (r.expires.has_value() && now >= *r.expires) {
    return Unauthenticated(
        absl::StrCat("token '", r.label, "' expired at ", absl::FormatTime(*r.expires)));
  }
  Principal p;
  p.id = r.id();
  p.label = r.label;
  p.role = r.role;
  if (r.role == Role::kSubmitter) {
    absl::StatusOr<Scope> scope = Scope::Parse(r.scope);
    if (!scope.ok()) {
      return absl::DataLossError(
          absl::StrCat("corrupt token record ", key, ": ", std::string(scope.status().message())));
    }
    p.scope = *std::move(scope);
  }
  p.quota_bytes = r.quota_bytes;
  return p;
}

absl::StatusOr<std::vector<TokenRecord>> TokenStore::List() {
  REPROD_ASSIGN_OR_RETURN(auto pairs, store_.ListAuthRecords(kTokenKeyPrefix));
  std::vector<TokenRecord> out;
  out.reserve(pairs.size());
  for (const auto& [key, value] : pairs) {
    REPROD_ASSIGN_OR_RETURN(TokenRecord r, DecodeTokenRecord(key, value));
    out.push_back(std::move(r));
  }
  return out;  // keys are "token/" + hex(hash): sorted by id already
}

absl::StatusOr<TokenRecord> TokenStore::Revoke(std::string_view id_prefix) {
  const bool hex = std::all_of(id_prefix.begin(), id_prefix.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (id_prefix.size() < 8 || id_prefix.size() > 64 || !hex) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id '", absl::CEscape(std::string(id_prefix)),
                     "' must be 8-64 lowercase hex digits (see `reprodd token list`)"));
  }
  absl::MutexLock lock(&revoke_mu_);
  REPROD_ASSIGN_OR_RETURN(auto pairs, store_.ListAuthRecords(absl::StrCat(
                                          std::string(kTokenKeyPrefix), std::string(id_prefix))));
  if (pairs.empty()) {
    return absl::NotFoundError(absl::StrCat("no token with id ", std::string(id_prefix)));
  }
  if (pairs.size() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(pairs.size(), " tokens have ids starting with ", std::string(id_prefix),
                     "; give more digits"));
  }
  REPROD_ASSIGN_OR_RETURN(TokenRecord r, DecodeTokenRecord(pairs[0].first, pairs[0].second));
  if (!r.revoked) {
    r.revoked = true;
    REPROD_RETURN_IF_ERROR(store_.PutAuthRecord(pairs[0].first, EncodeTokenRecord(r)));
    spdlog::info("token {} ('{}') revoked", r.id(), r.label);
  }
  return r;
}

}  // namespace reprod::server::auth

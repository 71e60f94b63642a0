#include "storage/postgres_s3/credentials.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace reprod::storage {
namespace {

std::string Trim(const std::string& s) {
  return std::string(absl::StripAsciiWhitespace(s));
}

// Percent-encodes a value for a postgresql:// URL query.
std::string UrlEncode(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool IsUrl(const std::string& conninfo) {
  return conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://");
}

}  // namespace

absl::StatusOr<bool> ConninfoHasPassword(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    std::string why = error != nullptr ? Trim(error) : "out of memory";
    if (error != nullptr) PQfreemem(error);
    return absl::InvalidArgumentError(
        absl::StrCat("the PostgreSQL connection string does not parse: ", why));
  }
  bool has_password = false;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (std::string(o->keyword) == "password" && o->val != nullptr && *o->val) {
      has_password = true;
    }
  }
  PQconninfoFree(options);
  return has_password;
}

absl::StatusOr<std::string> WithPasswordFromFile(const std::string& conninfo,
                                                 const std::string& password_file) {
  if (password_file.empty()) return conninfo;
  std::ifstream in(password_file);
  std::string password;
  if (!in || !std::getline(in, password)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the PostgreSQL password from ", password_file));
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the PostgreSQL password file ", password_file,
                     " is empty (its first line is the password)"));
  }
  if (IsUrl(conninfo)) {
    const char sep = conninfo.find('?') == std::string::npos ? '?' : '&';
    return absl::StrCat(conninfo, std::string(1, sep), "password=", UrlEncode(password));
  }
  std::string quoted = "'";
  for (char c : password) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  quoted += '\'';
  return absl::StrCat(conninfo, " password=", quoted);
}

absl::Status LoadS3Credentials(const std::string& file, S3Options& s3) {
  if (file.empty()) {
    const char* id = std::getenv("AWS_ACCESS_KEY_ID");
    const char* secret = std::getenv("AWS_SECRET_ACCESS_KEY");
    if (id == nullptr || *id == '\0' || secret == nullptr || *secret == '\0') {
      return absl::InvalidArgumentError(
          "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
          "or pass --s3-credentials-file FILE (AWS shared-credentials format, "
          "[default] profile)");
    }
    s3.access_key = id;
    s3.secret_key = secret;
    return absl::OkStatus();
  }
  std::ifstream in(file);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the S3 credentials file ", file));
  }
  // profile -> key -> value; lines before any [section] count as [default].
  std::map<std::string, std::map<std::string, std::string>> profiles;
  std::string section = "default", line;
  while (std::getline(in, line)) {
    line = Trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = Trim(line.substr(1, line.size() - 2));
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    profiles[section][absl::AsciiStrToLower(Trim(line.substr(0, eq)))] =
        Trim(line.substr(eq + 1));
  }
  const std::map<std::string, std::string>* profile = nullptr;
  if (auto it = profiles.find("default"); it != profiles.end()) {
    profile = &it->second;
  } else if (profiles.size() == 1) {
    profile = &profiles.begin()->second;
  }
  auto get = [&](const char* key) -> std::string {
    if (profile == nullptr) return {};
    auto it = profile->find(key);
    return it == profile->end() ? std::string() : it->second;
  };
  s3.access_key = get("aws_access_key_id");
  s3.secret_key = get("aws_secret_access_key");
  if (s3.access_key.empty() || s3.secret_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the S3 credentials file ", file,
        " has no [default] profile (or single profile) with both "
        "aws_access_key_id and aws_secret_access_key"));
  }
  return absl::OkStatus();
}

}  // namespace reprod::storage

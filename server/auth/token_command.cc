#include "server/auth/token_command.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "server/auth/token_store.h"
#include "storage/rocksdb/rocksdb_store.h"

namespace reprod::server::auth {
namespace {

constexpr char kDescription[] = R"(reprodd token: manage bearer tokens in the data directory.

Run it while reprodd is stopped: the data directory is locked by a running
server. The token is printed once, on stdout; only its SHA-256 is stored.

Roles: submitter (writes and reads runs of its --scope namespace, compares
them with reference runs), judge (reads and compares everything, writes
nothing), admin (everything). Scope: NAMESPACE or NAMESPACE/* (the same:
runs NAMESPACE/<name>). The access table is docs/acl.md; reprodd checks
tokens when it runs with --auth tokens.

Examples:
  reprodd token create --role admin --label ops --data-dir /var/lib/reprod
  reprodd token create --role submitter --scope team42 --label "team42 CI" \
      --expires-in 30d --quota-bytes 10737418240
  reprodd token list

Quota: --quota-bytes N gives a submitter token its own limit on the tensor
bytes stored in its namespace (all runs NAMESPACE/<name> together), used
instead of reprodd's --namespace-quota-bytes for the pushes made with it
(0 = no namespace limit for them); --quota-bytes of reprodd still caps the
server as a whole.
  reprodd token revoke 3fa9c0d17b2e)";

std::string FormatOptionalTime(const std::optional<absl::Time>& t) {
  return t ? absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *t, absl::UTCTimeZone()) : "never";
}

// A token's quota for people: "-" (the server's --namespace-quota-bytes),
// "none" (0) or the byte count.
std::string QuotaText(const std::optional<uint64_t>& quota) {
  if (!quota) return "-";
  return *quota == 0 ? "none" : absl::StrCat(*quota);
}

// Opens the store, naming the usual cause when it is locked.
absl::StatusOr<std::unique_ptr<storage::Store>> OpenStore(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<storage::Store>> store = storage::OpenRocksDbStore(dir, {});
  if (absl::IsFailedPrecondition(store.status()) &&
      store.status().message().find("in use") != std::string::npos) {
    return absl::FailedPreconditionError(
        absl::StrCat(store.status().message(),
                     "\n(stop reprodd first: tokens are managed while it is stopped)"));
  }
  return store;
}

}  // namespace

int RunTokenCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app(kDescription, "reprodd token");
  app.require_subcommand(1);
  std::string data_dir = "reprod-data";
  app.add_option("--data-dir", data_dir, "The store's directory (RocksDB)")
      ->envname("REPROD_DATA_DIR")
      ->capture_default_str();

  std::string role, scope, label, expires_in, id;
  std::optional<uint64_t> quota_bytes;
  CLI::App* create = app.add_subcommand("create", "Issue a token; print it");
  create->add_option("--role", role, "submitter, judge or admin")
      ->required()
      ->check(CLI::IsMember({"submitter", "judge", "admin"}));
  create->add_option("--label", label, "Who or what holds it (shown in logs)")->required();
  create->add_option("--scope", scope, "Submitters only: NAMESPACE or NAMESPACE/*");
  create->add_option("--expires-in", expires_in, "Lifetime: 30d, 720h, 90m (default: no expiry)");
  create->add_option("--quota-bytes", quota_bytes,
                     "Submitters: limit on the bytes stored in the namespace, instead of "
                     "reprodd's --namespace-quota-bytes (0 = none)")
      ->check(CLI::NonNegativeNumber);
  CLI::App* list = app.add_subcommand("list", "List tokens (never secrets)");
  CLI::App* revoke = app.add_subcommand("revoke", "Revoke a token by its id");
  revoke->add_option("id", id, "Token id or its first 8+ hex digits")->required();
  // --data-dir after the subcommand too.
  for (CLI::App* sub : {create, list, revoke}) sub->fallthrough();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e, out, err);
    return code == 0 ? 0 : 2;
  }

  TokenSpec spec;
  if (create->parsed()) {
    absl::StatusOr<Role> r = ParseRole(role);
    if (!r.ok()) {
      err << "reprodd token create: " << r.status().message() << "\n";
      return 2;
    }
    spec.role = *r;
    spec.scope = scope;
    spec.label = label;
    spec.quota_bytes = quota_bytes;
    if (!expires_in.empty()) {
      absl::StatusOr<absl::Duration> d = ParseExpiresIn(expires_in);
      if (!d.ok()) {
        err << "reprodd token create: " << d.status().message() << "\n";
        return 2;
      }
      spec.expires_in = *d;
    }
  }

  // Our own messages say what happened; the library's go to stderr too.
  if (absl::Status s = InitLogging("warn"); !s.ok()) {
    err << "reprodd token: " << s.message() << "\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<storage::Store>> store = OpenStore(data_dir);
  if (!store.ok()) {
    err << "reprodd token: " << store.status().message() << "\n";
    return 1;
  }
  TokenStore tokens(**store);
  if (create->parsed()) {
    absl::StatusOr<IssuedToken> issued = tokens.Create(spec, absl::Now());
    if (!issued.ok()) {
      err << "reprodd token create: " << issued.status().message() << "\n";
      return absl::IsInvalidArgument(issued.status()) ? 2 : 1;
    }
    const TokenRecord& r = issued->record;
    err << "token " << r.id() << " (" << RoleName(r.role)
        << (r.scope.empty() ? "" : " of " + r.scope) << ", '" << r.label << "', expires "
        << FormatOptionalTime(r.expires) << ", quota " << QuotaText(r.quota_bytes)
        << ") created; it is shown once, now:\n";
    out << issued->token << "\n";
    return 0;
  }
  if (list->parsed()) {
    absl::StatusOr<std::vector<TokenRecord>> all = tokens.List();
    if (!all.ok()) {
      err << "reprodd token list: " << all.status().message() << "\n";
      return 1;
    }
    out << "id\trole\tscope\tquota\tcreated\texpires\trevoked\tlabel\n";
    for (const TokenRecord& r : *all) {
      out << r.id() << "\t" << RoleName(r.role) << "\t" << (r.scope.empty() ? "-" : r.scope) << "\t"
          << QuotaText(r.quota_bytes) << "\t" << FormatOptionalTime(r.created) << "\t"
          << FormatOptionalTime(r.expires) << "\t" << (r.revoked ? "yes" : "no") << "\t"
          << r.label << "\n";
    }
    return 0;
  }
  absl::StatusOr<TokenRecord> revoked = tokens.Revoke(id);
  if (!revoked.ok()) {
    err << "reprodd token revoke: " << revoked.status().message() << "\n";
    return absl::IsInvalidArgument(revoked.status()) ? 2 : 1;
  }
  err << "token " << revoked->id() << " ('" << revoked->label << "') is revoked\n";
  return 0;
}

}  // namespace reprod::server::auth

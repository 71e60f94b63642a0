// reprodctl token create|ls|revoke and reprodctl audit ls|verify: tokens and
// the audit log of a review server (admins only, docs/acl.md).
#include <cstdio>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "common/visible.h"
#include "nlohmann/json.hpp"

namespace reprod::reprodctl {
namespace {

constexpr char kTokenHelp[] =
    R"(Bearer tokens of a review server started with --auth tokens (admins only;
the first admin token comes from `reprodd token create` or reprodd's
--admin-token-file).

Roles: submitter (needs --scope: its namespace, "team42" or "team42/*"; runs
and reports inside it, compares against published references), judge (reads
and compares everything, publishes references, signs verdicts), admin
(everything, tokens and deletion too).

Examples:
  export REPROD_TOKEN=$(cat admin.token)
  JUDGE=$(reprodctl token create --role judge --label "jury: ana")
  T42=$(reprodctl token create --role submitter --scope team42 --label "team42 CI" --expires 30d)
  T7=$(reprodctl token create --role submitter --scope team7 --label t7 --quota-bytes 10000000000)
  reprodctl token ls
  reprodctl token revoke 1a2b3c4d5e6f

`create` prints the token once, alone on stdout (its id and label go to
stderr), so `X=$(reprodctl token create ...)` captures it; the server keeps
only its hash. A revoked token is refused at once.

--quota-bytes N (submitters): the token's own limit on the tensor bytes stored
in its namespace (all its runs together), used instead of the server's
--namespace-quota-bytes for pushes made with it; 0 = no namespace limit.
`token ls` shows it under QUOTA ("-": the server's default).

Exit codes: 0 done, 2 bad input or refused (not an admin), 3 server unreachable.)";

constexpr char kAuditHelp[] =
    R"(The audit log of the reprod server: every create, push, seal, abort, delete,
publish, sign and token change with who did it (token label and role), when,
on what and the result, each record chained to the previous one by its
SHA-256 (admins only).

Examples:
  reprodctl audit ls
  reprodctl audit ls --run team42/bert-paddle --limit 20
  reprodctl audit ls --format json
  reprodctl audit verify

`verify` recomputes the hash chain, each signed verdict's run digests and
the bytes of every signed run's tensors.

Exit codes: audit ls: 0; audit verify: 0 the log verifies, 1 it does not
(the first bad record, or the run changed after signing, is named);
2 bad input or refused, 3 server unreachable.)";

struct AdminArgs {
  CLI::App* create = nullptr;
  CLI::App* ls = nullptr;
  CLI::App* revoke = nullptr;
  CLI::App* audit_ls = nullptr;
  CLI::App* audit_verify = nullptr;
  std::string role, scope, label, expires, id;
  std::optional<uint64_t> quota_bytes;
  std::string object;
  uint32_t limit = 0;
  std::string format = "text";
};

// "30d", "12h", "90m", "3600s" (or anything absl::ParseDuration takes).
absl::StatusOr<absl::Duration> ParseLifetime(const std::string& text) {
  absl::Duration d;
  int64_t days = 0;
  if (absl::EndsWith(text, "d") && absl::SimpleAtoi(text.substr(0, text.size() - 1), &days)) {
    d = absl::Hours(24 * days);
  } else if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--expires '", text, "' is not a duration (e.g. 30d, 12h, 90m)"));
  }
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--expires '", text, "' must be positive"));
  }
  return d;
}

// "-" (the server's --namespace-quota-bytes), "none" (0) or the byte count.
std::string QuotaText(const v1::TokenInfo& t) {
  if (!t.has_quota_bytes()) return "-";
  return t.quota_bytes() == 0 ? "none" : absl::StrCat(t.quota_bytes());
}

std::string ExpiresText(const v1::TokenInfo& t) {
  return t.has_expires() ? FormatLocalTime(t.expires()) : "never";
}

nlohmann::json TokenJson(const v1::TokenInfo& t) {
  return {{"id", t.id()},          {"role", t.role()},
          {"scope", t.scope()},    {"label", t.label()},
          {"created", TimestampJson(t.created())},
          {"expires", t.has_expires() ? TimestampJson(t.expires()) : nlohmann::json()},
          {"revoked", t.revoked()},
          {"quota_bytes",
           t.has_quota_bytes() ? nlohmann::json(t.quota_bytes()) : nlohmann::json()}};
}

int RunCreate(client::RemoteClient& client, const AdminArgs& args) {
  v1::CreateTokenRequest request;
  request.set_role(args.role);
  request.set_scope(args.scope);
  request.set_label(args.label);
  if (args.quota_bytes) request.set_quota_bytes(*args.quota_bytes);
  if (!args.expires.empty()) {
    absl::StatusOr<absl::Duration> d = ParseLifetime(args.expires);
    if (!d.ok()) return ReportError(d.status());
    request.set_expires_in_seconds(static_cast<uint64_t>(absl::ToInt64Seconds(*d)));
  }
  auto created = client.CreateToken(request);
  if (!created.ok()) return ReportRemoteError(created.status());
  const v1::TokenInfo& t = created->info();
  std::fprintf(stderr,
               "reprodctl: token %s (%s%s, '%s', expires %s, quota %s) created; it is shown "
               "once, store it now\n",
               t.id().c_str(), t.role().c_str(),
               t.scope().empty() ? "" : VisibleText(absl::StrCat(" of ", t.scope())).c_str(),
               VisibleText(t.label()).c_str(),
               ExpiresText(t).c_str(), QuotaText(t).c_str());
  std::printf("%s\n", created->token().c_str());
  return kExitPass;
}

int RunTokenLs(client::RemoteClient& client, const AdminArgs& args) {
  auto tokens = client.ListTokens();
  if (!tokens.ok()) return ReportRemoteError(tokens.status());
  if (args.format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::TokenInfo& t : *tokens) list.push_back(TokenJson(t));
    std::printf("%s\n", JsonText(list).c_str());
    return kExitPass;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "ROLE", "SCOPE", "QUOTA", "LABEL", "CREATED", "EXPIRES", "REVOKED"}};
  for (const v1::TokenInfo& t : *tokens) {
    rows.push_back({t.id(), t.role(), t.scope().empty() ? "-" : t.scope(), QuotaText(t),
                    t.label(), FormatLocalTime(t.created()), ExpiresText(t),
                    t.revoked() ? "yes" : "no"});
  }
  std::fputs(FormatTable(rows).c_str(), stdout);
  return kExitPass;
}

int RunRevoke(client::RemoteClient& client, const AdminArgs& args) {
  auto revoked = client.RevokeToken(args.id);
  if (!revoked.ok()) return ReportRemoteError(revoked.status());
  std::printf("revoked token %s (%s, '%s')\n", revoked->id().c_str(), revoked->role().c_str(),
              VisibleText(revoked->label()).c_str());
  return kExitPass;
}

std::string DetailsText(const v1::AuditEvent& e) {
  std::vector<std::string> parts;
  // Sorted: protobuf maps have no order.
  std::map<std::string, std::string> sorted(e.details().begin(), e.details().end());
  for (const auto& [k, v] : sorted) {
    // Digests and hashes are long: their first 12 digits identify them.
    const bool hash = absl::EndsWith(k, "digest") || absl::EndsWith(k, "hash");
    parts.push_back(absl::StrCat(k, "=", hash && v.size() > 12 ? v.substr(0, 12) + "..." : v));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, " ");
}

int RunAuditLs(client::RemoteClient& client, const AdminArgs& args) {
  auto events = client.ListAuditEvents(args.object, args.limit);
  if (!events.ok()) return ReportRemoteError(events.status());
  if (args.format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::AuditEvent& e : *events) {
      nlohmann::json details = nlohmann::json::object();
      for (const auto& [k, v] : e.details()) details[k] = v;
      list.push_back({{"sequence", e.sequence()}, {"time", TimestampJson(e.time())},
                      {"label", e.label()}, {"role", e.role()}, {"verb", e.verb()},
                      {"object", e.object()}, {"result", e.result()}, {"details", details},
                      {"prev_hash", e.prev_hash()}, {"hash", e.hash()}});
    }
    std::printf("%s\n", JsonText(list).c_str());
    return kExitPass;
  }
  std::vector<std::vector<std::string>> rows = {
      {"SEQ", "TIME", "WHO", "ROLE", "VERB", "OBJECT", "RESULT", "DETAILS"}};
  for (const v1::AuditEvent& e : *events) {
    rows.push_back({absl::StrCat(e.sequence()), FormatLocalTime(e.time()), e.label(), e.role(),
                    e.verb(), e.object(), e.result(), DetailsText(e)});
  }
  std::fputs(FormatTable(rows).c_str(), stdout);
  return kExitPass;
}

int RunAuditVerify(client::RemoteClient& client, const GlobalOptions& global) {
  auto verdict = client.VerifyAudit();
  if (!verdict.ok()) return ReportRemoteError(verdict.status());
  if (verdict->ok()) {
    std::printf("audit log OK: %llu records; the hash chain, every signed verdict's run "
                "digests and every signed run's tensors verify\n",
                static_cast<unsigned long long>(verdict->records()));
    return kExitPass;
  }
  std::printf("audit log FAILED verification (%llu records)%s: %s\n",
              static_cast<unsigned long long>(verdict->records()),
              verdict->has_bad_sequence()
                  ? absl::StrCat(", first bad record ", verdict->bad_sequence()).c_str()
                  : "",
              VisibleText(verdict->reason()).c_str());
  if (!global.quiet) {
    std::fprintf(stderr, "reprodctl: the audit log of %s does not verify; see above\n",
                 global.server.c_str());
  }
  return kExitFail;
}

int RunAdmin(const AdminArgs& args, const GlobalOptions& global) {
  if (args.create->parsed() && !args.expires.empty()) {
    if (auto d = ParseLifetime(args.expires); !d.ok()) return ReportError(d.status());
  }
  auto client = ConnectToServer(global);
  if (!client.ok()) return ReportRemoteError(client.status());
  if (args.create->parsed()) return RunCreate(**client, args);
  if (args.ls->parsed()) return RunTokenLs(**client, args);
  if (args.revoke->parsed()) return RunRevoke(**client, args);
  if (args.audit_ls->parsed()) return RunAuditLs(**client, args);
  if (args.audit_verify->parsed()) return RunAuditVerify(**client, global);
  return kExitBadInput;
}

}  // namespace

Runner RegisterToken(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<AdminArgs>();
  CLI::App* cmd = app.add_subcommand("token", "Create, list and revoke tokens (admins)");
  cmd->footer(kTokenHelp);
  cmd->require_subcommand(1);
  cmd->fallthrough();
  args->create = cmd->add_subcommand("create", "Issue a token; prints it once on stdout");
  args->create->footer(
      "Example:\n  reprodctl token create --role submitter --scope team42 --label \"team42 CI\" "
      "--expires 30d");
  args->create->fallthrough();
  args->create->add_option("--role", args->role, "submitter, judge or admin")
      ->required()
      ->check(CLI::IsMember({"submitter", "judge", "admin"}));
  args->create->add_option("--scope", args->scope,
                           "Submitters: their namespace (team42 or team42/*)");
  args->create->add_option("--label", args->label,
                           "Who holds it (shown in the audit log and as run owner)")
      ->required();
  args->create->add_option("--expires", args->expires, "Lifetime: 30d, 12h, 90m (default: never)");
  args->create->add_option("--quota-bytes", args->quota_bytes,
                           "Submitters: limit on the bytes stored in their namespace, instead of "
                           "the server's --namespace-quota-bytes (0 = none)")
      ->check(CLI::NonNegativeNumber);
  args->ls = cmd->add_subcommand("ls", "List tokens (never the tokens themselves)");
  args->ls->fallthrough();
  args->ls->add_option("--format", args->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  args->revoke = cmd->add_subcommand("revoke", "Revoke a token at once");
  args->revoke->footer("Example:\n  reprodctl token revoke 1a2b3c4d5e6f");
  args->revoke->fallthrough();
  args->revoke->add_option("ID", args->id, "Token id from `token ls` (or >= 8 of its digits)")
      ->required();

  CLI::App* audit = app.add_subcommand("audit", "The server's audit log: list and verify");
  audit->footer(kAuditHelp);
  audit->require_subcommand(1);
  audit->fallthrough();
  args->audit_ls = audit->add_subcommand("ls", "Audit records, newest first");
  args->audit_ls->footer("Example:\n  reprodctl audit ls --run team42/bert-paddle --limit 20");
  args->audit_ls->fallthrough();
  args->audit_ls->add_option("--run,--object", args->object,
                             "Only records about this run (or report id, token label)");
  args->audit_ls->add_option("--limit", args->limit, "At most N records (default 100)");
  args->audit_ls->add_option("--format", args->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  args->audit_verify = audit->add_subcommand(
      "verify", "Recompute the hash chain and every signed verdict (exit 1 if broken)");
  args->audit_verify->fallthrough();
  return [args, &global] { return RunAdmin(*args, global); };
}

}  // namespace reprod::reprodctl

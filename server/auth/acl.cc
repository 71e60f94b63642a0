#include "server/auth/acl.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "google/protobuf/descriptor.h"

namespace reprod::server::auth {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

constexpr char kVisibleRuns[] = "submitter: runs in scope or flagged reference; judge, admin: all";
constexpr char kVisibleReports[] =
    "submitter: reports whose ref and cand are visible and one is in scope; "
    "judge, admin: all";

// The table. Keep built gRPC entries in proto order; acl_test checks that
// they are exactly the methods of the reprod.v1 descriptors plus health and
// reflection, and docs/acl.md is rendered from it.
constexpr AclEntry kTable[] = {
    // --- reprod.v1.RunService ----------------------------------------------
    {.route = "/reprod.v1.RunService/CreateRun",
     .access = Access::kWriteRun,
     .target = TargetKind::kRunNames,
     .fields = "run.name"},
    {.route = "/reprod.v1.RunService/GetRun",
     .access = Access::kReadRun,
     .target = TargetKind::kRunNames,
     .fields = "name"},
    {.route = "/reprod.v1.RunService/ListRuns",
     .access = Access::kAuthenticated,
     .results = kVisibleRuns},
    {.route = "/reprod.v1.RunService/SealRun",
     .access = Access::kWriteRun,
     .target = TargetKind::kRunNames,
     .fields = "name"},
    {.route = "/reprod.v1.RunService/DeleteRun",
     .access = Access::kAdmin,
     .target = TargetKind::kRunNames,
     .fields = "name"},
    {.route = "/reprod.v1.RunService/ListTensors",
     .access = Access::kReadRun,
     .target = TargetKind::kRunNames,
     .fields = "run"},
    {.route = "/reprod.v1.RunService/ReadTensor",
     .access = Access::kReadRun,
     .target = TargetKind::kRunNames,
     .fields = "run"},
    // --- reprod.v1.IngestService -------------------------------------------
    {.route = "/reprod.v1.IngestService/Ingest",
     .access = Access::kWriteRun,
     .target = TargetKind::kRunNames,
     .fields = "begin.run",
     .per_message = true},
    // --- reprod.v1.SharedMemoryService (reprodd --allow-shm) ----------------
    {.route = "/reprod.v1.SharedMemoryService/Session",
     .access = Access::kWriteRun,
     .target = TargetKind::kRunNames,
     .fields = "tensor.begin.run",
     .per_message = true},
    // --- reprod.v1.CompareService ------------------------------------------
    {.route = "/reprod.v1.CompareService/Compare",
     .access = Access::kCompareRuns,
     .target = TargetKind::kRunNames,
     .fields = "ref,cand"},
    {.route = "/reprod.v1.CompareService/Watch",
     .access = Access::kCompareRuns,
     .target = TargetKind::kRunNames,
     .fields = "ref,cand"},
    // --- reprod.v1.ReportService -------------------------------------------
    {.route = "/reprod.v1.ReportService/GetReport",
     .access = Access::kCompareRuns,
     .target = TargetKind::kReportId,
     .fields = "id"},
    {.route = "/reprod.v1.ReportService/ListReports",
     .access = Access::kAuthenticated,
     .results = kVisibleReports},
    // --- standard services reprodd registers --------------------------------
    {.route = "/grpc.health.v1.Health/Check", .access = Access::kPublic},
    {.route = "/grpc.health.v1.Health/Watch", .access = Access::kPublic},
    // Reflection is served by gRPC itself (no method of ours runs, so no gate
    // can check it); it tells what proto/reprod/v1/*.proto, which ships with
    // every client, tells already. Public says what happens.
    {.route = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
     .access = Access::kPublic},
    // --- review server: references, signatures, tokens, audit -----------------
    {.route = "/reprod.v1.RunService/SetReference",
     .access = Access::kJudge,
     .target = TargetKind::kRunNames,
     .fields = "name"},
    {.route = "/reprod.v1.ReportService/SignReport",
     .access = Access::kJudge,
     .target = TargetKind::kReportId,
     .fields = "id"},
    {.route = "/reprod.v1.TokenService/CreateToken", .access = Access::kAdmin},
    {.route = "/reprod.v1.TokenService/ListTokens", .access = Access::kAdmin},
    {.route = "/reprod.v1.TokenService/RevokeToken", .access = Access::kAdmin},
    {.route = "/reprod.v1.AuditService/ListEvents", .access = Access::kAdmin},
    {.route = "/reprod.v1.AuditService/VerifyAudit", .access = Access::kAdmin},
    // --- store maintenance ------------------------------------------------------
    {.route = "/reprod.v1.AdminService/Backup", .access = Access::kAdmin},
    {.route = "/reprod.v1.AdminService/Compact", .access = Access::kAdmin},
    // --- HTTP routes of the web UI (server/web/) -------------------------------
    // Pages (HTML forms; POSTs from a browser session carry a CSRF token).
    {.route = "GET /healthz", .http = true, .access = Access::kPublic},
    // Prometheus metrics (text format 0.0.4). Public: a Prometheus server
    // scrapes without a browser session. The numbers name no run, report or
    // token; reprod_store_bytes names each namespace with its stored bytes,
    // which the callers who may list runs mostly know already. Making it
    // admin would put an admin token (one that deletes runs and mints
    // tokens) into every Prometheus config, a worse trade; where namespace
    // names must stay private, keep --http-listen on loopback or behind a
    // network policy that lets only Prometheus in.
    {.route = "GET /metrics", .http = true, .access = Access::kPublic},
    {.route = "GET /login", .http = true, .access = Access::kPublic},
    {.route = "POST /login", .http = true, .access = Access::kPublic},
    {.route = "POST /logout", .http = true, .access = Access::kAuthenticated},
    {.route = "GET /", .http = true, .access = Access::kAuthenticated, .results = kVisibleRuns},
    {.route = "GET /runs/{run}",
     .http = true,
     .access = Access::kReadRun,
     .target = TargetKind::kRunNames,
     .fields = "run"},
    {.route = "POST /runs/{run}/reference",
     .http = true,
     .access = Access::kJudge,
     .target = TargetKind::kRunNames,
     .fields = "run"},
    {.route = "GET /compare", .http = true, .access = Access::kAuthenticated,
     .results = kVisibleRuns},
    {.route = "POST /compare",
     .http = true,
     .access = Access::kCompareRuns,
     .target = TargetKind::kRunNames,
     .fields = "ref,cand"},
    {.route = "GET /reports",
     .http = true,
     .access = Access::kAuthenticated,
     .results = kVisibleReports},
    {.route = "GET /reports/{id}",
     .http = true,
     .access = Access::kCompareRuns,
     .target = TargetKind::kReportId,
     .fields = "id"},
    {.route = "GET /reports/{id}/download/{format}",
     .http = true,
     .access = Access::kCompareRuns,
     .target = TargetKind::kReportId,
     .fields = "id"},
    {.route = "POST /reports/{id}/sign",
     .http = true,
     .access = Access::kJudge,
     .target = TargetKind::kReportId,
     .fields = "id"},
    {.route = "GET /admin/tokens", .http = true, .access = Access::kAdmin},
    {.route = "POST /admin/tokens", .http = true, .access = Access::kAdmin},
    {.route = "POST /admin/tokens/{token}/revoke", .http = true, .access = Access::kAdmin},
    {.route = "GET /admin/audit", .http = true, .access = Access::kAdmin},
    // JSON API (Authorization: Bearer <token> or the session cookie).
    {.route = "GET /api/v1/runs",
     .http = true,
     .access = Access::kAuthenticated,
     .results = kVisibleRuns},
    {.route = "GET /api/v1/runs/{run}",
     .http = true,
     .access = Access::kReadRun,
     .target = TargetKind::kRunNames,
     .fields = "run"},
    {.route = "GET /api/v1/runs/{run}/tensors",
     .http = true,
     .access = Access::kReadRun,
     .target = TargetKind::kRunNames,
     .fields = "run"},
    {.route = "POST /api/v1/compare",
     .http = true,
     .access = Access::kCompareRuns,
     .target = TargetKind::kRunNames,
     .fields = "ref,cand"},
    {.route = "GET /api/v1/reports",
     .http = true,
     .access = Access::kAuthenticated,
     .results = kVisibleReports},
    {.route = "GET /api/v1/reports/{id}",
     .http = true,
     .access = Access::kCompareRuns,
     .target = TargetKind::kReportId,
     .fields = "id"},
    {.route = "GET /api/v1/tokens", .http = true, .access = Access::kAdmin},
    {.route = "GET /api/v1/audit", .http = true, .access = Access::kAdmin},
};

bool InScope(const Principal& p, const RunTarget& run) {
  return p.scope.has_value() && p.scope->Matches(run.name);
}

absl::Status Denied(const Principal& p, std::string_view route, std::string_view why) {
  return absl::PermissionDeniedError(
      absl::StrCat(std::string(route), ": token '", p.label, "' (", std::string(RoleName(p.role)),
                   p.scope ? absl::StrCat(" of ", p.scope->ns()) : "", ") ", std::string(why)));
}

// Submitter rules of the run-based access kinds.
absl::Status AuthorizeSubmitter(const Principal& p, const AclEntry& e, const Target& target) {
  bool any_in_scope = false;
  for (const RunTarget& run : target.runs) {
    const bool in_scope = InScope(p, run);
    any_in_scope |= in_scope;
    if (e.access == Access::kWriteRun && !in_scope) {
      return Denied(p, e.route, "may not write run " + run.name);
    }
    if (!in_scope && !run.reference) {
      return Denied(
          p, e.route,
          absl::StrCat("may not read run ", run.name, " (neither in scope nor a reference run)"));
    }
  }
  if (e.access == Access::kCompareRuns && !any_in_scope) {
    return Denied(p, e.route, "may compare only when one of the runs is in its scope");
  }
  return absl::OkStatus();
}

// "a.b" -> the string at that path; "" when an enclosing message is unset.
absl::StatusOr<std::string> StringAt(const Message& request, std::string_view path) {
  const Message* msg = &request;
  const std::string path_text(path);
  const std::vector<std::string> parts = absl::StrSplit(path_text, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(parts[i]);
    const bool last = i + 1 == parts.size();
    const auto want = last ? FieldDescriptor::CPPTYPE_STRING : FieldDescriptor::CPPTYPE_MESSAGE;
    if (f == nullptr || f->is_repeated() || f->cpp_type() != want) {
      return absl::InvalidArgumentError(absl::StrCat("ACL field path '", path_text,
                                                     "' does not name a string field of ",
                                                     request.GetDescriptor()->full_name()));
    }
    if (last) return msg->GetReflection()->GetString(*msg, f);
    if (!msg->GetReflection()->HasField(*msg, f)) return std::string();
    msg = &msg->GetReflection()->GetMessage(*msg, f);
  }
  return std::string();
}

}  // namespace

std::string_view AccessName(Access access) {
  switch (access) {
    case Access::kPublic:
      return "public";
    case Access::kAuthenticated:
      return "authenticated";
    case Access::kReadRun:
      return "read-run";
    case Access::kWriteRun:
      return "write-run";
    case Access::kCompareRuns:
      return "compare-runs";
    case Access::kJudge:
      return "judge";
    case Access::kAdmin:
      return "admin";
  }
  return "invalid";
}

std::span<const AclEntry> AclTable() { return kTable; }

const AclEntry* FindAclEntry(std::string_view route) {
  for (const AclEntry& e : kTable) {
    if (e.route == route) return &e;
  }
  return nullptr;
}

absl::StatusOr<std::vector<std::string>> TargetValues(const AclEntry& entry,
                                                      const Message& request) {
  std::vector<std::string> out;
  if (entry.target == TargetKind::kNone) return out;
  const std::string fields(entry.fields);
  const std::vector<std::string> paths = absl::StrSplit(fields, ',');
  for (const std::string& path : paths) {
    REPROD_ASSIGN_OR_RETURN(std::string value, StringAt(request, path));
    if (!value.empty()) out.push_back(std::move(value));
  }
  return out;
}

absl::StatusOr<Target> ResolveTarget(const AclEntry& entry, const Message& request,
                                     storage::Store& store) {
  REPROD_ASSIGN_OR_RETURN(std::vector<std::string> values, TargetValues(entry, request));
  return ResolveTargetValues(entry, std::move(values), store);
}

absl::StatusOr<Target> ResolveTargetValues(const AclEntry& entry, std::vector<std::string> values,
                                           storage::Store& store) {
  if (entry.target == TargetKind::kNone) return Target{};
  std::erase(values, std::string());
  std::vector<std::string> runs;
  if (entry.target == TargetKind::kReportId) {
    for (const std::string& id : values) {
      REPROD_ASSIGN_OR_RETURN(storage::StoredReport report, store.GetReport(id));
      runs.push_back(report.ref);
      runs.push_back(report.cand);
    }
  } else {
    runs = std::move(values);
  }
  Target target;
  for (std::string& name : runs) {
    RunTarget run{std::move(name), false};
    absl::StatusOr<storage::RunInfo> info = store.GetRun(run.name);
    if (info.ok()) {
      run.reference = info->reference;
    } else if (!absl::IsNotFound(info.status())) {
      return info.status();
    }
    target.runs.push_back(std::move(run));
  }
  return target;
}

absl::Status Authorize(const Principal* principal, std::string_view route, const Target& target) {
  const AclEntry* e = FindAclEntry(route);
  if (e == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(
        std::string(route), " is not in the access table (server/auth/acl.cc): denied"));
  }
  if (e->access == Access::kPublic) return absl::OkStatus();
  if (principal == nullptr) {
    return absl::UnauthenticatedError(
        absl::StrCat(std::string(route), " needs a token (authorization: Bearer rpd_...)"));
  }
  const Principal& p = *principal;
  switch (e->access) {
    case Access::kPublic:
    case Access::kAuthenticated:
      return absl::OkStatus();
    case Access::kAdmin:
      if (p.role == Role::kAdmin) return absl::OkStatus();
      return Denied(p, route, "is not an admin");
    case Access::kJudge:
      if (p.role == Role::kAdmin || p.role == Role::kJudge) return absl::OkStatus();
      return Denied(p, route, "is not a judge (publishing and signing need a judge or admin)");
    case Access::kReadRun:
    case Access::kWriteRun:
    case Access::kCompareRuns:
      break;
  }
  if (target.runs.empty()) {
    return absl::InternalError(absl::StrCat(
        std::string(route), ": authorization was asked without the run(s) the request names"));
  }
  switch (p.role) {
    case Role::kAdmin:
      return absl::OkStatus();
    case Role::kJudge:
      if (e->access == Access::kWriteRun) {
        return Denied(p, route, "may read and compare but not write runs");
      }
      return absl::OkStatus();
    case Role::kSubmitter:
      return AuthorizeSubmitter(p, *e, target);
  }
  return Denied(p, route, "has an unknown role");
}

bool CanSeeRun(const Principal& p, const RunTarget& run) {
  return p.role != Role::kSubmitter || InScope(p, run) || run.reference;
}

bool CanSeeReport(const Principal& p, const RunTarget& ref, const RunTarget& cand) {
  if (p.role != Role::kSubmitter) return true;
  return CanSeeRun(p, ref) && CanSeeRun(p, cand) && (InScope(p, ref) || InScope(p, cand));
}

bool CanSeeStoredRun(const Principal& p, const storage::RunInfo& run) {
  return CanSeeRun(p, RunTarget{run.name, run.reference});
}

bool CanSeeStoredReport(const Principal& p, const storage::StoredReport& report,
                        storage::Store& store) {
  if (p.role != Role::kSubmitter) return true;
  auto target = [&store](const std::string& name) {
    absl::StatusOr<storage::RunInfo> run = store.GetRun(name);
    return RunTarget{name, run.ok() && run->reference};
  };
  return CanSeeReport(p, target(report.ref), target(report.cand));
}

std::string RenderAclMarkdown() {
  std::string out =
      "# Access control table\n\n"
      "Generated from the table in `server/auth/acl.cc` by "
      "`RenderAclMarkdown()`; `server_auth_test`\nfails when this file "
      "differs. After editing the table, regenerate it from the\nrepository "
      "root:\n\n"
      "    REPROD_WRITE_ACL_MD=docs/acl.md "
      "build/server/auth/server_auth_test --gtest_filter='*Docs*'\n\n"
      "**Enforced with `reprodd --auth tokens`** (gRPC: `server/auth_gate.h`; "
      "HTTP: `server/web/gate.h`,\nwhose router serves exactly the HTTP routes "
      "below; the default\n`--auth none` admits every call, see `docs/design.md` "
      "§Security defaults). Server\nreflection is public: gRPC serves it itself and "
      "it tells only what the\npublished proto files tell. A route missing from "
      "this table is denied.\n\n"
      "## Access kinds\n\n"
      "A run is *in scope* of a submitter when its namespace equals the "
      "token's scope\n(`team42` or `team42/*` both match `team42/<name>` "
      "only); it is *visible* when in\nscope or flagged `reference`.\n\n"
      "| access | no token | submitter | judge | admin |\n"
      "|---|---|---|---|---|\n"
      "| public | yes | yes | yes | yes |\n"
      "| authenticated | no | yes (lists filtered) | yes | yes |\n"
      "| read-run | no | every target run visible | yes | yes |\n"
      "| write-run | no | every target run in scope | no | yes |\n"
      "| compare-runs | no | every target run visible, one in scope | yes | "
      "yes |\n"
      "| judge | no | no | yes | yes |\n"
      "| admin | no | no | no | yes |\n\n"
      "No token, a malformed, unknown, expired or revoked token: "
      "`UNAUTHENTICATED`.\nAny other refusal: `PERMISSION_DENIED`. Over HTTP "
      "these are 401 (the login page) and 403;\na route not below is 404.\n\n"
      "## Routes\n\n"
      "| route | status | access | target (request fields) | results |\n"
      "|---|---|---|---|---|\n";
  for (const AclEntry& e : kTable) {
    std::string target = "—";
    if (e.target == TargetKind::kRunNames) {
      target = absl::StrCat("runs: `", std::string(e.fields), "`");
    } else if (e.target == TargetKind::kReportId) {
      target = absl::StrCat("ref and cand of report `", std::string(e.fields), "`");
    }
    if (e.per_message) absl::StrAppend(&target, ", each message");
    absl::StrAppend(&out, "| `", std::string(e.route), "` | ", e.planned ? "planned" : "built",
                    " | ", std::string(AccessName(e.access)), " | ", target, " | ",
                    e.results.empty() ? "—" : std::string(e.results), " |\n");
  }
  return out;
}

}  // namespace reprod::server::auth

// File: server/auth/acl.h
//
// The one enforcement table: every gRPC method reprodd serves (and the HTTP
// routes and RPCs that are planned) with the access it needs and where in
// the request its target runs are found. Nothing outside this table is
// allowed: a route missing from it is denied (PERMISSION_DENIED).
// docs/acl.md is RenderAclMarkdown()'s output, checked by a test.
//
//   const AclEntry* entry = FindAclEntry("/reprod.v1.RunService/GetRun");
//   absl::StatusOr<Target> target = ResolveTarget(*entry, request, store);
//   absl::StatusOr<Principal> who = tokens.Authenticate(bearer, absl::Now());
//   absl::Status s = Authorize(who.ok() ? &*who : nullptr, entry->route,
//                              *target);
//
// Access kinds (a submitter's "scope" is token.h's Scope; a run is "visible"
// to a submitter when it is in scope or flagged reference):
//   public         anyone, without a token (health checks)
//   authenticated  any valid token; list results are filtered (CanSeeRun,
//                  CanSeeReport)
//   read-run       judge, admin: any run; submitter: every target run visible
//   write-run      admin: any run; submitter: every target run in scope;
//                  judge: never
//   compare-runs   judge, admin: any runs; submitter: every target run
//                  visible and at least one in scope (its own run against a
//                  reference run, or two of its own)
//   judge          judge, admin: any target (publishing a reference run,
//                  signing a report); submitter: never
//   admin          admin only (deleting runs, tokens, audit)
//
// Enforced by reprodd with `--auth tokens` (server/auth_gate.h), except the
// reflection service, which gRPC serves itself.
//
// Thread-safety: the table is immutable; all functions are thread-safe
// (ResolveTarget as far as the Store is).
#ifndef REPROD_SERVER_AUTH_ACL_H_
#define REPROD_SERVER_AUTH_ACL_H_

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "server/auth/token_store.h"
#include "storage/store.h"

namespace reprod::server::auth {

enum class Access {
  kPublic,
  kAuthenticated,
  kReadRun,
  kWriteRun,
  kCompareRuns,
  kJudge,
  kAdmin,
};

// "public", "authenticated", "read-run", "write-run", "compare-runs",
// "judge", "admin".
std::string_view AccessName(Access access);

// How an entry's target runs are found.
enum class TargetKind {
  kNone,      // no target
  kRunNames,  // `fields` name runs (empty values are skipped)
  kReportId,  // `fields` names one report id; its ref and cand are the runs
};

struct AclEntry {
  // gRPC: "/package.Service/Method"; HTTP: "METHOD /path/{param}".
  std::string_view route = {};
  bool http = false;
  // Planned: the route or RPC does not exist yet; the entry fixes what it
  // will need.
  bool planned = false;
  Access access = Access::kAdmin;
  TargetKind target = TargetKind::kNone;
  // Comma-separated dotted field paths of the request (gRPC) or parameters
  // (HTTP), e.g. "run.name" or "ref,cand".
  std::string_view fields = {};
  // Set for streaming requests whose every message is checked on its own
  // (Ingest: each BeginTensor's run).
  bool per_message = false;
  // What a listing returns to a caller, empty when it returns no list.
  std::string_view results = {};
};

// Every entry: built gRPC methods first (by service, in proto order), then
// planned RPCs, then HTTP routes.
std::span<const AclEntry> AclTable();

// The entry for `route`; nullptr when there is none (denied).
const AclEntry* FindAclEntry(std::string_view route);

// A run a request targets. `reference` is the stored flag (false for a run
// that does not exist).
struct RunTarget {
  std::string name;
  bool reference = false;
};

struct Target {
  std::vector<RunTarget> runs;  // in the order of the entry's fields
};

// The non-empty string values at the entry's field paths of `request`, in
// order. InvalidArgument when a path does not name a string field of the
// request's type (a table error, caught by the tests).
absl::StatusOr<std::vector<std::string>> TargetValues(const AclEntry& entry,
                                                      const google::protobuf::Message& request);

// TargetValues resolved against `store`: each run's reference flag, or the
// runs of the report a kReportId entry names (NotFound for an unknown
// report). The store's other errors pass through.
absl::StatusOr<Target> ResolveTarget(const AclEntry& entry,
                                     const google::protobuf::Message& request,
                                     storage::Store& store);

// The same for values already taken from a request (the HTTP layer's path
// and form parameters, in the order of the entry's fields): run names, or
// report ids of a kReportId entry. Empty values are skipped.
absl::StatusOr<Target> ResolveTargetValues(const AclEntry& entry,
                                           std::vector<std::string> values,
                                           storage::Store& store);

// OK when `principal` (nullptr: no valid token) may call `route` on
// `target`. UNAUTHENTICATED without a principal on a non-public route;
// PERMISSION_DENIED naming the route, the principal's label and role and
// the run that is out of reach; PERMISSION_DENIED for a route missing from
// the table (default deny). Internal when a run-based entry is given no
// run (a caller bug: per_message entries are checked per message).
absl::Status Authorize(const Principal* principal, std::string_view route, const Target& target);

// Result filters for listings: whether `principal` may see the run, or a
// report of ref against cand (compare-runs over the pair).
bool CanSeeRun(const Principal& principal, const RunTarget& run);
bool CanSeeReport(const Principal& principal, const RunTarget& ref, const RunTarget& cand);

// The same filters for stored records, as both gates' listings use them: a
// run by its own reference flag; a report by its runs' flags, looked up in
// `store` only for submitters (a run that is gone or unreadable counts as
// not reference).
bool CanSeeStoredRun(const Principal& principal, const storage::RunInfo& run);
bool CanSeeStoredReport(const Principal& principal, const storage::StoredReport& report,
                        storage::Store& store);

// docs/acl.md: the table and the role matrix of every access kind.
std::string RenderAclMarkdown();

}  // namespace reprod::server::auth

#endif  // REPROD_SERVER_AUTH_ACL_H_

// File: server/web/router.h
//
// The web UI's routes ARE the HTTP entries of server/auth's access table
// (acl.h): MatchRoute finds the entry whose "METHOD /path/{param}" pattern
// matches a request, so a route cannot be served without an entry saying
// who may call it. A parameter matches one path segment, except {run},
// which matches the two segments of a run name ("team42/bert"). Paths are
// matched after percent-decoding (httplib decodes them), so "team42%2Fbert"
// is the same run; parameter values are checked by the caller
// (ValidateRunName and the like).
//
//   absl::StatusOr<RouteMatch> m = MatchRoute("GET", "/runs/team42/bert");
//   m->entry->route;          // "GET /runs/{run}"
//   m->params.at("run");      // "team42/bert"
//
// Thread-safety: pure functions over the immutable table.
#ifndef REPROD_SERVER_WEB_ROUTER_H_
#define REPROD_SERVER_WEB_ROUTER_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/auth/acl.h"

namespace reprod::server::web {

struct RouteMatch {
  const auth::AclEntry* entry = nullptr;
  std::map<std::string, std::string> params;  // {name} -> decoded value
};

// The served (HTTP, not planned) entries of the table, in table order.
std::vector<const auth::AclEntry*> HttpRoutes();

// "GET" of "GET /runs/{run}", and "/runs/{run}".
std::string_view RouteMethod(const auth::AclEntry& entry);
std::string_view RoutePath(const auth::AclEntry& entry);

// The entry matching `method` and `path`. NotFound when no pattern matches
// the path; FailedPrecondition (answered 405) when one matches it for
// another method only.
absl::StatusOr<RouteMatch> MatchRoute(std::string_view method, std::string_view path);

// The values of the entry's target fields, in the entry's order: path
// parameters first, else `form(name)` (e.g. ref and cand of POST /compare).
template <typename FormLookup>
std::vector<std::string> TargetFieldValues(const RouteMatch& match, FormLookup form);

}  // namespace reprod::server::web

// --- implementation of the template -----------------------------------------
#include "absl/strings/str_split.h"

namespace reprod::server::web {

template <typename FormLookup>
std::vector<std::string> TargetFieldValues(const RouteMatch& match, FormLookup form) {
  std::vector<std::string> out;
  if (match.entry->target == auth::TargetKind::kNone) return out;
  const std::string fields(match.entry->fields);
  for (absl::string_view f : absl::StrSplit(fields, ',')) {
    const std::string field(f);
    auto it = match.params.find(field);
    out.push_back(it != match.params.end() ? it->second : std::string(form(field)));
  }
  return out;
}

}  // namespace reprod::server::web

#endif  // REPROD_SERVER_WEB_ROUTER_H_

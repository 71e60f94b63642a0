#include "server/web/router.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace reprod::server::web {
namespace {

// Matches `pattern` segments against `segs` from the start; fills params.
bool MatchSegments(const std::vector<std::string_view>& pattern,
                   const std::vector<std::string_view>& segs,
                   std::map<std::string, std::string>& params) {
  size_t i = 0;
  for (std::string_view p : pattern) {
    if (p.size() > 2 && p.front() == '{' && p.back() == '}') {
      const std::string name(p.substr(1, p.size() - 2));
      const size_t width = name == "run" ? 2 : 1;
      if (i + width > segs.size()) return false;
      for (size_t k = 0; k < width; ++k) {
        if (segs[i + k].empty()) return false;
      }
      std::string value(segs[i]);
      for (size_t k = 1; k < width; ++k) {
        value.push_back('/');
        value.append(segs[i + k]);
      }
      params[name] = std::move(value);
      i += width;
    } else {
      if (i >= segs.size() || segs[i] != p) return false;
      ++i;
    }
  }
  return i == segs.size();
}

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> segs;
  for (absl::string_view s : absl::StrSplit(absl::string_view(path.data(), path.size()), '/')) {
    segs.emplace_back(s.data(), s.size());
  }
  if (!segs.empty() && segs.front().empty()) segs.erase(segs.begin());  // leading '/'
  if (segs.size() == 1 && segs.front().empty()) segs.clear();           // "/"
  return segs;
}

}  // namespace

std::vector<const auth::AclEntry*> HttpRoutes() {
  std::vector<const auth::AclEntry*> out;
  for (const auth::AclEntry& e : auth::AclTable()) {
    if (e.http && !e.planned) out.push_back(&e);
  }
  return out;
}

std::string_view RouteMethod(const auth::AclEntry& entry) {
  return entry.route.substr(0, entry.route.find(' '));
}

std::string_view RoutePath(const auth::AclEntry& entry) {
  const size_t space = entry.route.find(' ');
  return space == std::string_view::npos ? std::string_view() : entry.route.substr(space + 1);
}

absl::StatusOr<RouteMatch> MatchRoute(std::string_view method, std::string_view path) {
  const std::vector<std::string_view> segs = Segments(path);
  bool other_method = false;
  for (const auth::AclEntry* e : HttpRoutes()) {
    RouteMatch m{e, {}};
    if (!MatchSegments(Segments(RoutePath(*e)), segs, m.params)) continue;
    if (RouteMethod(*e) == method) return m;
    other_method = true;
  }
  if (other_method) {
    return absl::FailedPreconditionError(
        absl::StrCat(std::string(method), " is not allowed on ", std::string(path)));
  }
  return absl::NotFoundError(absl::StrCat("no page or API route ", std::string(path)));
}

}  // namespace reprod::server::web

// Unit tests of the web UI's pieces that need no network: the router is
// exactly the access table's HTTP routes, each with one handler; route
// matching; sessions; escaping.
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/acl.h"
#include "server/web/handler.h"
#include "server/web/html.h"
#include "server/web/router.h"
#include "server/web/session.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server::web {
namespace {

using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

TEST(WebRouterTest, ServedRoutesAreTheTablesHttpRoutesEachWithOneHandler) {
  std::set<std::string> table, handlers;
  for (const auth::AclEntry& e : auth::AclTable()) {
    if (!e.http) continue;
    EXPECT_FALSE(e.planned) << e.route << ": planned HTTP routes are not served";
    table.insert(std::string(e.route));
  }
  for (const auto& [route, handler] : Handlers()) {
    handlers.insert(std::string(route));
    EXPECT_NE(handler, nullptr) << route;
  }
  EXPECT_EQ(table, handlers) << "every HTTP route of server/auth/acl.cc needs a handler in "
                                "server/web/handler.cc and every handler a table entry";
  EXPECT_EQ(HttpRoutes().size(), table.size());
}

TEST(WebRouterTest, RoutePatternsAreWellFormed) {
  for (const auth::AclEntry* e : HttpRoutes()) {
    EXPECT_THAT(std::string(RouteMethod(*e)), ::testing::AnyOf("GET", "POST")) << e->route;
    EXPECT_TRUE(RoutePath(*e).starts_with("/")) << e->route;
    if (e->target != auth::TargetKind::kNone) {
      EXPECT_FALSE(e->fields.empty()) << e->route;
    }
  }
}

TEST(WebRouterTest, MatchesRunsAsTwoSegmentsAndOtherParamsAsOne) {
  ASSERT_OK_AND_ASSIGN(RouteMatch m, MatchRoute("GET", "/runs/team42/bert"));
  EXPECT_EQ(m.entry->route, "GET /runs/{run}");
  EXPECT_EQ(m.params.at("run"), "team42/bert");
  ASSERT_OK_AND_ASSIGN(m, MatchRoute("GET", "/api/v1/runs/team42/bert/tensors"));
  EXPECT_EQ(m.entry->route, "GET /api/v1/runs/{run}/tensors");
  ASSERT_OK_AND_ASSIGN(m, MatchRoute("GET", "/reports/rpt-0123/download/json"));
  EXPECT_EQ(m.params.at("id"), "rpt-0123");
  EXPECT_EQ(m.params.at("format"), "json");
  ASSERT_OK_AND_ASSIGN(m, MatchRoute("GET", "/"));
  EXPECT_EQ(m.entry->route, "GET /");
  ASSERT_OK_AND_ASSIGN(m, MatchRoute("POST", "/compare"));
  EXPECT_EQ(m.entry->route, "POST /compare");
}

TEST(WebRouterTest, UnknownPathsAreNotFoundAndWrongMethods405) {
  EXPECT_THAT(MatchRoute("GET", "/nope"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(MatchRoute("GET", "/runs/only-one"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(MatchRoute("GET", "/runs/a/b/c"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(MatchRoute("GET", "/runs//b"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  const absl::StatusOr<RouteMatch> wrong = MatchRoute("DELETE", "/runs/a/b");
  EXPECT_THAT(wrong, StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_EQ(HttpStatusOf(wrong.status()), 405);
}

TEST(WebRouterTest, TargetValuesComeFromPathThenForm) {
  ASSERT_OK_AND_ASSIGN(RouteMatch m, MatchRoute("POST", "/compare"));
  const std::vector<std::string> v = TargetFieldValues(m, [](std::string_view f) {
    return f == "ref" ? "a/r" : f == "cand" ? "b/c" : "";
  });
  EXPECT_EQ(v, (std::vector<std::string>{"a/r", "b/c"}));
  ASSERT_OK_AND_ASSIGN(m, MatchRoute("GET", "/runs/x/y"));
  EXPECT_EQ(TargetFieldValues(m, [](std::string_view) { return "ignored"; }),
            (std::vector<std::string>{"x/y"}));
}

TEST(WebSessionTest, CreateFindEraseAndIdleExpiry) {
  SessionStore sessions(absl::Minutes(10), 100);
  const absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  ASSERT_OK_AND_ASSIGN(Session s, sessions.Create("hash", t0));
  EXPECT_EQ(s.id.size(), 64u);
  EXPECT_EQ(s.csrf.size(), 64u);
  EXPECT_NE(s.id, s.csrf);
  std::optional<Session> found = sessions.Find(s.id, t0 + absl::Minutes(9));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->token_hash, "hash");
  // The use above renewed it: 9 more minutes are fine, 11 idle are not.
  EXPECT_TRUE(sessions.Find(s.id, t0 + absl::Minutes(18)).has_value());
  EXPECT_FALSE(sessions.Find(s.id, t0 + absl::Minutes(29)).has_value());
  EXPECT_EQ(sessions.size(), 0u);
  ASSERT_OK_AND_ASSIGN(Session s2, sessions.Create("", t0));
  sessions.Erase(s2.id);
  EXPECT_FALSE(sessions.Find(s2.id, t0).has_value());
  EXPECT_FALSE(sessions.Find("", t0).has_value());
}

TEST(WebSessionTest, OldestDroppedPastTheCap) {
  SessionStore sessions(absl::Hours(1), 2);
  const absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  ASSERT_OK_AND_ASSIGN(Session a, sessions.Create("a", t0));
  ASSERT_OK_AND_ASSIGN(Session b, sessions.Create("b", t0 + absl::Seconds(1)));
  ASSERT_OK_AND_ASSIGN(Session c, sessions.Create("c", t0 + absl::Seconds(2)));
  EXPECT_FALSE(sessions.Find(a.id, t0 + absl::Seconds(3)).has_value());
  EXPECT_TRUE(sessions.Find(b.id, t0 + absl::Seconds(3)).has_value());
  EXPECT_TRUE(sessions.Find(c.id, t0 + absl::Seconds(3)).has_value());
}

TEST(WebHtmlTest, EscapesAndEncodes) {
  EXPECT_EQ(Escape("<script>\"'&"), "&lt;script&gt;&quot;&#39;&amp;");
  EXPECT_EQ(UrlEncode("team42/a b", true), "team42/a%20b");
  EXPECT_EQ(UrlEncode("a/../b?x=<"), "a%2F..%2Fb%3Fx%3D%3C");
  PageChrome chrome;
  chrome.title = "<t>";
  const std::string page = RenderPage(chrome, "<p>x</p>");
  EXPECT_THAT(page, HasSubstr("<title>&lt;t&gt; - reprod</title>"));
  EXPECT_THAT(page, ::testing::Not(HasSubstr("<script")));
}

}  // namespace
}  // namespace reprod::server::web

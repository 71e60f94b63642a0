// File: server/web/handler.h
//
// What the web UI's route handlers see and return, independent of the HTTP
// library: the request after routing and the gate (gate.h), and the
// response to send. Handlers are looked up by their table route
// ("GET /runs/{run}") in Handlers(); web_server.cc refuses to start when a
// served route has no handler or a handler no route.
//
// A handler runs only after the gate admitted the caller for the route's
// targets, and for POST requests from a browser session after the CSRF
// token was checked. It escapes everything it shows (html.h).
//
// Thread-safety: handlers are called concurrently; they share only the
// thread-safe objects of WebContext.
#ifndef REPROD_SERVER_WEB_HANDLER_H_
#define REPROD_SERVER_WEB_HANDLER_H_

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/service_env.h"
#include "server/web/gate.h"
#include "server/web/html.h"
#include "server/web/session.h"

namespace reprod::server::web {

struct WebContext {
  const ServiceEnv* env = nullptr;
  WebGate* gate = nullptr;
  SessionStore* sessions = nullptr;
  bool tls = false;  // cookies get Secure
};

struct WebRequest {
  std::string method;
  std::string path;  // decoded
  std::map<std::string, std::string> path_params;
  std::multimap<std::string, std::string> params;  // query and form fields
  Caller caller;

  // The first value of query/form field `name`, "" when absent.
  std::string Param(std::string_view name) const;
  // The chrome of a page for this caller (navigation, logout, CSRF).
  PageChrome Chrome(std::string title, bool auth_on) const;
};

struct WebResponse {
  int status = 200;
  std::string content_type = "text/html; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static WebResponse Html(std::string body, int status = 200);
  static WebResponse Json(std::string body, int status = 200);
  // 303 See Other to `location` (a path of ours).
  static WebResponse Redirect(std::string location);
};

using Handler = absl::StatusOr<WebResponse> (*)(const WebContext&, const WebRequest&);

// Every handler by its table route.
const std::map<std::string_view, Handler>& Handlers();

// The HTTP status of a handler's or the gate's error: 400 InvalidArgument /
// OutOfRange, 401 Unauthenticated, 403 PermissionDenied, 404 NotFound, 409
// AlreadyExists / FailedPrecondition, 413 ResourceExhausted, 503
// Unavailable, 500 otherwise.
int HttpStatusOf(const absl::Status& status);

// The login page (also the body of every 401 page), with `message` shown.
std::string LoginPageHtml(std::string_view message);

// Route handlers, by file.
// pages_runs.cc
absl::StatusOr<WebResponse> RunsPage(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> RunPage(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> PublishRun(const WebContext&, const WebRequest&);
// pages_compare.cc
absl::StatusOr<WebResponse> CompareForm(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> CompareSubmit(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ReportsPage(const WebContext&, const WebRequest&);
// pages_report.cc
absl::StatusOr<WebResponse> ReportPage(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ReportDownload(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> SignReportForm(const WebContext&, const WebRequest&);
// pages_admin.cc
absl::StatusOr<WebResponse> TokensPage(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> CreateTokenForm(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> RevokeTokenForm(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> AuditPage(const WebContext&, const WebRequest&);
// login.cc
absl::StatusOr<WebResponse> Healthz(const WebContext&, const WebRequest&);
// GET /metrics: the registry of ctx.env->metrics (404 when the server has
// none).
absl::StatusOr<WebResponse> Metrics(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> LoginForm(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> LoginSubmit(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> Logout(const WebContext&, const WebRequest&);
// api.cc
absl::StatusOr<WebResponse> ApiRuns(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ApiRun(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ApiRunTensors(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ApiCompare(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ApiReports(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ApiReport(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ApiTokens(const WebContext&, const WebRequest&);
absl::StatusOr<WebResponse> ApiAudit(const WebContext&, const WebRequest&);

// Shared by the compare page and the API: checks both run names, compares
// them under preset `preset` ("" = reprod) and stores the report.
absl::StatusOr<storage::StoredReport> CompareAndStore(const WebContext& ctx, std::string_view ref,
                                                      std::string_view cand,
                                                      std::string_view preset);

}  // namespace reprod::server::web

#endif  // REPROD_SERVER_WEB_HANDLER_H_

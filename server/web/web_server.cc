#include "server/web/web_server.h"

#include <httplib.h>

#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "nlohmann/json.hpp"
#include "server/auth/token.h"
#include "server/server.h"
#include "server/web/gate.h"
#include "server/web/handler.h"
#include "server/web/router.h"
#include "server/web/session.h"
#include "spdlog/spdlog.h"

namespace reprod::server::web {
namespace {

constexpr char kSessionCookie[] = "reprod_session";
constexpr char kCsp[] =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'";

absl::StatusOr<std::pair<std::string, int>> SplitListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http-listen '", listen, "' is not HOST:PORT (e.g. 127.0.0.1:8080) or 'off'"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::pair{host, port};
}

std::string CookieValue(const httplib::Request& req, const std::string& name) {
  const std::string header = req.get_header_value("Cookie");
  for (absl::string_view part : absl::StrSplit(header, ';')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::ConsumePrefix(&part, name) && absl::ConsumePrefix(&part, "=")) {
      return std::string(part);
    }
  }
  return "";
}

std::string BearerOf(const httplib::Request& req) {
  const std::string header = req.get_header_value("Authorization");
  absl::string_view value = header;
  if (!absl::ConsumePrefix(&value, "Bearer ")) return "";
  return std::string(absl::StripAsciiWhitespace(value));
}

// Path parameters are names (run names per common/names.h; report ids,
// token ids and formats short words); anything else is a 400 before the
// gate looks anything up.
absl::Status ValidateParams(const std::map<std::string, std::string>& params) {
  for (const auto& [name, value] : params) {
    if (name == "run") {
      REPROD_RETURN_IF_ERROR(ValidateRunName(value));
      continue;
    }
    const bool word =
        !value.empty() && value.size() <= 64 && std::all_of(value.begin(), value.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
        });
    if (!word) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad {", name, "} in the path: expected 1-64 of [A-Za-z0-9_-]"));
    }
  }
  return absl::OkStatus();
}

const char* StatusText(int code) {
  switch (code) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 503:
      return "Service Unavailable";
    default:
      return code >= 500 ? "Server Error" : "Error";
  }
}

bool IsApi(const std::string& path) { return absl::StartsWith(path, "/api/"); }

WebResponse ErrorResponse(const absl::Status& status, bool api) {
  const int code = HttpStatusOf(status);
  const std::string message(status.message());
  if (api) {
    nlohmann::json j = {
        {"error", message}, {"code", absl::StatusCodeToString(status.code())}, {"status", code}};
    return WebResponse::Json(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                             code);
  }
  if (code == 401) return WebResponse::Html(LoginPageHtml(message), 401);
  const std::string body =
      absl::StrCat("<h1>", code, " ", StatusText(code), "</h1><p class=\"error\">", Escape(message),
                   "</p><p><a href=\"/\">runs</a></p>");
  PageChrome chrome;
  chrome.title = absl::StrCat(code);
  return WebResponse::Html(RenderPage(chrome, body), code);
}

}  // namespace

struct WebServer::Impl {
  std::unique_ptr<httplib::Server> http;
  SessionStore sessions;
  std::unique_ptr<WebGate> gate;
  WebContext ctx;
  std::string host;
  int port = 0;
  bool tls = false;
  std::thread thread;
  bool stopped = false;

  void Serve(const httplib::Request& req, httplib::Response& res);
  absl::StatusOr<WebResponse> Handle(const httplib::Request& req, std::string* new_cookie);
};

absl::StatusOr<WebResponse> WebServer::Impl::Handle(const httplib::Request& req,
                                                    std::string* new_cookie) {
  // cpp-httplib answers HEAD with the GET handler's headers.
  const std::string method = req.method == "HEAD" ? "GET" : req.method;
  REPROD_ASSIGN_OR_RETURN(RouteMatch match, MatchRoute(method, req.path));
  REPROD_RETURN_IF_ERROR(ValidateParams(match.params));
  WebRequest wr;
  wr.method = req.method;
  wr.path = req.path;
  wr.path_params = match.params;
  for (const auto& [k, v] : req.params) wr.params.emplace(k, v);
  const bool api = IsApi(req.path);
  std::vector<std::string> targets =
      TargetFieldValues(match, [&wr](std::string_view f) { return wr.Param(f); });
  REPROD_ASSIGN_OR_RETURN(wr.caller,
                          gate->Check(match, std::move(targets), CookieValue(req, kSessionCookie),
                                      api ? BearerOf(req) : std::string()));
  const bool browser_post = req.method == "POST" && !wr.caller.bearer;
  if (browser_post && match.entry->route != std::string_view("POST /login")) {
    const std::string given = wr.Param("csrf");
    if (!wr.caller.session.has_value() || given.empty() ||
        !auth::ConstantTimeEquals(given, wr.caller.session->csrf)) {
      return absl::PermissionDeniedError(
          "missing or stale CSRF token: reload the page and submit the form again");
    }
  }
  // Pages need a session for their forms' CSRF token: with --auth none an
  // anonymous one is made on the first page view.
  if (!gate->auth_on() && !wr.caller.session.has_value() && !api && req.method == "GET" &&
      match.entry->route != std::string_view("GET /healthz") &&
      match.entry->route != std::string_view("GET /metrics")) {
    REPROD_ASSIGN_OR_RETURN(Session s, sessions.Create("", absl::Now()));
    *new_cookie = s.id;
    wr.caller.session = std::move(s);
  }
  const auto it = Handlers().find(match.entry->route);
  if (it == Handlers().end()) return absl::InternalError("route without a handler");
  return it->second(ctx, wr);
}

void WebServer::Impl::Serve(const httplib::Request& req, httplib::Response& res) {
  std::string new_cookie;
  absl::StatusOr<WebResponse> out;
  try {
    out = Handle(req, &new_cookie);
  } catch (const std::exception& e) {
    out = absl::InternalError(absl::StrCat("internal error: ", e.what()));
  }
  WebResponse resp = out.ok() ? *std::move(out) : ErrorResponse(out.status(), IsApi(req.path));
  if (!out.ok() && HttpStatusOf(out.status()) >= 500) {
    spdlog::error("http {} {}: {}", req.method, req.path, std::string(out.status().message()));
  }
  if (!new_cookie.empty()) {
    resp.headers.emplace_back(
        "Set-Cookie", absl::StrCat(kSessionCookie, "=", new_cookie,
                                   "; Path=/; HttpOnly; SameSite=Strict", tls ? "; Secure" : ""));
  }
  res.status = resp.status;
  for (auto& [k, v] : resp.headers) res.set_header(k, v);
  res.set_header("Content-Security-Policy", kCsp);
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("Cache-Control", "no-store");
  res.set_content(std::move(resp.body), resp.content_type);
  spdlog::debug("http {} {} -> {}", req.method, req.path, res.status);
}

absl::StatusOr<std::unique_ptr<WebServer>> WebServer::Start(const WebOptions& options,
                                                            const ServiceEnv& env) {
  REPROD_ASSIGN_OR_RETURN(auto host_port, SplitListen(options.listen));
  REPROD_ASSIGN_OR_RETURN(bool loopback, IsLoopbackAddress(options.listen));
  if (!loopback && !options.auth && !options.insecure) {
    return absl::InvalidArgumentError(
        absl::StrCat("refusing to serve the web UI on non-loopback address ", options.listen,
                     " without authentication; pass --auth tokens, or --insecure, or --http-listen "
                     "127.0.0.1:PORT (or off)"));
  }
  REPROD_ASSIGN_OR_RETURN(
      const tls::TlsPem pem,
      tls::LoadServerTls(options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file));
  for (const auth::AclEntry* e : HttpRoutes()) {
    if (!Handlers().contains(e->route)) {
      return absl::InternalError(
          absl::StrCat("web route ", std::string(e->route), " of the access table has no handler"));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->tls = !pem.cert_chain.empty();
  if (impl->tls) {
    const char* client_ca =
        options.tls_client_ca_file.empty() ? nullptr : options.tls_client_ca_file.c_str();
    auto ssl = std::make_unique<httplib::SSLServer>(options.tls_cert_file.c_str(),
                                                    options.tls_key_file.c_str(), client_ca);
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("--tls-cert ", options.tls_cert_file,
                                                     " / --tls-key ", options.tls_key_file,
                                                     ": the HTTPS listener could not load them"));
    }
    impl->http = std::move(ssl);
  } else {
    impl->http = std::make_unique<httplib::Server>();
  }
  impl->gate = std::make_unique<WebGate>(env, impl->sessions, options.auth ? env.tokens : nullptr);
  if (options.auth && env.tokens == nullptr) {
    return absl::InternalError("web UI with --auth tokens needs the server's TokenStore");
  }
  impl->ctx = WebContext{&env, impl->gate.get(), &impl->sessions, impl->tls};
  Impl* raw = impl.get();
  auto serve = [raw](const httplib::Request& req, httplib::Response& res) { raw->Serve(req, res); };
  httplib::Server& http = *impl->http;
  http.set_payload_max_length(kMaxBodyBytes);
  // An idle keep-alive connection holds its worker (and Stop) this long.
  http.set_keep_alive_timeout(1);
  http.Get(".*", serve).Post(".*", serve).Put(".*", serve).Delete(".*", serve);
  http.Patch(".*", serve).Options(".*", serve);
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(absl::StrCat(res.status, " ", StatusText(res.status), "\n"),
                      "text/plain; charset=utf-8");
    }
  });
  impl->host = host_port.first;
  impl->port = host_port.second == 0
                   ? http.bind_to_any_port(impl->host)
                   : (http.bind_to_port(impl->host, host_port.second) ? host_port.second : -1);
  if (impl->port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen,
                                               " for the web UI (address in use?); pick another "
                                               "with --http-listen, or --http-listen off"));
  }
  impl->thread = std::thread([raw] { raw->http->listen_after_bind(); });
  spdlog::info("web UI on {}://{}:{} (auth: {}{})", impl->tls ? "https" : "http",
               impl->host.find(':') != std::string::npos ? "[" + impl->host + "]" : impl->host,
               impl->port, options.auth ? "tokens, log in at /login" : "none",
               options.tls_client_ca_file.empty() ? "" : "; mutual TLS");
  return std::unique_ptr<WebServer>(new WebServer(std::move(impl)));
}

WebServer::WebServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WebServer::~WebServer() { Stop(); }

int WebServer::port() const { return impl_->port; }

std::string WebServer::url() const {
  const std::string host =
      impl_->host.find(':') != std::string::npos ? "[" + impl_->host + "]" : impl_->host;
  return absl::StrCat(impl_->tls ? "https" : "http", "://", host, ":", impl_->port);
}

void WebServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->http->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace reprod::server::web

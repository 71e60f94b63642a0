// Login, logout and the health check of the web UI.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/auth/token.h"
#include "server/auth/token_store.h"
#include "server/metrics/server_metrics.h"
#include "server/web/handler.h"
#include "spdlog/spdlog.h"

namespace reprod::server::web {
namespace {

std::string SessionCookie(std::string_view value, bool tls, bool clear) {
  return absl::StrCat("reprod_session=", std::string(value), "; Path=/; HttpOnly; SameSite=Strict",
                      tls ? "; Secure" : "", clear ? "; Max-Age=0" : "");
}

}  // namespace

std::string LoginPageHtml(std::string_view message) {
  std::string body =
      "<h1>reprod review server</h1><p>Log in with your token (<code>rpd_...</code>, from "
      "your admin or <code>reprodd token create</code>).</p>";
  if (!message.empty()) absl::StrAppend(&body, "<p class=\"error\">", Escape(message), "</p>");
  body +=
      "<form method=\"post\" action=\"/login\"><label>token <input type=\"password\" "
      "name=\"token\" id=\"token\" size=\"72\" autocomplete=\"off\" required></label> "
      "<button type=\"submit\" id=\"login\">log in</button></form>";
  return RenderPage(PageChrome{.title = "log in", .who = nullptr, .can_logout = false, .csrf = ""},
                    body);
}

absl::StatusOr<WebResponse> Healthz(const WebContext&, const WebRequest&) {
  WebResponse r = WebResponse::Html("ok\n");
  r.content_type = "text/plain; charset=utf-8";
  return r;
}

absl::StatusOr<WebResponse> Metrics(const WebContext& ctx, const WebRequest&) {
  if (ctx.env->metrics == nullptr) {
    return absl::NotFoundError("this server keeps no metrics (GET /metrics)");
  }
  WebResponse r;
  r.content_type = std::string(metrics::Registry::kContentType);
  r.body = ctx.env->metrics->registry().Render();
  return r;
}

absl::StatusOr<WebResponse> LoginForm(const WebContext& ctx, const WebRequest& req) {
  if (!ctx.gate->auth_on()) return WebResponse::Redirect("/");
  if (!req.caller.who.label.empty()) {
    return WebResponse::Html(
        RenderPage(req.Chrome("logged in", true),
                   absl::StrCat("<p>Logged in as ", Escape(req.caller.who.label),
                                ". <a href=\"/\">runs</a></p>")));
  }
  return WebResponse::Html(LoginPageHtml(""));
}

absl::StatusOr<WebResponse> LoginSubmit(const WebContext& ctx, const WebRequest& req) {
  if (!ctx.gate->auth_on()) return WebResponse::Redirect("/");
  const std::string token = req.Param("token");
  absl::StatusOr<auth::Principal> who = ctx.env->tokens->Authenticate(token, absl::Now());
  if (!who.ok()) {
    spdlog::warn("http POST /login: refused: {}", std::string(who.status().message()));
    if (!absl::IsUnauthenticated(who.status())) return who.status();
    return WebResponse::Html(LoginPageHtml(std::string(who.status().message())), 401);
  }
  if (req.caller.session.has_value()) ctx.sessions->Erase(req.caller.session->id);
  absl::StatusOr<Session> session = ctx.sessions->Create(auth::HashToken(token), absl::Now());
  if (!session.ok()) return session.status();
  spdlog::info("web login: token '{}' ({})", who->label, std::string(auth::RoleName(who->role)));
  WebResponse r = WebResponse::Redirect("/");
  r.headers.emplace_back("Set-Cookie", SessionCookie(session->id, ctx.tls, false));
  return r;
}

absl::StatusOr<WebResponse> Logout(const WebContext& ctx, const WebRequest& req) {
  if (req.caller.session.has_value()) ctx.sessions->Erase(req.caller.session->id);
  WebResponse r = WebResponse::Redirect(ctx.gate->auth_on() ? "/login" : "/");
  r.headers.emplace_back("Set-Cookie", SessionCookie("", ctx.tls, true));
  return r;
}

}  // namespace reprod::server::web

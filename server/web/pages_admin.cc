// Admin pages: tokens (create, list, revoke) and the audit log.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "server/auth/audit_log.h"
#include "server/auth/token.h"
#include "server/review_ops.h"
#include "server/web/handler.h"

namespace reprod::server::web {
namespace {

constexpr size_t kMaxAuditRows = 1000;

std::string Time(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", t, absl::UTCTimeZone());
}

std::string TokenTable(const std::vector<auth::TokenRecord>& tokens, const std::string& csrf) {
  std::string out =
      "<table class=\"list\" id=\"tokens\"><tr><th>id</th><th>label</th><th>role</th>"
      "<th>scope</th><th>created</th><th>expires</th><th>state</th><th></th></tr>";
  for (const auth::TokenRecord& t : tokens) {
    const std::string id = t.id();
    absl::StrAppend(&out, "<tr><td><code>", Escape(id), "</code></td><td>", Escape(t.label),
                    "</td><td>", std::string(auth::RoleName(t.role)), "</td><td>", Escape(t.scope),
                    "</td><td>", Time(t.created), "</td><td>",
                    t.expires ? Time(*t.expires) : "never", "</td><td>",
                    t.revoked ? "revoked" : "active", "</td><td>");
    if (!t.revoked) {
      absl::StrAppend(&out, "<form class=\"inline\" method=\"post\" action=\"/admin/tokens/",
                      UrlEncode(id), "/revoke\">", CsrfField(csrf),
                      "<button type=\"submit\">revoke</button></form>");
    }
    out += "</td></tr>";
  }
  return out + "</table>";
}

constexpr char kCreateForm[] =
    "<h2>New token</h2><form method=\"post\" action=\"/admin/tokens\" id=\"create-token\">%CSRF%"
    "<label>role <select name=\"role\"><option>submitter</option><option>judge</option>"
    "<option>admin</option></select></label> <label>scope (submitters) <input name=\"scope\" "
    "placeholder=\"team42\"></label> <label>label <input name=\"label\" required></label> "
    "<label>expires in <input name=\"expires_in\" placeholder=\"30d (empty: never)\"></label> "
    "<button type=\"submit\">create</button></form>";

}  // namespace

absl::StatusOr<WebResponse> TokensPage(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::TokenRecord> tokens, ListTokens(*ctx.env));
  const std::string csrf = req.Chrome("", false).csrf;
  std::string form = kCreateForm;
  form.replace(form.find("%CSRF%"), 6, CsrfField(csrf));
  const std::string body = absl::StrCat("<h1>Tokens</h1>", TokenTable(tokens, csrf), form);
  return WebResponse::Html(RenderPage(req.Chrome("tokens", ctx.gate->auth_on()), body));
}

absl::StatusOr<WebResponse> CreateTokenForm(const WebContext& ctx, const WebRequest& req) {
  auth::TokenSpec spec;
  REPROD_ASSIGN_OR_RETURN(spec.role, auth::ParseRole(req.Param("role")));
  spec.scope = req.Param("scope");
  spec.label = req.Param("label");
  if (const std::string e = req.Param("expires_in"); !e.empty()) {
    REPROD_ASSIGN_OR_RETURN(spec.expires_in, auth::ParseExpiresIn(e));
  }
  REPROD_ASSIGN_OR_RETURN(auth::IssuedToken issued, CreateToken(*ctx.env, req.caller.who, spec));
  const std::string body = absl::StrCat(
      "<h1>Token created</h1><p>Token <code>", Escape(issued.record.id()), "</code> for ",
      Escape(issued.record.label), " (", std::string(auth::RoleName(issued.record.role)),
      "). Copy it now: it is shown only once and stored only as a hash.</p>"
      "<p class=\"secret\" id=\"new-token\">",
      Escape(issued.token), "</p><p><a href=\"/admin/tokens\">back to tokens</a></p>");
  return WebResponse::Html(RenderPage(req.Chrome("token created", ctx.gate->auth_on()), body));
}

absl::StatusOr<WebResponse> RevokeTokenForm(const WebContext& ctx, const WebRequest& req) {
  REPROD_RETURN_IF_ERROR(
      RevokeToken(*ctx.env, req.caller.who, req.path_params.at("token")).status());
  return WebResponse::Redirect("/admin/tokens");
}

absl::StatusOr<WebResponse> AuditPage(const WebContext& ctx, const WebRequest& req) {
  if (ctx.env->audit == nullptr) return absl::UnavailableError("this server keeps no audit log");
  const std::string object = req.Param("object");
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::AuditRecord> records,
                          ctx.env->audit->List(object, kMaxAuditRows));
  std::string rows;
  for (const auth::AuditRecord& r : records) {
    std::vector<std::string> details;
    for (const auto& [k, v] : r.details) details.push_back(absl::StrCat(k, "=", v));
    absl::StrAppend(&rows, "<tr><td class=\"num\">", r.sequence, "</td><td>", Time(r.time),
                    "</td><td>", Escape(r.actor.label), "</td><td>",
                    std::string(auth::RoleName(r.actor.role)), "</td><td>", Escape(r.verb),
                    "</td><td>", Escape(r.object), "</td><td>", Escape(r.result), "</td><td><code>",
                    Escape(absl::StrJoin(details, " ")), "</code></td><td><code>",
                    Escape(r.hash.substr(0, 12)), "</code></td></tr>");
  }
  std::string verify;
  if (req.Param("verify") == "1") {
    const absl::Status s = VerifyAudit(*ctx.env);
    verify = absl::StrCat("<p class=\"", s.ok() ? "flash" : "error", "\" id=\"verify\">",
                          s.ok() ? "chain and signatures verify" : Escape(std::string(s.message())),
                          "</p>");
  }
  const std::string body = absl::StrCat(
      "<h1>Audit log</h1><form method=\"get\" action=\"/admin/audit\">object <input "
      "name=\"object\" value=\"",
      Escape(object),
      "\"> <button type=\"submit\">filter</button> <a href=\"/admin/audit?verify=1\">verify "
      "the chain</a></form>",
      verify,
      "<table class=\"list\" id=\"audit\"><tr><th>#</th><th>time</th><th>who</th><th>role</th>"
      "<th>verb</th><th>object</th><th>result</th><th>details</th><th>hash</th></tr>",
      rows, "</table>");
  return WebResponse::Html(RenderPage(req.Chrome("audit log", ctx.gate->auth_on()), body));
}

}  // namespace reprod::server::web

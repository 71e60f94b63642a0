// A stored report: its page (the stored HTML rendering embedded, the
// signatures and the sign form), its downloads and signing it.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "server/review_ops.h"
#include "server/web/handler.h"

namespace reprod::server::web {
namespace {

struct Format {
  std::string_view name, extension, content_type;
};
constexpr Format kFormats[] = {
    {"html", "html", "text/html; charset=utf-8"},
    {"json", "json", "application/json"},
    {"junit", "xml", "application/xml"},
    {"markdown", "md", "text/markdown; charset=utf-8"},
    {"text", "txt", "text/plain; charset=utf-8"},
};

// The stored rendering's stylesheet and body, to embed in our page. The
// rendering is our own renderer's output (core/render_html.cc), whose
// every data string is escaped.
std::pair<std::string, std::string> SplitRendering(const std::string& html) {
  const size_t style = html.find("<style>"), style_end = html.find("</style>");
  const size_t body = html.find("<body>"), body_end = html.rfind("</body>");
  if (style == std::string::npos || style_end == std::string::npos || body == std::string::npos ||
      body_end == std::string::npos || body_end < body) {
    return {"", ""};
  }
  return {html.substr(style + 7, style_end - style - 7),
          html.substr(body + 6, body_end - body - 6)};
}

std::string Signatures(const std::vector<auth::AuditRecord>& records) {
  if (records.empty()) return "<p id=\"unsigned\">Not signed yet.</p>";
  std::string out =
      "<table class=\"list\" id=\"signatures\"><tr><th>signed by</th><th>role</th><th>when</th>"
      "<th>ref digest</th><th>cand digest</th><th>policy hash</th><th>record</th></tr>";
  for (const auth::AuditRecord& r : records) {
    auto detail = [&r](const char* key) {
      auto it = r.details.find(key);
      return it == r.details.end() ? std::string() : Escape(it->second);
    };
    absl::StrAppend(&out, "<tr class=\"signature\"><td class=\"signer\">", Escape(r.actor.label),
                    "</td><td>", std::string(auth::RoleName(r.actor.role)), "</td><td>",
                    absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", r.time, absl::UTCTimeZone()),
                    "</td><td><code>", detail("ref_run_digest"), "</code></td><td><code>",
                    detail("cand_run_digest"), "</code></td><td><code>", detail("policy_hash"),
                    "</code></td><td>#", r.sequence, "</td></tr>");
  }
  return out + "</table>";
}

}  // namespace

absl::StatusOr<WebResponse> ReportPage(const WebContext& ctx, const WebRequest& req) {
  const std::string& id = req.path_params.at("id");
  REPROD_ASSIGN_OR_RETURN(storage::StoredReport report, ctx.env->store->GetReport(id));
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::AuditRecord> signatures,
                          ReportSignatures(*ctx.env, id));
  std::string body = absl::StrCat(
      "<h1>Report ", Escape(report.id), ": ", report.passed ? "passed" : "FAILED",
      "</h1><p>ref <a href=\"/runs/", UrlEncode(report.ref, true), "\">", Escape(report.ref),
      "</a>, cand <a href=\"/runs/", UrlEncode(report.cand, true), "\">", Escape(report.cand),
      "</a>, policy ", Escape(report.policy), "</p><p id=\"downloads\">download:");
  for (const Format& f : kFormats) {
    if (!report.renderings.contains(std::string(f.name))) continue;
    absl::StrAppend(&body, " <a href=\"/reports/", UrlEncode(id), "/download/", std::string(f.name),
                    "\">", std::string(f.name), "</a>");
  }
  absl::StrAppend(&body, "</p><h2>Signatures</h2>", Signatures(signatures));
  const auth::Role role = req.caller.who.role;
  if (role == auth::Role::kJudge || role == auth::Role::kAdmin) {
    absl::StrAppend(&body, "<form method=\"post\" action=\"/reports/", UrlEncode(id),
                    "/sign\" id=\"sign-form\">", CsrfField(req.Chrome("", false).csrf),
                    "<button type=\"submit\" id=\"sign\">sign this verdict</button> (binds "
                    "both runs' content digests, the policy and the audit chain head)</form>");
  }
  PageChrome chrome = req.Chrome(absl::StrCat("report ", report.id), ctx.gate->auth_on());
  auto html = report.renderings.find("html");
  std::string css;
  if (html != report.renderings.end()) {
    auto [style, content] = SplitRendering(html->second);
    css = std::move(style);
    absl::StrAppend(&body, "<section id=\"report\">", content, "</section>");
  } else if (auto text = report.renderings.find("text"); text != report.renderings.end()) {
    absl::StrAppend(&body, "<section id=\"report\"><pre>", Escape(text->second),
                    "</pre></section>");
  }
  chrome.extra_css = css;
  return WebResponse::Html(RenderPage(chrome, body));
}

absl::StatusOr<WebResponse> ReportDownload(const WebContext& ctx, const WebRequest& req) {
  const std::string& id = req.path_params.at("id");
  const std::string& format = req.path_params.at("format");
  const Format* chosen = nullptr;
  for (const Format& f : kFormats) {
    if (f.name == format) chosen = &f;
  }
  if (chosen == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no download format '", format, "' (html, json, junit, markdown, text)"));
  }
  REPROD_ASSIGN_OR_RETURN(storage::StoredReport report, ctx.env->store->GetReport(id));
  auto it = report.renderings.find(format);
  if (it == report.renderings.end()) {
    return absl::NotFoundError(
        absl::StrCat("report ", id, " has no ", format, " rendering (stored before it existed)"));
  }
  WebResponse r;
  r.content_type = std::string(chosen->content_type);
  r.body = it->second;
  r.headers.emplace_back("Content-Disposition", absl::StrCat("attachment; filename=\"", id, ".",
                                                             std::string(chosen->extension), "\""));
  return r;
}

absl::StatusOr<WebResponse> SignReportForm(const WebContext& ctx, const WebRequest& req) {
  const std::string& id = req.path_params.at("id");
  REPROD_RETURN_IF_ERROR(SignReport(*ctx.env, req.caller.who, id).status());
  return WebResponse::Redirect("/reports/" + id);
}

}  // namespace reprod::server::web

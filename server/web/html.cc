#include "server/web/html.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/internal/render.h"

namespace reprod::server::web {
namespace {

constexpr char kCss[] = R"css(
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#fff}
nav.top{display:flex;gap:16px;align-items:center;padding:8px 24px;background:#24292f;color:#fff}
nav.top a{color:#fff;text-decoration:none;font-weight:600}nav.top .who{margin-left:auto}
nav.top form{display:inline;margin:0}main.web{padding:8px 24px 48px}
table.list{border-collapse:collapse;margin:8px 0}
table.list th,table.list td{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
table.list th{background:#f6f8fa}.num{text-align:right}
.flash{padding:8px 12px;border-radius:4px;background:#fff8c5;margin:8px 0}
.error{padding:8px 12px;border-radius:4px;background:#fdecea;margin:8px 0}
.secret{font-family:ui-monospace,monospace;background:#f6f8fa;padding:6px;word-break:break-all}
form.inline{display:inline}fieldset{border:1px solid #d0d7de;margin:8px 0}
)css";

}  // namespace

std::string Escape(std::string_view raw) { return core::internal::HtmlEscape(raw); }

std::string UrlEncode(std::string_view raw, bool keep_slash) {
  std::string out;
  for (char ch : raw) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += ch;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

std::string CsrfField(std::string_view csrf) {
  return absl::StrCat("<input type=\"hidden\" name=\"csrf\" value=\"", Escape(csrf), "\">");
}

std::string RenderPage(const PageChrome& chrome, std::string_view body_html) {
  std::string nav;
  if (chrome.who != nullptr) {
    const auth::Principal& p = *chrome.who;
    nav =
        "<nav class=\"top\"><a href=\"/\">runs</a><a href=\"/reports\">reports</a>"
        "<a href=\"/compare\">compare</a>";
    if (p.role == auth::Role::kAdmin) {
      nav += "<a href=\"/admin/tokens\">tokens</a><a href=\"/admin/audit\">audit log</a>";
    }
    absl::StrAppend(&nav, "<span class=\"who\">", Escape(p.label), " (",
                    std::string(auth::RoleName(p.role)),
                    p.scope ? absl::StrCat(" of ", Escape(p.scope->ns())) : "", ")</span>");
    if (chrome.can_logout) {
      absl::StrAppend(&nav, "<form method=\"post\" action=\"/logout\">", CsrfField(chrome.csrf),
                      "<button type=\"submit\">log out</button></form>");
    }
    nav += "</nav>";
  }
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
      "<link rel=\"icon\" href=\"data:,\"><title>",
      Escape(chrome.title), " - reprod</title><style>", kCss, std::string(chrome.extra_css),
      "</style></head><body>", nav, "<main class=\"web\">", std::string(body_html),
      "</main></body></html>\n");
}

std::string HumanBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), unit == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[unit]);
  return buf;
}

}  // namespace reprod::server::web

// File: server/web/html.h
//
// Building blocks of the web UI's server-rendered pages: escaping (the same
// function the HTML report renderer uses, so one function decides what is
// safe to show), URL encoding of path parts, and the page chrome (title,
// navigation for the caller's role, the logged-in identity, the CSS). No
// page has a script or fetches anything from elsewhere.
//
//   std::string body = "<h1>" + Escape(run.name) + "</h1>";
//   std::string page = RenderPage({.title = run.name, .who = &who}, body);
//
// Thread-safety: pure functions.
#ifndef REPROD_SERVER_WEB_HTML_H_
#define REPROD_SERVER_WEB_HTML_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "server/auth/token_store.h"

namespace reprod::server::web {

// `raw` safe as HTML text and as a quoted attribute value (& < > " '
// become entities, control bytes '?', invalid UTF-8 U+FFFD).
std::string Escape(std::string_view raw);

// `raw` percent-encoded for a URL path or query (unreserved bytes and, with
// keep_slash, '/' stay as they are).
std::string UrlEncode(std::string_view raw, bool keep_slash = false);

// The hidden CSRF field of a POST form.
std::string CsrfField(std::string_view csrf);

struct PageChrome {
  std::string title;
  // The caller (nullptr: not logged in; no navigation shown).
  const auth::Principal* who = nullptr;
  // Whether a logout button is shown (token sessions only).
  bool can_logout = false;
  std::string csrf;
  // Extra CSS (e.g. the embedded report's stylesheet), already trusted.
  std::string_view extra_css = {};
};

// A whole document: chrome.title escaped, `body_html` inserted as is.
std::string RenderPage(const PageChrome& chrome, std::string_view body_html);

// "12.3 MiB" for byte counts.
std::string HumanBytes(uint64_t bytes);

}  // namespace reprod::server::web

#endif  // REPROD_SERVER_WEB_HTML_H_

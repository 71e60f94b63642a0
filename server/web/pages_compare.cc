// The compare form and the reports list.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "core/policy.h"
#include "server/web/handler.h"

namespace reprod::server::web {
namespace {

constexpr size_t kMaxReports = 500;

std::string RunOptions(const std::vector<storage::RunInfo>& runs, const std::string& chosen) {
  std::string out;
  for (const storage::RunInfo& r : runs) {
    absl::StrAppend(&out, "<option value=\"", Escape(r.name), "\"",
                    r.name == chosen ? " selected" : "", ">", Escape(r.name),
                    r.reference ? " (reference)" : "", "</option>");
  }
  return out;
}

}  // namespace

absl::StatusOr<WebResponse> CompareForm(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::RunInfo> all, ctx.env->store->ListRuns(""));
  std::vector<storage::RunInfo> runs;
  for (storage::RunInfo& r : all) {
    if (ctx.gate->CanSeeRun(req.caller.who, r)) runs.push_back(std::move(r));
  }
  std::string presets;
  for (const std::string& p : core::PresetPolicyNames()) {
    absl::StrAppend(&presets, "<option", p == "reprod" ? " selected" : "", ">", Escape(p),
                    "</option>");
  }
  const std::string body = absl::StrCat(
      "<h1>Compare two runs</h1><form method=\"post\" action=\"/compare\" id=\"compare\">",
      CsrfField(req.Chrome("", false).csrf),
      "<p><label>reference run <select name=\"ref\" id=\"ref\" required>",
      RunOptions(runs, req.Param("ref")),
      "</select></label></p><p><label>candidate run <select name=\"cand\" id=\"cand\" "
      "required>",
      RunOptions(runs, req.Param("cand")),
      "</select></label></p><p><label>policy preset <select name=\"preset\" id=\"preset\">",
      presets,
      "</select></label></p><button type=\"submit\">compare</button></form>"
      "<p>The report is stored; you are taken to its page.</p>");
  return WebResponse::Html(RenderPage(req.Chrome("compare", ctx.gate->auth_on()), body));
}

absl::StatusOr<WebResponse> CompareSubmit(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(
      storage::StoredReport stored,
      CompareAndStore(ctx, req.Param("ref"), req.Param("cand"), req.Param("preset")));
  return WebResponse::Redirect("/reports/" + stored.id);
}

absl::StatusOr<WebResponse> ReportsPage(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::StoredReport> reports,
                          ctx.env->store->ListReports(req.Param("run"), kMaxReports));
  std::string rows;
  for (const storage::StoredReport& r : reports) {
    if (!ctx.gate->CanSeeReport(req.caller.who, r)) continue;
    absl::StrAppend(
        &rows, "<tr><td><a href=\"/reports/", UrlEncode(r.id), "\">", Escape(r.id), "</a></td><td>",
        r.passed ? "passed" : "FAILED", "</td><td>", Escape(r.ref), "</td><td>", Escape(r.cand),
        "</td><td>", Escape(r.policy), "</td><td class=\"num\">",
        r.failed + r.missing_in_ref + r.missing_in_cand, " / ", r.tensors, "</td><td>",
        r.first_failure ? Escape(storage::AddressToString(*r.first_failure)) : "", "</td><td>",
        absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", r.created, absl::UTCTimeZone()), "</td></tr>");
  }
  const std::string body = absl::StrCat(
      "<h1>Reports</h1><table class=\"list\" id=\"reports\"><tr><th>report</th><th>verdict</th>"
      "<th>ref</th><th>cand</th><th>policy</th><th>failing</th><th>first failure</th>"
      "<th>created</th></tr>",
      rows, "</table>");
  return WebResponse::Html(RenderPage(req.Chrome("reports", ctx.gate->auth_on()), body));
}

}  // namespace reprod::server::web

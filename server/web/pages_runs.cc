// The runs list, a run's page and publishing a run as reference.
#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/placement.h"
#include "common/status_macros.h"
#include "common/tensor.h"
#include "server/review_ops.h"
#include "server/web/handler.h"

namespace reprod::server::web {
namespace {

constexpr size_t kMaxTensorRows = 5000;
constexpr size_t kMaxRunReports = 50;

std::string Time(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", t, absl::UTCTimeZone());
}

std::string RunLink(const std::string& name) {
  return absl::StrCat("<a class=\"run\" href=\"/runs/", UrlEncode(name, true), "\">", Escape(name),
                      "</a>");
}

std::string Select(std::string_view name, const std::set<std::string>& values,
                   const std::string& chosen) {
  std::string out =
      absl::StrCat("<select name=\"", std::string(name), "\"><option value=\"\">any</option>");
  for (const std::string& v : values) {
    absl::StrAppend(&out, "<option", v == chosen ? " selected" : "", " value=\"", Escape(v), "\">",
                    Escape(v), "</option>");
  }
  return out + "</select>";
}

// The newest reports comparing `run` that `who` may see.
std::string ReportsOf(const WebContext& ctx, const auth::Principal& who, const std::string& run) {
  absl::StatusOr<std::vector<storage::StoredReport>> reports =
      ctx.env->store->ListReports(run, kMaxRunReports);
  if (!reports.ok()) return "";
  std::string rows;
  for (const storage::StoredReport& r : *reports) {
    if (!ctx.gate->CanSeeReport(who, r)) continue;
    absl::StrAppend(&rows, "<li><a href=\"/reports/", UrlEncode(r.id), "\">", Escape(r.id), "</a> ",
                    r.passed ? "passed" : "FAILED", ": ", Escape(r.ref), " vs ", Escape(r.cand),
                    " (", Escape(r.policy), ")</li>");
  }
  return rows.empty() ? "" : absl::StrCat("<h2>Reports</h2><ul id=\"run-reports\">", rows, "</ul>");
}

bool Judges(const auth::Principal& who) {
  return who.role == auth::Role::kJudge || who.role == auth::Role::kAdmin;
}

}  // namespace

absl::StatusOr<WebResponse> RunsPage(const WebContext& ctx, const WebRequest& req) {
  const std::string ns = req.Param("namespace"), state = req.Param("state"),
                    framework = req.Param("framework"), owner = req.Param("owner");
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::RunInfo> runs,
                          ctx.env->store->ListRuns(ns.empty() ? "" : ns + "/"));
  std::set<std::string> states, frameworks, owners;
  std::string rows;
  size_t shown = 0;
  for (const storage::RunInfo& r : runs) {
    if (!ctx.gate->CanSeeRun(req.caller.who, r)) continue;
    const std::string st(storage::RunStateName(r.state));
    states.insert(st);
    frameworks.insert(r.framework);
    owners.insert(r.owner);
    if ((!state.empty() && st != state) || (!framework.empty() && r.framework != framework) ||
        (!owner.empty() && r.owner != owner)) {
      continue;
    }
    ++shown;
    absl::StrAppend(&rows, "<tr class=\"run-row\"><td>", RunLink(r.name), "</td><td>", st,
                    "</td><td>", Escape(r.framework), " ", Escape(r.framework_version),
                    "</td><td class=\"num\">", r.tensor_count, "</td><td class=\"num\">",
                    HumanBytes(r.total_bytes), "</td><td>", Escape(r.owner), "</td><td>",
                    r.reference ? "reference" : "", "</td><td>", Time(r.created), "</td></tr>");
  }
  std::string body = absl::StrCat(
      "<h1>Runs</h1><form method=\"get\" action=\"/\" class=\"filters\">namespace <input "
      "name=\"namespace\" value=\"",
      Escape(ns), "\"> state ", Select("state", states, state), " framework ",
      Select("framework", frameworks, framework), " owner ", Select("owner", owners, owner),
      " <button type=\"submit\">filter</button></form><p>", shown,
      " runs</p><table class=\"list\" id=\"runs\"><tr><th>run</th><th>state</th>"
      "<th>framework</th><th>tensors</th><th>size</th><th>owner</th><th>reference</th>"
      "<th>created</th></tr>",
      rows, "</table>");
  return WebResponse::Html(RenderPage(req.Chrome("runs", ctx.gate->auth_on()), body));
}

absl::StatusOr<WebResponse> RunPage(const WebContext& ctx, const WebRequest& req) {
  const std::string& name = req.path_params.at("run");
  REPROD_ASSIGN_OR_RETURN(storage::RunInfo run, ctx.env->store->GetRun(name));
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::TensorMeta> tensors,
                          ctx.env->store->ListTensors(name));
  std::string body = absl::StrCat(
      "<h1>Run ", Escape(run.name), "</h1><dl class=\"meta\"><dt>state</dt><dd>",
      std::string(storage::RunStateName(run.state)), "</dd><dt>framework</dt><dd>",
      Escape(run.framework), " ", Escape(run.framework_version), "</dd><dt>device</dt><dd>",
      Escape(run.device), "</dd><dt>owner</dt><dd>", Escape(run.owner), "</dd><dt>created</dt><dd>",
      Time(run.created), "</dd><dt>tensors</dt><dd>", run.tensor_count, " (",
      HumanBytes(run.total_bytes), ")</dd><dt>reference</dt><dd id=\"reference\">",
      run.reference ? "yes" : "no", "</dd>");
  for (const auto& [k, v] : run.labels) {
    absl::StrAppend(&body, "<dt>label ", Escape(k), "</dt><dd>", Escape(v), "</dd>");
  }
  body += "</dl>";
  if (Judges(req.caller.who)) {
    absl::StrAppend(
        &body, "<form method=\"post\" action=\"/runs/", UrlEncode(name, true), "/reference\">",
        CsrfField(req.Chrome("", false).csrf), "<input type=\"hidden\" name=\"reference\" value=\"",
        run.reference ? "0" : "1", "\"><button type=\"submit\" id=\"publish\">",
        run.reference ? "withdraw as reference" : "publish as reference", "</button></form>");
  }
  absl::StrAppend(&body, "<p><a href=\"/compare?cand=", UrlEncode(name),
                  "\">compare this run</a></p>", ReportsOf(ctx, req.caller.who, name));
  // Checkpoints: keys and steps.
  std::map<std::string, std::pair<std::set<std::string>, std::set<int64_t>>> checkpoints;
  for (const storage::TensorMeta& t : tensors) {
    auto& [keys, steps] = checkpoints[t.header.address.checkpoint];
    keys.insert(t.header.address.key);
    if (t.header.address.step) steps.insert(*t.header.address.step);
  }
  body +=
      "<h2>Checkpoints</h2><table class=\"list\" id=\"checkpoints\"><tr><th>checkpoint</th>"
      "<th>keys</th><th>steps</th></tr>";
  for (const auto& [cp, ks] : checkpoints) {
    absl::StrAppend(&body, "<tr><td>", Escape(cp), "</td><td class=\"num\">", ks.first.size(),
                    "</td><td>",
                    ks.second.empty() ? "—"
                                      : absl::StrCat(*ks.second.begin(), " … ", *ks.second.rbegin(),
                                                     " (", ks.second.size(), ")"),
                    "</td></tr>");
  }
  // Multi-rank runs (a tensor of rank > 0) get a rank column, runs with
  // declared placements a placement column; single-process runs look as
  // before.
  const bool ranks = std::any_of(tensors.begin(), tensors.end(), [](const storage::TensorMeta& t) {
    return t.header.address.rank != 0;
  });
  const bool placements =
      std::any_of(tensors.begin(), tensors.end(), [](const storage::TensorMeta& t) {
        return t.header.placement.kind != PlacementKind::kNone;
      });
  absl::StrAppend(&body,
                  "</table><h2>Tensors</h2><table class=\"list\" id=\"tensors\"><tr><th>#</th>"
                  "<th>checkpoint</th><th>key</th><th>step</th>",
                  ranks ? "<th>rank</th>" : "", placements ? "<th>placement</th>" : "",
                  "<th>dtype</th><th>shape</th><th>bytes</th></tr>");
  for (size_t i = 0; i < tensors.size() && i < kMaxTensorRows; ++i) {
    const storage::TensorHeader& h = tensors[i].header;
    absl::StrAppend(&body, "<tr><td class=\"num\">", tensors[i].sequence, "</td><td>",
                    Escape(h.address.checkpoint), "</td><td class=\"key\">", Escape(h.address.key),
                    "</td><td>", h.address.step ? absl::StrCat(*h.address.step) : "", "</td><td>");
    if (ranks) absl::StrAppend(&body, h.address.rank, "</td><td>");
    if (placements) absl::StrAppend(&body, Escape(PlacementToString(h.placement)), "</td><td>");
    absl::StrAppend(&body, std::string(DTypeName(h.dtype)), "</td><td>", ShapeToString(h.shape),
                    "</td><td class=\"num\">", h.byte_length, "</td></tr>");
  }
  body += "</table>";
  if (tensors.size() > kMaxTensorRows) {
    absl::StrAppend(&body, "<p>", tensors.size() - kMaxTensorRows,
                    " more tensors not shown (GET /api/v1/runs/…/tensors lists all).</p>");
  }
  return WebResponse::Html(RenderPage(req.Chrome(run.name, ctx.gate->auth_on()), body));
}

absl::StatusOr<WebResponse> PublishRun(const WebContext& ctx, const WebRequest& req) {
  const std::string& name = req.path_params.at("run");
  const std::string value = req.Param("reference");
  if (value != "0" && value != "1") {
    return absl::InvalidArgumentError("form field reference must be 1 (publish) or 0 (withdraw)");
  }
  REPROD_RETURN_IF_ERROR(SetReference(*ctx.env, req.caller.who, name, value == "1").status());
  return WebResponse::Redirect(absl::StrCat("/runs/", UrlEncode(name, true)));
}

}  // namespace reprod::server::web

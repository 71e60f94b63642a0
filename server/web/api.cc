// The JSON API under /api/v1 (same gate as the pages; Authorization: Bearer
// accepted). Every string goes through nlohmann::json, invalid UTF-8
// replaced.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/placement.h"
#include "common/status_macros.h"
#include "common/tensor.h"
#include "nlohmann/json.hpp"
#include "server/auth/audit_log.h"
#include "server/review_ops.h"
#include "server/web/handler.h"

namespace reprod::server::web {
namespace {

using nlohmann::json;

constexpr size_t kMaxApiReports = 1000;

WebResponse Json(const json& j) {
  return WebResponse::Json(j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
}

json RunJson(const storage::RunInfo& r) {
  return {{"name", r.name},
          {"framework", r.framework},
          {"framework_version", r.framework_version},
          {"device", r.device},
          {"labels", r.labels},
          {"created", Rfc3339(r.created)},
          {"owner", r.owner},
          {"state", std::string(storage::RunStateName(r.state))},
          {"reference", r.reference},
          {"tensor_count", r.tensor_count},
          {"total_bytes", r.total_bytes}};
}

json ReportJson(const storage::StoredReport& r) {
  json j = {{"id", r.id},           {"ref", r.ref},       {"cand", r.cand},
            {"policy", r.policy},   {"passed", r.passed}, {"created", Rfc3339(r.created)},
            {"tensors", r.tensors}, {"failed", r.failed}, {"url", "/reports/" + r.id}};
  j["first_failure"] =
      r.first_failure ? json(storage::AddressToString(*r.first_failure)) : json(nullptr);
  return j;
}

}  // namespace

absl::StatusOr<WebResponse> ApiRuns(const WebContext& ctx, const WebRequest& req) {
  const std::string ns = req.Param("namespace");
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::RunInfo> runs,
                          ctx.env->store->ListRuns(ns.empty() ? "" : ns + "/"));
  json out = json::array();
  for (const storage::RunInfo& r : runs) {
    if (ctx.gate->CanSeeRun(req.caller.who, r)) out.push_back(RunJson(r));
  }
  return Json(json{{"runs", out}});
}

absl::StatusOr<WebResponse> ApiRun(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(storage::RunInfo run, ctx.env->store->GetRun(req.path_params.at("run")));
  return Json(RunJson(run));
}

absl::StatusOr<WebResponse> ApiRunTensors(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::TensorMeta> tensors,
                          ctx.env->store->ListTensors(req.path_params.at("run")));
  json out = json::array();
  for (const storage::TensorMeta& t : tensors) {
    const storage::TensorHeader& h = t.header;
    json tensor = {{"sequence", t.sequence},
                   {"checkpoint", h.address.checkpoint},
                   {"key", h.address.key},
                   {"step", h.address.step ? json(*h.address.step) : json(nullptr)},
                   {"rank", h.address.rank},
                   {"dtype", std::string(DTypeName(h.dtype))},
                   {"shape", h.shape},
                   {"byte_length", h.byte_length},
                   {"crc32c", h.crc32c}};
    // "shard(0) of (8, 4) at (4, 0)", "replicate", "partial"; absent when
    // the producer declared none.
    if (h.placement.kind != PlacementKind::kNone) {
      tensor["placement"] = PlacementToString(h.placement);
    }
    out.push_back(std::move(tensor));
  }
  return Json(json{{"run", req.path_params.at("run")}, {"tensors", out}});
}

absl::StatusOr<WebResponse> ApiCompare(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(
      storage::StoredReport stored,
      CompareAndStore(ctx, req.Param("ref"), req.Param("cand"), req.Param("preset")));
  return Json(ReportJson(stored));
}

absl::StatusOr<WebResponse> ApiReports(const WebContext& ctx, const WebRequest& req) {
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::StoredReport> reports,
                          ctx.env->store->ListReports(req.Param("run"), kMaxApiReports));
  json out = json::array();
  for (const storage::StoredReport& r : reports) {
    if (ctx.gate->CanSeeReport(req.caller.who, r)) out.push_back(ReportJson(r));
  }
  return Json(json{{"reports", out}});
}

absl::StatusOr<WebResponse> ApiReport(const WebContext& ctx, const WebRequest& req) {
  const std::string& id = req.path_params.at("id");
  REPROD_ASSIGN_OR_RETURN(storage::StoredReport report, ctx.env->store->GetReport(id));
  json j = ReportJson(report);
  auto it = report.renderings.find("json");
  if (it != report.renderings.end()) {
    j["report"] = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  }
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::AuditRecord> signatures,
                          ReportSignatures(*ctx.env, id));
  j["signatures"] = json::array();
  for (const auth::AuditRecord& s : signatures) {
    j["signatures"].push_back({{"label", s.actor.label},
                               {"role", std::string(auth::RoleName(s.actor.role))},
                               {"time", Rfc3339(s.time)},
                               {"sequence", s.sequence},
                               {"details", s.details}});
  }
  return Json(j);
}

absl::StatusOr<WebResponse> ApiTokens(const WebContext& ctx, const WebRequest&) {
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::TokenRecord> tokens, ListTokens(*ctx.env));
  json out = json::array();
  for (const auth::TokenRecord& t : tokens) {
    out.push_back({{"id", t.id()},
                   {"label", t.label},
                   {"role", std::string(auth::RoleName(t.role))},
                   {"scope", t.scope},
                   {"created", Rfc3339(t.created)},
                   {"expires", t.expires ? json(Rfc3339(*t.expires)) : json(nullptr)},
                   {"revoked", t.revoked}});
  }
  return Json(json{{"tokens", out}});
}

absl::StatusOr<WebResponse> ApiAudit(const WebContext& ctx, const WebRequest& req) {
  if (ctx.env->audit == nullptr) return absl::UnavailableError("this server keeps no audit log");
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::AuditRecord> records,
                          ctx.env->audit->List(req.Param("object"), 0));
  json out = json::array();
  for (const auth::AuditRecord& r : records) {
    out.push_back({{"sequence", r.sequence},
                   {"time", Rfc3339(r.time)},
                   {"label", r.actor.label},
                   {"role", std::string(auth::RoleName(r.actor.role))},
                   {"verb", r.verb},
                   {"object", r.object},
                   {"result", r.result},
                   {"details", r.details},
                   {"prev_hash", r.prev_hash},
                   {"hash", r.hash}});
  }
  return Json(json{{"records", out}});
}

}  // namespace reprod::server::web

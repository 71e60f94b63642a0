#include "server/web/handler.h"

#include <atomic>
#include <utility>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "core/policy.h"
#include "server/compare_service.h"
#include "server/metrics/server_metrics.h"
#include "server/review_ops.h"
#include "server/store_compare.h"
#include "server/stored_report.h"
#include "spdlog/spdlog.h"

namespace reprod::server::web {

std::string WebRequest::Param(std::string_view name) const {
  auto it = params.find(std::string(name));
  return it == params.end() ? std::string() : it->second;
}

PageChrome WebRequest::Chrome(std::string title, bool auth_on) const {
  PageChrome chrome;
  chrome.title = std::move(title);
  chrome.who = &caller.who;
  chrome.can_logout = auth_on && caller.session.has_value();
  if (caller.session.has_value()) chrome.csrf = caller.session->csrf;
  return chrome;
}

WebResponse WebResponse::Html(std::string body, int status) {
  WebResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

WebResponse WebResponse::Json(std::string body, int status) {
  WebResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

WebResponse WebResponse::Redirect(std::string location) {
  WebResponse r;
  r.status = 303;
  r.headers.emplace_back("Location", std::move(location));
  return r;
}

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kFailedPrecondition:
      // The router's "method not allowed" is a FailedPrecondition too.
      return absl::StrContains(status.message(), "is not allowed on") ? 405 : 409;
    case absl::StatusCode::kResourceExhausted:
      return 413;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

absl::StatusOr<storage::StoredReport> CompareAndStore(const WebContext& ctx, std::string_view ref,
                                                      std::string_view cand,
                                                      std::string_view preset) {
  for (std::string_view name : {ref, cand}) {
    REPROD_RETURN_IF_ERROR(ValidateRunName(name));
    REPROD_RETURN_IF_ERROR(ctx.env->store->GetRun(name).status());
  }
  // The same spec a gRPC Compare with this preset sends, so both hash alike.
  v1::PolicySpec spec;
  spec.set_preset(preset.empty() ? "reprod" : std::string(preset));
  REPROD_ASSIGN_OR_RETURN(core::Policy policy, PolicyFromSpec(spec));
  const absl::Time start = absl::Now();
  std::atomic<uint64_t> compared_bytes{0};
  StoreCompareOptions options;
  options.compared_bytes = &compared_bytes;
  REPROD_ASSIGN_OR_RETURN(
      core::Report report,
      CompareStoredRuns(*ctx.env->store, ref, cand, policy, *ctx.env->backend, options));
  if (ctx.env->metrics != nullptr) {
    ctx.env->metrics->Compared(ctx.env->backend->name(),
                               absl::ToDoubleSeconds(absl::Now() - start), compared_bytes.load());
  }
  REPROD_ASSIGN_OR_RETURN(storage::StoredReport stored, MakeStoredReport(report, absl::Now()));
  stored.policy_hash = PolicySpecHash(spec);  // what a signed verdict binds
  REPROD_RETURN_IF_ERROR(ctx.env->store->PutReport(stored));
  spdlog::info("report {} (web): {} vs {} {}", stored.id, std::string(ref), std::string(cand),
               report.passed ? "passed" : "FAILED");
  return stored;
}

const std::map<std::string_view, Handler>& Handlers() {
  static const auto* const kHandlers = new std::map<std::string_view, Handler>{
      {"GET /healthz", &Healthz},
      {"GET /metrics", &Metrics},
      {"GET /login", &LoginForm},
      {"POST /login", &LoginSubmit},
      {"POST /logout", &Logout},
      {"GET /", &RunsPage},
      {"GET /runs/{run}", &RunPage},
      {"POST /runs/{run}/reference", &PublishRun},
      {"GET /compare", &CompareForm},
      {"POST /compare", &CompareSubmit},
      {"GET /reports", &ReportsPage},
      {"GET /reports/{id}", &ReportPage},
      {"GET /reports/{id}/download/{format}", &ReportDownload},
      {"POST /reports/{id}/sign", &SignReportForm},
      {"GET /admin/tokens", &TokensPage},
      {"POST /admin/tokens", &CreateTokenForm},
      {"POST /admin/tokens/{token}/revoke", &RevokeTokenForm},
      {"GET /admin/audit", &AuditPage},
      {"GET /api/v1/runs", &ApiRuns},
      {"GET /api/v1/runs/{run}", &ApiRun},
      {"GET /api/v1/runs/{run}/tensors", &ApiRunTensors},
      {"POST /api/v1/compare", &ApiCompare},
      {"GET /api/v1/reports", &ApiReports},
      {"GET /api/v1/reports/{id}", &ApiReport},
      {"GET /api/v1/tokens", &ApiTokens},
      {"GET /api/v1/audit", &ApiAudit},
  };
  return *kHandlers;
}

}  // namespace reprod::server::web

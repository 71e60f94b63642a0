#include "server/report_service.h"

#include "common/status_macros.h"
#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/proto_convert.h"
#include "server/review_ops.h"

namespace reprod::server {

grpc::Status ReportServiceImpl::GetReport(grpc::ServerContext* context,
                                          const v1::GetReportRequest* request,
                                          v1::Report* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteGetReport, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  return wire::ToGrpcStatus(SignedReport(env_, request->id(), request->format(), response));
}

absl::Status SignedReport(const ServiceEnv& env, std::string_view id, v1::ReportFormat format,
                          v1::Report* out) {
  REPROD_ASSIGN_OR_RETURN(storage::StoredReport report, env.store->GetReport(id));
  REPROD_RETURN_IF_ERROR(ReportToProto(report, format, /*with_rendering=*/true, out));
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::AuditRecord> signatures,
                          ReportSignatures(env, report.id));
  for (const auth::AuditRecord& r : signatures) SignatureToProto(r, out->add_signatures());
  return absl::OkStatus();
}

grpc::Status ReportServiceImpl::SignReport(grpc::ServerContext* context,
                                           const v1::SignReportRequest* request,
                                           v1::Report* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteSignReport, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  if (absl::Status s = ReportFormatFromProto(request->format()).status(); !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  absl::StatusOr<auth::AuditRecord> signed_record =
      server::SignReport(env_, ActorOf(*who), request->id());
  if (!signed_record.ok()) return wire::ToGrpcStatus(signed_record.status());
  return wire::ToGrpcStatus(SignedReport(env_, request->id(), request->format(), response));
}

grpc::Status ReportServiceImpl::ListReports(
    grpc::ServerContext* context, const v1::ListReportsRequest* request,
    v1::ListReportsResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteListReports, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  const size_t limit = request->limit() == 0 ? 100 : request->limit();
  absl::StatusOr<std::vector<storage::StoredReport>> reports =
      env_.store->ListReports(request->run(), limit);
  if (!reports.ok()) return wire::ToGrpcStatus(reports.status());
  for (const storage::StoredReport& r : *reports) {
    if (*who && !env_.auth->CanSeeReport(**who, r)) continue;
    absl::Status s = ReportToProto(r, v1::REPORT_FORMAT_UNSPECIFIED,
                                   /*with_rendering=*/false,
                                   response->add_reports());
    if (!s.ok()) return wire::ToGrpcStatus(s);
  }
  return grpc::Status::OK;
}

}  // namespace reprod::server

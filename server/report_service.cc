#include "server/report_service.h"

#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/proto_convert.h"

namespace reprod::server {

grpc::Status ReportServiceImpl::GetReport(grpc::ServerContext* context,
                                          const v1::GetReportRequest* request,
                                          v1::Report* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteGetReport, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<storage::StoredReport> report =
      env_.store->GetReport(request->id());
  if (!report.ok()) return wire::ToGrpcStatus(report.status());
  return wire::ToGrpcStatus(
      ReportToProto(*report, request->format(), /*with_rendering=*/true,
                    response));
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

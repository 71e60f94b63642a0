// File: server/report_service.h
//
// ReportService (reprod/v1/compare.proto): stored reports by id, rendered in
// the requested format with their signatures, listings newest first, and
// verdict sign-offs (SignReport, review_ops.h).
//
// Thread-safety: handlers run concurrently; the store is thread-safe.
#ifndef REPROD_SERVER_REPORT_SERVICE_H_
#define REPROD_SERVER_REPORT_SERVICE_H_

#include <string_view>

#include "absl/status/status.h"
#include "reprod/v1/compare.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

// Report `id` rendered in `format` with its signatures (oldest first), as
// GetReport answers. NotFound for an unknown report; ReportToProto's and
// the audit log's errors otherwise.
absl::Status SignedReport(const ServiceEnv& env, std::string_view id, v1::ReportFormat format,
                          v1::Report* out);

class ReportServiceImpl final : public v1::ReportService::Service {
 public:
  explicit ReportServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status GetReport(grpc::ServerContext* context,
                         const v1::GetReportRequest* request,
                         v1::Report* response) override;
  grpc::Status ListReports(grpc::ServerContext* context,
                           const v1::ListReportsRequest* request,
                           v1::ListReportsResponse* response) override;
  grpc::Status SignReport(grpc::ServerContext* context, const v1::SignReportRequest* request,
                          v1::Report* response) override;

 private:
  ServiceEnv env_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_REPORT_SERVICE_H_

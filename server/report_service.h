// File: server/report_service.h
//
// ReportService (reprod/v1/compare.proto): stored reports by id, rendered in
// the requested format, and listings newest first.
//
// Thread-safety: handlers run concurrently; the store is thread-safe.
#ifndef REPROD_SERVER_REPORT_SERVICE_H_
#define REPROD_SERVER_REPORT_SERVICE_H_

#include "reprod/v1/compare.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

class ReportServiceImpl final : public v1::ReportService::Service {
 public:
  explicit ReportServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status GetReport(grpc::ServerContext* context,
                         const v1::GetReportRequest* request,
                         v1::Report* response) override;
  grpc::Status ListReports(grpc::ServerContext* context,
                           const v1::ListReportsRequest* request,
                           v1::ListReportsResponse* response) override;

 private:
  ServiceEnv env_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_REPORT_SERVICE_H_

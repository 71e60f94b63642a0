// File: server/compare_service.h
//
// CompareService (reprod/v1/compare.proto):
//  - Compare: reduces every pair of two stored runs (CompareStoredRuns:
//    bounded memory, small pairs batched), judges them, stores the report
//    (every rendering) and returns it in the requested format.
//  - Watch: while the runs train, judges each pair as soon as both runs hold
//    it and streams the verdict (candidate arrival order); when both runs are
//    sealed or aborted, stores and streams the final report and ends. Woken
//    by RunEvents (commits, seals, deletes), with a poll as a safety net.
//    Ends with UNAVAILABLE when the server shuts down, NOT_FOUND when a run
//    is deleted.
//
// A failed verdict is an OK RPC with passed = false; NOT_FOUND / 
// INVALID_ARGUMENT are for comparisons that could not be made.
//
// Thread-safety: handlers run concurrently; store, backend and events are
// thread-safe.
#ifndef REPROD_SERVER_COMPARE_SERVICE_H_
#define REPROD_SERVER_COMPARE_SERVICE_H_

#include "absl/status/statusor.h"
#include "core/policy.h"
#include "reprod/v1/compare.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

// The policy a request names: a preset, a YAML/JSON document, or "reprod"
// when unset. InvalidArgument with the parser's message otherwise.
absl::StatusOr<core::Policy> PolicyFromSpec(const v1::PolicySpec& spec);

class CompareServiceImpl final : public v1::CompareService::Service {
 public:
  explicit CompareServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status Compare(grpc::ServerContext* context,
                       const v1::CompareRequest* request,
                       v1::Report* response) override;
  grpc::Status Watch(grpc::ServerContext* context,
                     const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::WatchEvent>* writer) override;

 private:
  // Full comparison, stored; fills `response` rendered in `format`.
  absl::Status CompareAndStore(std::string_view ref, std::string_view cand,
                               const core::Policy& policy,
                               const v1::PolicySpec& spec,
                               v1::ReportFormat format, v1::Report* response);

  ServiceEnv env_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_COMPARE_SERVICE_H_

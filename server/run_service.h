// File: server/run_service.h
//
// RunService (reprod/v1/runs.proto): create, get, list, seal, delete runs,
// list a run's tensors and stream one tensor back. Names are validated
// (common/names.h) before the store sees them. Sealing or deleting wakes
// Watch streams.
//
// Thread-safety: the gRPC sync server calls handlers concurrently; the store
// is thread-safe.
#ifndef REPROD_SERVER_RUN_SERVICE_H_
#define REPROD_SERVER_RUN_SERVICE_H_

#include "reprod/v1/runs.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

class RunServiceImpl final : public v1::RunService::Service {
 public:
  explicit RunServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status CreateRun(grpc::ServerContext* context,
                         const v1::CreateRunRequest* request,
                         v1::Run* response) override;
  grpc::Status GetRun(grpc::ServerContext* context,
                      const v1::GetRunRequest* request,
                      v1::Run* response) override;
  grpc::Status ListRuns(grpc::ServerContext* context,
                        const v1::ListRunsRequest* request,
                        v1::ListRunsResponse* response) override;
  grpc::Status SealRun(grpc::ServerContext* context,
                       const v1::SealRunRequest* request,
                       v1::Run* response) override;
  grpc::Status DeleteRun(grpc::ServerContext* context,
                         const v1::DeleteRunRequest* request,
                         v1::DeleteRunResponse* response) override;
  grpc::Status ListTensors(grpc::ServerContext* context,
                           const v1::ListTensorsRequest* request,
                           v1::ListTensorsResponse* response) override;
  // Header first, then the bytes in chunks of at most limits.max_chunk_bytes;
  // one chunk buffer, so any tensor size reads in bounded memory.
  grpc::Status ReadTensor(
      grpc::ServerContext* context, const v1::ReadTensorRequest* request,
      grpc::ServerWriter<v1::ReadTensorResponse>* writer) override;
  // review_ops.h SetReference (audited).
  grpc::Status SetReference(grpc::ServerContext* context, const v1::SetReferenceRequest* request,
                            v1::Run* response) override;

 private:
  ServiceEnv env_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_RUN_SERVICE_H_

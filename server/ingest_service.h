// File: server/ingest_service.h
//
// IngestService (reprod/v1/ingest.proto): producers stream BeginTensor +
// chunks; each tensor is validated (names, dtype, shape x itemsize ==
// byte_length, limits, chunk offsets), written through a
// storage::TensorWriter chunk by chunk (bounded memory: one chunk at a time)
// and acknowledged only after Commit (durable, crc32c verified). The stream
// ends with the first error; tensors acked before it stay stored.
//
// Thread-safety: one handler thread per stream (gRPC sync API); the store
// and the event hub are thread-safe.
#ifndef REPROD_SERVER_INGEST_SERVICE_H_
#define REPROD_SERVER_INGEST_SERVICE_H_

#include "absl/status/statusor.h"
#include "reprod/v1/ingest.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

// Checks a header as the wire contract says (tensor.proto, ingest.proto):
// names, dtype, dimensions >= 0, itemsize * prod(shape) == byte_length
// without overflow, byte_length <= max_tensor_bytes (RESOURCE_EXHAUSTED).
// InvalidArgument naming the run, address and reason otherwise.
absl::StatusOr<storage::TensorHeader> ValidateHeader(
    const v1::BeginTensor& begin, const ServerLimits& limits);

class IngestServiceImpl final : public v1::IngestService::Service {
 public:
  explicit IngestServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status Ingest(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::IngestResponse, v1::IngestRequest>* stream)
      override;

 private:
  ServiceEnv env_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_INGEST_SERVICE_H_

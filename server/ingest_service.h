// File: server/ingest_service.h
//
// IngestService (reprod/v1/ingest.proto): producers stream BeginTensor +
// chunks; each tensor is validated (names, dtype, shape x itemsize ==
// byte_length, limits, chunk offsets), written through a
// storage::TensorWriter chunk by chunk (bounded memory: one chunk at a time)
// and acknowledged only after Commit (durable, crc32c verified). The stream
// ends with the first error; tensors acked before it stay stored.
//
// Bounds per client (ServerLimits): at most max_streams streams at once,
// and max_streams_per_token per token (RESOURCE_EXHAUSTED beyond); a stream the server waits on for longer than
// stream_idle_timeout is cancelled by a watchdog thread (logged with its
// run and tensor), so stalled clients cannot hold threads forever.
//
// Thread-safety: one handler thread per stream (gRPC sync API); the store
// and the event hub are thread-safe.
#ifndef REPROD_SERVER_INGEST_SERVICE_H_
#define REPROD_SERVER_INGEST_SERVICE_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "reprod/v1/ingest.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

// Checks a header as the wire contract says (tensor.proto, ingest.proto):
// names, dtype, dimensions >= 0, itemsize * prod(shape) == byte_length
// without overflow, byte_length <= max_tensor_bytes (RESOURCE_EXHAUSTED).
// InvalidArgument naming the run, address and reason otherwise.
absl::StatusOr<storage::TensorHeader> ValidateHeader(
    const v1::BeginTensor& begin, const ServerLimits& limits);

class IdleWatchdog;  // ingest_service.cc

class IngestServiceImpl final : public v1::IngestService::Service {
 public:
  // Starts the idle watchdog's thread (when env.limits has a timeout).
  explicit IngestServiceImpl(const ServiceEnv& env);
  ~IngestServiceImpl() override;

  grpc::Status Ingest(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::IngestResponse, v1::IngestRequest>* stream)
      override;

 private:
  ServiceEnv env_;
  std::unique_ptr<IdleWatchdog> watchdog_;
  std::atomic<int> open_streams_{0};
  absl::Mutex token_mu_;
  // Open streams per token id (--auth tokens), entries removed at zero.
  std::map<std::string, int> token_streams_ ABSL_GUARDED_BY(token_mu_);
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_INGEST_SERVICE_H_

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
// and max_streams_per_token per token (RESOURCE_EXHAUSTED beyond); a
// stream the server waits on for longer than stream_idle_timeout is ended
// by a watchdog thread (logged with its run and tensor).
//
// Memory and threads do not grow with the number of streams (gRPC callback
// API): a stream waiting on its client holds no thread, and messages are
// read only while the ingest budget (ServerLimits::ingest_buffer_bytes) has
// room; the blocking work (store writes, commits) runs on a fixed set of
// workers. A stalled stream ends with DEADLINE_EXCEEDED naming its run and
// tensor.
//
// Thread-safety: each stream is handled by one task at a time; the store
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

struct IngestShared;  // ingest_service.cc

class IngestServiceImpl final : public v1::IngestService::CallbackService {
 public:
  // Starts the ingest workers and the idle watchdog's thread.
  explicit IngestServiceImpl(const ServiceEnv& env);
  ~IngestServiceImpl() override;

  grpc::ServerBidiReactor<v1::IngestRequest, v1::IngestResponse>* Ingest(
      grpc::CallbackServerContext* context) override;

  // The most ingest message bytes held at once (IngestBudget::peak).
  uint64_t budget_peak_bytes() const;

 private:
  std::unique_ptr<IngestShared> shared_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_INGEST_SERVICE_H_

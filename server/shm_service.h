// File: server/shm_service.h
//
// SharedMemoryService (reprod/v1/shm.proto): same-host ingest. A producer
// registers POSIX shared-memory regions on a Session stream and then sends,
// per tensor, a BeginTensor with (region, offset, length); reprodd reads the
// bytes from the region (ShmRegion: pread, never a mapping) into the store
// through the same TensorWriter as Ingest (BeginTensor/Append/Commit: the
// store verifies the crc32c), with the same header checks (ValidateHeader),
// access check (the Ingest entry's rule: a submitter writes only its
// namespace), quotas and audit "push" records. Regions belong to the
// session that registered them and are closed when it ends.
//
// Off unless reprodd runs with --allow-shm: every Session then ends at once
// with FAILED_PRECONDITION naming the flag. Open sessions are capped by
// --max-streams and --max-streams-per-token, counted apart from Ingest
// streams; in the metrics they count as ingest streams and their tensors as
// ingest tensors.
//
// A session holds one of gRPC's synchronous server threads while it is
// open (it waits on its client in Read); keepalive ends sessions of clients
// that vanished, and the shutdown cancels idle ones.
//
// Thread-safety: each session runs on one thread; the service's counters
// are guarded.
#ifndef REPROD_SERVER_SHM_SERVICE_H_
#define REPROD_SERVER_SHM_SERVICE_H_

#include <atomic>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "reprod/v1/shm.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

// Regions one session may hold at once (one more is RESOURCE_EXHAUSTED).
inline constexpr size_t kMaxShmRegionsPerSession = 16;

// Regions all sessions together may hold open (each holds a file
// descriptor): a quarter of the process's RLIMIT_NOFILE soft limit, at most
// 4096, at least 16; one more is RESOURCE_EXHAUSTED.
int MaxShmRegionsOpen();

class SharedMemoryServiceImpl final : public v1::SharedMemoryService::Service {
 public:
  // `allow`: reprodd's --allow-shm.
  SharedMemoryServiceImpl(const ServiceEnv& env, bool allow)
      : env_(env), allow_(allow), max_regions_(MaxShmRegionsOpen()) {}

  grpc::Status Session(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::ShmResponse, v1::ShmRequest>* stream) override;

 private:
  // Counts the session against --max-streams / --max-streams-per-token
  // (`token_id` empty without tokens); the refusal otherwise.
  grpc::Status Admit(const std::string& token_id, const std::string& label);
  void Leave(const std::string& token_id);

  const ServiceEnv env_;
  const bool allow_;
  const int max_regions_;
  std::atomic<int> regions_open_{0};  // in all sessions
  absl::Mutex mu_;
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> per_token_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_SHM_SERVICE_H_

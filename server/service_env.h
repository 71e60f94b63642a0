// File: server/service_env.h
//
// What every service implementation shares: the store, the diff backend, the
// event hub for Watch and the limits from the command line. Owned by
// ReprodServer (server.h), which outlives the services.
#ifndef REPROD_SERVER_SERVICE_ENV_H_
#define REPROD_SERVER_SERVICE_ENV_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "kernels/backend.h"
#include "server/run_events.h"
#include "storage/store.h"

namespace reprod::server {

class AuthGate;     // auth_gate.h
class QuotaLedger;  // quota_ledger.h
namespace metrics {
class ServerMetrics;  // metrics/server_metrics.h
}  // namespace metrics
namespace auth {
class TokenStore;  // auth/token_store.h
class AuditLog;    // auth/audit_log.h
}  // namespace auth

struct ServerLimits {
  // Largest TensorChunk.data accepted (bytes).
  uint64_t max_chunk_bytes = uint64_t{1} << 20;
  // Largest tensor accepted (bytes); larger ones are RESOURCE_EXHAUSTED.
  uint64_t max_tensor_bytes = uint64_t{16} << 30;
  // How often a Watch stream re-checks its runs without being woken.
  int64_t watch_poll_ms = 500;
  // Stored tensor bytes allowed in all runs together (`--quota-bytes`) and
  // in the runs of one namespace, the part of a run name before '/'
  // (`--namespace-quota-bytes`); 0 = no limit. A submitter token may carry
  // its own namespace limit instead (auth/token_store.h). A tensor that
  // would pass one is refused with RESOURCE_EXHAUSTED naming the namespace,
  // used, in-flight and limit bytes. Enforced by QuotaLedger
  // (quota_ledger.h) when each tensor begins, counting the tensors in
  // flight too, so concurrent uploads never overshoot together.
  uint64_t quota_bytes = 0;
  uint64_t namespace_quota_bytes = 0;
  // An Ingest stream that sends nothing for this long while the server
  // waits for its next message is cancelled (`--stream-idle-timeout`; the
  // log names the run and tensor); zero or less = never.
  absl::Duration stream_idle_timeout = absl::Seconds(60);
  // Ingest streams open at once (`--max-streams`); one more is refused
  // with RESOURCE_EXHAUSTED. 0 = no cap.
  int max_streams = 512;
  // With `--auth tokens`: Ingest streams one token may hold open at once
  // (`--max-streams-per-token`), so one caller cannot take every slot of
  // max_streams; one more is RESOURCE_EXHAUSTED naming the token's label.
  // 0 = no cap.
  int max_streams_per_token = 64;
  // Ingest message bytes held in memory at once by all streams together
  // (`--ingest-buffer-bytes`): a stream asks for its next message only
  // while the total is under this (ingest_budget.h).
  uint64_t ingest_buffer_bytes = uint64_t{64} << 20;
};

struct ServiceEnv {
  storage::Store* store = nullptr;
  kernels::Backend* backend = nullptr;
  RunEvents* events = nullptr;
  ServerLimits limits;
  // `--backup-root`: the folder AdminService.Backup writes backups into
  // (one subfolder each); empty = backups are off.
  std::string backup_root;
  // `--auth tokens`: the gate every service method calls first (CheckCall in
  // auth_gate.h); nullptr with `--auth none` (everything allowed).
  AuthGate* auth = nullptr;
  // The store's tokens (the gate authenticates with the same TokenStore)
  // and its audit log, always on (review_ops.h appends to it); both set by
  // ReprodServer, nullptr only in tests that use neither.
  auth::TokenStore* tokens = nullptr;
  auth::AuditLog* audit = nullptr;
  // Stored and in-flight tensor bytes against the quotas (limits above and
  // tokens' own); set by ReprodServer, nullptr in tests without quotas
  // (then nothing is limited).
  QuotaLedger* quota = nullptr;
  // reprodd's Prometheus metrics (GET /metrics); set by ReprodServer,
  // nullptr in tests without metrics (then nothing is counted).
  metrics::ServerMetrics* metrics = nullptr;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_SERVICE_ENV_H_

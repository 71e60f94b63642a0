// File: server/metrics/server_metrics.h
//
// reprodd's metrics, one registry (metrics.h) served at GET /metrics on the
// HTTP listener. Every name, label and bucket is here; the services only
// call the members below (env.metrics, service_env.h; nullptr in tests
// without metrics).
//
//   reprod_build_info{version}                        gauge, always 1
//   reprod_ingest_bytes_total                         tensor bytes acked
//   reprod_ingest_tensors_total{kind}                 stored|already_present|replaced
//   reprod_ingest_streams_open                        Ingest streams open now
//   reprod_ingest_ack_seconds                         BeginTensor to its durable commit
//   reprod_compare_total{backend}                     comparisons stored as reports
//   reprod_compare_seconds{backend}                   their duration
//   reprod_compare_bytes_total{backend}               ref + cand tensor bytes reduced
//   reprod_store_bytes{namespace}                     stored tensor bytes (the quota
//                                                     ledger's, read at each scrape)
//   reprod_auth_failures_total{reason}                unauthenticated|permission_denied
//   reprod_gpu_cache_bytes{kind}                      budget|used of the resident-ref
//                                                     cache (--gpu-cache-bytes; read
//                                                     from the backend at each scrape)
//   reprod_gpu_cache_events{event}                    hit|miss|eviction|rejection since
//                                                     start (likewise)
//
// Thread-safety: every member may be used from any thread at once.
#ifndef REPROD_SERVER_METRICS_SERVER_METRICS_H_
#define REPROD_SERVER_METRICS_SERVER_METRICS_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "server/metrics/metrics.h"

namespace reprod::server::metrics {

class ServerMetrics {
 public:
  // `version` is the value of reprod_build_info's label.
  explicit ServerMetrics(std::string_view version);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  Registry& registry() { return registry_; }

  // One acked tensor: `kind` is "stored", "already_present" or "replaced".
  void TensorAcked(std::string_view kind, uint64_t bytes, double seconds_since_begin);
  void StreamOpened() { streams_open_.Add(1); }
  void StreamClosed() { streams_open_.Add(-1); }
  // One comparison that produced a report.
  void Compared(std::string_view backend, double seconds, uint64_t bytes);
  // A refused call: UNAUTHENTICATED and PERMISSION_DENIED are counted by
  // reason, other codes ignored.
  void AuthFailed(const absl::Status& status);

 private:
  Registry registry_;
  Counter& ingest_bytes_;
  Family<Counter>& ingest_tensors_;
  Gauge& streams_open_;
  Histogram& ack_seconds_;
  Family<Counter>& compare_total_;
  Family<Histogram>& compare_seconds_;
  Family<Counter>& compare_bytes_;
  Family<Counter>& auth_failures_;
};

}  // namespace reprod::server::metrics

#endif  // REPROD_SERVER_METRICS_SERVER_METRICS_H_

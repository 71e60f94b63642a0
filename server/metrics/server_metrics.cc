#include "server/metrics/server_metrics.h"

#include <string>
#include <vector>

namespace reprod::server::metrics {
namespace {

// Seconds: an ack of a small tensor takes about an fsync (ms); a compare of
// two large runs minutes.
std::vector<double> AckBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}
std::vector<double> CompareBuckets() {
  return {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
}

}  // namespace

ServerMetrics::ServerMetrics(std::string_view version)
    : ingest_bytes_(registry_
                        .AddCounter("reprod_ingest_bytes_total",
                                    "Tensor bytes acked on Ingest streams (every ack kind).")
                        .With({})),
      ingest_tensors_(registry_.AddCounter("reprod_ingest_tensors_total",
                                           "Tensors acked on Ingest streams, by ack kind.",
                                           {"kind"})),
      streams_open_(
          registry_.AddGauge("reprod_ingest_streams_open", "Ingest streams open now.").With({})),
      ack_seconds_(registry_
                       .AddHistogram("reprod_ingest_ack_seconds",
                                     "Seconds from a tensor's BeginTensor to its durable commit.",
                                     {}, AckBuckets())
                       .With({})),
      compare_total_(registry_.AddCounter(
          "reprod_compare_total", "Comparisons stored as reports, by backend.", {"backend"})),
      compare_seconds_(registry_.AddHistogram("reprod_compare_seconds",
                                              "Seconds per comparison, by backend.", {"backend"},
                                              CompareBuckets())),
      compare_bytes_(registry_.AddCounter("reprod_compare_bytes_total",
                                          "Reference plus candidate tensor bytes reduced, by "
                                          "backend.",
                                          {"backend"})),
      auth_failures_(registry_.AddCounter(
          "reprod_auth_failures_total", "Refused calls (gRPC and HTTP), by reason.", {"reason"})) {
  registry_.AddGauge("reprod_build_info", "The reprodd build; always 1.", {"version"})
      .With({std::string(version)})
      .Set(1);
  // Both reasons appear from the start, so rate() sees the first failure.
  auth_failures_.With({"unauthenticated"});
  auth_failures_.With({"permission_denied"});
  for (const char* kind : {"stored", "already_present", "replaced"}) ingest_tensors_.With({kind});
}

void ServerMetrics::TensorAcked(std::string_view kind, uint64_t bytes, double seconds_since_begin) {
  ingest_bytes_.Inc(bytes);
  ingest_tensors_.With({std::string(kind)}).Inc();
  ack_seconds_.Observe(seconds_since_begin);
}

void ServerMetrics::Compared(std::string_view backend, double seconds, uint64_t bytes) {
  const std::string b(backend);
  compare_total_.With({b}).Inc();
  compare_seconds_.With({b}).Observe(seconds);
  compare_bytes_.With({b}).Inc(bytes);
}

void ServerMetrics::AuthFailed(const absl::Status& status) {
  if (absl::IsUnauthenticated(status)) auth_failures_.With({"unauthenticated"}).Inc();
  if (absl::IsPermissionDenied(status)) auth_failures_.With({"permission_denied"}).Inc();
}

}  // namespace reprod::server::metrics

// File: client/cpp/remote_client.h
//
// RemoteClient: a reprod server (reprodd) seen from C++. Wraps the four
// reprod.v1 services (proto/reprod/v1/*.proto) behind absl::Status /
// absl::StatusOr: every gRPC status is converted once (wire::FromGrpcStatus, codes
// 1:1, the server's message kept), so callers branch on absl codes.
//
//   auto client = RemoteClient::Connect("127.0.0.1:50051");
//   if (!client.ok()) return client.status();          // UNAVAILABLE: no server
//   v1::Run run;
//   run.set_name("team42/bert-paddle");
//   REPROD_RETURN_IF_ERROR((*client)->CreateRun(run, /*exist_ok=*/true).status());
//   VectorTensorSource source(std::move(items));
//   auto summary = (*client)->Push("team42/bert-paddle", source);
//   v1::CompareRequest req;
//   req.set_ref("team42/bert-torch");
//   req.set_cand("team42/bert-paddle");
//   auto report = (*client)->Compare(req);             // report->passed()
//
// Connection: Connect uses plaintext channel credentials (the server's
// loopback default, docs/design.md §Security defaults), or TLS ones when
// ConnectOptions::tls is set (mutual TLS when it has a client certificate),
// and waits at most
// ConnectOptions::connect_timeout for the server to answer; a refused
// connection fails at once. Unary calls carry a deadline (rpc_timeout, or
// compare_timeout for Compare/GetReport); Watch and Push streams have none,
// as they last as long as the training or the upload does.
//
// Errors: the server's codes (see the .proto files: NOT_FOUND for an unknown
// run or report, INVALID_ARGUMENT for bad names or policies, ALREADY_EXISTS,
// FAILED_PRECONDITION, ...). UNAVAILABLE when the server cannot be reached
// and DEADLINE_EXCEEDED when it did not answer in time; both messages name
// the server address. When the failure looks like a TLS mismatch (a
// plaintext client at a TLS server, a TLS client at a plaintext one, an
// untrusted certificate, a missing client certificate) the UNAVAILABLE
// message says so and which flag to use (TlsHint). Names (runs,
// checkpoints, keys) are validated with common/names.h before anything is
// sent: a bad one is INVALID_ARGUMENT without a round trip.
//
// Thread-safety: every method may be called from several threads at once
// (gRPC stubs are thread-safe). The callbacks of Watch and Push run on the
// calling thread (Watch) or on an internal thread (Push's progress).
#ifndef REPROD_CLIENT_CPP_REMOTE_CLIENT_H_
#define REPROD_CLIENT_CPP_REMOTE_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cpp/ingest_messages.h"
#include "client/cpp/tensor_source.h"
#include "common/tensor.h"
#include "common/tls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "reprod/v1/admin.grpc.pb.h"
#include "reprod/v1/compare.grpc.pb.h"
#include "reprod/v1/ingest.grpc.pb.h"
#include "reprod/v1/review.grpc.pb.h"
#include "reprod/v1/runs.grpc.pb.h"

namespace reprod::client {

// reprod::client::ConnectOptions
struct ConnectOptions {
  // How long Connect waits for the server to accept a connection. A refused
  // connection (nothing listening) fails before that.
  absl::Duration connect_timeout = absl::Seconds(4);
  // Deadline of each metadata call (runs, tensor lists, report lists).
  absl::Duration rpc_timeout = absl::Seconds(60);
  // Deadline of Compare and GetReport (the server reduces whole runs).
  absl::Duration compare_timeout = absl::Minutes(30);
  // Largest response accepted, in bytes: rendered reports of big runs are
  // large (gRPC's default is 4 MiB). Requests stay small (1 MiB chunks).
  int max_receive_message_bytes = 256 << 20;
  // TLS when set (common/tls.h LoadClientTls): ca_certs verify the server
  // (empty: the system's roots); cert_chain and private_key, when not empty,
  // are the client certificate of mutual TLS. Plaintext when unset.
  std::optional<tls::TlsPem> tls;
  // Bearer token of a server started with `--auth tokens`: sent as
  // `authorization: Bearer <token>` metadata on every call (a channel
  // interceptor). Nothing is sent when empty.
  std::string token;
};

// The gRPC target for a --server value: "host:port" as it is, or several
// replicas of one server (reprodd --store postgres+s3) "a:1,b:2" as one
// ipv4:/ipv6: target (host names resolved here, once), so that gRPC's
// pick_first policy uses the first that answers and moves to the next when
// it goes away; pushes resend what was not acknowledged, as after a
// restart. (One DNS name with several records fails over the same way
// through gRPC's own resolver.) InvalidArgument naming the part that is not
// HOST:PORT or does not resolve, or a list mixing IPv4 and IPv6.
absl::StatusOr<std::string> ChannelTarget(const std::string& address);

// A sentence explaining a failed connection as a TLS mismatch, from the gRPC
// error text `grpc_message` and whether the client used TLS (`tls`) with a
// client certificate (`client_cert`); "" when the text shows no TLS cause.
// `connecting`: the channel never got up, so a connection the server closed
// points at TLS (a plaintext client at a TLS server: "the server probably
// requires TLS: give the CA that signed its certificate with --tls-ca FILE
// (REPROD_TLS_CA)"); on a call it is an ordinary outage and gets no hint.
std::string TlsHint(const std::string& grpc_message, bool tls, bool client_cert, bool connecting);

// reprod::client::PushProgress — a snapshot passed to PushOptions::on_progress.
struct PushProgress {
  uint64_t bytes_acked = 0;  // tensor bytes the server has stored
  uint64_t bytes_sent = 0;   // tensor bytes written to the stream (resends count again)
  uint64_t bytes_total = 0;  // TensorSource::TotalBytes() (0 = unknown)
  uint64_t tensors_acked = 0;
  uint64_t tensors_sent = 0;  // BeginTensor messages written (resends count again)
  int reconnects = 0;
};

// reprod::client::PushOptions
struct PushOptions {
  // Bytes per TensorChunk (the server refuses chunks over its limit, 1 MiB
  // by default).
  size_t chunk_bytes = kDefaultChunkBytes;
  // Unacknowledged tensor bytes allowed in flight before Push waits for
  // acks. A single tensor larger than this is still sent (alone).
  uint64_t window_bytes = uint64_t{64} << 20;
  // When a stream fails with UNAVAILABLE (server restarting), Push waits
  // for the server and resends every tensor not yet acknowledged: at most
  // this many attempts in a row without an ack in between ...
  int max_reconnects = 8;
  // ... and at most this long from the first failure of an outage.
  absl::Duration reconnect_timeout = absl::Seconds(30);
  // Sleep before reconnect attempt n: initial_backoff * 2^(n-1), capped.
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  // Called after every ack, every reconnect and every 16 MiB sent, from the
  // calling thread or an internal one; must be thread-safe and quick. May
  // be empty.
  std::function<void(const PushProgress&)> on_progress;
};

// reprod::client::PushSummary — what the server acknowledged.
struct PushSummary {
  uint64_t tensors = 0;          // acknowledged tensors (stored + present + replaced)
  uint64_t stored = 0;           // ACK_KIND_STORED
  uint64_t already_present = 0;  // identical tensor was there (idempotent resend)
  uint64_t replaced = 0;         // run with overwrite: bytes replaced
  uint64_t bytes = 0;            // tensor bytes of the acknowledged tensors
  int reconnects = 0;            // streams reopened after UNAVAILABLE
};

// reprod::client::RemoteClient
class RemoteClient {
 public:
  // Opens a channel to `target` ("host:port", any gRPC target string) and
  // waits until the server accepts a connection. UNAVAILABLE naming the
  // target when nothing answers within options.connect_timeout (a refused
  // connection fails at once); INVALID_ARGUMENT for an empty target.
  static absl::StatusOr<std::unique_ptr<RemoteClient>> Connect(std::string target,
                                                               ConnectOptions options = {});

  RemoteClient(const RemoteClient&) = delete;
  RemoteClient& operator=(const RemoteClient&) = delete;
  ~RemoteClient();

  // The target given to Connect.
  const std::string& target() const { return target_; }

  // Runs (RunService). `run.name()` is required; framework, version,
  // device, labels and overwrite are taken from `run`. With exist_ok an
  // existing run is returned unchanged (ALREADY_EXISTS otherwise).
  absl::StatusOr<v1::Run> CreateRun(const v1::Run& run, bool exist_ok);
  // NOT_FOUND for an unknown run.
  absl::StatusOr<v1::Run> GetRun(const std::string& name);
  // Runs whose name starts with `prefix` (all when empty), sorted by name.
  absl::StatusOr<std::vector<v1::Run>> ListRuns(const std::string& prefix);
  // OPEN -> SEALED (ABORTED when `abort`); FAILED_PRECONDITION when the run
  // is not OPEN.
  absl::StatusOr<v1::Run> SealRun(const std::string& name, bool abort);
  // Removes the run and its tensors (reports stay); returns the number of
  // tensors removed.
  absl::StatusOr<uint64_t> DeleteRun(const std::string& name);
  // The run's tensors in arrival order; only `checkpoint`'s when non-empty.
  absl::StatusOr<std::vector<v1::TensorInfo>> ListTensors(const std::string& run,
                                                          const std::string& checkpoint = "");
  // One stored tensor's bytes (RunService.ReadTensor), checked against the
  // header's byte length and CRC-32C (DataLoss naming the tensor otherwise);
  // NOT_FOUND for an unknown run or address.
  absl::StatusOr<Tensor> ReadTensor(const std::string& run, const v1::TensorAddress& address);

  // Compares two stored runs and stores the report (CompareService.Compare).
  // A failed verdict is an OK result with passed() == false; NOT_FOUND for
  // an unknown run; INVALID_ARGUMENT for a bad policy.
  absl::StatusOr<v1::Report> Compare(const v1::CompareRequest& request);

  // Streams the verdicts of the two runs (CompareService.Watch): calls
  // `on_event` on this thread for every event (verdicts, then the final
  // report once both runs are sealed or aborted) and returns when the
  // server ends the stream: OK after the final report, else the error.
  absl::Status Watch(const v1::WatchRequest& request,
                     const std::function<void(const v1::WatchEvent&)>& on_event);

  // A stored report rendered in `format` (JSON when UNSPECIFIED); NOT_FOUND
  // for an unknown id.
  absl::StatusOr<v1::Report> GetReport(const std::string& id, v1::ReportFormat format);
  // Report metadata (rendered left empty), newest first; only those of
  // `run` when non-empty; at most `limit` (0 = the server's default, 100).
  absl::StatusOr<std::vector<v1::Report>> ListReports(const std::string& run, uint32_t limit);

  // Review server (judges and admins; docs/acl.md). Publishes (or
  // withdraws) a run as a reference; NOT_FOUND for an unknown run.
  absl::StatusOr<v1::Run> SetReference(const std::string& name, bool reference);
  // Signs a report's verdict; returns the report (rendered in `format`)
  // with every signature. NOT_FOUND for an unknown report.
  absl::StatusOr<v1::Report> SignReport(const std::string& id, v1::ReportFormat format);

  // Tokens and the audit log (admins). The response of CreateToken holds
  // the token: show it once.
  absl::StatusOr<v1::CreateTokenResponse> CreateToken(const v1::CreateTokenRequest& request);
  absl::StatusOr<std::vector<v1::TokenInfo>> ListTokens();
  // `id`: a token id or a prefix of it (>= 8 hex digits).
  absl::StatusOr<v1::TokenInfo> RevokeToken(const std::string& id);
  // Newest first; only events about `object` (a run, report id or token
  // label) when non-empty; at most `limit` (0 = the server's default, 100).
  absl::StatusOr<std::vector<v1::AuditEvent>> ListAuditEvents(const std::string& object,
                                                              uint32_t limit);
  // The server's verdict on its audit log (ok, or the first bad record).
  absl::StatusOr<v1::VerifyAuditResponse> VerifyAudit();

  // Store maintenance (admins): a backup named `name` (empty: the server
  // names it by the time) under the server's --backup-root, and a
  // compaction. Both may take minutes; they wait up to the compare timeout.
  absl::StatusOr<v1::BackupResponse> Backup(const std::string& name);
  absl::StatusOr<v1::CompactResponse> Compact();

  // Uploads every tensor of `source` into `run` over one Ingest stream,
  // pipelined: chunks keep flowing while an internal thread collects acks,
  // with at most options.window_bytes unacknowledged. Chunks are sent as
  // slices of the tensors' own bytes (no copy; the source's tensors must
  // not change until acknowledged). On UNAVAILABLE, or CANCELLED by the
  // server (a shutdown ending streams after its grace), the stream is
  // reopened (with backoff, bounded by max_reconnects and
  // reconnect_timeout) and every unacknowledged tensor is resent; the server
  // acknowledges identical resends ALREADY_PRESENT. Any other error is final
  // and returned with the server's message (INVALID_ARGUMENT, also for a run
  // that does not exist; FAILED_PRECONDITION for a sealed run;
  // ALREADY_EXISTS for different bytes at a stored address;
  // RESOURCE_EXHAUSTED; see ingest.proto); tensors
  // acknowledged before it stay stored. An error from `source` or an
  // invalid checkpoint/key stops the push after the tensors already sent
  // are acknowledged, and is returned. The run must exist (CreateRun).
  absl::StatusOr<PushSummary> Push(const std::string& run, TensorSource& source,
                                   const PushOptions& options = {});

  // The serving status the standard gRPC health service
  // (grpc.health.v1.Health/Check, public on every reprodd) reports for the
  // whole server: SERVING while it takes calls, NOT_SERVING once it is
  // shutting down. UNAVAILABLE / DEADLINE_EXCEEDED as for the other calls
  // when it cannot be reached or does not answer within `timeout`.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
      absl::Duration timeout);

 private:
  RemoteClient(std::string target, ConnectOptions options, std::shared_ptr<grpc::Channel> channel);

  // UNAVAILABLE for a channel that failed to connect: gRPC's reason, and a
  // TlsHint when there is one.
  static absl::Status ConnectFailure(const std::string& target, const ConnectOptions& options,
                                     const std::shared_ptr<grpc::Channel>& channel);
  // wire::FromGrpcStatus plus the server address for UNAVAILABLE and
  // DEADLINE_EXCEEDED (and a TlsHint when there is one).
  absl::Status FromRpc(const grpc::Status& status) const;
  void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) const;

  friend class PushSession;

  const std::string target_;
  const ConnectOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RunService::Stub> runs_;
  std::unique_ptr<v1::CompareService::Stub> compare_;
  std::unique_ptr<v1::ReportService::Stub> reports_;
  std::unique_ptr<v1::TokenService::Stub> tokens_;
  std::unique_ptr<v1::AuditService::Stub> audit_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_REMOTE_CLIENT_H_

#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "server/admin_service.h"
#include "server/admin_token_file.h"
#include "server/auth/audit_log.h"
#include "server/auth/token_store.h"
#include "server/auth_gate.h"
#include "server/compare_service.h"
#include "server/compare_worker.h"
#include "server/ingest_service.h"
#include "server/metrics/server_metrics.h"
#include "server/quota_ledger.h"
#include "server/report_service.h"
#include "server/review_ops.h"
#include "server/run_service.h"
#include "server/shm_service.h"
#include "server/store_admin_service.h"
#include "spdlog/spdlog.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/rocksdb_store.h"

namespace reprod::server {
namespace {

// Splits HOST:PORT ("[::1]:50051" for IPv6).
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(
    const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen '", listen, "' is not HOST:PORT (e.g. 127.0.0.1:50051)"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::pair{host, port};
}

// Plaintext credentials, or TLS ones from the checked PEM (mutual TLS when
// it has a client CA). Logs which, never the key.
std::shared_ptr<grpc::ServerCredentials> ListenerCredentials(const ServerOptions& options,
                                                             const tls::TlsPem& pem) {
  if (pem.cert_chain.empty()) {
    spdlog::info("TLS: off (plaintext gRPC; give --tls-cert and --tls-key to encrypt)");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({pem.private_key, pem.cert_chain});
  if (pem.ca_certs.empty()) {
    ssl.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    spdlog::info("TLS: on (certificate {})", options.tls_cert_file);
  } else {
    ssl.pem_root_certs = pem.ca_certs;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    spdlog::info(
        "TLS: on, mutual (certificate {}; clients need a certificate "
        "signed by {})",
        options.tls_cert_file, options.tls_client_ca_file);
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

namespace {

bool IsLoopbackSockaddr(const sockaddr* addr) {
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (addr->sa_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;  // ::ffff:127.x.y.z
  }
  return false;
}

}  // namespace

absl::StatusOr<bool> IsLoopbackAddress(const std::string& listen) {
  REPROD_ASSIGN_OR_RETURN(auto host_port, SplitHostPort(listen));
  const std::string& host = host_port.first;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    spdlog::debug("listen host {} does not resolve: treated as non-loopback", host);
    return false;
  }
  bool all_loopback = true;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    all_loopback = all_loopback && IsLoopbackSockaddr(a->ai_addr);
  }
  freeaddrinfo(found);
  return all_loopback;
}

namespace {

// reprodd's metrics, with reprod_store_bytes read from `quota` and the
// resident-ref cache's figures from `backend` at each scrape.
std::unique_ptr<metrics::ServerMetrics> MakeMetrics(const QuotaLedger& quota,
                                                    const kernels::Backend& backend) {
  std::string_view version = ServerVersion();  // "reprodd 0.1.0"
  if (version.starts_with("reprodd ")) version.remove_prefix(std::string_view("reprodd ").size());
  auto m = std::make_unique<metrics::ServerMetrics>(version);
  m->registry().AddCallbackGauge(
      "reprod_store_bytes", "Stored tensor bytes per run namespace (the quota ledger's count).",
      {"namespace"}, [&quota] {
        std::vector<std::pair<metrics::LabelValues, double>> out;
        for (const auto& [ns, usage] : quota.Namespaces()) {
          out.push_back({{ns}, static_cast<double>(usage.stored)});
        }
        return out;
      });
  // Zero unless the backend keeps resident refs (--gpu-cache-bytes).
  m->registry().AddCallbackGauge(
      "reprod_gpu_cache_bytes", "Resident-ref cache on the GPU: its budget and the bytes in use.",
      {"kind"}, [&backend] {
        const kernels::ResidentStats r = backend.resident_stats();
        return std::vector<std::pair<metrics::LabelValues, double>>{
            {{"budget"}, static_cast<double>(r.budget_bytes)},
            {{"used"}, static_cast<double>(r.used_bytes)}};
      });
  m->registry().AddCallbackGauge(
      "reprod_gpu_cache_events",
      "Resident-ref cache events since start: hit and miss (keyed pairs whose ref was or was "
      "not on the GPU), eviction, rejection (a miss that did not fit).",
      {"event"}, [&backend] {
        const kernels::ResidentStats r = backend.resident_stats();
        return std::vector<std::pair<metrics::LabelValues, double>>{
            {{"hit"}, static_cast<double>(r.hits)},
            {{"miss"}, static_cast<double>(r.misses)},
            {{"eviction"}, static_cast<double>(r.evictions)},
            {{"rejection"}, static_cast<double>(r.rejections)}};
      });
  return m;
}

// Creates --backup-root when missing. InvalidArgument when it cannot be
// made or lies in the data dir (RocksDB owns that folder).
absl::Status PrepareBackupRoot(const ServerOptions& options) {
  if (options.backup_root.empty()) return absl::OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(options.backup_root, ec);
  if (ec || !std::filesystem::is_directory(options.backup_root)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create --backup-root ",
                                                   options.backup_root, ": ",
                                                   ec ? ec.message() : "not a directory"));
  }
  const std::filesystem::path root = std::filesystem::weakly_canonical(options.backup_root, ec);
  const std::filesystem::path data = std::filesystem::weakly_canonical(options.data_dir, ec);
  const bool inside_data =
      std::mismatch(data.begin(), data.end(), root.begin(), root.end()).first == data.end();
  if (options.store == StoreKind::kRocksDb && inside_data) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backup-root ", options.backup_root, " is inside --data-dir ", options.data_dir,
        ", which the store owns; pick a folder next to it (same filesystem, e.g. ",
        (data.parent_path() / "backups").string(), ")"));
  }
  spdlog::info("backups: into {} (reprodctl admin backup)", options.backup_root);
  return absl::OkStatus();
}

}  // namespace

struct ReprodServer::Impl {
  std::unique_ptr<metrics::ServerMetrics> metrics;  // first made, last gone
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<auth::TokenStore> tokens;  // the gate's and review_ops.h's
  std::unique_ptr<auth::AuditLog> audit;     // always on
  std::unique_ptr<QuotaLedger> quota;        // before the services go
  std::unique_ptr<AuthGate> auth;  // --auth tokens; before the services go
  std::unique_ptr<kernels::Backend> backend;
  // Takes distributed compare batches (a store shared by replicas only).
  std::unique_ptr<CompareWorker> compare_worker;
  RunEvents events;
  std::unique_ptr<RunServiceImpl> runs;
  std::unique_ptr<IngestServiceImpl> ingest;
  std::unique_ptr<SharedMemoryServiceImpl> shm;
  std::unique_ptr<CompareServiceImpl> compare;
  std::unique_ptr<ReportServiceImpl> reports;
  std::unique_ptr<TokenServiceImpl> token_service;
  std::unique_ptr<AuditServiceImpl> audit_service;
  std::unique_ptr<AdminServiceImpl> admin_service;
  ServiceEnv env;  // what the services got, for the web UI (env())
  std::unique_ptr<grpc::Server> server;
  absl::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
};

absl::StatusOr<std::unique_ptr<ReprodServer>> ReprodServer::Start(
    const ServerOptions& options) {
  REPROD_ASSIGN_OR_RETURN(auto host_port, SplitHostPort(options.listen));
  REPROD_ASSIGN_OR_RETURN(bool loopback, IsLoopbackAddress(options.listen));
  const bool tokens = options.auth == AuthMode::kTokens;
  if (!loopback && !tokens && !options.insecure) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to listen on non-loopback address ", options.listen,
        " without authentication; pass --auth tokens (every call needs a token "
        "from `reprodd token create`), or --insecure to accept anyone who can "
        "reach it, or listen on 127.0.0.1",
        options.tls_cert_file.empty() ? ""
                                      : " (TLS does not lift this rule: it encrypts the traffic, "
                                        "tokens decide who may call)"));
  }
  REPROD_ASSIGN_OR_RETURN(
      const tls::TlsPem tls_pem,
      tls::LoadServerTls(options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file));
  if (!loopback && !tokens) {
    spdlog::warn("listening on {} with --insecure: anyone who can reach it "
                 "can read and write every run",
                 options.listen);
  }

  REPROD_RETURN_IF_ERROR(PrepareBackupRoot(options));
  auto impl = std::make_unique<Impl>();
  if (options.store == StoreKind::kMemory) {
    impl->store = storage::CreateMemoryStore();
    spdlog::info("store: memory (nothing survives a restart)");
  } else if (options.store == StoreKind::kPostgresS3) {
    REPROD_ASSIGN_OR_RETURN(impl->store, storage::OpenPostgresS3Store(options.postgres_s3));
    spdlog::info("store: postgres+s3 (schema {}, bucket {} at {})", options.postgres_s3.pg_schema,
                 options.postgres_s3.s3.bucket, options.postgres_s3.s3.endpoint);
  } else {
    storage::RocksDbStoreOptions store_options;
    store_options.min_free_bytes = options.min_free_bytes;
    store_options.segment_tensor_bytes = options.segment_tensor_bytes;
    REPROD_ASSIGN_OR_RETURN(impl->store,
                            storage::OpenRocksDbStore(options.data_dir, store_options));
    spdlog::info("store: rocksdb in {}", options.data_dir);
  }
  REPROD_ASSIGN_OR_RETURN(
      impl->backend,
      kernels::CreateBackend(options.backend, options.backend_threads,
                             static_cast<size_t>(options.gpu_cache_bytes)));
  spdlog::info("backend: {}", impl->backend->name());
  impl->compare_worker = CompareWorker::Start(*impl->store, *impl->backend);
  if (impl->compare_worker != nullptr) {
    spdlog::info("compare worker: takes distributed compare batches of the shared store");
  }

  impl->tokens = std::make_unique<auth::TokenStore>(*impl->store);
  REPROD_ASSIGN_OR_RETURN(impl->audit, auth::AuditLog::Open(*impl->store));
  if (!options.admin_token_file.empty()) {
    REPROD_RETURN_IF_ERROR(EnsureAdminTokenFile(options.admin_token_file, *impl->store,
                                                *impl->tokens, absl::Now()));
  }

  REPROD_ASSIGN_OR_RETURN(
      impl->quota,
      QuotaLedger::Create(*impl->store, {.quota_bytes = options.limits.quota_bytes,
                                         .namespace_quota_bytes =
                                             options.limits.namespace_quota_bytes}));
  spdlog::info("quotas: {} bytes stored", impl->quota->Total().stored);
  impl->metrics = MakeMetrics(*impl->quota, *impl->backend);

  ServiceEnv env;
  env.metrics = impl->metrics.get();
  env.store = impl->store.get();
  env.quota = impl->quota.get();
  env.tokens = impl->tokens.get();
  env.audit = impl->audit.get();
  env.backend = impl->backend.get();
  env.events = &impl->events;
  env.limits = options.limits;
  env.backup_root = options.backup_root;
  if (tokens) {
    impl->auth = std::make_unique<AuthGate>(*impl->store, *impl->tokens, impl->audit.get());
    impl->auth->set_metrics(impl->metrics.get());
    env.auth = impl->auth.get();
    spdlog::info("auth: tokens (every call needs 'authorization: Bearer <token>'; "
                 "docs/acl.md)");
  } else {
    spdlog::info("auth: none (every caller may do everything; --auth tokens to check tokens)");
  }
  impl->env = env;
  impl->runs = std::make_unique<RunServiceImpl>(env);
  impl->ingest = std::make_unique<IngestServiceImpl>(env);
  impl->shm = std::make_unique<SharedMemoryServiceImpl>(env, options.allow_shm);
  if (options.allow_shm) {
    spdlog::info("shared memory: on (--allow-shm: same-host clients may ingest from POSIX "
                 "shared-memory regions they registered; docs/shared-memory.md)");
  }
  impl->compare = std::make_unique<CompareServiceImpl>(env);
  impl->reports = std::make_unique<ReportServiceImpl>(env);
  impl->token_service = std::make_unique<TokenServiceImpl>(env);
  impl->audit_service = std::make_unique<AuditServiceImpl>(env);
  impl->admin_service = std::make_unique<AdminServiceImpl>(env);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, ListenerCredentials(options, tls_pem), &port);
  // Chunks are at most max_chunk_bytes; leave room for the envelope, and
  // never go below gRPC's 4 MiB default.
  const uint64_t max_receive =
      std::max<uint64_t>(4u << 20, options.limits.max_chunk_bytes + (64u << 10));
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<uint64_t>(max_receive, std::numeric_limits<int>::max())));
  builder.SetMaxSendMessageSize(std::numeric_limits<int>::max());
  // Keepalive: ping an idle connection every 60 s and drop it when the ping
  // goes unanswered for 20 s (a vanished client frees its streams); accept
  // client pings every 10 s or slower, also without calls.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  // Flow control bounds what a client can push before the server reads:
  // a stream's window stays at 64 KiB unless a read is outstanding (then
  // it opens for that one message). With BDP probing on, gRPC grows the
  // windows to megabytes per stream and 200 parked streams held 1.1 GB of
  // unread bytes; gRPC's memory quota instead fails streams with INTERNAL.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  builder.RegisterService(impl->runs.get());
  builder.RegisterService(impl->ingest.get());
  builder.RegisterService(impl->shm.get());
  builder.RegisterService(impl->compare.get());
  builder.RegisterService(impl->reports.get());
  builder.RegisterService(impl->token_service.get());
  builder.RegisterService(impl->audit_service.get());
  builder.RegisterService(impl->admin_service.get());
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        " (address in use or not local?); pick another with --listen"));
  }
  if (auto* health = impl->server->GetHealthCheckService()) {
    health->SetServingStatus(true);
  }
  return std::unique_ptr<ReprodServer>(
      new ReprodServer(std::move(impl), port, host_port.first));
}

ReprodServer::ReprodServer(std::unique_ptr<Impl> impl, int port,
                           std::string host)
    : impl_(std::move(impl)), port_(port), host_(std::move(host)) {}

ReprodServer::~ReprodServer() {
  Shutdown(absl::Seconds(5));
  Wait();
  // Impl's member order destroys the gRPC server, then the services (they
  // point into the store), then the store.
}

const ServiceEnv& ReprodServer::env() const { return impl_->env; }

std::string ReprodServer::address() const {
  if (host_.find(':') != std::string::npos) {
    return absl::StrCat("[", host_, "]:", port_);
  }
  return absl::StrCat(host_, ":", port_);
}

void ReprodServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&impl_->mu);
    if (impl_->shut_down) return;
    impl_->shut_down = true;
  }
  spdlog::info("shutting down: no new calls; finishing tensors in flight");
  spdlog::info(
      "ingest buffer: at most {} bytes held or reserved at once (--ingest-buffer-bytes {})",
      impl_->ingest->budget_peak_bytes(), impl_->env.limits.ingest_buffer_bytes);
  if (auto* health = impl_->server->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
  // Ingest streams stop after their current tensor is acked, watchers end;
  // compares run to completion. Wait for them (up to `grace`), then shut
  // gRPC down at once: with a deadline it would also wait for idle client
  // connections to go away.
  impl_->events.Shutdown();
  const absl::Time deadline = absl::Now() + grace;
  while (impl_->events.active_calls() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (const int left = impl_->events.active_calls(); left > 0) {
    spdlog::warn("cancelling {} calls still running after {}", left,
                 absl::FormatDuration(grace));
  }
  impl_->server->Shutdown(std::chrono::system_clock::now());
}

void ReprodServer::Wait() { impl_->server->Wait(); }

}  // namespace reprod::server

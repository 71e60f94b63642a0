// File: server/server.h
//
// ReprodServer: owns the store, the backend, the event hub and the gRPC
// server with every reprod.v1 service, standard health checking and server
// reflection (so `grpcurl -plaintext HOST:PORT list` works).
//
//   ServerOptions options;                 // listen 127.0.0.1:50051, rocksdb
//   options.data_dir = "/var/lib/reprod";
//   absl::StatusOr<std::unique_ptr<ReprodServer>> server =
//       ReprodServer::Start(options);
//   (*server)->port();                     // the bound port (listen :0 too)
//   (*server)->Shutdown(absl::Seconds(10));  // from a signal thread
//   (*server)->Wait();
//
// Security default (docs/design.md §Security defaults): listening on anything but
// a loopback address needs `auth == AuthMode::kTokens` (every call checked
// against server/auth's table by auth_gate.h) or `insecure`; TLS alone does
// not change that (it encrypts, but authorizes no call per user).
//
// Thread-safety: Shutdown may be called from any thread, once or more.
#ifndef REPROD_SERVER_SERVER_H_
#define REPROD_SERVER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "server/service_env.h"
#include "storage/postgres_s3/postgres_s3_store.h"

namespace reprod::server {

// `--store`: the embedded RocksDB (default), memory (tests), or PostgreSQL +
// S3 object storage shared by any number of replicas
// (storage/postgres_s3/postgres_s3_store.h).
enum class StoreKind { kRocksDb, kMemory, kPostgresS3 };

// `--auth`: kNone (default) admits every call; kTokens makes every call
// carry a bearer token checked against server/auth's table (auth_gate.h).
enum class AuthMode { kNone, kTokens };

struct ServerOptions {
  // HOST:PORT; port 0 picks a free one (see ReprodServer::port()).
  std::string listen = "127.0.0.1:50051";
  bool insecure = false;  // allow non-loopback addresses without tokens
  AuthMode auth = AuthMode::kNone;
  // TLS (PEM files, common/tls.h): certificate chain and key both or neither
  // (plaintext); with client_ca_file, mutual TLS: clients must present a
  // certificate signed by it.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // `--admin-token-file`: bootstrap an admin token (admin_token_file.h);
  // empty = none.
  std::string admin_token_file;
  StoreKind store = StoreKind::kRocksDb;
  std::string data_dir = "reprod-data";
  // kPostgresS3: where and how (credentials filled in already).
  storage::PostgresS3StoreOptions postgres_s3 = {};
  // `--backup-root`: folder for `reprodctl admin backup` (created when
  // missing); empty = backups off. On the data dir's filesystem, backups
  // hard-link the store's files and take no extra space at first.
  std::string backup_root;
  // `--min-free-bytes`: ingest refuses a tensor (RESOURCE_EXHAUSTED naming
  // free and needed bytes) that would leave less free on the data dir's
  // filesystem (storage::RocksDbStoreOptions::min_free_bytes); 0: no check.
  uint64_t min_free_bytes = uint64_t{256} << 20;
  // `--segment-tensor-bytes`: tensors this large go to segment files
  // (storage::RocksDbStoreOptions::segment_tensor_bytes); 0: none do.
  uint64_t segment_tensor_bytes = uint64_t{1} << 20;
  // `--allow-shm`: serve SharedMemoryService (same-host ingest through
  // POSIX shared memory, shm_service.h); off: its calls end
  // FAILED_PRECONDITION naming the flag.
  bool allow_shm = false;
  kernels::BackendKind backend = kernels::BackendKind::kAuto;
  int backend_threads = 0;  // 0 = all cores
  // Device memory for resident refs (the cuda backend's cache of reference
  // runs and recent compares' ref sides; kernels::CudaBackendOptions::
  // resident_bytes). 0 = off.
  uint64_t gpu_cache_bytes = 0;
  ServerLimits limits;
};

// True when the host of HOST:PORT (IPv6 in brackets) resolves
// (getaddrinfo: numeric addresses, /etc/hosts, DNS) and every address it
// resolves to is loopback: 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. Decided
// by address, never by spelling: "localhost" is loopback where it resolves
// so, "127.attacker.example" is not unless it resolves only to loopback, an
// empty host or one that does not resolve is not. InvalidArgument when
// `listen` is not HOST:PORT. The gRPC and the web server both ask this.
// Thread-safety: safe from any thread (may block on name resolution).
absl::StatusOr<bool> IsLoopbackAddress(const std::string& listen);

class ReprodServer {
 public:
  // Reads the TLS files, opens the store, creates the backend, starts
  // listening. Errors: InvalidArgument (bad address, non-loopback without
  // tokens or insecure, a TLS file unreadable or invalid, naming it),
  // a --backup-root that cannot be made or lies in the data dir),
  // Unavailable (port in use), the store's errors (FailedPrecondition for a
  // data dir that is in use or of a newer format, ...).
  static absl::StatusOr<std::unique_ptr<ReprodServer>> Start(
      const ServerOptions& options);

  ~ReprodServer();

  int port() const { return port_; }
  std::string address() const;  // host:bound-port
  // The store, backend, tokens and audit log the services use (for the web
  // UI, server/web/web_server.h); valid until the server is destroyed.
  const ServiceEnv& env() const;

  // Stops accepting calls, wakes watchers (they end UNAVAILABLE), lets
  // in-flight ingest finish its current tensor and ack it, cancels what is
  // still running after `grace`. Closes the store in the destructor.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown completes.
  void Wait();

 private:
  struct Impl;
  explicit ReprodServer(std::unique_ptr<Impl> impl, int port, std::string host);

  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::string host_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_SERVER_H_

// reprodd: the reprod server. Stores runs streamed by training scripts,
// compares them on the GPU (CPU without one) and serves reports over gRPC.
// See `reprodd --help`.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/malloc_tuning.h"
#include "server/auth/token_command.h"
#include "server/restore_command.h"
#include "server/server.h"
#include "server/web/web_server.h"
#include "storage/postgres_s3/credentials.h"
#include "spdlog/spdlog.h"

namespace {

constexpr char kDescription[] = R"(reprodd: the reprod alignment-verification server.

Training scripts stream tensors to it (reprodctl push, the Python client);
it stores every run (RocksDB in --data-dir), compares runs on the GPU when
there is one (all CPU cores otherwise) and keeps the reports.

Examples:
  reprodd                                   # 127.0.0.1:50051, ./reprod-data
  reprodd --data-dir /var/lib/reprod --listen 127.0.0.1:7000
  reprodd --listen 127.0.0.1:0 --port-file /tmp/reprodd.port   # free port
  reprodd --tls-cert server.pem --tls-key server.key            # TLS
  reprodd --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem
                                            # mutual TLS: clients need a cert
  REPROD_DATA_DIR=/srv/reprod reprodd --log-level debug

Then: reprodctl push forward_paddle.npy --run team42/bert-paddle
      reprodctl compare team42/bert-torch team42/bert-paddle

TLS: --tls-cert and --tls-key (PEM) encrypt the gRPC listener; clients then
need --tls-ca (reprodctl) or tls_ca= (Python) naming the CA that signed the
certificate. --tls-client-ca adds mutual TLS: only clients presenting a
certificate signed by that CA get in. (Their variables are
REPROD_LISTEN_TLS_*: reprodctl's REPROD_TLS_* name its own.)

Auth: --auth tokens makes every call carry 'authorization: Bearer <token>'
(reprodctl --token, REPROD_TOKEN) checked against docs/acl.md; tokens come
from `reprodd token create --role ROLE --label L [--scope NS] --data-dir DIR`
while the server is stopped, or start with --admin-token-file FILE (FILE
missing: an admin token is created and written there, mode 0600; FILE
present: its token is registered as admin) and issue the others over the
wire: `reprodctl --token $(cat FILE) token create --role judge --label J`.
Every change (create, push, seal, abort, delete, publish, sign, tokens) is
appended to a hash-chained audit log: `reprodctl audit ls`, `audit verify`.
A non-loopback --listen needs --auth tokens (or --insecure, which lets
anyone who can reach it do everything).

Web UI: --http-listen (default 127.0.0.1:8080; 'off' disables it; port 0
picks one, written to --http-port-file or to PORT_FILE.http next to
--port-file) serves the runs, compare form, reports (with downloads and
signatures), publishing, tokens and the audit log, checked against the same
table; with --auth tokens log in at /login with a token. It uses the same
--tls-* files (HTTPS; mutual TLS with --tls-client-ca) and the same
non-loopback rule.

Shared memory: --allow-shm lets clients on this host (the same user) hand
over tensors through POSIX shared-memory regions they created and registered
on their own session instead of sending the bytes (the Python client's
open_run(..., shm=True)); off by default. docs/shared-memory.md.

Scale-out: --store postgres+s3 keeps runs, the tensor index, reports and
tokens in PostgreSQL and tensor bytes as objects in an S3-compatible store,
so any number of reprodd replicas can serve the same data:
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... PGPASSWORD=... \
  reprodd --store postgres+s3 --pg-url postgresql://reprod@db:5432/reprod \
          --s3-endpoint http://s3:7480 --s3-bucket reprod
Secrets never go on the command line: the PostgreSQL password comes from
PGPASSWORD, ~/.pgpass or --pg-password-file; S3 keys from AWS_ACCESS_KEY_ID
/ AWS_SECRET_ACCESS_KEY or --s3-credentials-file (AWS credentials format).
deploy/README.md says when to move there from the embedded store.

Backups: --backup-root DIR lets admins write consistent copies of the
store while it serves (`reprodctl admin backup NAME`, into DIR/NAME);
`reprodd restore DIR/NAME --data-dir NEW` makes a data dir from one.
`reprodctl admin compact` gives back the space of deleted runs.

Exit codes: 0 stopped cleanly; 2 bad flags or a data dir it cannot use
(in use by another process, written by a newer reprodd: the message names
both format versions); 1 anything else (port taken, I/O errors).

Every option can also be set by the environment variable named in [env].
SIGTERM or Ctrl-C stop it cleanly: no new calls, tensors in flight are
finished and acknowledged, the database is closed.)";

// Writes the bound port to `path` atomically (tmp + rename), so a waiting
// script never reads a half-written file.
bool WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

// reprodd's command line (see AddFlags).
struct Flags {
  reprod::server::ServerOptions options;
  std::string auth = "none";
  std::string store = "rocksdb";
  std::string backend = "auto";
  std::string log_level = "info";
  std::string log_format = "text";
  std::string port_file;
  std::string http_listen = "127.0.0.1:8080";
  std::string http_port_file;
  double shutdown_grace_s = 10;
  double stream_idle_timeout_s = 60;
  // --store postgres+s3
  std::string pg_password_file;
  std::string s3_credentials_file;
  std::string s3_payload_signing = "auto";
};

void AddFlags(CLI::App& app, Flags& f) {
  app.add_option("--listen", f.options.listen,
                 "HOST:PORT to listen on (port 0 = any free port)")
      ->envname("REPROD_LISTEN")
      ->capture_default_str();
  app.add_flag("--insecure", f.options.insecure,
               "Allow a non-loopback --listen address without tokens")
      ->envname("REPROD_INSECURE");
  app.add_flag("--allow-shm", f.options.allow_shm,
               "Accept same-host ingest from POSIX shared-memory regions the client "
               "registered (SharedMemoryService; docs/shared-memory.md); off: refused")
      ->envname("REPROD_ALLOW_SHM");
  app.add_option("--auth", f.auth,
                 "none (anyone may call anything) or tokens (every call needs a "
                 "bearer token; see `reprodd token --help`)")
      ->check(CLI::IsMember({"none", "tokens"}))
      ->envname("REPROD_AUTH")
      ->capture_default_str();
  app.add_option("--admin-token-file", f.options.admin_token_file,
                 "Bootstrap an admin token: if FILE exists, register the token in it "
                 "as admin; else create one and write it to FILE (mode 0600)")
      ->envname("REPROD_ADMIN_TOKEN_FILE");
  app.add_option("--tls-cert", f.options.tls_cert_file,
                 "TLS: PEM certificate chain of the listener (with --tls-key)")
      ->envname("REPROD_LISTEN_TLS_CERT");
  app.add_option("--tls-key", f.options.tls_key_file,
                 "TLS: PEM private key of --tls-cert (unencrypted; keep it 0600)")
      ->envname("REPROD_LISTEN_TLS_KEY");
  app.add_option("--tls-client-ca", f.options.tls_client_ca_file,
                 "Mutual TLS: PEM CA certificate(s); clients must present a "
                 "certificate signed by one (needs --tls-cert/--tls-key)")
      ->envname("REPROD_LISTEN_TLS_CLIENT_CA");
  app.add_option("--data-dir", f.options.data_dir,
                 "Directory of the embedded RocksDB store (created if missing)")
      ->envname("REPROD_DATA_DIR")
      ->capture_default_str();
  app.add_option("--backup-root", f.options.backup_root,
                 "Folder for `reprodctl admin backup NAME` (created if missing; put it on "
                 "--data-dir's filesystem, next to it, so backups hard-link files); unset = "
                 "backups off")
      ->envname("REPROD_BACKUP_ROOT");
  app.add_option("--store", f.store,
                 "rocksdb (durable, default), memory (tests; lost on exit) or "
                 "postgres+s3 (PostgreSQL + S3 objects, shared by replicas; --pg-*, --s3-*)")
      ->check(CLI::IsMember({"rocksdb", "memory", "postgres+s3"}))
      ->envname("REPROD_STORE")
      ->capture_default_str();
  reprod::storage::PostgresS3StoreOptions& pg = f.options.postgres_s3;
  app.add_option("--pg-url", pg.pg_url,
                 "postgres+s3: PostgreSQL URL or connection string, without the password "
                 "(postgresql://reprod@db:5432/reprod)")
      ->envname("REPROD_PG_URL");
  app.add_option("--pg-schema", pg.pg_schema,
                 "postgres+s3: schema of reprod's tables (created, migrated at start)")
      ->envname("REPROD_PG_SCHEMA")
      ->capture_default_str();
  app.add_option("--pg-password-file", f.pg_password_file,
                 "postgres+s3: file whose first line is the PostgreSQL password "
                 "(else PGPASSWORD or ~/.pgpass)")
      ->envname("REPROD_PG_PASSWORD_FILE");
  app.add_option("--pg-connections", pg.pg_connections,
                 "postgres+s3: PostgreSQL connections per replica")
      ->check(CLI::Range(2, 1000))
      ->envname("REPROD_PG_CONNECTIONS")
      ->capture_default_str();
  app.add_option("--s3-endpoint", pg.s3.endpoint,
                 "postgres+s3: S3 endpoint, http(s)://host[:port] (path-style requests)")
      ->envname("REPROD_S3_ENDPOINT");
  app.add_option("--s3-bucket", pg.s3.bucket,
                 "postgres+s3: bucket of the tensor objects (created when missing)")
      ->envname("REPROD_S3_BUCKET");
  app.add_option("--s3-region", pg.s3.region, "postgres+s3: SigV4 signing region")
      ->envname("REPROD_S3_REGION")
      ->capture_default_str();
  app.add_option("--s3-prefix", pg.s3_prefix,
                 "postgres+s3: prefix of every object key (empty or ending in '/')")
      ->envname("REPROD_S3_PREFIX");
  app.add_option("--s3-part-size", pg.part_size,
                 "postgres+s3: tensors larger than this go up as multipart uploads of parts "
                 "this size (bytes, 5 MiB to 5 GiB; smaller parts start the upload sooner "
                 "and leave less to send at the commit, larger ones make fewer requests)")
      ->check(CLI::Range(uint64_t{5} << 20, uint64_t{5} << 30))
      ->envname("REPROD_S3_PART_SIZE")
      ->capture_default_str();
  app.add_option("--s3-ca-file", pg.s3.ca_file,
                 "postgres+s3: PEM file of the CA certificate(s) that signed an https "
                 "endpoint's certificate (a private CA); default: the system's CA store")
      ->check(CLI::ExistingFile)
      ->envname("REPROD_S3_CA_FILE");
  app.add_option("--s3-payload-signing", f.s3_payload_signing,
                 "postgres+s3: auto (default): every payload's SHA-256 is signed over http, "
                 "none over https, where TLS protects the bytes (as the AWS SDKs do; it saves "
                 "hashing every byte); always: signed over https too")
      ->check(CLI::IsMember(reprod::storage::kPayloadSigningNames))
      ->envname("REPROD_S3_PAYLOAD_SIGNING")
      ->capture_default_str();
  app.add_option("--s3-credentials-file", f.s3_credentials_file,
                 "postgres+s3: AWS shared-credentials file ([default] aws_access_key_id, "
                 "aws_secret_access_key); else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
      ->envname("REPROD_S3_CREDENTIALS_FILE");
  app.add_option("--backend", f.backend,
                 "Diff backend: cpu, cuda, or auto (cpu without a CUDA device; with one, "
                 "transposed pairs on cuda and element-wise pairs on whichever a start-up "
                 "measurement found faster)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->envname("REPROD_BACKEND")
      ->capture_default_str();
  app.add_option("--threads", f.options.backend_threads,
                 "CPU backend threads (0 = all cores)")
      ->check(CLI::NonNegativeNumber)
      ->envname("REPROD_THREADS")
      ->capture_default_str();
  app.add_option("--gpu-cache-bytes", f.options.gpu_cache_bytes,
                 "Device memory that keeps compared refs on the GPU (cuda or auto with a "
                 "device): the ref side of recent compares and, evicted last, runs published "
                 "as references; a compare whose ref is resident uploads only the candidate. "
                 "0 = off")
      ->envname("REPROD_GPU_CACHE_BYTES")
      ->capture_default_str();
  app.add_option("--max-chunk-bytes", f.options.limits.max_chunk_bytes,
                 "Largest tensor chunk accepted, bytes")
      ->check(CLI::Range(uint64_t{1024}, uint64_t{64} << 20))
      ->envname("REPROD_MAX_CHUNK_BYTES")
      ->capture_default_str();
  app.add_option("--max-tensor-bytes", f.options.limits.max_tensor_bytes,
                 "Largest tensor accepted, bytes")
      ->check(CLI::PositiveNumber)
      ->envname("REPROD_MAX_TENSOR_BYTES")
      ->capture_default_str();
  app.add_option("--min-free-bytes", f.options.min_free_bytes,
                 "Refuse tensors (RESOURCE_EXHAUSTED) that would leave less than this "
                 "many bytes free on --data-dir's filesystem; 0 = no check")
      ->envname("REPROD_MIN_FREE_BYTES")
      ->capture_default_str();
  app.add_option("--segment-tensor-bytes", f.options.segment_tensor_bytes,
                 "Tensors of at least this many bytes are written to a segment file of their own "
                 "in --data-dir/segments (once to disk, checksummed once, fdatasync'd before "
                 "their ack) instead of into RocksDB; 0 = every tensor goes into RocksDB")
      ->envname("REPROD_SEGMENT_TENSOR_BYTES")
      ->capture_default_str();
  app.add_option("--quota-bytes", f.options.limits.quota_bytes,
                 "Stored tensor bytes allowed in all runs together; 0 = no limit")
      ->envname("REPROD_QUOTA_BYTES")
      ->capture_default_str();
  app.add_option("--namespace-quota-bytes", f.options.limits.namespace_quota_bytes,
                 "Stored tensor bytes allowed per namespace (run name before '/'), unless the "
                 "pushing submitter token has its own (token create --quota-bytes); 0 = no limit")
      ->envname("REPROD_NAMESPACE_QUOTA_BYTES")
      ->capture_default_str();
  app.add_option("--stream-idle-timeout", f.stream_idle_timeout_s,
                 "Seconds an ingest stream may send nothing while the server waits for it "
                 "before it is cancelled; 0 = never")
      ->check(CLI::NonNegativeNumber)
      ->envname("REPROD_STREAM_IDLE_TIMEOUT")
      ->capture_default_str();
  app.add_option("--max-streams", f.options.limits.max_streams,
                 "Ingest streams open at once; one more is refused (RESOURCE_EXHAUSTED); 0 = no cap")
      ->check(CLI::NonNegativeNumber)
      ->envname("REPROD_MAX_STREAMS")
      ->capture_default_str();
  app.add_option("--max-streams-per-token", f.options.limits.max_streams_per_token,
                 "With --auth tokens: ingest streams one token may hold open; 0 = no cap")
      ->check(CLI::NonNegativeNumber)
      ->envname("REPROD_MAX_STREAMS_PER_TOKEN")
      ->capture_default_str();
  app.add_option("--ingest-buffer-bytes", f.options.limits.ingest_buffer_bytes,
                 "Ingest message bytes held in memory by all streams together; streams wait "
                 "for their next message while the total is over it")
      ->check(CLI::PositiveNumber)
      ->envname("REPROD_INGEST_BUFFER_BYTES")
      ->capture_default_str();
  app.add_option("--port-file", f.port_file,
                 "Write the bound port to this file once listening")
      ->envname("REPROD_PORT_FILE");
  app.add_option("--http-listen", f.http_listen,
                 "HOST:PORT of the web UI (port 0 = any free port), or 'off'")
      ->envname("REPROD_HTTP_LISTEN")
      ->capture_default_str();
  app.add_option("--http-port-file", f.http_port_file,
                 "Write the web UI's bound port to this file (default: --port-file + "
                 "'.http' when --port-file is given)")
      ->envname("REPROD_HTTP_PORT_FILE");
  app.add_option("--shutdown-grace", f.shutdown_grace_s,
                 "Seconds in-flight calls get on SIGTERM before cancellation")
      ->check(CLI::NonNegativeNumber)
      ->envname("REPROD_SHUTDOWN_GRACE")
      ->capture_default_str();
  app.add_option("--log-level", f.log_level,
                 "trace, debug, info, warn, error, off")
      ->envname("REPROD_LOG_LEVEL")
      ->capture_default_str();
  app.add_option("--log-format", f.log_format,
                 "text, or json: one JSON object per line (time in UTC, level, msg)")
      ->envname("REPROD_LOG_FORMAT")
      ->capture_default_str();
  app.set_version_flag("--version", "reprodd 0.1.0");
}

// --store postgres+s3: the flags it needs, secrets from the environment or
// files. InvalidArgument naming the flag otherwise; a password given on the
// command line itself (argv is world-readable in `ps`) is refused.
absl::Status ApplyPostgresS3Choices(Flags& f, int argc, char** argv) {
  reprod::storage::PostgresS3StoreOptions& pg = f.options.postgres_s3;
  if (pg.pg_url.empty() || pg.s3.endpoint.empty() || pg.s3.bucket.empty()) {
    return absl::InvalidArgumentError(
        "--store postgres+s3 needs --pg-url, --s3-endpoint and --s3-bucket");
  }
  for (int i = 1; i < argc; ++i) {
    if (!std::string(argv[i]).starts_with("--pg-url")) continue;
    absl::StatusOr<bool> has_password = reprod::storage::ConninfoHasPassword(pg.pg_url);
    if (!has_password.ok()) return has_password.status();
    if (*has_password) {
      return absl::InvalidArgumentError(
          "--pg-url holds a password, which every user can read on the command line; "
          "remove it and use PGPASSWORD, ~/.pgpass or --pg-password-file");
    }
  }
  absl::StatusOr<std::string> url =
      reprod::storage::WithPasswordFromFile(pg.pg_url, f.pg_password_file);
  if (!url.ok()) return url.status();
  pg.pg_url = *url;
  pg.s3.payload_signing = reprod::storage::kPayloadSigningNames.at(f.s3_payload_signing);
  return reprod::storage::LoadS3Credentials(f.s3_credentials_file, pg.s3);
}

// The parsed choices into f.options.
void ApplyChoices(Flags& f) {
  f.options.limits.stream_idle_timeout = absl::Seconds(f.stream_idle_timeout_s);
  f.options.auth = f.auth == "tokens" ? reprod::server::AuthMode::kTokens
                                     : reprod::server::AuthMode::kNone;
  f.options.store = f.store == "memory"        ? reprod::server::StoreKind::kMemory
                    : f.store == "postgres+s3" ? reprod::server::StoreKind::kPostgresS3
                                               : reprod::server::StoreKind::kRocksDb;
  f.options.backend = f.backend == "cpu"    ? reprod::kernels::BackendKind::kCpu
                      : f.backend == "cuda" ? reprod::kernels::BackendKind::kCuda
                                            : reprod::kernels::BackendKind::kAuto;
}

// Starts the web UI on --http-listen (nullptr for 'off') and writes its port
// file. Errors name the flag; InvalidArgument for bad flags.
absl::StatusOr<std::unique_ptr<reprod::server::web::WebServer>> StartWeb(
    Flags& f, reprod::server::ReprodServer& server) {
  if (f.http_listen == "off") return nullptr;
  reprod::server::web::WebOptions web_options;
  web_options.listen = f.http_listen;
  web_options.auth = f.options.auth == reprod::server::AuthMode::kTokens;
  web_options.insecure = f.options.insecure;
  web_options.tls_cert_file = f.options.tls_cert_file;
  web_options.tls_key_file = f.options.tls_key_file;
  web_options.tls_client_ca_file = f.options.tls_client_ca_file;
  auto web = reprod::server::web::WebServer::Start(web_options, server.env());
  if (!web.ok()) return web.status();
  if (f.http_port_file.empty() && !f.port_file.empty()) f.http_port_file = f.port_file + ".http";
  if (!f.http_port_file.empty() && !WritePortFile(f.http_port_file, (*web)->port())) {
    return absl::InternalError(absl::StrCat("cannot write --http-port-file ", f.http_port_file,
                                            ": ", std::strerror(errno)));
  }
  return web;
}

}  // namespace

int main(int argc, char** argv) {
  // `reprodd token ...` manages tokens in the stopped server's data dir.
  if (argc > 1 && std::string(argv[1]) == "token") {
    return reprod::server::auth::RunTokenCommand(argc - 1, argv + 1,
                                                 std::cout, std::cerr);
  }
  // `reprodd restore BACKUP --data-dir DIR` makes a data dir from a backup.
  if (argc > 1 && std::string(argv[1]) == "restore") {
    return reprod::server::RunRestoreCommand(argc - 1, argv + 1, std::cout, std::cerr);
  }
  CLI::App app(kDescription, "reprodd");
  Flags f;
  AddFlags(app, f);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  absl::StatusOr<reprod::LogFormat> log_format = reprod::ParseLogFormat(f.log_format);
  if (!log_format.ok()) {
    std::fprintf(stderr, "reprodd: --log-format: %s\n",
                 std::string(log_format.status().message()).c_str());
    return 2;
  }
  if (auto s = reprod::InitLogging(f.log_level, *log_format); !s.ok()) {
    std::fprintf(stderr, "reprodd: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  ApplyChoices(f);
  if (f.options.store == reprod::server::StoreKind::kPostgresS3) {
    if (absl::Status s = ApplyPostgresS3Choices(f, argc, argv); !s.ok()) {
      std::fprintf(stderr, "reprodd: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  reprod::TuneMallocForStreaming();  // before any thread starts

  // Block SIGTERM/SIGINT in every thread (gRPC's included, so block before
  // starting it); one thread waits for them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = reprod::server::ReprodServer::Start(f.options);
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    // Bad flags, and a data dir this build cannot use as it stands (in use
    // by another process, a newer store format) are the operator's to fix.
    const absl::StatusCode code = server.status().code();
    return code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kFailedPrecondition
               ? 2
               : 1;
  }
  spdlog::info("reprodd listening on {} (health, reflection on)",
               (*server)->address());

  auto web = StartWeb(f, **server);
  if (!web.ok()) {
    spdlog::error("{}", std::string(web.status().message()));
    (*server)->Shutdown(absl::Seconds(0));
    return web.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }

  // The gRPC port file last: a script waiting for it finds the web UI's too.
  if (!f.port_file.empty() && !WritePortFile(f.port_file, (*server)->port())) {
    spdlog::error("cannot write --port-file {}: {}", f.port_file,
                  std::strerror(errno));
    return 1;
  }

  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    if (*web) (*web)->Stop();
    (*server)->Shutdown(absl::Seconds(f.shutdown_grace_s));
  });
  (*server)->Wait();
  signal_thread.join();
  web->reset();
  server->reset();  // closes the store
  spdlog::info("reprodd stopped cleanly");
  return 0;
}

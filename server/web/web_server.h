// File: server/web/web_server.h
//
// WebServer: reprodd's web UI and JSON API over HTTP(S) (cpp-httplib),
// beside the gRPC server and sharing its ServiceEnv (store, backend, tokens,
// audit log). Every request is routed by server/auth's table (router.h),
// checked at one gate (gate.h) and answered by a handler (handler.h).
//
//   WebOptions web;                               // 127.0.0.1:8080, plaintext
//   web.listen = "127.0.0.1:0";
//   web.auth = true;                              // --auth tokens
//   absl::StatusOr<std::unique_ptr<WebServer>> ui = WebServer::Start(web, server->env());
//   (*ui)->port();                                // the bound port
//   (*ui)->Stop();
//
// Security: the same rule as the gRPC listener (server.h): a non-loopback
// address needs auth or `insecure`. With tls_cert_file/tls_key_file the
// listener speaks only HTTPS (a plaintext request fails the handshake);
// with tls_client_ca_file only clients presenting a certificate signed by
// it get in (mutual TLS). Limits: request bodies over kMaxBodyBytes are 413,
// header lines over 8 KiB (cpp-httplib's limit) 400. Every response carries
// a Content-Security-Policy that allows no script and no outside fetch.
// The access log line (debug) names method, path and status, never a
// token, a cookie or a form field.
//
// Thread-safety: Start/Stop from one thread; requests are served by a pool.
#ifndef REPROD_SERVER_WEB_WEB_SERVER_H_
#define REPROD_SERVER_WEB_WEB_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/service_env.h"

namespace reprod::server::web {

inline constexpr size_t kMaxBodyBytes = 64 * 1024;

struct WebOptions {
  std::string listen = "127.0.0.1:8080";  // HOST:PORT; port 0 picks one
  bool auth = false;                      // --auth tokens
  bool insecure = false;                  // non-loopback without auth
  std::string tls_cert_file;              // PEM, with tls_key_file
  std::string tls_key_file;
  std::string tls_client_ca_file;  // mutual TLS
};

class WebServer {
 public:
  // Checks the address rule and the TLS files (common/tls.h, messages name
  // the flag and file), checks that every served route has a handler, binds
  // and starts serving on a thread of its own. InvalidArgument (bad
  // address, TLS file), Unavailable (cannot bind), Internal (route without
  // handler: a build error). `env` must outlive the WebServer.
  static absl::StatusOr<std::unique_ptr<WebServer>> Start(const WebOptions& options,
                                                          const ServiceEnv& env);
  ~WebServer();  // Stop()

  int port() const;
  // "http://127.0.0.1:8080" (https with TLS).
  std::string url() const;
  // Stops accepting, finishes requests in flight; idempotent.
  void Stop();

 private:
  struct Impl;
  explicit WebServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace reprod::server::web

#endif  // REPROD_SERVER_WEB_WEB_SERVER_H_

// reprodctl health: the reprod server's status from the standard gRPC health
// service, for container HEALTHCHECKs, probes and scripts.
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "client/cpp/remote_client.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"

namespace reprod::reprodctl {
namespace {

using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

constexpr char kHealthHelp[] = R"(Asks the reprod server (--server, REPROD_SERVER) whether it is serving,
through the standard gRPC health service (grpc.health.v1.Health/Check, public:
no token needed, but a TLS server needs --tls-ca). Prints SERVING, or
NOT_SERVING while the server shuts down (after SIGTERM, until calls in flight
finish).

Examples:
  reprodctl health
  reprodctl --server reprod.lan:50051 --tls-ca ca.pem health --timeout 2
  HEALTHCHECK CMD ["reprodctl", "health", "--timeout", "3"]   # Dockerfile

Exit codes: 0 serving, 1 not serving (or any status but SERVING), 2 bad
usage or TLS files, 3 server unreachable or no answer within --timeout.)";

struct HealthArgs {
  double timeout_seconds = 5;
};

const char* StatusName(ServingStatus status) {
  switch (status) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return "SERVING";
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return "NOT_SERVING";
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

int RunHealth(const HealthArgs& args, const GlobalOptions& global) {
  client::ConnectOptions options;
  // Both the connection and the call get the whole --timeout.
  options.connect_timeout = absl::Seconds(args.timeout_seconds);
  auto client = ConnectToServer(global, std::move(options));
  if (!client.ok()) return ReportRemoteError(client.status());
  absl::StatusOr<ServingStatus> status =
      (*client)->CheckHealth(absl::Seconds(args.timeout_seconds));
  if (!status.ok()) return ReportRemoteError(status.status());
  std::printf("%s\n", StatusName(*status));
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? kExitPass : kExitFail;
}

}  // namespace

Runner RegisterHealth(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<HealthArgs>();
  CLI::App* cmd = app.add_subcommand("health", "Is the reprod server serving? (gRPC health)");
  cmd->footer(kHealthHelp);
  cmd->add_option("--timeout", args->timeout_seconds,
                  "Seconds to wait for the connection and for the answer")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  return [args, &global] { return RunHealth(*args, global); };
}

}  // namespace reprod::reprodctl

#include "client/cpp/reprodctl/cli.h"

#include <grpc/support/log.h>

#include "common/logging.h"
#include "kernels/backend.h"
#include "spdlog/spdlog.h"

namespace reprod::reprodctl {
namespace {

constexpr char kDescription[] =
    R"(reprodctl: check that a ported model computes what the original does.

Compares the tensor dicts that a reference (usually PyTorch) and a port
(usually PaddlePaddle) dump at the same checkpoints: forward outputs,
metrics, losses, gradients, learning rates. Reads reprod_log .npy dicts and
the files of numpy, paddle.save, torch.save and safetensors (`reprodctl inspect
--help` lists the file types).

Offline, files are compared directly. With a reprod server (reprodd; choose it
with --server HOST:PORT or REPROD_SERVER, default 127.0.0.1:50051), tensor
files are pushed into named runs, and runs are compared, watched while they
train, and their reports kept.

A server started with --tls-cert/--tls-key needs --tls-ca CA.pem (the CA that
signed its certificate; REPROD_TLS_CA); one with --tls-client-ca (mutual TLS)
also --tls-cert and --tls-key, the client certificate (REPROD_TLS_CERT,
REPROD_TLS_KEY). A server started with --auth tokens needs a token:
REPROD_TOKEN (or --token TOKEN), sent as 'authorization: Bearer' metadata.

Examples:
  reprodctl compare forward_torch.npy forward_paddle.npy
  reprodctl compare bp_align_torch.npy bp_align_paddle.npy --threshold 1e-5 --method all
  reprodctl compare a.npz b.npz --preset allclose --format json --out report.json
  reprodctl review log_reprod/ --out-dir log_reprod/
  reprodctl inspect forward_paddle.npy
  reprodctl push forward_paddle.npy loss_paddle.npy --run bert/paddle
  reprodctl compare bert/torch bert/paddle --preset competition
  reprodctl watch bert/torch bert/paddle
  reprodctl runs ls
  reprodctl --server reprod.lan:50051 --tls-ca ca.pem runs ls
  reprodctl report get rpt-0123456789abcdef
  reprodctl health                      # exit 0 SERVING, 1 NOT_SERVING, 3 unreachable

On a review server (reprodd --auth tokens): judges publish references and
sign verdicts, admins manage tokens and read the audit log:
  reprodctl runs publish upstream/bert-torch
  reprodctl report sign rpt-0123456789abcdef
  reprodctl token create --role submitter --scope team42 --label "team42 CI"
  reprodctl audit ls --run team42/bert-paddle
  reprodctl audit verify

Exit codes: 0 all checks passed, 1 a check failed, 2 bad input or usage,
3 server unreachable.)";

// gRPC core writes connection failures (a failed TLS handshake, ...) to
// stderr by itself; the remote commands already report them as errors with a
// hint, so its lines go to the debug log (--log-level debug) instead.
void GrpcLogToSpdlog(gpr_log_func_args* args) {
  spdlog::debug("grpc: {}:{}: {}", args->file, args->line, args->message);
}

}  // namespace

Cli::Cli() : app_(kDescription, "reprodctl") {
  app_.require_subcommand(1);
  // Global options (--backend, --quiet, --log-level, --server, --tls-*) may also follow the
  // subcommand.
  app_.fallthrough();
  app_.add_flag("-q,--quiet", global_.quiet, "No progress messages on stderr");
  app_.add_option("--backend", global_.backend, "Diff backend: auto, cpu, cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->envname("REPROD_BACKEND")
      ->capture_default_str();
  app_.add_option("--log-level", global_.log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  app_.add_option("--server", global_.server, "reprod server HOST:PORT for the remote commands; replicas of one "
                  "server (reprodd --store postgres+s3) as HOST:PORT,HOST:PORT: the first "
                  "that answers, the next when it goes away")
      ->envname("REPROD_SERVER")
      ->capture_default_str();
  app_.add_option("--tls-ca", global_.tls_ca,
                  "TLS to the server: PEM CA certificate(s) that signed its certificate")
      ->envname("REPROD_TLS_CA");
  app_.add_option("--tls-cert", global_.tls_cert,
                  "Mutual TLS: PEM client certificate (with --tls-key)")
      ->envname("REPROD_TLS_CERT");
  app_.add_option("--tls-key", global_.tls_key, "Mutual TLS: PEM private key of --tls-cert")
      ->envname("REPROD_TLS_KEY");
  app_.add_option("--token", global_.token,
                  "Bearer token for a server with --auth tokens (prefer REPROD_TOKEN: "
                  "a command line is visible to other users)")
      ->envname("REPROD_TOKEN");
  app_.set_version_flag("--version",
                        std::string("reprodctl 0.1.0 (backends: cpu") +
                            (kernels::BuiltWithCuda() ? ", cuda)" : "; built without CUDA)"));
  using Register = Runner (*)(CLI::App&, const GlobalOptions&);
  const std::pair<const char*, Register> kCommands[] = {
      {"compare", RegisterCompare}, {"review", RegisterReview}, {"inspect", RegisterInspect},
      {"push", RegisterPush},       {"runs", RegisterRuns},     {"watch", RegisterWatch},
      {"report", RegisterReport},   {"health", RegisterHealth},
      {"suggest-mapping", RegisterSuggestMapping},
  };
  for (const auto& [name, reg] : kCommands) {
    Runner runner = reg(app_, global_);
    commands_.emplace_back(app_.get_subcommand(name), std::move(runner));
  }
  // `token` and `audit` share one runner.
  Runner admin = RegisterToken(app_, global_);
  commands_.emplace_back(app_.get_subcommand("token"), admin);
  commands_.emplace_back(app_.get_subcommand("audit"), admin);
  commands_.emplace_back(app_.get_subcommand("admin"), RegisterAdmin(app_, global_));
}

int Cli::Main(int argc, const char* const* argv) {
  try {
    app_.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app_.exit(e);
    return code == 0 ? kExitPass : kExitBadInput;
  }
  if (absl::Status s = InitLogging(global_.log_level); !s.ok()) return ReportError(s);
  gpr_set_log_function(GrpcLogToSpdlog);
  for (const auto& [cmd, runner] : commands_) {
    if (cmd->parsed()) return runner();
  }
  return kExitBadInput;
}

}  // namespace reprod::reprodctl

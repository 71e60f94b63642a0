// reprodctl: compare tensor dumps of a reference and a port, offline (files)
// and, later, against a reprod server. See `reprodctl --help`.
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "client/cpp/reprodctl/commands.h"
#include "common/logging.h"
#include "kernels/backend.h"

namespace {

constexpr char kDescription[] = R"(reprodctl: check that a ported model computes what the original does.

Compares the tensor dicts that a reference (usually PyTorch) and a port
(usually PaddlePaddle) dump at the same checkpoints: forward outputs,
metrics, losses, gradients, learning rates. Reads reprod_log .npy dicts,
.npy, .npz, .pdparams / paddle.save pickles and .safetensors files.

Examples:
  reprodctl compare forward_torch.npy forward_paddle.npy
  reprodctl compare bp_align_torch.npy bp_align_paddle.npy --threshold 1e-5 --method all
  reprodctl compare a.npz b.npz --preset allclose --format json --out report.json
  reprodctl review log_reprod/ --out-dir log_reprod/
  reprodctl inspect forward_paddle.npy

Exit codes: 0 all checks passed, 1 a check failed, 2 bad input or usage,
3 server unreachable.)";

}  // namespace

int main(int argc, char** argv) {
  using namespace reprod::reprodctl;
  CLI::App app(kDescription, "reprodctl");
  app.require_subcommand(1);
  // Global options (--backend, --quiet, --log-level) may also follow the subcommand.
  app.fallthrough();
  GlobalOptions global;
  app.add_flag("-q,--quiet", global.quiet, "No progress messages on stderr");
  app.add_option("--backend", global.backend, "Diff backend: auto, cpu, cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->envname("REPROD_BACKEND")
      ->capture_default_str();
  app.add_option("--log-level", global.log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  app.set_version_flag(
      "--version",
      std::string("reprodctl 0.1.0 (backends: cpu") +
          (reprod::kernels::BuiltWithCuda() ? ", cuda)" : "; built without CUDA)"));

  Runner compare = RegisterCompare(app, global);
  Runner review = RegisterReview(app, global);
  Runner inspect = RegisterInspect(app, global);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitPass : kExitBadInput;
  }
  if (auto s = reprod::InitLogging(global.log_level); !s.ok()) return ReportError(s);
  if (app.got_subcommand("compare")) return compare();
  if (app.got_subcommand("review")) return review();
  if (app.got_subcommand("inspect")) return inspect();
  return kExitBadInput;
}

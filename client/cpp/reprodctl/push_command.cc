// reprodctl push FILE... --run RUN: upload tensor files into a stored run.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cpp/file_runs.h"
#include "client/cpp/file_tensor_source.h"
#include "client/cpp/progress.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "client/cpp/wire_convert.h"
#include "common/names.h"
#include "common/placement.h"
#include "common/visible.h"
#include "formats/tensor_file.h"

namespace reprod::reprodctl {
namespace {

constexpr char kPushHelp[] = R"(Upload tensor files into a run on the reprod server.

Each file is one checkpoint, named after the file like the offline commands
do (forward_paddle.npy -> forward) unless --checkpoint names it; dict files
push every key (nested dicts flatten to a/b/c), a bare array has the key
"output". Reads every format compare reads (FILE above lists the file types).
The run is created when it does not exist
(--no-create refuses instead). Tensors stream in 1 MiB chunks with a crc32c
each; pushing the same files again is harmless (identical tensors are
acknowledged as already present), different bytes under a stored address are
refused unless the run was created with --overwrite. A server restart during
the push is survived: unacknowledged tensors are sent again.

Examples:
  reprodctl push forward_paddle.npy loss_paddle.npy bp_align_paddle.npy --run bert/paddle
  reprodctl push forward_torch.npy --run bert/torch --framework torch
  reprodctl push model.pdparams --run bert/paddle --checkpoint init_weights
  reprodctl push grads.npz --run bert/paddle --checkpoint bp_align --step 3
  reprodctl push grads_rank1.npz --run bert/paddle --checkpoint bp_align --rank 1
  reprodctl push *_paddle.npy --run bert/paddle --seal --server reprod.lab:50051

Exit codes: 0 pushed, 2 bad input (missing or unreadable file, bad name,
refused tensor, sealed run), 3 server unreachable.)";

struct PushArgs {
  std::vector<std::string> files;
  std::string run;
  std::string checkpoint;
  std::optional<int64_t> step;
  uint32_t rank = 0;
  bool create = true;
  bool overwrite = false;
  bool seal = false;
  std::string framework;
  formats::ReadOptions read;
};

// "paddle" / "torch" from a file name's framework suffix, else "".
std::string FrameworkFromFileName(const std::string& path) {
  const std::string stem = client::FileStem(path);
  for (const char* s : {"_paddle", "_pd"}) {
    if (absl::EndsWith(stem, s)) return "paddle";
  }
  for (const char* s : {"_torch", "_pytorch", "_pt"}) {
    if (absl::EndsWith(stem, s)) return "torch";
  }
  return "";
}

std::string ProgressMessage(const std::string& run, const client::PushProgress& p) {
  std::string msg = absl::StrCat("pushing to ", run, ": ", FormatBytes(p.bytes_sent), " sent");
  if (p.bytes_total > 0) {
    const double pct = 100.0 * static_cast<double>(std::min(p.bytes_sent, p.bytes_total)) /
                       static_cast<double>(p.bytes_total);
    absl::StrAppend(&msg, " of ", FormatBytes(p.bytes_total), absl::StrFormat(" (%.0f%%)", pct));
  }
  absl::StrAppend(&msg, ", ", p.tensors_acked, " tensors (", FormatBytes(p.bytes_acked),
                  ") stored");
  if (p.reconnects > 0) absl::StrAppend(&msg, ", ", p.reconnects, " reconnects");
  return msg;
}

// Makes sure the run exists and accepts tensors.
absl::Status PrepareRun(client::RemoteClient& client, const PushArgs& args) {
  absl::StatusOr<v1::Run> run;
  if (args.create) {
    v1::Run wanted;
    wanted.set_name(args.run);
    wanted.set_framework(args.framework.empty() ? FrameworkFromFileName(args.files.front())
                                                : args.framework);
    wanted.set_overwrite(args.overwrite);
    run = client.CreateRun(wanted, /*exist_ok=*/true);
  } else {
    run = client.GetRun(args.run);
    if (run.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat(std::string(run.status().message()),
                                              " (without --no-create, push creates it)"));
    }
  }
  if (!run.ok()) return run.status();
  if (run->state() != v1::RUN_STATE_OPEN) {
    return absl::FailedPreconditionError(
        absl::StrCat("run '", args.run, "' is ", std::string(client::RunStateName(run->state())),
                     " and accepts no more tensors; push to a new run"));
  }
  if (args.overwrite && !run->overwrite()) {
    std::fprintf(stderr,
                 "reprodctl: note: run '%s' already exists without overwrite; --overwrite "
                 "applies to new runs only\n",
                 VisibleText(args.run).c_str());
  }
  return absl::OkStatus();
}

int RunPush(const PushArgs& args, const GlobalOptions& global) {
  if (absl::Status s = ValidateRunName(args.run); !s.ok()) return ReportError(s);
  client::FileTensorSource::Options source_options;
  source_options.checkpoint = args.checkpoint;
  source_options.step = args.step;
  source_options.rank = args.rank;
  source_options.read = args.read;
  auto source = client::FileTensorSource::Open(args.files, source_options);
  if (!source.ok()) return ReportError(source.status());

  auto client = ConnectToServer(global);
  if (!client.ok()) return ReportRemoteError(client.status());
  if (absl::Status s = PrepareRun(**client, args); !s.ok()) return ReportRemoteError(s);

  const absl::Time start = absl::Now();
  absl::StatusOr<client::PushSummary> summary;
  {
    client::ProgressTicker progress(!global.quiet);
    progress.Set(absl::StrCat("pushing to ", args.run));
    client::PushOptions options;
    options.on_progress = [&progress, &args](const client::PushProgress& p) {
      progress.Set(ProgressMessage(args.run, p));
    };
    summary = (*client)->Push(args.run, **source, options);
  }
  for (const std::string& note : (*source)->notes()) {
    std::fprintf(stderr, "reprodctl: note: %s\n", VisibleText(note).c_str());
  }
  if (!summary.ok()) {
    absl::Status s = summary.status();
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      s = absl::AlreadyExistsError(absl::StrCat(
          std::string(s.message()),
          " (the run already holds different bytes there: push to a new run, or create the "
          "run with --overwrite)"));
    }
    return ReportRemoteError(s);
  }
  std::string line =
      absl::StrCat("pushed ", summary->tensors, summary->tensors == 1 ? " tensor (" : " tensors (",
                   FormatBytes(summary->bytes), ") from ", args.files.size(),
                   args.files.size() == 1 ? " file" : " files", " to ", args.run, ": ",
                   summary->stored, " stored, ", summary->already_present, " already present");
  if (summary->replaced > 0) absl::StrAppend(&line, ", ", summary->replaced, " replaced");
  if (summary->reconnects > 0) absl::StrAppend(&line, ", ", summary->reconnects, " reconnects");
  absl::StrAppend(&line, absl::StrFormat(" in %.1fs", absl::ToDoubleSeconds(absl::Now() - start)));
  if (args.seal) {
    absl::StatusOr<v1::Run> sealed = (*client)->SealRun(args.run, /*abort=*/false);
    if (!sealed.ok()) return ReportRemoteError(sealed.status());
    absl::StrAppend(&line, "; run sealed");
  }
  std::printf("%s\n", VisibleText(line).c_str());
  return kExitPass;
}

}  // namespace

Runner RegisterPush(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<PushArgs>();
  CLI::App* cmd = app.add_subcommand("push", "Upload tensor files into a run on the server");
  cmd->footer(kPushHelp);
  cmd->add_option("FILE", args->files,
                  absl::StrCat("Tensor files (", formats::TensorFileExtensionList(), ")"))
      ->required();
  cmd->add_option("--run", args->run, "Run to push into (namespace/name, e.g. bert/paddle)")
      ->required();
  cmd->add_option("--checkpoint", args->checkpoint,
                  "Checkpoint of every file (default: from each file name)");
  cmd->add_option("--step", args->step, "Training step of every tensor");
  cmd->add_option("--rank", args->rank,
                  "Rank (process of a distributed job, 0 to 1048575) that logged every tensor "
                  "(default 0)")
      ->check(CLI::Range(0u, kMaxRank));
  cmd->add_flag("--create,!--no-create", args->create,
                "Create the run when it does not exist (default; --no-create refuses)");
  cmd->add_option("--framework", args->framework,
                  "Framework recorded on a new run (default: from the file name, "
                  "_paddle -> paddle, _torch -> torch)");
  cmd->add_flag("--overwrite", args->overwrite,
                "Create the run with overwrite: different bytes replace stored tensors");
  cmd->add_flag("--seal", args->seal, "Seal the run after the push (no more tensors)");
  AddReadOptionFlags(*cmd, &args->read);
  return [args, &global] { return RunPush(*args, global); };
}

}  // namespace reprod::reprodctl

// reprodctl compare REF CAND: offline comparison of two tensor files, or of
// two stored runs on a reprod server (compare_remote.h).
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/file_runs.h"
#include "client/cpp/progress.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/compare_remote.h"
#include "client/cpp/reprodctl/policy_flags.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "core/compare.h"
#include "core/report.h"
#include "kernels/backend.h"

namespace reprod::reprodctl {
namespace {

constexpr char kCompareHelp[] = R"(Compare a reference with a candidate: two files offline, or two runs
stored on a reprod server.

REF is the reference (the first argument, as in reprod_log's
compare_info(torch_info, paddle_info)), CAND the port under test. Keys are
matched by name; nested dicts flatten to a/b/c. Every key is reported, and
the exit code says whether all checks passed.

When neither argument is an existing file and both are run names
("namespace/name"), or with --remote, the server at --server compares the two
runs (all their checkpoints, or those given with --checkpoint), stores the
report and sends it back; its id is printed on stderr (see `reprodctl report`).

Thresholds come from one of: --preset (default: reprod, mean abs diff <= 1e-6),
--policy FILE (YAML/JSON, see docs/design.md §Policies), --threshold/--method
(reprod_log's report(diff_method, diff_threshold)), or --atol/--rtol (numpy
allclose).

--format html writes one self-contained page (no script, nothing fetched):
verdict, acceptance checklist, first failure, failing tensors by how far past
their bound with |d| histograms, step-drift charts and a key x step heat map,
and every tensor ("differences only" toggle). Open it in any browser.

Examples:
  reprodctl compare forward_torch.npy forward_paddle.npy
  reprodctl compare loss_torch.npy loss_paddle.npy --threshold 1e-5 --method all
  reprodctl compare w_torch.safetensors w_paddle.pdparams --atol 1e-6 --rtol 1e-4
  reprodctl compare a.npz b.npz --policy policy.yaml --format json --out report.json
  reprodctl compare a.npz b.npz --format html --out report.html
  reprodctl compare bert/torch bert/paddle --preset competition
  reprodctl compare bert/torch bert/paddle --checkpoint forward --format junit --output r.xml

Exit codes: 0 passed, 1 a check failed, 2 bad input (missing file, unknown
run, bad policy), 3 server unreachable.)";

struct CompareArgs {
  std::string ref;
  std::string cand;
  PolicyFlags policy;
  std::string format = "text";
  std::string out;
  bool remote = false;
  std::vector<std::string> checkpoints;  // remote only
  formats::ReadOptions read;             // files only
};

void PrintFailures(const core::Report& report) {
  constexpr int kMaxShown = 20;
  int shown = 0, failing = 0;
  for (const core::TensorResult& t : report.tensors) {
    if (core::IsPassing(t.status)) continue;
    if (++failing > kMaxShown) continue;
    ++shown;
    std::fprintf(stderr, "reprodctl: FAIL %s\n",
                 VisibleText(absl::StrCat(t.checkpoint, "/", t.DisplayKey(), ": ",
                                          core::DescribeTensor(t)))
                     .c_str());
  }
  if (failing > shown) std::fprintf(stderr, "reprodctl: ... and %d more failing tensors (--format json lists all)\n", failing - shown);
}

int RunCompare(const CompareArgs& args, const GlobalOptions& global) {
  if (CompareTargetsAreRuns(args.ref, args.cand, args.remote)) {
    RemoteCompareArgs remote{args.ref, args.cand, args.policy, args.checkpoints, args.format,
                             args.out};
    return RunRemoteCompare(remote, global);
  }
  if (!args.checkpoints.empty()) {
    return ReportError(absl::InvalidArgumentError(
        "--checkpoint selects checkpoints of stored runs; a file pair is one checkpoint"));
  }
  auto policy = args.policy.Resolve();
  if (!policy.ok()) return ReportError(policy.status());
  auto format = core::ParseReportFormat(args.format);
  if (!format.ok()) return ReportError(format.status());
  auto backend = CreateBackendFromFlags(global);
  if (!backend.ok()) return ReportError(backend.status());

  client::ProgressTicker progress(!global.quiet);
  std::vector<std::string> notes;
  const std::string checkpoint = client::CheckpointNameFromPath(args.ref);
  core::RunData ref{args.ref, {}}, cand{args.cand, {}};
  for (auto [path, run] : {std::pair{&args.ref, &ref}, std::pair{&args.cand, &cand}}) {
    progress.Set(absl::StrCat("loading ", *path));
    auto data = client::LoadCheckpointFile(*path, checkpoint, &notes, args.read);
    if (!data.ok()) return ReportError(data.status());
    run->checkpoints.push_back(*std::move(data));
  }
  for (const std::string& note : notes) {
    std::fprintf(stderr, "reprodctl: note: %s\n", VisibleText(note).c_str());
  }

  progress.Set(absl::StrCat("comparing ", ref.checkpoints[0].tensors.size(), " tensors on ",
                            std::string((*backend)->name())));
  auto report = core::CompareRuns(ref, cand, *policy, **backend);
  if (!report.ok()) return ReportError(report.status());
  auto text = core::RenderReport(*report, *format);
  if (!text.ok()) return ReportError(text.status());
  if (auto s = WriteOutput(args.out, *text); !s.ok()) return ReportError(s);
  // reprod_log's text lines carry no locations; say where each failure is on
  // stderr, so stdout stays byte-compatible with reprod_log's log.
  if (*format == core::ReportFormat::kText && !global.quiet) PrintFailures(*report);
  return VerdictExitCode(
      report->passed, report->summary.tensors,
      absl::StrCat("neither ", args.ref, " nor ", args.cand,
                   " holds a tensor that could be read",
                   notes.empty() ? "" : " (skipped values are noted above)"));
}

}  // namespace

Runner RegisterCompare(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<CompareArgs>();
  CLI::App* cmd = app.add_subcommand(
      "compare", "Compare a reference with a candidate (two files, or two runs on the server)");
  cmd->footer(kCompareHelp);
  cmd->add_option("REF", args->ref, "Reference file (forward_torch.npy) or run (bert/torch)")
      ->required();
  cmd->add_option("CAND", args->cand, "Candidate file (forward_paddle.npy) or run (bert/paddle)")
      ->required();
  args->policy.Register(*cmd, "reprod");
  cmd->add_option("--format", args->format, "Report format: text, json, junit, markdown, html")
      ->capture_default_str();
  cmd->add_option("--out,--output", args->out, "Write the report to FILE instead of stdout");
  cmd->add_flag("--remote", args->remote,
                "REF and CAND are runs on the server (the default when they are not files)");
  cmd->add_option("--checkpoint", args->checkpoints,
                  "Runs only: compare only this checkpoint (repeatable)")
      ->allow_extra_args(false)
      ->delimiter(',');
  AddReadOptionFlags(*cmd, &args->read);
  return [args, &global] { return RunCompare(*args, global); };
}

}  // namespace reprod::reprodctl

// reprodctl watch RUN_REF RUN_CAND: verdicts as both runs train.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/policy_flags.h"
#include "client/cpp/reprodctl/policy_spec.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "client/cpp/reprodctl/watch_line.h"
#include "client/cpp/wire_convert.h"
#include "common/names.h"
#include "common/visible.h"

namespace reprod::reprodctl {
namespace {

constexpr char kWatchHelp[] =
    R"(Watch two runs on the server while they train: one line per tensor pair as
soon as both runs hold it (in the candidate's order), so a divergence at step 3
shows at step 3; once both runs are sealed (or aborted) the final report
follows, and the exit code gives the verdict.

Each line: STATUS checkpoint/key[@step]  mean_abs X  max_abs Y  [reason].
With --format text (default) the lines and the reprod_log-style report go to
stdout; with json, junit, markdown or html the lines go to stderr so that
stdout (or --output) holds the report alone.

--wait SECONDS starts the watch before the training scripts have created
their runs: it waits up to that long for both runs to exist (polling every
0.5 s, one line on stderr while waiting).

Examples:
  reprodctl watch bert/torch bert/paddle
  reprodctl watch bert/torch bert/paddle --wait 600      # started before the trainings
  reprodctl watch bert/torch bert/paddle --preset competition --format json --output report.json
  reprodctl watch bert/torch bert/paddle --checkpoint bp_align --threshold 1e-5

Exit codes: 0 passed, 1 failed, 2 bad input (unknown run, bad policy),
3 server unreachable.)";

struct WatchArgs {
  std::string ref;
  std::string cand;
  PolicyFlags policy;
  std::vector<std::string> checkpoints;
  std::string format = "text";
  std::string out;
  double wait_seconds = 0;
};

// Waits until both runs exist on the server, up to `seconds`. Returns the
// last NotFound when they do not appear in time, other errors at once.
absl::Status WaitForRuns(client::RemoteClient& client, const std::string& ref,
                         const std::string& cand, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(seconds));
  bool announced = false;
  while (true) {
    absl::Status missing = absl::OkStatus();
    for (const std::string* run : {&ref, &cand}) {
      absl::StatusOr<v1::Run> got = client.GetRun(*run);
      if (got.ok()) continue;
      if (!absl::IsNotFound(got.status())) return got.status();
      missing = got.status();
      break;
    }
    if (missing.ok()) return absl::OkStatus();
    if (std::chrono::steady_clock::now() >= deadline) return missing;
    if (!announced) {
      std::fprintf(stderr, "reprodctl: waiting up to %g s for runs %s and %s to exist\n",
                   seconds, VisibleText(ref).c_str(), VisibleText(cand).c_str());
      announced = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int RunWatch(const WatchArgs& args, const GlobalOptions& global) {
  absl::StatusOr<v1::ReportFormat> format = client::ReportFormatFromName(args.format);
  if (!format.ok()) return ReportError(format.status());
  for (const std::string* run : {&args.ref, &args.cand}) {
    if (absl::Status s = ValidateRunName(*run); !s.ok()) return ReportError(s);
  }
  absl::StatusOr<v1::PolicySpec> policy = PolicySpecFromFlags(args.policy, args.checkpoints);
  if (!policy.ok()) return ReportError(policy.status());

  auto client = ConnectToServer(global);
  if (!client.ok()) return ReportRemoteError(client.status());
  if (args.wait_seconds > 0) {
    if (absl::Status s = WaitForRuns(**client, args.ref, args.cand, args.wait_seconds); !s.ok()) {
      return ReportRemoteError(s);
    }
  }
  v1::WatchRequest request;
  request.set_ref(args.ref);
  request.set_cand(args.cand);
  *request.mutable_policy() = *std::move(policy);
  request.set_format(*format);

  FILE* lines = *format == v1::REPORT_FORMAT_TEXT ? stdout : stderr;
  std::optional<v1::Report> report;
  absl::Status status = (*client)->Watch(request, [&](const v1::WatchEvent& event) {
    if (event.has_verdict()) {
      std::fprintf(lines, "%s\n", VerdictLine(event.verdict()).c_str());
      std::fflush(lines);
    } else if (event.has_report()) {
      report = event.report();
    }
  });
  if (!status.ok()) return ReportRemoteError(status);
  if (!report.has_value()) {
    return ReportRemoteError(absl::UnavailableError(
        absl::StrCat("the server at ", global.server, " ended the watch without a final report")));
  }
  if (absl::Status s = WriteOutput(args.out, report->rendered()); !s.ok()) return ReportError(s);
  if (!global.quiet) std::fprintf(stderr, "reprodctl: %s\n", ReportSummaryLine(*report).c_str());
  std::fprintf(stderr, "reprodctl: report %s (reprodctl report get %s)\n", report->id().c_str(),
               report->id().c_str());
  return report->passed() ? kExitPass : kExitFail;
}

}  // namespace

Runner RegisterWatch(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<WatchArgs>();
  CLI::App* cmd =
      app.add_subcommand("watch", "Show verdicts of two runs on the server as they train");
  cmd->footer(kWatchHelp);
  cmd->add_option("RUN_REF", args->ref, "Reference run (e.g. bert/torch)")->required();
  cmd->add_option("RUN_CAND", args->cand, "Candidate run (e.g. bert/paddle)")->required();
  args->policy.Register(*cmd, "reprod");
  cmd->add_option("--checkpoint", args->checkpoints, "Watch only this checkpoint (repeatable)")
      ->allow_extra_args(false)
      ->delimiter(',');
  cmd->add_option("--format", args->format, "Final report format: text, json, junit, markdown, html")
      ->capture_default_str();
  cmd->add_option("--out,--output", args->out, "Write the final report to FILE");
  cmd->add_option("--wait", args->wait_seconds,
                  "Wait up to SECONDS for both runs to be created before watching")
      ->check(CLI::NonNegativeNumber);
  return [args, &global] { return RunWatch(*args, global); };
}

}  // namespace reprod::reprodctl

// reprodctl runs ls|show|seal|rm: the runs stored on the server.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "client/cpp/wire_convert.h"
#include "common/names.h"
#include "common/visible.h"
#include "nlohmann/json.hpp"

namespace reprod::reprodctl {
namespace {

constexpr char kRunsHelp[] = R"(The runs stored on the reprod server (--server, REPROD_SERVER).

Examples:
  reprodctl runs ls
  reprodctl runs ls bert/ --format json
  reprodctl runs show bert/paddle
  reprodctl runs show bert/paddle --checkpoint forward
  reprodctl runs seal bert/paddle
  reprodctl runs seal bert/paddle --abort
  reprodctl runs rm bert/old-try
  reprodctl runs publish upstream/bert-torch          # judges, admins
  reprodctl runs publish upstream/bert-torch --unset

A published (reference) run is visible to every submitter, who may compare
their own runs against it; publishing is recorded in the audit log.

Exit codes: 0 done, 2 unknown run or bad name (or sealing a run that is not
open, or refused), 3 server unreachable.)";

struct RunsArgs {
  CLI::App* ls = nullptr;
  CLI::App* show = nullptr;
  CLI::App* seal = nullptr;
  CLI::App* rm = nullptr;
  CLI::App* publish = nullptr;
  bool unset = false;
  std::string prefix;
  std::string run;
  std::string checkpoint;
  std::string format = "text";
  bool abort = false;
};

std::string Dash(const std::string& s) { return s.empty() ? "-" : s; }

int RunLs(client::RemoteClient& client, const RunsArgs& args, const GlobalOptions& global) {
  auto runs = client.ListRuns(args.prefix);
  if (!runs.ok()) return ReportRemoteError(runs.status());
  if (args.format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::Run& r : *runs) list.push_back(RunJson(r));
    std::printf("%s\n", JsonText(list).c_str());
    return kExitPass;
  }
  if (runs->empty()) {
    if (!global.quiet) {
      std::fprintf(
          stderr, "reprodctl: no runs%s on %s\n",
          args.prefix.empty()
              ? ""
              : VisibleText(absl::StrCat(" starting with '", args.prefix, "'")).c_str(),
          global.server.c_str());
    }
    return kExitPass;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STATE", "FRAMEWORK", "TENSORS", "SIZE", "CREATED"}};
  for (const v1::Run& r : *runs) {
    rows.push_back({r.name(), std::string(client::RunStateName(r.state())), Dash(r.framework()),
                    absl::StrCat(r.tensor_count()), FormatBytes(r.total_bytes()),
                    FormatLocalTime(r.created())});
  }
  std::fputs(FormatTable(rows).c_str(), stdout);
  return kExitPass;
}

int RunShow(client::RemoteClient& client, const RunsArgs& args) {
  auto run = client.GetRun(args.run);
  if (!run.ok()) return ReportRemoteError(run.status());
  auto tensors = client.ListTensors(args.run, args.checkpoint);
  if (!tensors.ok()) return ReportRemoteError(tensors.status());
  if (args.format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::TensorInfo& t : *tensors) list.push_back(TensorInfoJson(t));
    nlohmann::json out = RunJson(*run);
    out["tensors"] = std::move(list);
    std::printf("%s\n", JsonText(out).c_str());
    return kExitPass;
  }
  std::vector<std::string> labels;
  for (const auto& [k, v] : run->labels()) labels.push_back(absl::StrCat(k, "=", v));
  std::string framework = Dash(run->framework());
  if (!run->framework_version().empty()) absl::StrAppend(&framework, " ", run->framework_version());
  std::string text = FormatTable({
      {"run:", run->name()},
      {"state:", std::string(client::RunStateName(run->state()))},
      {"framework:", framework},
      {"device:", Dash(run->device())},
      {"owner:", Dash(run->owner())},
      {"reference:", run->reference() ? "yes (published)" : "no"},
      {"created:", FormatLocalTime(run->created())},
      {"overwrite:", run->overwrite() ? "yes" : "no"},
      {"labels:", labels.empty() ? "-" : absl::StrJoin(labels, ", ")},
      {"tensors:", absl::StrCat(run->tensor_count(), " (", FormatBytes(run->total_bytes()), ")")},
  });
  if (!tensors->empty()) {
    // RANK and PLACEMENT columns only for runs that have them.
    const bool ranks = std::any_of(tensors->begin(), tensors->end(), [](const v1::TensorInfo& t) {
      return t.header().address().rank() != 0;
    });
    const bool placements =
        std::any_of(tensors->begin(), tensors->end(), [](const v1::TensorInfo& t) {
          return !client::WirePlacementString(t.header().placement()).empty();
        });
    std::vector<std::string> head = {"SEQ", "CHECKPOINT", "KEY", "STEP"};
    if (ranks) head.push_back("RANK");
    if (placements) head.push_back("PLACEMENT");
    for (const char* c : {"DTYPE", "SHAPE", "BYTES"}) head.push_back(c);
    std::vector<std::vector<std::string>> rows = {head};
    for (const v1::TensorInfo& t : *tensors) {
      const v1::TensorHeader& h = t.header();
      std::vector<std::string> row = {
          absl::StrCat(t.sequence()), h.address().checkpoint(), h.address().key(),
          h.address().has_step() ? absl::StrCat(h.address().step()) : "-"};
      if (ranks) row.push_back(absl::StrCat(h.address().rank()));
      if (placements) row.push_back(Dash(client::WirePlacementString(h.placement())));
      for (std::string cell : {client::WireDTypeName(h.dtype()), FormatShape(h.shape()),
                               absl::StrCat(h.byte_length())}) {
        row.push_back(std::move(cell));
      }
      rows.push_back(std::move(row));
    }
    absl::StrAppend(&text, "\n", FormatTable(rows));
  }
  std::fputs(text.c_str(), stdout);
  return kExitPass;
}

int RunSeal(client::RemoteClient& client, const RunsArgs& args) {
  auto run = client.SealRun(args.run, args.abort);
  if (!run.ok()) return ReportRemoteError(run.status());
  std::printf("%s %s (%llu tensors, %s)\n", args.abort ? "aborted" : "sealed",
              VisibleText(run->name()).c_str(),
              static_cast<unsigned long long>(run->tensor_count()),
              FormatBytes(run->total_bytes()).c_str());
  return kExitPass;
}

int RunRm(client::RemoteClient& client, const RunsArgs& args) {
  auto deleted = client.DeleteRun(args.run);
  if (!deleted.ok()) return ReportRemoteError(deleted.status());
  std::printf("deleted %s (%llu tensors)\n", VisibleText(args.run).c_str(),
              static_cast<unsigned long long>(*deleted));
  return kExitPass;
}

int RunPublish(client::RemoteClient& client, const RunsArgs& args) {
  auto run = client.SetReference(args.run, !args.unset);
  if (!run.ok()) return ReportRemoteError(run.status());
  std::printf(args.unset ? "%s is no longer a reference run\n"
                         : "published %s as a reference run\n",
              VisibleText(run->name()).c_str());
  return kExitPass;
}

int RunRuns(const RunsArgs& args, const GlobalOptions& global) {
  if (!args.run.empty()) {
    if (absl::Status s = ValidateRunName(args.run); !s.ok()) return ReportError(s);
  }
  auto client = ConnectToServer(global);
  if (!client.ok()) return ReportRemoteError(client.status());
  if (args.ls->parsed()) return RunLs(**client, args, global);
  if (args.show->parsed()) return RunShow(**client, args);
  if (args.seal->parsed()) return RunSeal(**client, args);
  if (args.rm->parsed()) return RunRm(**client, args);
  if (args.publish->parsed()) return RunPublish(**client, args);
  return kExitBadInput;
}

}  // namespace

Runner RegisterRuns(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<RunsArgs>();
  CLI::App* cmd =
      app.add_subcommand("runs", "List, show, seal, delete and publish runs on the server");
  cmd->footer(kRunsHelp);
  cmd->require_subcommand(1);
  cmd->fallthrough();
  const auto format_check = CLI::IsMember({"text", "json"});

  args->ls = cmd->add_subcommand("ls", "List runs (name, state, framework, tensors, size)");
  args->ls->footer("Example:\n  reprodctl runs ls bert/ --format json");
  args->ls->fallthrough();
  args->ls->add_option("PREFIX", args->prefix, "Only runs whose name starts with PREFIX");
  args->ls->add_option("--format", args->format, "text or json")->check(format_check);

  args->show = cmd->add_subcommand("show", "A run's metadata and its tensors");
  args->show->footer("Example:\n  reprodctl runs show bert/paddle --checkpoint forward");
  args->show->fallthrough();
  args->show->add_option("RUN", args->run, "Run name (namespace/name)")->required();
  args->show->add_option("--checkpoint", args->checkpoint, "Only this checkpoint's tensors");
  args->show->add_option("--format", args->format, "text or json")->check(format_check);

  args->seal = cmd->add_subcommand("seal", "Mark a run complete (no more tensors)");
  args->seal->footer(
      "Watchers finish with a final report once both runs are sealed.\n"
      "Example:\n  reprodctl runs seal bert/paddle");
  args->seal->fallthrough();
  args->seal->add_option("RUN", args->run, "Run name (namespace/name)")->required();
  args->seal->add_flag("--abort", args->abort, "End the run as aborted instead of sealed");

  args->rm = cmd->add_subcommand("rm", "Delete a run and its tensors (reports stay)");
  args->rm->footer("Example:\n  reprodctl runs rm bert/old-try");
  args->rm->fallthrough();
  args->rm->add_option("RUN", args->run, "Run name (namespace/name)")->required();

  args->publish = cmd->add_subcommand(
      "publish", "Publish a run as a reference submitters compare against (judges, admins)");
  args->publish->footer("Example:\n  reprodctl runs publish upstream/bert-torch [--unset]");
  args->publish->fallthrough();
  args->publish->add_option("RUN", args->run, "Run name (namespace/name)")->required();
  args->publish->add_flag("--unset", args->unset, "Withdraw the run as a reference");
  return [args, &global] { return RunRuns(*args, global); };
}

}  // namespace reprod::reprodctl

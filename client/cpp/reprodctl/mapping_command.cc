// reprodctl suggest-mapping REF CAND: policy rename entries that map the
// candidate run's captured module paths onto the reference's (core/mapping.h).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "common/visible.h"
#include "core/capture_key.h"
#include "core/mapping.h"

namespace reprod::reprodctl {
namespace {

constexpr char kSuggestMappingHelp[] =
    R"(Propose the `rename` entries of a policy that pair a port's module paths
with the reference's, from two runs captured with reprod_client.capture()
(checkpoint "layers" unless --checkpoint). Each module's forward outputs
are read from the server and matched by shape and values (mean, mean |x|,
root mean square within 1e-3 of their scale) along both execution orders:
run it on a port whose outputs still agree, e.g. one forward pass on the
converted weights. Entries are RE2 regexes generalised over layer numbers:

  rename:
    - {regex: '^bert\.encoder\.layers\.(\d+)\.self_attn\.q_proj(/|\[)',
       to: 'bert.encoder.layer.\1.attention.self.query\2'}

Modules on one side only (the implementations nest differently) are listed
as comments. Paste the entries into a policy and compare:

  reprodctl suggest-mapping bert/torch bert/paddle --out mapping.yaml
  cat mapping.yaml rules.yaml > policy.yaml
  reprodctl compare bert/torch bert/paddle --policy policy.yaml

Exit codes: 0 printed; 2 unknown run, or no captured forward outputs in the
checkpoint; 3 server unreachable.)";

struct MappingArgs {
  std::string ref, cand;
  std::string checkpoint = "layers";
  std::optional<int64_t> step;
  std::string out;
};

struct Captured {
  std::vector<std::string> modules;  // order of first forward output
  std::map<std::string, std::vector<v1::TensorInfo>> outputs;  // by module
  size_t tensors = 0;
};

std::optional<int64_t> StepOf(const v1::TensorInfo& info) {
  const v1::TensorAddress& a = info.header().address();
  return a.has_step() ? std::optional<int64_t>(a.step()) : std::nullopt;
}

// The forward outputs of --step; by default of the first step that has any
// (tensors logged without a step come first).
absl::StatusOr<Captured> CapturedOutputs(const std::vector<v1::TensorInfo>& infos,
                                         const std::string& run, const MappingArgs& args) {
  std::vector<std::pair<std::string, const v1::TensorInfo*>> outputs;  // (module, info)
  for (const v1::TensorInfo& info : infos) {
    // Every rank of a distributed run has the same modules: rank 0's outputs
    // stand for them (the others would be fingerprinted as extra outputs).
    if (info.header().address().rank() != 0) continue;
    auto k = core::ParseCaptureKey(info.header().address().key());
    if (k && k->direction == "forward" && k->role == "output") {
      outputs.emplace_back(std::string(k->module), &info);
    }
  }
  std::optional<int64_t> step = args.step;
  if (!step && std::all_of(outputs.begin(), outputs.end(),
                           [](const auto& o) { return StepOf(*o.second).has_value(); })) {
    for (const auto& [module, info] : outputs) {
      step = std::min(step.value_or(*StepOf(*info)), *StepOf(*info));
    }
  }
  Captured c;
  for (const auto& [module, info] : outputs) {
    if (StepOf(*info) != step) continue;
    auto [it, inserted] = c.outputs.try_emplace(module);
    if (inserted) c.modules.push_back(module);
    it->second.push_back(*info);
    ++c.tensors;
  }
  if (c.modules.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run '", run, "' has no captured forward outputs (keys <module>/forward/output/<i>) in "
        "checkpoint '", args.checkpoint, "'", args.step ? absl::StrCat(" at step ", *args.step) : "",
        "; log them with reprod_client.capture(model, run, checkpoint=\"", args.checkpoint,
        "\") or name the checkpoint with --checkpoint"));
  }
  return c;
}

absl::StatusOr<std::vector<core::ModuleOutputs>> Fingerprints(client::RemoteClient& client,
                                                              const std::string& run,
                                                              const Captured& c, size_t* done,
                                                              size_t total, bool quiet) {
  std::vector<core::ModuleOutputs> modules;
  for (const std::string& module : c.modules) {
    core::ModuleOutputs m{module, {}};
    for (const v1::TensorInfo& info : c.outputs.at(module)) {
      absl::StatusOr<Tensor> t = client.ReadTensor(run, info.header().address());
      if (!t.ok()) return t.status();
      m.outputs.push_back(core::Fingerprint(t->view()));
      if (!quiet && (++*done % 50 == 0 || *done == total)) {
        std::fprintf(stderr, "\rreprodctl: read %zu of %zu module outputs", *done, total);
        if (*done == total) std::fputc('\n', stderr);
      }
    }
    modules.push_back(std::move(m));
  }
  return modules;
}

int Run(const MappingArgs& args, const GlobalOptions& global) {
  auto client = ConnectToServer(global);
  if (!client.ok()) return ReportRemoteError(client.status());
  std::vector<Captured> sides;
  for (const std::string* run : {&args.ref, &args.cand}) {
    auto infos = (*client)->ListTensors(*run, args.checkpoint);
    if (!infos.ok()) return ReportRemoteError(infos.status());
    auto captured = CapturedOutputs(*infos, *run, args);
    if (!captured.ok()) return ReportError(captured.status());
    sides.push_back(*std::move(captured));
  }
  // The alignment keeps a score per (reference, candidate) module pair.
  constexpr size_t kMaxPairs = size_t{16} << 20;
  if (sides[0].modules.size() * sides[1].modules.size() > kMaxPairs) {
    return ReportError(absl::InvalidArgumentError(absl::StrCat(
        sides[0].modules.size(), " reference x ", sides[1].modules.size(),
        " candidate modules is more than suggest-mapping aligns (", kMaxPairs,
        " pairs); capture fewer modules (capture(include=...)) or one block of layers")));
  }
  const size_t total = sides[0].tensors + sides[1].tensors;
  size_t done = 0;
  auto ref = Fingerprints(**client, args.ref, sides[0], &done, total, global.quiet);
  if (!ref.ok()) return ReportRemoteError(ref.status());
  auto cand = Fingerprints(**client, args.cand, sides[1], &done, total, global.quiet);
  if (!cand.ok()) return ReportRemoteError(cand.status());

  const core::MappingSuggestion s = core::SuggestMapping(*ref, *cand);
  const std::string yaml = core::MappingYaml(
      s, absl::StrCat("reprodctl suggest-mapping ", args.ref, " ", args.cand, " (checkpoint '",
                      args.checkpoint, "'): ", ref->size(), " reference and ", cand->size(),
                      " candidate modules.\nRename entries for a policy that compares ", args.cand,
                      " against ", args.ref, "."));
  if (args.out.empty()) {
    std::fputs(yaml.c_str(), stdout);
  } else {
    std::ofstream out(args.out, std::ios::binary | std::ios::trunc);
    out << yaml;
    out.close();
    if (!out) {
      return ReportError(absl::InvalidArgumentError(
          absl::StrCat("cannot write ", VisibleText(args.out))));
    }
  }
  if (!global.quiet) {
    std::fprintf(stderr, "reprodctl: %zu module pairs, %zu rename entries%s; %zu candidate and "
                 "%zu reference modules unmatched\n",
                 s.pairs.size(), s.renames.size(),
                 args.out.empty() ? "" : absl::StrCat(" written to ", VisibleText(args.out)).c_str(),
                 s.unmatched_cand.size(), s.unmatched_ref.size());
  }
  return kExitPass;
}

}  // namespace

Runner RegisterSuggestMapping(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<MappingArgs>();
  CLI::App* cmd = app.add_subcommand(
      "suggest-mapping", "Propose policy renames pairing a port's module paths with the reference's");
  cmd->footer(kSuggestMappingHelp);
  cmd->add_option("ref", args->ref, "Reference run (e.g. the torch model)")->required();
  cmd->add_option("cand", args->cand, "Candidate run (the port)")->required();
  cmd->add_option("--checkpoint", args->checkpoint, "Checkpoint holding the captured modules")
      ->capture_default_str();
  cmd->add_option("--step", args->step, "Step whose forward outputs are matched (default: the first)");
  cmd->add_option("--out,-o", args->out, "Write the YAML here instead of stdout");
  return [args, &global] { return Run(*args, global); };
}

}  // namespace reprod::reprodctl

// reprodctl review DIR: a judge's view of a reproduction submission folder.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cpp/file_runs.h"
#include "client/cpp/progress.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/policy_flags.h"
#include "common/visible.h"
#include "core/compare.h"
#include "core/py_float.h"
#include "core/report.h"
#include "formats/tensor_file.h"
#include "kernels/backend.h"

namespace reprod::reprodctl {
namespace {

namespace fs = std::filesystem;

constexpr char kReviewHelp[] = R"(Review a reproduction submission folder (the guide's log_reprod/).

Pairs every X_paddle.<ext> with its reference X_torch.<ext> (or
X_benchmark.<ext>, X_ref.<ext>), compares all pairs under one policy (default:
competition, the guide's five acceptance points forward, metric, loss,
bp_align, train_align), writes X_diff.log for each pair in reprod_log's
format, and prints a summary of the acceptance points: present, passed, worst
value. Files without a partner and acceptance points without files are listed.
--html FILE also writes the whole review as one self-contained HTML page
(acceptance checklist, failing tensors with histograms, step-drift charts;
see `reprodctl compare --help`).

Examples:
  reprodctl review log_reprod/
  reprodctl review log_reprod/ --out-dir /tmp/logs --preset reprod
  reprodctl review submission/ --policy judge.yaml
  reprodctl review log_reprod/ --html review.html)";

const char* const kAcceptancePoints[] = {"forward", "metric", "loss", "bp_align", "train_align"};

// Reference suffixes in order of preference.
const char* const kRefSuffixes[] = {"_torch", "_benchmark", "_ref"};
constexpr char kCandSuffix[] = "_paddle";

bool IsTensorFile(const fs::path& p) { return formats::IsTensorFileName(p.filename().string()); }

struct Pairing {
  std::string ref_path;   // may be empty
  std::string cand_path;  // may be empty
  int ref_rank = 99;      // index into kRefSuffixes
};

struct ReviewArgs {
  std::string dir;
  PolicyFlags policy;
  std::string out_dir;
  std::string html;  // --html FILE; empty = none
  formats::ReadOptions read;
};

// The whole report as HTML into `path`; "" when not asked for.
absl::StatusOr<std::string> WriteHtmlReport(const core::Report& report, const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> html = core::RenderReport(report, core::ReportFormat::kHtml);
  if (!html.ok()) return html.status();
  if (absl::Status s = WriteOutput(path, *html); !s.ok()) return s;
  return absl::StrCat("Wrote HTML report to ", path, "\n");
}

std::string Row(const std::string& a, const std::string& b, const std::string& c,
                const std::string& d) {
  return absl::StrFormat("  %-13s %-9s %-7s %s\n", a, b, c, d);
}

std::string WorstText(const core::CheckpointResult& c) {
  if (!c.worst) return "-";
  const core::WorstCheck& w = *c.worst;
  return absl::StrCat(w.key, " ", std::string(core::MetricName(w.metric)), " = ", core::PyFloatRepr(w.value),
                      w.kind == core::BoundKind::kMin ? " (min " : " (max ",
                      core::PyFloatRepr(w.bound), ")");
}

int RunReview(const ReviewArgs& args, const GlobalOptions& global) {
  std::error_code ec;
  if (!fs::is_directory(args.dir, ec)) {
    return ReportError(absl::InvalidArgumentError(absl::StrCat(args.dir, ": not a directory")));
  }
  auto policy = args.policy.Resolve();
  if (!policy.ok()) return ReportError(policy.status());

  // Pair files by checkpoint name.
  std::map<std::string, Pairing> pairs;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(args.dir, ec)) {
    if (entry.is_regular_file() && IsTensorFile(entry.path())) files.push_back(entry.path());
  }
  if (ec) return ReportError(absl::InvalidArgumentError(absl::StrCat(args.dir, ": ", ec.message())));
  std::sort(files.begin(), files.end());
  std::vector<std::string> unpaired_others;
  for (const fs::path& p : files) {
    const std::string stem = client::FileStem(p.string());
    if (absl::EndsWith(stem, kCandSuffix)) {
      pairs[stem.substr(0, stem.size() - strlen(kCandSuffix))].cand_path = p.string();
      continue;
    }
    bool matched = false;
    for (int rank = 0; rank < 3 && !matched; ++rank) {
      const std::string suffix = kRefSuffixes[rank];
      if (absl::EndsWith(stem, suffix) && stem.size() > suffix.size()) {
        Pairing& pr = pairs[stem.substr(0, stem.size() - suffix.size())];
        if (rank < pr.ref_rank) {
          pr.ref_path = p.string();
          pr.ref_rank = rank;
        }
        matched = true;
      }
    }
    if (!matched) unpaired_others.push_back(p.string());
  }

  // Load the complete pairs into two runs.
  client::ProgressTicker progress(!global.quiet);
  core::RunData ref{args.dir + " (reference)", {}}, cand{args.dir + " (paddle)", {}};
  std::vector<std::string> notes, missing;
  for (const auto& [name, pr] : pairs) {
    if (pr.ref_path.empty()) {
      missing.push_back(absl::StrCat(name, ": reference file ", name, "_torch.* (or _benchmark/_ref) missing; have ",
                                     pr.cand_path));
      continue;
    }
    if (pr.cand_path.empty()) {
      missing.push_back(absl::StrCat(name, ": candidate file ", name, "_paddle.* missing; have ", pr.ref_path));
      continue;
    }
    for (auto [path, run] : {std::pair{&pr.ref_path, &ref}, std::pair{&pr.cand_path, &cand}}) {
      progress.Set(absl::StrCat("loading ", *path));
      auto data = client::LoadCheckpointFile(*path, name, &notes, args.read);
      if (!data.ok()) return ReportError(data.status());
      run->checkpoints.push_back(*std::move(data));
    }
  }
  for (const char* point : kAcceptancePoints) {
    if (pairs.find(point) == pairs.end()) {
      missing.push_back(absl::StrCat(point, ": no files (expected ", point, "_torch.npy and ", point,
                                     "_paddle.npy)"));
    }
  }
  for (const std::string& note : notes) {
    std::fprintf(stderr, "reprodctl: note: %s\n", VisibleText(note).c_str());
  }

  auto backend = CreateBackendFromFlags(global);
  if (!backend.ok()) return ReportError(backend.status());
  progress.Set("comparing");
  auto report = core::CompareRuns(ref, cand, *policy, **backend);
  if (!report.ok()) return ReportError(report.status());

  // One X_diff.log per compared pair, in reprod_log's format.
  const std::string out_dir = args.out_dir.empty() ? args.dir : args.out_dir;
  fs::create_directories(out_dir, ec);
  if (ec) return ReportError(absl::InvalidArgumentError(absl::StrCat(out_dir, ": ", ec.message())));
  std::vector<std::string> written;
  for (const core::CheckpointData& c : cand.checkpoints) {
    auto text = core::RenderReprodLogText(*report, c.name);
    if (!text.ok()) return ReportError(text.status());
    const std::string path = (fs::path(out_dir) / (c.name + "_diff.log")).string();
    if (auto s = WriteOutput(path, *text); !s.ok()) return ReportError(s);
    written.push_back(path);
  }

  // Summary: the five acceptance points first, then any other checkpoint.
  std::vector<std::string> order(std::begin(kAcceptancePoints), std::end(kAcceptancePoints));
  for (const auto& [name, pr] : pairs) {
    if (std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
  }
  bool any_missing_pair = false;
  std::string out = absl::StrCat("Review of ", args.dir, " (policy ", report->policy, ", backend ",
                                 report->backend, ")\n\n");
  absl::StrAppend(&out, Row("checkpoint", "present", "passed", "worst value"));
  for (const std::string& name : order) {
    auto it = pairs.find(name);
    const bool complete = it != pairs.end() && !it->second.ref_path.empty() && !it->second.cand_path.empty();
    if (it != pairs.end() && !complete) any_missing_pair = true;
    const core::CheckpointResult* c = report->FindCheckpoint(name);
    std::string present = complete ? "yes" : (it == pairs.end() ? "no" : "partial");
    std::string passed = "-", worst = "-";
    if (complete && c != nullptr) {
      passed = c->passed ? "PASS" : "FAIL";
      worst = WorstText(*c);
      if (!c->passed && !c->reasons.empty()) worst += "; " + c->reasons.front();
    } else if (c != nullptr && !c->passed) {
      passed = "FAIL";
      if (!c->reasons.empty()) worst = c->reasons.front();
    }
    absl::StrAppend(&out, Row(name, present, passed, worst));
  }
  if (!missing.empty()) {
    absl::StrAppend(&out, "\nMissing:\n");
    for (const std::string& m : missing) absl::StrAppend(&out, "  ", m, "\n");
  }
  if (!unpaired_others.empty()) {
    absl::StrAppend(&out, "\nIgnored (no _torch/_benchmark/_ref/_paddle suffix):\n");
    for (const std::string& m : unpaired_others) absl::StrAppend(&out, "  ", m, "\n");
  }
  if (report->first_failure) {
    absl::StrAppend(&out, "\nFirst failure: ", report->first_failure->checkpoint, "/",
                    report->first_failure->key, "\n");
  }
  absl::StrAppend(&out, "\nWrote ", written.size(), " diff logs to ", out_dir, "\n");
  absl::StatusOr<std::string> html_line = WriteHtmlReport(*report, args.html);
  if (!html_line.ok()) return ReportError(html_line.status());
  out += *html_line;
  const bool passed = report->passed && !any_missing_pair;
  absl::StrAppend(&out, "Review ", passed ? "PASSED" : "FAILED", "\n");
  if (auto s = WriteOutput("", out); !s.ok()) return ReportError(s);
  return VerdictExitCode(
      passed, report->summary.tensors,
      absl::StrCat(args.dir, " holds no X_torch/X_paddle pair with a tensor that could be read"));
}

}  // namespace

Runner RegisterReview(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<ReviewArgs>();
  CLI::App* cmd = app.add_subcommand("review", "Review a submission folder of X_torch/X_paddle pairs");
  cmd->footer(kReviewHelp);
  cmd->add_option("DIR", args->dir, "Submission folder (e.g. log_reprod/)")->required();
  args->policy.Register(*cmd, "competition");
  cmd->add_option("--out-dir", args->out_dir, "Where to write X_diff.log files (default: DIR)");
  cmd->add_option("--html", args->html, "Also write the whole review as an HTML page to FILE");
  AddReadOptionFlags(*cmd, &args->read);
  return [args, &global] { return RunReview(*args, global); };
}

}  // namespace reprod::reprodctl

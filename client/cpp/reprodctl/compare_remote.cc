#include "client/cpp/reprodctl/compare_remote.h"

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "client/cpp/progress.h"
#include "client/cpp/reprodctl/policy_spec.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "client/cpp/wire_convert.h"
#include "common/names.h"
#include "formats/tensor_file.h"

namespace reprod::reprodctl {
namespace {

bool PathExists(const std::string& s) {
  std::error_code ec;
  return std::filesystem::exists(s, ec);
}

}  // namespace

bool CompareTargetsAreRuns(const std::string& ref, const std::string& cand, bool remote_flag) {
  if (remote_flag) return true;
  for (const std::string* s : {&ref, &cand}) {
    if (PathExists(*s) || formats::IsTensorFileName(*s) || !ValidateRunName(*s).ok()) return false;
  }
  return true;
}

int RunRemoteCompare(const RemoteCompareArgs& args, const GlobalOptions& global) {
  absl::StatusOr<v1::ReportFormat> format = client::ReportFormatFromName(args.format);
  if (!format.ok()) return ReportError(format.status());
  for (const std::string* run : {&args.ref, &args.cand}) {
    if (absl::Status s = ValidateRunName(*run); !s.ok()) return ReportError(s);
  }
  absl::StatusOr<v1::PolicySpec> policy = PolicySpecFromFlags(args.policy, args.checkpoints);
  if (!policy.ok()) return ReportError(policy.status());

  auto client = ConnectToServer(global);
  if (!client.ok()) return ReportRemoteError(client.status());
  v1::CompareRequest request;
  request.set_ref(args.ref);
  request.set_cand(args.cand);
  *request.mutable_policy() = *std::move(policy);
  request.set_format(*format);
  absl::StatusOr<v1::Report> report;
  {
    client::ProgressTicker progress(!global.quiet);
    progress.Set(absl::StrCat("comparing ", args.ref, " with ", args.cand, " on ", global.server));
    report = (*client)->Compare(request);
  }
  if (!report.ok()) return ReportRemoteError(report.status());
  if (absl::Status s = WriteOutput(args.out, report->rendered()); !s.ok()) return ReportError(s);
  if (!global.quiet) {
    std::fprintf(stderr, "reprodctl: %s\n", ReportSummaryLine(*report).c_str());
  }
  std::fprintf(stderr, "reprodctl: report %s (reprodctl report get %s)\n", report->id().c_str(),
               report->id().c_str());
  return VerdictExitCode(report->passed(), static_cast<int64_t>(report->summary().tensors()),
                         absl::StrCat("runs ", args.ref, " and ", args.cand,
                                      " hold no tensor in the compared checkpoints"));
}

}  // namespace reprod::reprodctl

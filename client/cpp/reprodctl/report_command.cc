// reprodctl report get|ls: reports stored on the server.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "client/cpp/wire_convert.h"
#include "common/names.h"
#include "common/visible.h"
#include "nlohmann/json.hpp"

namespace reprod::reprodctl {
namespace {

constexpr char kReportHelp[] =
    R"(Reports stored on the reprod server: every `compare RUN RUN` and every
finished `watch` stores one, under an id like rpt-0123456789abcdef.

Examples:
  reprodctl report ls
  reprodctl report ls --run bert/paddle --limit 5 --format json
  reprodctl report get rpt-0123456789abcdef
  reprodctl report get rpt-0123456789abcdef --format junit --output report.xml
  reprodctl report sign rpt-0123456789abcdef         # judges, admins

On a review server a judge signs a verdict: the signature binds the report
to both runs' content digests (over their tensors' crc32cs), the policy's
hash and the audit log's head; `report get` lists the signatures ("signed
by LABEL (ROLE) at TIME; ref digest ..., cand digest ...": after a text
report, on stderr for the other formats) and `reprodctl audit verify` names
a run changed after signing.

Exit codes: report get: 0 the report passed, 1 it failed; report sign
(prints the verdict and the new signature) and report ls: 0; 2 unknown
report or run name (or refused: signing needs a judge or admin token),
3 server unreachable.)";

struct ReportArgs {
  CLI::App* get = nullptr;
  CLI::App* ls = nullptr;
  CLI::App* sign = nullptr;
  std::string id;
  std::string format = "text";
  std::string list_format = "text";
  std::string out;
  std::string run;
  uint32_t limit = 0;
};

int PrintReport(const v1::Report& report, const ReportArgs& args, const GlobalOptions& global);

int RunGet(client::RemoteClient& client, const ReportArgs& args, const GlobalOptions& global) {
  auto format = client::ReportFormatFromName(args.format);
  if (!format.ok()) return ReportError(format.status());
  auto report = client.GetReport(args.id, *format);
  if (!report.ok()) return ReportRemoteError(report.status());
  return PrintReport(*report, args, global);
}

// The rendering (to --out or stdout), its signatures and the summary line;
// the verdict's exit code.
int PrintReport(const v1::Report& report, const ReportArgs& args, const GlobalOptions& global) {
  std::string text = report.rendered();
  std::string signatures;
  for (const v1::Signature& sig : report.signatures()) {
    absl::StrAppend(&signatures, SignatureLine(sig), "\n");
  }
  // Signature lines follow a text report; other formats keep their syntax.
  const bool in_text = args.format == "text";
  if (in_text) absl::StrAppend(&text, signatures);
  if (absl::Status s = WriteOutput(args.out, text); !s.ok()) return ReportError(s);
  if (!global.quiet) {
    if (!in_text) std::fputs(signatures.c_str(), stderr);  // SignatureLine: visible
    std::fprintf(stderr, "reprodctl: %s\n", ReportSummaryLine(report).c_str());
  }
  return report.passed() ? kExitPass : kExitFail;
}

int RunSign(client::RemoteClient& client, const ReportArgs& args, const GlobalOptions& global) {
  auto report = client.SignReport(args.id, v1::REPORT_FORMAT_TEXT);
  if (!report.ok()) return ReportRemoteError(report.status());
  if (report->signatures().empty()) {
    return ReportError(absl::InternalError(
        absl::StrCat("the server signed ", args.id, " but returned no signature")));
  }
  const v1::Signature& mine = *report->signatures().rbegin();
  std::printf("%s\n", VisibleText(absl::StrCat(report->id(), " (", report->ref(), " vs ",
                                               report->cand(), "): ", SignatureLine(mine)))
                         .c_str());
  if (!global.quiet) std::fprintf(stderr, "reprodctl: %s\n", ReportSummaryLine(*report).c_str());
  return kExitPass;  // signed; `report get` answers with the verdict
}

int RunLs(client::RemoteClient& client, const ReportArgs& args, const GlobalOptions& global) {
  auto reports = client.ListReports(args.run, args.limit);
  if (!reports.ok()) return ReportRemoteError(reports.status());
  if (args.list_format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::Report& r : *reports) list.push_back(ReportMetaJson(r));
    std::printf("%s\n", JsonText(list).c_str());
    return kExitPass;
  }
  if (reports->empty()) {
    if (!global.quiet) std::fprintf(stderr, "reprodctl: no reports on %s\n", global.server.c_str());
    return kExitPass;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "CREATED", "VERDICT", "REF", "CAND", "POLICY", "FAILED"}};
  for (const v1::Report& r : *reports) {
    const v1::ReportSummary& s = r.summary();
    const uint64_t not_passing = s.failed() + s.missing_in_ref() + s.missing_in_cand();
    rows.push_back({r.id(), FormatLocalTime(r.created()), r.passed() ? "PASS" : "FAIL", r.ref(),
                    r.cand(), r.policy(), absl::StrCat(not_passing, "/", s.tensors())});
  }
  std::fputs(FormatTable(rows).c_str(), stdout);
  return kExitPass;
}

int RunReport(const ReportArgs& args, const GlobalOptions& global) {
  if (args.get->parsed()) {
    if (auto f = client::ReportFormatFromName(args.format); !f.ok()) return ReportError(f.status());
  }
  if (args.ls->parsed() && !args.run.empty()) {
    if (absl::Status s = ValidateRunName(args.run); !s.ok()) return ReportError(s);
  }
  auto client = ConnectToServer(global);
  if (!client.ok()) return ReportRemoteError(client.status());
  if (args.get->parsed()) return RunGet(**client, args, global);
  if (args.ls->parsed()) return RunLs(**client, args, global);
  if (args.sign->parsed()) return RunSign(**client, args, global);
  return kExitBadInput;
}

}  // namespace

Runner RegisterReport(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<ReportArgs>();
  CLI::App* cmd =
      app.add_subcommand("report", "Get, list and sign reports stored on the server");
  cmd->footer(kReportHelp);
  cmd->require_subcommand(1);
  cmd->fallthrough();

  args->get = cmd->add_subcommand("get", "Print a stored report");
  args->get->footer(
      "Examples:\n  reprodctl report get rpt-0123456789abcdef --format markdown\n"
      "  reprodctl report get rpt-0123456789abcdef --format html --output report.html");
  args->get->fallthrough();
  args->get->add_option("ID", args->id, "Report id (rpt-...)")->required();
  args->get->add_option("--format", args->format, "text, json, junit, markdown, html (reports stored before html existed have none)")
      ->capture_default_str();
  args->get->add_option("--out,--output", args->out, "Write the report to FILE");

  args->ls = cmd->add_subcommand("ls", "List stored reports, newest first");
  args->ls->footer("Example:\n  reprodctl report ls --run bert/paddle --limit 5");
  args->ls->fallthrough();
  args->ls->add_option("--run", args->run, "Only reports whose ref or cand is RUN");
  args->ls->add_option("--limit", args->limit, "At most N reports (default: the server's, 100)");
  args->ls->add_option("--format", args->list_format, "text or json")
      ->check(CLI::IsMember({"text", "json"}));

  args->sign = cmd->add_subcommand("sign", "Sign a report's verdict (judges, admins)");
  args->sign->footer("Example:\n  reprodctl report sign rpt-0123456789abcdef");
  args->sign->fallthrough();
  args->sign->add_option("ID", args->id, "Report id (rpt-...)")->required();
  return [args, &global] { return RunReport(*args, global); };
}

}  // namespace reprod::reprodctl

#include "client/cpp/reprodctl/remote_util.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cpp/wire_convert.h"
#include "common/tls.h"
#include "common/visible.h"

namespace reprod::reprodctl {
namespace {

absl::Time FromTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

bool IsSet(const google::protobuf::Timestamp& t) { return t.seconds() != 0 || t.nanos() != 0; }

// "rank" only when not 0, so single-process output is unchanged.
nlohmann::json AddressJson(const v1::TensorAddress& a) {
  nlohmann::json j = {{"checkpoint", a.checkpoint()},
                      {"key", a.key()},
                      {"step", a.has_step() ? nlohmann::json(a.step()) : nlohmann::json()}};
  if (a.rank() != 0) j["rank"] = a.rank();
  return j;
}

}  // namespace

absl::StatusOr<std::unique_ptr<client::RemoteClient>> ConnectToServer(
    const GlobalOptions& global, client::ConnectOptions options) {
  if (!global.tls_ca.empty() || !global.tls_cert.empty() || !global.tls_key.empty()) {
    absl::StatusOr<tls::TlsPem> pem =
        tls::LoadClientTls(global.tls_ca, global.tls_cert, global.tls_key);
    if (!pem.ok()) return pem.status();
    options.tls = *std::move(pem);
  }
  options.token = global.token;
  return client::RemoteClient::Connect(global.server, std::move(options));
}

int ExitCodeForStatus(const absl::Status& status) {
  if (status.ok()) return kExitPass;
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnreachable;
    default:
      return kExitBadInput;
  }
}

int ReportRemoteError(const absl::Status& status) {
  const int code = ExitCodeForStatus(status);
  const std::string shown = VisibleText(std::string(status.message()));
  std::fprintf(stderr, "reprodctl: error: %s\n", shown.c_str());
  // A TLS mismatch already says what to do (remote_client.h TlsHint).
  const bool tls_hint = absl::StrContains(status.message(), "TLS") ||
                        absl::StrContains(status.message(), "certificate");
  if (code == kExitUnreachable && !tls_hint) {
    std::fprintf(stderr,
                 "reprodctl: hint: start a server with `reprodd --listen HOST:PORT "
                 "--data-dir DIR`, or point at one with --server HOST:PORT (or "
                 "REPROD_SERVER)\n");
  }
  // Exit 2 as well, and final: the push is not retried (the server's message
  // names free and needed bytes, or the quota).
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    std::fprintf(stderr,
                 "reprodctl: hint: the server refused for lack of room (disk full / quota): "
                 "free space on its --data-dir, delete runs, or raise its limits\n");
  }
  // Both are exit 2 (bad input): the caller's token, not the server, is wrong.
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    std::fprintf(stderr,
                 "reprodctl: hint: this server checks tokens (reprodd --auth tokens); give "
                 "yours with REPROD_TOKEN or --token TOKEN (an admin issues them with "
                 "`reprodd token create`)\n");
  } else if (status.code() == absl::StatusCode::kPermissionDenied) {
    std::fprintf(stderr,
                 "reprodctl: hint: your token's role or scope does not allow this call "
                 "(docs/acl.md lists who may do what)\n");
  }
  return code;
}

std::string FormatTable(const std::vector<std::vector<std::string>>& raw_rows) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& raw : raw_rows) {
    rows.emplace_back();
    for (const std::string& cell : raw) rows.back().push_back(VisibleText(cell));
  }
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

std::string FormatShape(const google::protobuf::RepeatedField<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

std::string FormatLocalTime(const google::protobuf::Timestamp& t) {
  if (!IsSet(t)) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", FromTimestamp(t), absl::LocalTimeZone());
}

nlohmann::json TimestampJson(const google::protobuf::Timestamp& t) {
  if (!IsSet(t)) return nullptr;
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", FromTimestamp(t), absl::UTCTimeZone());
}

nlohmann::json RunJson(const v1::Run& run) {
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : run.labels()) labels[k] = v;
  return {{"name", run.name()},
          {"framework", run.framework()},
          {"framework_version", run.framework_version()},
          {"device", run.device()},
          {"labels", labels},
          {"created", TimestampJson(run.created())},
          {"owner", run.owner()},
          {"state", std::string(client::RunStateName(run.state()))},
          {"overwrite", run.overwrite()},
          {"reference", run.reference()},
          {"tensor_count", run.tensor_count()},
          {"total_bytes", run.total_bytes()}};
}

nlohmann::json TensorInfoJson(const v1::TensorInfo& info) {
  const v1::TensorHeader& h = info.header();
  nlohmann::json j = AddressJson(h.address());
  j["sequence"] = info.sequence();
  j["rank"] = h.address().rank();  // always in a listing, as the web API's
  if (h.has_placement() && h.placement().kind() != v1::Placement::KIND_UNSPECIFIED) {
    j["placement"] = client::WirePlacementString(h.placement());
  }
  j["dtype"] = client::WireDTypeName(h.dtype());
  j["shape"] = nlohmann::json(std::vector<int64_t>(h.shape().begin(), h.shape().end()));
  j["bytes"] = h.byte_length();
  j["crc32c"] = h.crc32c();
  return j;
}

nlohmann::json ReportMetaJson(const v1::Report& report) {
  const v1::ReportSummary& s = report.summary();
  return {{"id", report.id()},
          {"ref", report.ref()},
          {"cand", report.cand()},
          {"policy", report.policy()},
          {"passed", report.passed()},
          {"summary",
           {{"tensors", s.tensors()},
            {"passed", s.passed()},
            {"warned", s.warned()},
            {"failed", s.failed()},
            {"missing_in_ref", s.missing_in_ref()},
            {"missing_in_cand", s.missing_in_cand()}}},
          {"first_failure",
           report.has_first_failure() ? AddressJson(report.first_failure()) : nlohmann::json()},
          {"created", TimestampJson(report.created())},
          {"backend", report.backend()}};
}

std::string ReportSummaryLine(const v1::Report& report) {
  const v1::ReportSummary& s = report.summary();
  std::string line = absl::StrCat(report.passed() ? "PASSED" : "FAILED", ": ", s.tensors(),
                                  " tensors, ", s.passed(), " passed, ", s.warned(), " warned, ",
                                  s.failed(), " failed, ", s.missing_in_ref(), " missing in ref, ",
                                  s.missing_in_cand(), " missing in cand");
  if (report.has_first_failure()) {
    absl::StrAppend(&line, "; first failure ",
                    VisibleText(client::AddressToString(report.first_failure())));
  }
  return line;
}

std::string SignatureLine(const v1::Signature& s) {
  return absl::StrCat("signed by ", VisibleText(s.signer_label()), " (", s.signer_role(), ") at ",
                      FormatLocalTime(s.time()), "; ref digest ", s.ref_run_digest(),
                      ", cand digest ", s.cand_run_digest());
}

}  // namespace reprod::reprodctl

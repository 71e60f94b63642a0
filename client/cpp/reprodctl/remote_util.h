// File: client/cpp/reprodctl/remote_util.h
//
// What the remote commands (push, runs, compare RUN RUN, watch, report)
// share: connecting to --server, turning a failed call into an exit code
// and a message, and printing runs, tensors and reports.
//
//   auto client = ConnectToServer(global);
//   if (!client.ok()) return ReportRemoteError(client.status());   // exit 3
//
// Thread-safety: reentrant functions.
#ifndef REPROD_CLIENT_CPP_REPRODCTL_REMOTE_UTIL_H_
#define REPROD_CLIENT_CPP_REPRODCTL_REMOTE_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cpp/remote_client.h"
#include "client/cpp/reprodctl/commands.h"
#include "nlohmann/json.hpp"
#include "reprod/v1/compare.pb.h"
#include "reprod/v1/runs.pb.h"

namespace reprod::reprodctl {

// Connects to global.server, over TLS when --tls-ca, --tls-cert or
// --tls-key is given (files read and checked first: InvalidArgument naming
// a bad one). UNAVAILABLE (within a few seconds) when no server answers
// there, with a TLS hint when the failure looks like a TLS mismatch.
// `options` gives the timeouts; its tls and token are set from `global`.
absl::StatusOr<std::unique_ptr<client::RemoteClient>> ConnectToServer(
    const GlobalOptions& global, client::ConnectOptions options = {});

// kExitUnreachable for UNAVAILABLE and DEADLINE_EXCEEDED (the server could
// not be reached or did not answer), kExitBadInput for every other error
// (unknown run or report, bad name or policy, refused tensor, ...).
int ExitCodeForStatus(const absl::Status& status);

// Prints "reprodctl: error: <message>" on stderr, with a hint on how to
// start or point at a server for the unreachable codes, and returns
// ExitCodeForStatus(status).
int ReportRemoteError(const absl::Status& status);

// Rows as a left-aligned text table, columns two spaces apart, one line per
// row (the first row is the header), no trailing spaces. Every cell is shown
// through VisibleText (common/visible.h): a name or label cannot break a row.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// "0 B", "512 B", "1.5 KiB", "3.2 MiB", "1.0 GiB".
std::string FormatBytes(uint64_t bytes);

// "(3, 4)" / "()" / "(5,)" (numpy notation) for a wire shape.
std::string FormatShape(const google::protobuf::RepeatedField<int64_t>& shape);

// Local time "YYYY-MM-DD HH:MM:SS" for tables; "-" when unset.
std::string FormatLocalTime(const google::protobuf::Timestamp& t);

// RFC 3339 UTC ("2024-05-01T12:00:00Z") for JSON; null when unset.
nlohmann::json TimestampJson(const google::protobuf::Timestamp& t);

// Run metadata as JSON: name, framework, framework_version, device, labels,
// created, owner, state ("open"/"sealed"/"aborted"), overwrite, reference,
// tensor_count, total_bytes.
nlohmann::json RunJson(const v1::Run& run);

// A stored tensor as JSON: sequence, checkpoint, key, step (int or null),
// dtype, shape, bytes, crc32c.
nlohmann::json TensorInfoJson(const v1::TensorInfo& info);

// Report metadata as JSON (no rendering): id, ref, cand, policy, passed,
// summary {...}, first_failure ({checkpoint, key, step} or null), created,
// backend.
nlohmann::json ReportMetaJson(const v1::Report& report);

// "PASSED" / "FAILED" and the summary counts, one line:
// "FAILED: 10 tensors, 8 passed, 0 warned, 2 failed, 0 missing in ref, 0
// missing in cand; first failure forward/logits"; the address through
// VisibleText.
std::string ReportSummaryLine(const v1::Report& report);

// One line per signature of a review server's report: "signed by LABEL
// (ROLE) at TIME; ref digest HEX, cand digest HEX" (the digests in full;
// the label through VisibleText).
std::string SignatureLine(const v1::Signature& signature);

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_REMOTE_UTIL_H_

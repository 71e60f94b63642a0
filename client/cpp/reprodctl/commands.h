// File: client/cpp/reprodctl/commands.h
//
// The reprodctl subcommands. Each Register* function adds its subcommand to
// the CLI11 app and stores a callback that runs it and returns the process
// exit code (ExitCode).
#ifndef REPROD_CLIENT_CPP_REPRODCTL_COMMANDS_H_
#define REPROD_CLIENT_CPP_REPRODCTL_COMMANDS_H_

#include <functional>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/tensor_file.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"

namespace reprod::reprodctl {

// Process exit codes (docs/design.md §Clients: 0 pass, 1 verdict failed, 2 bad
// input/usage, 3 server unreachable).
enum ExitCode : int {
  kExitPass = 0,
  kExitFail = 1,
  kExitBadInput = 2,
  kExitUnreachable = 3,
};

// Options shared by every subcommand.
struct GlobalOptions {
  bool quiet = false;         // no progress on stderr
  std::string backend = "auto";
  std::string log_level = "warn";
  // reprod server for the remote commands (--server, REPROD_SERVER).
  std::string server = "127.0.0.1:50051";
  // TLS to the server (--tls-ca, --tls-cert, --tls-key; REPROD_TLS_*): PEM
  // files; TLS is on when any is given (see ConnectToServer).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // Bearer token for a server with `--auth tokens` (--token, REPROD_TOKEN);
  // sent on every call when not empty.
  std::string token;
};

using Runner = std::function<int()>;

// Each returns the runner to call when its subcommand was chosen.
Runner RegisterCompare(CLI::App& app, const GlobalOptions& global);
Runner RegisterReview(CLI::App& app, const GlobalOptions& global);
Runner RegisterInspect(CLI::App& app, const GlobalOptions& global);
// Remote commands (talk to a reprod server, see remote_util.h).
Runner RegisterPush(CLI::App& app, const GlobalOptions& global);
Runner RegisterRuns(CLI::App& app, const GlobalOptions& global);
Runner RegisterWatch(CLI::App& app, const GlobalOptions& global);
Runner RegisterReport(CLI::App& app, const GlobalOptions& global);
// `token` and `audit` (admin_command.cc); the runner serves both.
Runner RegisterToken(CLI::App& app, const GlobalOptions& global);
// `admin backup|compact` (store_admin_command.cc).
Runner RegisterAdmin(CLI::App& app, const GlobalOptions& global);
// `admin migrate` (migrate_command.cc): offline, RocksDB data dir ->
// postgres+s3; added to `admin` by RegisterAdmin.
Runner RegisterMigrate(CLI::App& admin, const GlobalOptions& global);
// `health`: the server's gRPC health status (probes, HEALTHCHECK).
Runner RegisterHealth(CLI::App& app, const GlobalOptions& global);
// `suggest-mapping REF CAND`: policy renames from two captured runs.
Runner RegisterSuggestMapping(CLI::App& app, const GlobalOptions& global);

// The diff backend --backend names (auto, cpu, cuda).
absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateBackendFromFlags(
    const GlobalOptions& global);

// `json` as --format json text, indented 2: non-ASCII, DEL and control
// characters as \uXXXX escapes (lossless, and no raw control byte or bidi
// override reaches a terminal), bytes that are not UTF-8 as U+FFFD.
std::string JsonText(const nlohmann::json& json);

// Prints "reprodctl: error: <message>" (through VisibleText) to stderr and returns kExitBadInput.
// Remote commands use ReportRemoteError (remote_util.h), which returns
// kExitUnreachable for an unreachable server.
int ReportError(const absl::Status& status);

// The exit code of a finished comparison. A comparison that held no tensor
// at all (every member skipped, two empty files, folders or runs) is bad
// input, never a pass: prints "reprodctl: error: nothing to compare: <what>"
// and returns kExitBadInput. Otherwise kExitPass or kExitFail by `passed`.
int VerdictExitCode(bool passed, int64_t tensors, const std::string& what);

// Adds --max-expansion-ratio (read->max_compression_ratio) to a command that
// reads tensor files: the zip-bomb guard on archive members (.npz, torch.save
// zip) over 64 MiB, which a large all-zero array compressed by numpy trips.
void AddReadOptionFlags(CLI::App& cmd, formats::ReadOptions* read);

// Writes `text` to `path`, or stdout when path is empty. Creates no
// directories. Errors name the path.
absl::Status WriteOutput(const std::string& path, const std::string& text);

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_COMMANDS_H_

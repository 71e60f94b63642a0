// reprodctl admin backup|compact: store maintenance on a running server
// (admins only, docs/acl.md; reprod/v1/admin.proto).
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "nlohmann/json.hpp"

namespace reprod::reprodctl {
namespace {

constexpr char kAdminHelp[] =
    R"(Store maintenance on a running reprod server (admins only).

backup NAME writes a consistent copy of the whole store (runs, tensors,
reports, tokens, the audit log) into NAME under the server's --backup-root,
while pushes and compares go on: every tensor acknowledged before the
command started is in it. NAME defaults to reprod-<UTC time>. The server
opens the copy once to check it and prints its runs and tensors. On the data
dir's filesystem the copy hard-links the store's files (no extra space until
the store rewrites them); copy the folder elsewhere for safe keeping.
Restore with `reprodd restore BACKUP --data-dir NEW` while reprodd is stopped.

compact rewrites the store's files so that the space of deleted runs and
replaced tensors goes back to the filesystem (runs while serving, slower).

migrate (offline, reprodd stopped) copies a RocksDB data dir into a
postgres+s3 store: `reprodctl admin migrate --help`.

Examples:
  export REPROD_TOKEN=$(cat admin.token)
  reprodctl admin backup                      # reprod-20261202T071500Z
  reprodctl admin backup before-upgrade --format json
  reprodctl admin compact

Exit codes: 0 done, 2 bad input or refused (not an admin, backups off,
name taken), 3 server unreachable.)";

struct MaintenanceArgs {
  CLI::App* backup = nullptr;
  CLI::App* compact = nullptr;
  std::string name;
  std::string format = "text";
};

int RunBackup(client::RemoteClient& client, const MaintenanceArgs& args) {
  auto done = client.Backup(args.name);
  if (!done.ok()) return ReportRemoteError(done.status());
  if (args.format == "json") {
    const nlohmann::json json = {{"path", done->path()},       {"files", done->files()},
                                 {"bytes", done->bytes()},     {"sequence", done->sequence()},
                                 {"runs", done->runs()},       {"tensors", done->tensors()},
                                 {"seconds", done->seconds()}};
    std::printf("%s\n", JsonText(json).c_str());
    return kExitPass;
  }
  std::printf("backup %s: %llu runs, %llu tensors, %llu files (%s) in %.1f s\n",
              done->path().c_str(), static_cast<unsigned long long>(done->runs()),
              static_cast<unsigned long long>(done->tensors()),
              static_cast<unsigned long long>(done->files()), FormatBytes(done->bytes()).c_str(),
              done->seconds());
  return kExitPass;
}

int RunCompact(client::RemoteClient& client, const MaintenanceArgs& args) {
  auto done = client.Compact();
  if (!done.ok()) return ReportRemoteError(done.status());
  if (args.format == "json") {
    const nlohmann::json json = {{"bytes_before", done->bytes_before()},
                                 {"bytes_after", done->bytes_after()},
                                 {"seconds", done->seconds()}};
    std::printf("%s\n", JsonText(json).c_str());
    return kExitPass;
  }
  std::printf("compacted the store: %s -> %s in %.1f s\n",
              FormatBytes(done->bytes_before()).c_str(), FormatBytes(done->bytes_after()).c_str(),
              done->seconds());
  return kExitPass;
}

}  // namespace

Runner RegisterAdmin(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<MaintenanceArgs>();
  CLI::App* cmd = app.add_subcommand(
      "admin", "Back up and compact the server's store (admins); migrate a data dir");
  cmd->footer(kAdminHelp);
  cmd->require_subcommand(1);
  cmd->fallthrough();
  args->backup = cmd->add_subcommand("backup", "Write a consistent copy of the store");
  args->backup->fallthrough();
  args->backup->add_option("NAME", args->name,
                           "Folder under the server's --backup-root (default reprod-<UTC time>)");
  args->compact = cmd->add_subcommand("compact", "Give back the space of deleted runs");
  args->compact->fallthrough();
  // Offline (no server): runs before ConnectToServer below.
  Runner migrate = RegisterMigrate(*cmd, global);
  CLI::App* migrate_cmd = cmd->get_subcommand("migrate");
  for (CLI::App* sub : {args->backup, args->compact}) {
    sub->add_option("--format", args->format, "text or json")
        ->check(CLI::IsMember({"text", "json"}));
  }
  return [args, &global, migrate_cmd, migrate] {
    if (migrate_cmd->parsed()) return migrate();
    auto client = ConnectToServer(global);
    if (!client.ok()) return ReportRemoteError(client.status());
    if (args->backup->parsed()) return RunBackup(**client, *args);
    if (args->compact->parsed()) return RunCompact(**client, *args);
    return static_cast<int>(kExitBadInput);
  };
}

}  // namespace reprod::reprodctl

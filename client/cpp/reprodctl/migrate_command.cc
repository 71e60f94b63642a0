// reprodctl admin migrate: copies a stopped reprodd's RocksDB data dir into
// a postgres+s3 store (storage/migrate.h). Offline: talks to no server.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "common/visible.h"
#include "storage/migrate.h"
#include "storage/postgres_s3/credentials.h"
#include "storage/postgres_s3/postgres_s3_store.h"
#include "storage/rocksdb/rocksdb_store.h"

namespace reprod::reprodctl {
namespace {

constexpr char kMigrateHelp[] =
    R"(Copies everything a reprodd RocksDB data dir holds into a postgres+s3 store
(PostgreSQL for runs, the tensor index, reports, tokens and the audit log;
an S3 bucket for tensor bytes), so that reprodd replicas can serve it.

What moves: every run with its metadata (framework, device, labels, owner,
created, overwrite, reference) and state (open, sealed, aborted); its
tensors in their original order, streamed 8 MiB at a time (--parallel-runs
runs at once); every stored report with its renderings; every token and
audit record, byte for byte.

Offline: reprodd must be stopped first (the data dir is locked while it
runs); this command talks to no server and needs no token.

Checked: every tensor is committed against its crc32c, and once all are
copied every one is read back from the destination and checked again
(--no-verify skips the read-back).

Resumable: interrupt it at any time (Ctrl-C, a crash, a dropped
connection) and run the same command again: what the destination already
holds is skipped (compared by header, without reading the source bytes),
the rest is copied. Runs already in the destination with other metadata
or other tensors stop it (exit 2) rather than being overwritten.

Secrets never go on the command line: the PostgreSQL password from
PGPASSWORD, ~/.pgpass or --pg-password-file; S3 keys from AWS_ACCESS_KEY_ID
and AWS_SECRET_ACCESS_KEY or --s3-credentials-file ([default] profile).

Afterwards start reprodd on the new store with the same settings:
  reprodd --store postgres+s3 --pg-url URL [--pg-schema S] \
          --s3-endpoint URL --s3-bucket B [--s3-region R] [--s3-prefix P]
          [--s3-ca-file F]
and keep the old data dir until you have checked it (`reprodctl runs ls`).

Example:
  systemctl stop reprodd
  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... PGPASSWORD=...
  reprodctl admin migrate --from /var/lib/reprod --to postgres+s3 \
      --pg-url postgresql://reprod@db:5432/reprod \
      --s3-endpoint http://s3:7480 --s3-bucket reprod

Progress goes to stderr (about once a second), the summary to stdout.
Exit codes: 0 done, 1 failed (engine error, damaged data; rerun to resume),
2 bad input (flags, credentials, a missing or locked data dir, a destination
that conflicts with the source).)";

struct MigrateArgs {
  std::string from;
  std::string to = "postgres+s3";
  storage::PostgresS3StoreOptions pg;
  std::string pg_password_file;
  std::string s3_credentials_file;
  std::string s3_payload_signing = "auto";
  bool no_verify = false;
  int parallel_runs = 4;
};

// Refuses a password inside a --pg-url that came from the command line
// (every user can read argv in `ps`); one from REPROD_PG_URL is accepted, as
// reprodd does.
absl::Status CheckPgUrl(const MigrateArgs& args) {
  const char* env = std::getenv("REPROD_PG_URL");
  if (env != nullptr && args.pg.pg_url == env) return absl::OkStatus();
  absl::StatusOr<bool> has_password = storage::ConninfoHasPassword(args.pg.pg_url);
  if (!has_password.ok()) return has_password.status();
  if (*has_password) {
    return absl::InvalidArgumentError(
        "--pg-url holds a password, which every user can read on the command line; "
        "remove it and use PGPASSWORD, ~/.pgpass or --pg-password-file");
  }
  return absl::OkStatus();
}

int Fail(const absl::Status& status) {
  ReportError(status);
  return status.code() == absl::StatusCode::kInvalidArgument ? kExitBadInput : kExitFail;
}

int RunMigrate(MigrateArgs& args, const GlobalOptions& global) {
  using Clock = std::chrono::steady_clock;
  if (args.pg.pg_url.empty() || args.pg.s3.endpoint.empty() || args.pg.s3.bucket.empty()) {
    return ReportError(absl::InvalidArgumentError(
        "--to postgres+s3 needs --pg-url, --s3-endpoint and --s3-bucket"));
  }
  if (absl::Status s = CheckPgUrl(args); !s.ok()) return ReportError(s);
  absl::StatusOr<std::string> url =
      storage::WithPasswordFromFile(args.pg.pg_url, args.pg_password_file);
  if (!url.ok()) return ReportError(url.status());
  args.pg.pg_url = *url;
  args.pg.s3.payload_signing = storage::kPayloadSigningNames.at(args.s3_payload_signing);
  if (absl::Status s = storage::LoadS3Credentials(args.s3_credentials_file, args.pg.s3); !s.ok()) {
    return ReportError(s);
  }

  std::error_code ec;
  if (!std::filesystem::is_directory(args.from, ec) ||
      !std::filesystem::exists(std::filesystem::path(args.from) / "CURRENT", ec)) {
    return ReportError(absl::InvalidArgumentError(absl::StrCat(
        "--from ", args.from, ": no reprodd data dir there (a RocksDB store has a CURRENT file)")));
  }
  storage::RocksDbStoreOptions rocks;
  rocks.create_if_missing = false;
  rocks.min_free_bytes = 0;  // only read from
  absl::StatusOr<std::unique_ptr<storage::Store>> from =
      storage::OpenRocksDbStore(args.from, rocks);
  if (!from.ok()) {
    if (from.status().code() == absl::StatusCode::kFailedPrecondition) {
      return ReportError(absl::FailedPreconditionError(absl::StrCat(
          from.status().message(),
          " (is reprodd still running on it? stop it first: the data dir is locked while it "
          "serves)")));
    }
    return Fail(from.status());
  }
  // A connection or two per run being copied.
  args.pg.pg_connections = std::max(4, 2 * args.parallel_runs);
  absl::StatusOr<std::unique_ptr<storage::Store>> to = storage::OpenPostgresS3Store(args.pg);
  if (!to.ok()) return Fail(to.status());

  const Clock::time_point start = Clock::now();
  Clock::time_point last = start;
  storage::MigrateOptions options;
  options.verify = !args.no_verify;
  options.parallel_runs = args.parallel_runs;
  if (!global.quiet) {
    options.progress = [&](const storage::MigrateProgress& p) {
      const Clock::time_point now = Clock::now();
      if (now - last < std::chrono::seconds(1)) return;
      last = now;
      if (p.verifying) {
        std::fprintf(stderr, "migrate: verifying %llu/%llu tensors (read back, crc32c)\n",
                     static_cast<unsigned long long>(p.tensors_verified),
                     static_cast<unsigned long long>(p.tensors_to_verify));
        std::fflush(stderr);
        return;
      }
      std::fprintf(stderr,
                   "migrate: run %llu/%llu %s: %llu/%llu tensors; all runs %llu/%llu "
                   "(copied %llu, skipped %llu), %s copied\n",
                   static_cast<unsigned long long>(p.run_index),
                   static_cast<unsigned long long>(p.run_count), VisibleName(p.run).c_str(),
                   static_cast<unsigned long long>(p.run_tensors_done),
                   static_cast<unsigned long long>(p.run_tensors),
                   static_cast<unsigned long long>(p.tensors_done),
                   static_cast<unsigned long long>(p.tensors_total),
                   static_cast<unsigned long long>(p.tensors_copied),
                   static_cast<unsigned long long>(p.tensors_skipped),
                   FormatBytes(p.bytes_copied).c_str());
      std::fflush(stderr);
    };
  }
  absl::StatusOr<storage::MigrateStats> stats = storage::MigrateStore(**from, **to, options);
  if (!stats.ok()) {
    const int code = Fail(stats.status());
    if (code == kExitFail) {
      std::fprintf(stderr, "reprodctl: run the same command again to resume\n");
    }
    return code;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double rate = seconds > 0 ? 1.0 / seconds : 0.0;
  std::printf(
      "migrated %llu runs to postgres+s3: %llu tensors copied, %llu skipped (already there), "
      "%llu verified; %llu bytes (%s) copied; %llu reports, %llu auth records; %.1f s "
      "(%.1f tensors/s, %.1f MB/s)\n",
      static_cast<unsigned long long>(stats->runs),
      static_cast<unsigned long long>(stats->tensors_copied),
      static_cast<unsigned long long>(stats->tensors_skipped),
      static_cast<unsigned long long>(stats->tensors_verified),
      static_cast<unsigned long long>(stats->bytes_copied),
      FormatBytes(stats->bytes_copied).c_str(), static_cast<unsigned long long>(stats->reports),
      static_cast<unsigned long long>(stats->auth_records), seconds,
      static_cast<double>(stats->tensors_copied) * rate,
      static_cast<double>(stats->bytes_copied) * rate / 1e6);
  std::fflush(stdout);
  return kExitPass;
}

}  // namespace

Runner RegisterMigrate(CLI::App& admin, const GlobalOptions& global) {
  auto args = std::make_shared<MigrateArgs>();
  CLI::App* cmd = admin.add_subcommand(
      "migrate", "Copy a stopped reprodd's RocksDB data dir into postgres+s3 (offline)");
  cmd->footer(kMigrateHelp);
  cmd->fallthrough();
  storage::PostgresS3StoreOptions& pg = args->pg;
  cmd->add_option("--from", args->from, "reprodd's --data-dir (reprodd stopped)")->required();
  cmd->add_option("--to", args->to, "The destination store")
      ->check(CLI::IsMember({"postgres+s3"}))
      ->required();
  cmd->add_option("--pg-url", pg.pg_url,
                  "PostgreSQL URL or connection string, without the password "
                  "(postgresql://reprod@db:5432/reprod)")
      ->envname("REPROD_PG_URL");
  cmd->add_option("--pg-schema", pg.pg_schema, "Schema of reprod's tables (created when missing)")
      ->envname("REPROD_PG_SCHEMA")
      ->capture_default_str();
  cmd->add_option("--pg-password-file", args->pg_password_file,
                  "File whose first line is the PostgreSQL password (else PGPASSWORD or "
                  "~/.pgpass)")
      ->envname("REPROD_PG_PASSWORD_FILE");
  cmd->add_option("--s3-endpoint", pg.s3.endpoint,
                  "S3 endpoint, http(s)://host[:port] (path-style requests)")
      ->envname("REPROD_S3_ENDPOINT");
  cmd->add_option("--s3-bucket", pg.s3.bucket,
                  "Bucket of the tensor objects (created when missing)")
      ->envname("REPROD_S3_BUCKET");
  cmd->add_option("--s3-region", pg.s3.region, "SigV4 signing region")
      ->envname("REPROD_S3_REGION")
      ->capture_default_str();
  cmd->add_option("--s3-prefix", pg.s3_prefix,
                  "Prefix of every object key (empty or ending in '/')")
      ->envname("REPROD_S3_PREFIX");
  cmd->add_option("--s3-part-size", pg.part_size,
                  "Tensors larger than this go up as multipart uploads of parts this size "
                  "(bytes, 5 MiB to 5 GiB)")
      ->check(CLI::Range(uint64_t{5} << 20, uint64_t{5} << 30))
      ->envname("REPROD_S3_PART_SIZE")
      ->capture_default_str();
  cmd->add_option("--s3-ca-file", pg.s3.ca_file,
                  "PEM file of the CA certificate(s) that signed an https endpoint's "
                  "certificate (a private CA); default: the system's CA store")
      ->check(CLI::ExistingFile)
      ->envname("REPROD_S3_CA_FILE");
  cmd->add_option("--s3-payload-signing", args->s3_payload_signing,
                  "auto (default): payloads' SHA-256 signed over http, not over https (TLS "
                  "protects the bytes); always: signed over https too")
      ->check(CLI::IsMember(storage::kPayloadSigningNames))
      ->envname("REPROD_S3_PAYLOAD_SIGNING")
      ->capture_default_str();
  cmd->add_option("--s3-credentials-file", args->s3_credentials_file,
                  "AWS shared-credentials file ([default] aws_access_key_id, "
                  "aws_secret_access_key); else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
      ->envname("REPROD_S3_CREDENTIALS_FILE");
  cmd->add_option("--parallel-runs", args->parallel_runs,
                  "Runs copied at once (a run's tensors always go in order, one at a time)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_flag("--no-verify", args->no_verify,
                "Skip reading every tensor back from the destination to check its crc32c");
  return [args, &global] { return RunMigrate(*args, global); };
}

}  // namespace reprod::reprodctl

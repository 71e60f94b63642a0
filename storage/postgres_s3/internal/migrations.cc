#include "storage/postgres_s3/internal/migrations.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reprod::storage::internal {
namespace {

// Names, checkpoints, keys and most strings are bytea: the store promises
// to keep any byte but NUL, and a text column would refuse bytes that are
// not valid in the database's encoding. bytea also sorts bytewise, the
// order ListRuns and ListAuthRecords promise. Times are Unix microseconds.
constexpr std::string_view kInitial = R"sql(
CREATE TABLE runs (
  name bytea PRIMARY KEY,
  id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- a new id per incarnation
  framework bytea NOT NULL,
  framework_version bytea NOT NULL,
  device bytea NOT NULL,
  owner bytea NOT NULL,
  labels bytea NOT NULL,          -- length-prefixed key, value pairs
  created_us bigint NOT NULL,
  state smallint NOT NULL,        -- 0 open, 1 sealed, 2 aborted
  overwrite boolean NOT NULL,
  reference boolean NOT NULL,
  next_sequence bigint NOT NULL DEFAULT 0,
  tensor_count bigint NOT NULL DEFAULT 0,
  total_bytes bigint NOT NULL DEFAULT 0
);

CREATE TABLE tensors (
  run_id bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  checkpoint bytea NOT NULL,
  key bytea NOT NULL,
  has_step boolean NOT NULL,
  step bigint NOT NULL,           -- 0 when has_step is false
  rank integer NOT NULL,
  sequence bigint NOT NULL,
  byte_length bigint NOT NULL,
  entry bytea NOT NULL,           -- storage/FORMAT.md's tensor index entry
  object_key text,                -- NULL for an empty tensor
  block_crcs bytea NOT NULL,      -- crc32c per block, 4 bytes little-endian
  PRIMARY KEY (run_id, checkpoint, key, has_step, step, rank)
);
CREATE INDEX tensors_by_sequence ON tensors (run_id, sequence);

-- Objects being written; a row outlives its writer only when the replica
-- died (its advisory lock is free), and the sweep then reclaims it.
CREATE TABLE uploads (
  object_key text PRIMARY KEY,
  replica bigint NOT NULL,
  upload_id text,                 -- of a multipart upload, once started
  started_us bigint NOT NULL
);
CREATE INDEX uploads_by_replica ON uploads (replica);

-- Objects no tensor names any more, deleted from S3 after delete_after_us.
CREATE TABLE garbage (
  object_key text PRIMARY KEY,
  upload_id text,                 -- a multipart upload to abort too
  delete_after_us bigint NOT NULL,
  bytes bigint NOT NULL           -- what deleting it gives back
);

CREATE TABLE reports (
  id text PRIMARY KEY,
  ref bytea NOT NULL,
  cand bytea NOT NULL,
  created_us bigint NOT NULL,
  summary bytea NOT NULL          -- storage/FORMAT.md's report summary
);
CREATE INDEX reports_by_created ON reports (created_us DESC, id DESC);

CREATE TABLE report_renderings (
  id text NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
  format text NOT NULL,
  body bytea NOT NULL,
  PRIMARY KEY (id, format)
);

CREATE TABLE auth_records (
  key bytea PRIMARY KEY,
  value bytea NOT NULL
);
)sql";

// The distributed compare's work queue (storage/work_queue.h).
constexpr std::string_view kWorkQueue = R"sql(
CREATE SEQUENCE work_jobs;
CREATE TABLE work_batches (
  job bigint NOT NULL,
  batch integer NOT NULL,
  spec bytea NOT NULL,
  bytes bigint NOT NULL,
  state smallint NOT NULL DEFAULT 0,  -- 0 pending, 1 claimed, 2 done, 3 failed
  claimed_by bigint,                  -- replica id (its advisory lock)
  result bytea,
  error text,
  created_us bigint NOT NULL,
  PRIMARY KEY (job, batch)
);
CREATE INDEX work_batches_pending ON work_batches (state, bytes);
)sql";

constexpr Migration kMigrations[] = {
    {1, "runs, tensors, uploads, garbage, reports, auth records", kInitial},
    {2, "work queue of the distributed compare", kWorkQueue},
};

// Serialises migrations of one database across replicas.
constexpr int64_t kMigrationLock = 0x7270726f64000001;  // "rprod" 1

}  // namespace

std::span<const Migration> Migrations() { return kMigrations; }

absl::Status ApplyMigrations(PgConnection& conn, std::string_view schema) {
  REPROD_ASSIGN_OR_RETURN(PgTransaction txn, PgTransaction::Begin(&conn));
  REPROD_RETURN_IF_ERROR(
      txn.Exec("SELECT pg_advisory_xact_lock($1)", PgParams().Int(kMigrationLock))
          .status());
  REPROD_RETURN_IF_ERROR(
      txn.Exec(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ",
                            QuoteIdentifier(schema)))
          .status());
  REPROD_RETURN_IF_ERROR(
      txn.Exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
               "version integer PRIMARY KEY, description text NOT NULL, "
               "applied_at timestamptz NOT NULL DEFAULT now())")
          .status());
  REPROD_ASSIGN_OR_RETURN(
      PgResult current,
      txn.Exec("SELECT coalesce(max(version), 0) FROM schema_migrations"));
  const int64_t have = current.Int(0, 0);
  const int newest = kMigrations[std::size(kMigrations) - 1].version;
  if (have > newest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostgreSQL schema ", std::string(schema), " is at version ", have,
        ", written by a newer reprod; this build knows versions up to ",
        newest, ". Upgrade reprodd"));
  }
  for (const Migration& m : kMigrations) {
    if (m.version <= have) continue;
    if (absl::Status s = conn.ExecScript(m.sql); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("schema migration ", m.version,
                                                 " failed: ", s.message()));
    }
    REPROD_RETURN_IF_ERROR(
        txn.Exec("INSERT INTO schema_migrations (version, description) "
                 "VALUES ($1, $2)",
                 PgParams().Int(m.version).Text(m.description))
            .status());
  }
  return txn.Commit();
}

}  // namespace reprod::storage::internal

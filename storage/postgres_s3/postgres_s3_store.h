// File: storage/postgres_s3/postgres_s3_store.h
//
// The Store on engines a team already operates: metadata (runs, the tensor
// index, reports, auth records) in PostgreSQL, tensor bytes as objects in
// an S3-compatible object store. Any number of reprodd processes may open
// the same database and bucket at once (stateless replicas): every decision
// that must be atomic (commit, seal, delete, replace) is one PostgreSQL
// transaction, and no state lives in the process.
//
//   PostgresS3StoreOptions options;
//   options.pg_url = "postgresql://reprod@db:5432/reprod";
//   options.s3 = {.endpoint = "http://s3:7480", .bucket = "reprod", ...};
//   REPROD_ASSIGN_OR_RETURN(std::unique_ptr<Store> store,
//                           OpenPostgresS3Store(options));
//
// Layout (storage/postgres_s3/README.md): tables in `pg_schema`, versioned by
// the migrations in internal/migrations.cc and applied at open under an
// advisory lock (a newer database than this build knows is refused).
// One object per tensor, `<s3_prefix>tensors/<run id>/<random hex>`; tensors
// of at most part_size bytes go up in one PUT, larger ones in a multipart
// upload of part_size parts (up to two going up while the next arrives),
// so memory per writer stays bounded at three parts.
//
// Crash safety: before its first byte goes to S3 an upload is recorded in
// PostgreSQL (table `uploads`) under the writer's replica id, which the
// replica holds a session advisory lock on for as long as it lives. Commit
// deletes that record in the same transaction that publishes the tensor.
// A sweep (at open, then every sweep_interval) reclaims the uploads of
// replicas whose lock is free, i.e. that died: it aborts their multipart
// uploads and deletes their objects. Nothing half-written is ever visible.
//
// Deletes are lifecycle-safe: an object that a delete or replace stops
// naming is recorded in `garbage` in the same transaction and removed from
// S3 by a sweep only after delete_grace, so a reader that opened the
// tensor before keeps reading it meanwhile.
//
// Integrity: the crc32c of every block_size block is kept in the index and
// checked on every read (DataLoss naming the run, tensor and block).
#ifndef REPROD_STORAGE_POSTGRES_S3_POSTGRES_S3_STORE_H_
#define REPROD_STORAGE_POSTGRES_S3_POSTGRES_S3_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/s3/s3_client.h"
#include "storage/store.h"

namespace reprod::storage {

struct PostgresS3StoreOptions {
  // libpq connection string or URL ("postgresql://user@host:5432/db");
  // a password comes from it, PGPASSWORD or ~/.pgpass.
  std::string pg_url;
  // The PostgreSQL schema the tables live in (created when missing).
  std::string pg_schema = "reprod";
  // Connections per process.
  int pg_connections = 16;
  S3Options s3;
  // Prepended to every object key ("" or ending in '/').
  std::string s3_prefix;
  // Tensors above this size go up in a multipart upload of parts this big
  // (S3's minimum part size is 5 MiB).
  uint64_t part_size = uint64_t{16} << 20;
  // Bytes per checksummed block.
  uint64_t block_size = uint64_t{1} << 20;
  // How long a deleted or replaced tensor's object stays readable.
  absl::Duration delete_grace = absl::Minutes(10);
  // How often the background sweep runs (dead replicas' uploads, garbage
  // past its grace); zero: only at open and on Compact.
  absl::Duration sweep_interval = absl::Minutes(1);
};

// Connects, applies pending schema migrations, makes sure the bucket
// exists, registers this process as a replica and sweeps once.
// Unavailable when PostgreSQL or S3 cannot be reached; FailedPrecondition
// when the database was written by a newer build.
absl::StatusOr<std::unique_ptr<Store>> OpenPostgresS3Store(
    const PostgresS3StoreOptions& options);

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_POSTGRES_S3_POSTGRES_S3_STORE_H_

// File: storage/postgres_s3/internal/migrations.h
//
// The postgres+s3 store's schema, as numbered migrations kept in the repo
// (migrations.cc). Every open applies those the database lacks, in one
// transaction under an advisory lock, so replicas starting together apply
// each once; `schema_migrations` records which are in.
//
//   REPROD_RETURN_IF_ERROR(ApplyMigrations(*conn, "reprod"));
//
// Thread-safety: pure data; ApplyMigrations uses the connection it is given.
#ifndef REPROD_STORAGE_POSTGRES_S3_INTERNAL_MIGRATIONS_H_
#define REPROD_STORAGE_POSTGRES_S3_INTERNAL_MIGRATIONS_H_

#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "storage/postgres_s3/internal/pg.h"

namespace reprod::storage::internal {

struct Migration {
  int version;
  std::string_view description;
  std::string_view sql;
};

// Every migration, oldest first; versions 1, 2, ...
std::span<const Migration> Migrations();

// Creates `schema` when missing and applies the migrations it lacks.
// FailedPrecondition when the database holds a version this build does not
// know (written by a newer reprod).
absl::Status ApplyMigrations(PgConnection& conn, std::string_view schema);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_POSTGRES_S3_INTERNAL_MIGRATIONS_H_

// File: storage/postgres_s3/credentials.h
//
// Where the postgres+s3 store's secrets come from: never the command line
// (visible to every user in `ps`), but the environment or files.
//
//   PostgreSQL: the password in PGPASSWORD, ~/.pgpass (libpq reads both
//   itself), or a file named by --pg-password-file (its first line).
//   S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a file named by
//   --s3-credentials-file in the AWS shared-credentials format:
//
//     [default]
//     aws_access_key_id = AKIA...
//     aws_secret_access_key = ...
//
//   REPROD_ASSIGN_OR_RETURN(options.pg_url, WithPasswordFromFile(url, file));
//   REPROD_RETURN_IF_ERROR(LoadS3Credentials(file, options.s3));
//
// Errors name the file and what is wrong with it, never a secret.
//
// Thread-safety: reads the environment; call before starting threads.
#ifndef REPROD_STORAGE_POSTGRES_S3_CREDENTIALS_H_
#define REPROD_STORAGE_POSTGRES_S3_CREDENTIALS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/s3/s3_client.h"

namespace reprod::storage {

// True when a libpq connection string or URL carries a password
// (user:pass@ or password=...). InvalidArgument when it does not parse.
absl::StatusOr<bool> ConninfoHasPassword(const std::string& conninfo);

// The connection string with the first line of `password_file` added as
// its password (`file` empty: unchanged). InvalidArgument when the file
// cannot be read or is empty.
absl::StatusOr<std::string> WithPasswordFromFile(const std::string& conninfo,
                                                 const std::string& password_file);

// Fills s3.access_key / s3.secret_key from `file` (the [default] profile,
// or the only one) or, when `file` is empty, from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY. InvalidArgument naming the file or variables
// when either key is missing.
absl::Status LoadS3Credentials(const std::string& file, S3Options& s3);

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_POSTGRES_S3_CREDENTIALS_H_

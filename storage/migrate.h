// File: storage/migrate.h
//
// Copies everything one Store holds into another (any two implementations):
// runs with their metadata and state, their tensors in sequence order,
// reports and auth records (tokens, the audit log). `reprodctl admin
// migrate` uses it to move a RocksDB data dir onto postgres+s3.
//
//   MigrateOptions options;
//   options.progress = [](const MigrateProgress& p) { ... };
//   REPROD_ASSIGN_OR_RETURN(MigrateStats stats,
//                           MigrateStore(*rocksdb, *postgres_s3, options));
//
// Tensors stream through a window of window_bytes (never a whole tensor in
// memory): OpenTensor -> Read -> BeginTensor/Append/Commit, and Commit
// checks length and crc32c against the source's header. A destination run
// is created OPEN, filled, then sealed or aborted as the source run is.
//
// Resumable: a rerun after an interruption (crash, SIGKILL, an engine
// error) continues where the last one stopped. A destination run that
// exists must carry the source's metadata (else InvalidArgument naming the
// run and the field); its tensors, in sequence order, must be the first
// ones of the source's with the same content (storage/internal/
// tensor_checks.h SameContent; compared by header, no byte read): those are
// skipped, the rest copied. A sealed destination run must hold every
// tensor. Reports and auth records already present with the same value
// count as done; a different value is an error (for auth records the
// message names the key's length only: keys and values may be secrets).
//
// Verification (options.verify): once every run is copied, every
// destination tensor, copied or skipped, is read back in windows (by
// verify_threads threads) and its crc32c compared with the header's:
// DataLoss naming the run and tensor on a mismatch.
//
// The source must not change meanwhile (reprodd stopped); the destination
// may be served by others only if they leave the migrated runs alone.
//
// Thread-safety: a call uses up to options.parallel_runs (then
// verify_threads) threads; the stores are thread-safe; the progress
// callback is called by one at a time.
#ifndef REPROD_STORAGE_MIGRATE_H_
#define REPROD_STORAGE_MIGRATE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "storage/store.h"

namespace reprod::storage {

// Where a migration stands; given to MigrateOptions::progress after every
// tensor copied or skipped (and once per run before its first tensor),
// then, when verifying, after every tensor verified.
struct MigrateProgress {
  std::string run;         // the run being migrated
  uint64_t run_index = 0;  // 1-based among run_count
  uint64_t run_count = 0;
  uint64_t run_tensors_done = 0;  // of this run, copied or skipped
  uint64_t run_tensors = 0;
  uint64_t tensors_done = 0;   // of every run so far, copied or skipped
  uint64_t tensors_total = 0;  // of every source run
  uint64_t tensors_copied = 0;
  uint64_t tensors_skipped = 0;
  uint64_t bytes_copied = 0;
  // The verification pass (after every run is copied); `run` is then the
  // run of the tensor just verified and the run_* fields are 0.
  bool verifying = false;
  uint64_t tensors_verified = 0;
  uint64_t tensors_to_verify = 0;
};

struct MigrateOptions {
  // Read every destination tensor back and check its crc32c.
  bool verify = true;
  // Runs migrated at once, each by a thread of its own (tensors of one run
  // always go in sequence order, one at a time). More hide the latency of
  // a remote destination (one S3 request and one transaction per tensor).
  int parallel_runs = 4;
  // Threads reading destination tensors back when verifying.
  int verify_threads = 8;
  // Bytes read and appended at a time, per thread (at least 1).
  uint64_t window_bytes = uint64_t{8} << 20;
  // Called as described at MigrateProgress; may be empty.
  std::function<void(const MigrateProgress&)> progress;
};

struct MigrateStats {
  uint64_t runs = 0;          // source runs, all present in the destination
  uint64_t runs_skipped = 0;  // already complete in the destination
  uint64_t tensors_copied = 0;
  uint64_t tensors_skipped = 0;  // already present with the same content
  uint64_t bytes_copied = 0;
  uint64_t tensors_verified = 0;
  uint64_t bytes_verified = 0;
  uint64_t reports = 0;  // present in the destination (copied or not)
  uint64_t reports_copied = 0;
  uint64_t auth_records = 0;  // present in the destination (copied or not)
  uint64_t auth_records_copied = 0;
};

// Migrates `from` into `to` as described above. Errors: InvalidArgument for
// a destination that conflicts with the source (run metadata or state,
// tensors, a sealed run missing tensors, reports, auth records), DataLoss
// for a destination tensor whose bytes do not match its checksum or a run
// whose counts end up other than the source's, and the stores' own errors
// (prefixed with what was being migrated).
absl::StatusOr<MigrateStats> MigrateStore(Store& from, Store& to, const MigrateOptions& options);

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_MIGRATE_H_

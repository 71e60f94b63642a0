// File: storage/rocksdb/internal/status.h
//
// FromRocksDb(): the one place where a rocksdb::Status becomes an
// absl::Status. Engine faults map to Unavailable (I/O errors, busy, timed
// out, incomplete, shutdown in progress) or Internal (everything else);
// Corruption maps to DataLoss; an I/O error with the NoSpace subcode (ENOSPC)
// maps to ResourceExhausted ("disk full: ..."). The message keeps RocksDB's text and is
// prefixed with what the store was doing.
//
//   REPROD_RETURN_IF_ERROR(FromRocksDb(db->Write(opts, &batch), "commit"));
//
// Thread-safety: pure function.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_STATUS_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/status.h"

namespace reprod::storage::internal {

absl::Status FromRocksDb(const rocksdb::Status& status,
                         std::string_view context);

// `status` with "prefix: " before its message (OK stays OK).
absl::Status Annotate(const absl::Status& status, std::string_view prefix);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_STATUS_H_

// File: storage/rocksdb/internal/test_hooks.h
//
// Test-only access to the RocksDB store's internals, for the crash and
// corruption tests (storage/rocksdb/rocksdb_store_test.cc). Each function
// returns InvalidArgument when `store` is not a RocksDB store.
//
//   ASSERT_OK_AND_ASSIGN(uint64_t n, CountChunkKeys(*store));
//   ASSERT_THAT(CorruptChunk(*store, run, address, 0), IsOk());
//
// Thread-safety: as storage/store.h.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_TEST_HOOKS_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_TEST_HOOKS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/store.h"

namespace reprod::storage::internal {

// Live keys in the "chunks" column family (all runs, committed or not).
absl::StatusOr<uint64_t> CountChunkKeys(Store& store);

// Pending-upload markers in "meta".
absl::StatusOr<uint64_t> CountPendingUploads(Store& store);

// Flips the first payload byte of chunk `index` of a committed tensor,
// leaving its stored crc32c as it was.
absl::Status CorruptChunk(Store& store, std::string_view run,
                          const TensorAddress& address, uint64_t index);

// Deletes chunk `index` of a committed tensor.
absl::Status DeleteChunk(Store& store, std::string_view run,
                         const TensorAddress& address, uint64_t index);

// Bytes of write batches the store handed to RocksDB since it was opened
// (RocksDB's "db.user_bytes_written" statistic: keys, values and batch
// framing, before the WAL or any flush).
absl::StatusOr<uint64_t> UserBytesWritten(Store& store);

// The raw value of `key` in "meta" (keys.h spells the keys), nullopt when
// there is none. For tests that inspect or forge on-disk records, e.g. a
// store as an older build left it.
absl::StatusOr<std::optional<std::string>> GetMetaValue(Store& store,
                                                        std::string_view key);
// Writes `value` at `key` in "meta" (synced), or deletes the key when
// `value` is nullopt. Bypasses every check of the store.
absl::Status SetMetaValue(Store& store, std::string_view key,
                          std::optional<std::string_view> value);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_TEST_HOOKS_H_

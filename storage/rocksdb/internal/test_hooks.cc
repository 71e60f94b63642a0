#include "storage/rocksdb/internal/test_hooks.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/db.h"
#include "storage/internal/tensor_checks.h"
#include "storage/rocksdb/internal/keys.h"
#include "storage/rocksdb/internal/records.h"
#include "storage/rocksdb/internal/rocksdb_store_impl.h"
#include "storage/rocksdb/internal/status.h"

namespace reprod::storage::internal {
namespace {

absl::StatusOr<RocksDbStore*> AsRocksDb(Store& store) {
  auto* rocks = dynamic_cast<RocksDbStore*>(&store);
  if (rocks == nullptr) {
    return absl::InvalidArgumentError("not a RocksDB store");
  }
  return rocks;
}

absl::StatusOr<uint64_t> CountKeys(RocksDbStore* store,
                                   rocksdb::ColumnFamilyHandle* cf,
                                   std::string_view prefix) {
  std::unique_ptr<rocksdb::Iterator> it(
      store->db()->NewIterator(rocksdb::ReadOptions(), cf));
  uint64_t n = 0;
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size()));
       it->Valid() &&
       it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()));
       it->Next()) {
    ++n;
  }
  REPROD_RETURN_IF_ERROR(FromRocksDb(it->status(), "count keys"));
  return n;
}

// The chunk key of chunk `index` of a committed tensor.
absl::StatusOr<std::string> CommittedChunkKey(RocksDbStore* store,
                                              std::string_view run,
                                              const TensorAddress& address,
                                              uint64_t index) {
  REPROD_ASSIGN_OR_RETURN(const RunRecord record, store->ReadRun(run, nullptr));
  REPROD_ASSIGN_OR_RETURN(const std::optional<IndexEntry> entry,
                          store->ReadIndex(record.run_id, address, nullptr));
  if (!entry.has_value()) return TensorNotFoundError(run, address);
  if (index >= entry->num_chunks()) {
    return absl::OutOfRangeError(
        absl::StrCat("chunk ", index, " of ", entry->num_chunks()));
  }
  return ChunkKey(record.run_id, entry->blob_id, index);
}

}  // namespace

absl::StatusOr<uint64_t> CountChunkKeys(Store& store) {
  REPROD_ASSIGN_OR_RETURN(RocksDbStore * rocks, AsRocksDb(store));
  return CountKeys(rocks, rocks->chunks(), "");
}

absl::StatusOr<uint64_t> CountPendingUploads(Store& store) {
  REPROD_ASSIGN_OR_RETURN(RocksDbStore * rocks, AsRocksDb(store));
  return CountKeys(rocks, rocks->meta(), kPendingPrefix);
}

absl::Status CorruptChunk(Store& store, std::string_view run,
                          const TensorAddress& address, uint64_t index) {
  REPROD_ASSIGN_OR_RETURN(RocksDbStore * rocks, AsRocksDb(store));
  REPROD_ASSIGN_OR_RETURN(const std::string key,
                          CommittedChunkKey(rocks, run, address, index));
  std::string value;
  REPROD_RETURN_IF_ERROR(FromRocksDb(
      rocks->db()->Get(rocksdb::ReadOptions(), rocks->chunks(), key, &value),
      "read chunk"));
  if (value.size() <= kChunkHeaderSize) {
    return absl::FailedPreconditionError("empty chunk");
  }
  value[kChunkHeaderSize] ^= 0x01;
  return FromRocksDb(
      rocks->db()->Put(rocksdb::WriteOptions(), rocks->chunks(), key, value),
      "write chunk");
}

absl::Status DeleteChunk(Store& store, std::string_view run,
                         const TensorAddress& address, uint64_t index) {
  REPROD_ASSIGN_OR_RETURN(RocksDbStore * rocks, AsRocksDb(store));
  REPROD_ASSIGN_OR_RETURN(const std::string key,
                          CommittedChunkKey(rocks, run, address, index));
  return FromRocksDb(
      rocks->db()->Delete(rocksdb::WriteOptions(), rocks->chunks(), key),
      "delete chunk");
}

}  // namespace reprod::storage::internal

#include "storage/rocksdb/internal/test_hooks.h"

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
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

absl::StatusOr<uint64_t> UserBytesWritten(Store& store) {
  REPROD_ASSIGN_OR_RETURN(RocksDbStore * rocks, AsRocksDb(store));
  std::map<std::string, std::string> stats;
  if (!rocks->db()->GetMapProperty(rocksdb::DB::Properties::kDBStats,
                                   &stats)) {
    return absl::InternalError("rocksdb has no rocksdb.dbstats map property");
  }
  const auto it = stats.find("db.user_bytes_written");
  double bytes = 0;
  if (it == stats.end() || !absl::SimpleAtod(it->second, &bytes)) {
    return absl::InternalError("rocksdb.dbstats has no db.user_bytes_written");
  }
  return static_cast<uint64_t>(bytes);
}

absl::StatusOr<std::optional<std::string>> GetMetaValue(Store& store,
                                                        std::string_view key) {
  REPROD_ASSIGN_OR_RETURN(RocksDbStore * rocks, AsRocksDb(store));
  std::string value;
  const rocksdb::Status s =
      rocks->db()->Get(rocksdb::ReadOptions(), rocks->meta(),
                       rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::nullopt;
  REPROD_RETURN_IF_ERROR(FromRocksDb(s, "read meta key"));
  return std::optional<std::string>(std::move(value));
}

absl::Status SetMetaValue(Store& store, std::string_view key,
                          std::optional<std::string_view> value) {
  REPROD_ASSIGN_OR_RETURN(RocksDbStore * rocks, AsRocksDb(store));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  const rocksdb::Slice k(key.data(), key.size());
  if (!value.has_value()) {
    return FromRocksDb(rocks->db()->Delete(wo, rocks->meta(), k),
                       "delete meta key");
  }
  return FromRocksDb(
      rocks->db()->Put(wo, rocks->meta(), k,
                       rocksdb::Slice(value->data(), value->size())),
      "write meta key");
}

}  // namespace reprod::storage::internal

// File: storage/rocksdb/internal/tensor_reader.h
//
// The RocksDB store's TensorReader. Reads go through a snapshot taken when
// the tensor was opened, so a reader keeps seeing the tensor it opened even
// if the run is deleted or the tensor replaced meanwhile. Each chunk is
// fetched with one Get, checked (version, size, crc32c → DataLoss naming the
// run, tensor and chunk) and copied out; the last chunk fetched is kept, so
// sequential reads smaller than a chunk fetch and check each chunk once.
//
// Thread-safety: one thread at a time; must not outlive the store.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_TENSOR_READER_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_TENSOR_READER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "rocksdb/snapshot.h"
#include "storage/rocksdb/internal/records.h"
#include "storage/rocksdb/internal/rocksdb_store_impl.h"
#include "storage/rocksdb/internal/segment_file.h"
#include "storage/store.h"

namespace reprod::storage::internal {

std::unique_ptr<TensorReader> NewRocksDbTensorReader(
    RocksDbStore* store, std::string run, uint64_t run_id, IndexEntry entry,
    std::unique_ptr<rocksdb::ManagedSnapshot> snapshot);

// A reader of a tensor whose bytes are in the segment file `file`.
std::unique_ptr<TensorReader> NewSegmentTensorReader(std::string run, const IndexEntry& entry,
                                                     std::unique_ptr<SegmentReader> file);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_TENSOR_READER_H_

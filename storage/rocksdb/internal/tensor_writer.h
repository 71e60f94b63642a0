// File: storage/rocksdb/internal/tensor_writer.h
//
// The RocksDB store's TensorWriter. Bytes are cut into chunk_size chunks as
// they arrive; each full chunk is written at once as its own value (key
// ChunkKey(run id, blob id, index)), only the partial tail is buffered. The
// first chunk write is preceded by StartUpload (pending marker). Commit
// verifies length and crc32c, writes a large tail, and lets the store
// publish the tensor (a small tail rides in the commit batch). A writer
// destroyed without a successful Commit abandons its upload.
//
// A verify-only writer (an identical tensor is already stored) counts and
// checksums the bytes, writes nothing, and commits as kAlreadyPresent.
//
// Thread-safety: one thread at a time; must not outlive the store.
#ifndef REPROD_STORAGE_ROCKSDB_INTERNAL_TENSOR_WRITER_H_
#define REPROD_STORAGE_ROCKSDB_INTERNAL_TENSOR_WRITER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "rocksdb/write_batch.h"
#include "storage/rocksdb/internal/rocksdb_store_impl.h"
#include "storage/store.h"

namespace reprod::storage::internal {

// `reserved_bytes`: what store->ReserveSpace reserved for this tensor; the
// writer gives it back (ReleaseSpace) when destroyed.
std::unique_ptr<TensorWriter> NewRocksDbTensorWriter(RocksDbStore* store,
                                                     std::string run,
                                                     uint64_t run_id,
                                                     TensorHeader header,
                                                     bool verify_only,
                                                     uint64_t reserved_bytes);

// Adds chunk value (version, crc32c, payload) under `key` to `batch`,
// copying the payload once (into the batch).
absl::Status AddChunk(rocksdb::WriteBatch& batch,
                      rocksdb::ColumnFamilyHandle* cf, std::string_view key,
                      absl::Span<const uint8_t> payload);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_ROCKSDB_INTERNAL_TENSOR_WRITER_H_

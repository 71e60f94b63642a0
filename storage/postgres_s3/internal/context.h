// File: storage/postgres_s3/internal/context.h
//
// What the postgres+s3 store, its writers and its readers share: the
// options, the PostgreSQL pool, the S3 client and this process's replica
// id; plus the helpers that more than one of them needs. Writers and
// readers hold it by shared_ptr, so they outlive nothing they use.
//
// Thread-safety: everything here is thread-safe.
#ifndef REPROD_STORAGE_POSTGRES_S3_INTERNAL_CONTEXT_H_
#define REPROD_STORAGE_POSTGRES_S3_INTERNAL_CONTEXT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/postgres_s3/internal/pg.h"
#include "storage/postgres_s3/postgres_s3_store.h"
#include "storage/s3/s3_client.h"
#include "storage/store.h"
#include "storage/work_queue.h"

namespace reprod::storage::internal {

struct PgS3Context {
  PostgresS3StoreOptions options;
  std::unique_ptr<PgPool> pool;
  std::unique_ptr<S3Client> s3;
  // This process's id in `uploads`; it holds the session advisory lock
  // (kReplicaLockClass, replica) while it lives.
  int32_t replica = 0;
};

// First key of the two-key advisory locks that mark live replicas.
inline constexpr int32_t kReplicaLockClass = 0x72707264;  // "rprd"

int64_t NowMicros();

// `<prefix>tensors/<run id>/<32 random hex digits>`.
std::string NewObjectKey(const PgS3Context& ctx, int64_t run_id);

// Parameters that select one tensor row: run_id = $first, checkpoint =
// $first+1, key, has_step, step, rank; the WHERE clause to match them.
void AddAddress(PgParams& params, int64_t run_id, const TensorAddress& address);
std::string AddressWhere(int first);

// Gives up an object this process was writing: its `uploads` row becomes a
// `garbage` row due now (one statement, so it is never forgotten), then the
// multipart upload is aborted and the object deleted; the garbage row goes
// when S3 agreed, else a later sweep retries. Logs, never fails.
void DiscardUpload(PgS3Context& ctx, const std::string& object_key,
                   const std::string& upload_id);

// Aborts the multipart upload (or every one under the key when upload_id
// is empty) and deletes the object; NotFound counts as done.
absl::Status DeleteObjectAndUploads(S3Client& s3, const std::string& object_key,
                                    const std::string& upload_id);

// A writer into `run` (its id `run_id`). verify_only: an identical tensor is
// stored already; the bytes are checked but not uploaded.
std::unique_ptr<TensorWriter> NewPgS3TensorWriter(
    std::shared_ptr<PgS3Context> ctx, std::string run, int64_t run_id,
    TensorHeader header, bool verify_only);

// The store's work queue (work_queue.cc).
std::unique_ptr<WorkQueue> NewPgWorkQueue(std::shared_ptr<PgS3Context> ctx);

// A reader of a stored tensor.
std::unique_ptr<TensorReader> NewPgS3TensorReader(
    std::shared_ptr<PgS3Context> ctx, std::string run, TensorMeta meta,
    std::string object_key, uint64_t block_size, std::string block_crcs);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_POSTGRES_S3_INTERNAL_CONTEXT_H_

#include "storage/postgres_s3/internal/context.h"

#include <openssl/rand.h>

#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace reprod::storage::internal {

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

std::string NewObjectKey(const PgS3Context& ctx, int64_t run_id) {
  unsigned char random[16] = {};
  if (RAND_bytes(random, sizeof(random)) != 1) {
    // Never seen in practice; fall back on the time and address, unique
    // enough within one process (keys also carry the run id).
    const int64_t now = NowMicros();
    std::memcpy(random, &now, sizeof(now));
    const void* self = &random;
    std::memcpy(random + 8, &self, sizeof(self));
  }
  return absl::StrCat(
      ctx.options.s3_prefix, "tensors/", run_id, "/",
      absl::BytesToHexString(absl::string_view(
          reinterpret_cast<const char*>(random), sizeof(random))));
}

void AddAddress(PgParams& params, int64_t run_id, const TensorAddress& address) {
  params.Int(run_id)
      .Bytes(address.checkpoint)
      .Bytes(address.key)
      .Bool(address.step.has_value())
      .Int(address.step.value_or(0))
      .Int(address.rank);
}

std::string AddressWhere(int first) {
  return absl::StrCat("run_id = $", first, " AND checkpoint = $", first + 1,
                      " AND key = $", first + 2, " AND has_step = $", first + 3,
                      " AND step = $", first + 4, " AND rank = $", first + 5);
}

absl::Status DeleteObjectAndUploads(S3Client& s3, const std::string& object_key,
                                    const std::string& upload_id) {
  if (!upload_id.empty()) {
    absl::Status s = s3.AbortMultipartUpload(object_key, upload_id);
    if (!s.ok() && !absl::IsNotFound(s)) return s;
  } else {
    // A writer that died between starting a multipart upload and writing
    // its id down left an upload only a listing finds.
    absl::StatusOr<std::vector<S3Upload>> uploads =
        s3.ListMultipartUploads(object_key);
    if (!uploads.ok()) return uploads.status();
    for (const S3Upload& u : *uploads) {
      if (u.key != object_key) continue;
      absl::Status s = s3.AbortMultipartUpload(u.key, u.upload_id);
      if (!s.ok() && !absl::IsNotFound(s)) return s;
    }
  }
  return s3.DeleteObject(object_key);
}

void DiscardUpload(PgS3Context& ctx, const std::string& object_key,
                   const std::string& upload_id) {
  absl::StatusOr<PgPool::Lease> conn = ctx.pool->Acquire();
  absl::Status moved = conn.status();
  if (conn.ok()) {
    moved = (*conn)
                ->Exec("WITH gone AS (DELETE FROM uploads WHERE object_key = $1 "
                       "RETURNING object_key, upload_id) "
                       "INSERT INTO garbage (object_key, upload_id, "
                       "delete_after_us, bytes) "
                       "SELECT object_key, upload_id, $2, 0 FROM gone "
                       "ON CONFLICT (object_key) DO NOTHING",
                       PgParams().Text(object_key).Int(NowMicros()))
                .status();
  }
  if (!moved.ok()) {
    // The uploads row stays ours; the sweep reclaims it once this process
    // is gone.
    spdlog::warn("postgres+s3: could not give up object {}: {}", object_key,
                 moved.ToString());
    return;
  }
  absl::Status deleted = DeleteObjectAndUploads(*ctx.s3, object_key, upload_id);
  if (!deleted.ok()) {
    spdlog::warn("postgres+s3: object {} stays for the sweep: {}", object_key,
                 deleted.ToString());
    return;
  }
  absl::Status forgotten =
      (*conn)->Exec("DELETE FROM garbage WHERE object_key = $1",
                    PgParams().Text(object_key))
          .status();
  if (!forgotten.ok()) {
    spdlog::warn("postgres+s3: garbage row of {} stays for the sweep: {}",
                 object_key, forgotten.ToString());
  }
}

}  // namespace reprod::storage::internal

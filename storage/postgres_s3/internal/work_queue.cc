// The postgres+s3 store's WorkQueue (storage/work_queue.h): table
// work_batches, claimed with FOR UPDATE SKIP LOCKED so that replicas never
// take the same batch and never wait for each other.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/postgres_s3/internal/context.h"
#include "storage/work_queue.h"

namespace reprod::storage::internal {
namespace {

class PgWorkQueue : public WorkQueue {
 public:
  explicit PgWorkQueue(std::shared_ptr<PgS3Context> ctx) : ctx_(std::move(ctx)) {}

  absl::StatusOr<uint64_t> Submit(const std::vector<WorkItem>& items) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(PgTransaction txn, PgTransaction::Begin(conn.get()));
    REPROD_ASSIGN_OR_RETURN(PgResult id, txn.Exec("SELECT nextval('work_jobs')"));
    const int64_t job = id.Int(0, 0);
    for (size_t i = 0; i < items.size(); ++i) {
      REPROD_RETURN_IF_ERROR(
          txn.Exec("INSERT INTO work_batches (job, batch, spec, bytes, created_us) "
                   "VALUES ($1, $2, $3, $4, $5)",
                   PgParams()
                       .Int(job)
                       .Int(static_cast<int64_t>(i))
                       .Bytes(items[i].spec)
                       .Int(static_cast<int64_t>(items[i].bytes))
                       .Int(NowMicros()))
              .status());
    }
    REPROD_RETURN_IF_ERROR(txn.Commit());
    return static_cast<uint64_t>(job);
  }

  absl::StatusOr<std::optional<ClaimedWork>> Claim(bool largest_first) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec(absl::StrCat(
                       "UPDATE work_batches SET state = 1, claimed_by = $1 "
                       "WHERE (job, batch) = (SELECT job, batch FROM work_batches "
                       "WHERE state = 0 ORDER BY bytes ",
                       largest_first ? "DESC" : "ASC",
                       ", job, batch LIMIT 1 FOR UPDATE SKIP LOCKED) "
                       "RETURNING job, batch, spec"),
                   PgParams().Int(ctx_->replica)));
    if (r.rows() == 0) return std::nullopt;
    return ClaimedWork{static_cast<uint64_t>(r.Int(0, 0)),
                       static_cast<uint32_t>(r.Int(0, 1)), r.Bytes(0, 2)};
  }

  absl::Status Finish(uint64_t job, uint32_t batch,
                      const absl::StatusOr<std::string>& result) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    PgParams p;
    p.Int(static_cast<int64_t>(job)).Int(batch).Int(ctx_->replica);
    if (result.ok()) {
      p.Int(2).Bytes(*result).Null();
    } else {
      p.Int(3).Null().Text(result.status().ToString());
    }
    // Only while still ours: a batch put back (this process was thought
    // dead) and taken by another is left to that one.
    return conn
        ->Exec("UPDATE work_batches SET state = $4, result = $5, error = $6 "
               "WHERE job = $1 AND batch = $2 AND state = 1 AND claimed_by = $3",
               p)
        .status();
  }

  absl::StatusOr<std::vector<WorkResult>> Results(uint64_t job) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_RETURN_IF_ERROR(RequeueAbandoned(*conn.get(), job));
    REPROD_ASSIGN_OR_RETURN(
        PgResult r, conn->Exec("SELECT state, result, error FROM work_batches "
                               "WHERE job = $1 ORDER BY batch",
                               PgParams().Int(static_cast<int64_t>(job))));
    std::vector<WorkResult> out(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      out[i].state = static_cast<WorkResult::State>(r.Int(i, 0));
      if (out[i].state == WorkResult::State::kDone) out[i].result = r.Bytes(i, 1);
      if (out[i].state == WorkResult::State::kFailed) out[i].error = std::string(r.Text(i, 2));
    }
    return out;
  }

  absl::Status Drop(uint64_t job) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    return conn
        ->Exec("DELETE FROM work_batches WHERE job = $1",
               PgParams().Int(static_cast<int64_t>(job)))
        .status();
  }

  absl::StatusOr<int> LiveWorkers() override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                   "AND granted AND classid = $1::int::oid AND objsubid = 2 "
                   "AND database = (SELECT oid FROM pg_database "
                   "WHERE datname = current_database())",
                   PgParams().Int(kReplicaLockClass)));
    return static_cast<int>(r.Int(0, 0));
  }

 private:
  // Puts back the job's batches claimed by replicas that died.
  absl::Status RequeueAbandoned(PgConnection& conn, uint64_t job) {
    REPROD_ASSIGN_OR_RETURN(
        PgResult claimers,
        conn.Exec("SELECT DISTINCT claimed_by FROM work_batches WHERE job = $1 "
                  "AND state = 1 AND claimed_by <> $2",
                  PgParams().Int(static_cast<int64_t>(job)).Int(ctx_->replica)));
    for (int i = 0; i < claimers.rows(); ++i) {
      const int64_t replica = claimers.Int(i, 0);
      REPROD_ASSIGN_OR_RETURN(
          PgResult free,
          conn.Exec("SELECT pg_try_advisory_lock($1::int, $2::int)",
                    PgParams().Int(kReplicaLockClass).Int(replica)));
      if (!free.Bool(0, 0)) continue;  // alive
      absl::Status requeued =
          conn.Exec("UPDATE work_batches SET state = 0, claimed_by = NULL "
                    "WHERE job = $1 AND state = 1 AND claimed_by = $2",
                    PgParams().Int(static_cast<int64_t>(job)).Int(replica))
              .status();
      REPROD_RETURN_IF_ERROR(
          conn.Exec("SELECT pg_advisory_unlock($1::int, $2::int)",
                    PgParams().Int(kReplicaLockClass).Int(replica))
              .status());
      REPROD_RETURN_IF_ERROR(requeued);
    }
    return absl::OkStatus();
  }

  std::shared_ptr<PgS3Context> ctx_;
};

}  // namespace

std::unique_ptr<WorkQueue> NewPgWorkQueue(std::shared_ptr<PgS3Context> ctx) {
  return std::make_unique<PgWorkQueue>(std::move(ctx));
}

}  // namespace reprod::storage::internal

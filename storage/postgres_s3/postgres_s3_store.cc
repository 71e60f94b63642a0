#include "storage/postgres_s3/postgres_s3_store.h"

#include <openssl/rand.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "spdlog/spdlog.h"
#include "storage/internal/tensor_checks.h"
#include "storage/postgres_s3/internal/context.h"
#include "storage/postgres_s3/internal/migrations.h"
#include "storage/postgres_s3/internal/pg.h"
#include "storage/rocksdb/internal/coding.h"
#include "storage/rocksdb/internal/records.h"

namespace reprod::storage {
namespace {

using internal::AddAddress;
using internal::AddressWhere;
using internal::NowMicros;
using internal::PgConnection;
using internal::PgParams;
using internal::PgPool;
using internal::PgResult;
using internal::PgS3Context;
using internal::PgTransaction;

// The columns RunFromRow reads, in its order.
constexpr char kRunColumns[] =
    "name, framework, framework_version, device, owner, labels, created_us, "
    "state, overwrite, reference, tensor_count, total_bytes";

std::string EncodeLabels(const std::map<std::string, std::string>& labels) {
  std::string out;
  for (const auto& [k, v] : labels) {
    internal::PutLengthPrefixed(&out, k);
    internal::PutLengthPrefixed(&out, v);
  }
  return out;
}

absl::StatusOr<RunInfo> RunFromRow(const PgResult& r, int row) {
  RunInfo run;
  run.name = r.Bytes(row, 0);
  run.framework = r.Bytes(row, 1);
  run.framework_version = r.Bytes(row, 2);
  run.device = r.Bytes(row, 3);
  run.owner = r.Bytes(row, 4);
  const std::string labels = r.Bytes(row, 5);
  internal::Decoder d(labels);
  while (!d.done()) {
    std::string_view k, v;
    if (!d.LengthPrefixed(&k) || !d.LengthPrefixed(&v)) {
      return absl::DataLossError(absl::StrCat(
          "run ", VisibleName(run.name), ": its labels fail to decode"));
    }
    run.labels.emplace(std::string(k), std::string(v));
  }
  run.created = absl::FromUnixMicros(r.Int(row, 6));
  const int64_t state = r.Int(row, 7);
  if (state < 0 || state > 2) {
    return absl::DataLossError(absl::StrCat(
        "run ", VisibleName(run.name), ": unknown state ", state));
  }
  run.state = static_cast<RunState>(state);
  run.overwrite = r.Bool(row, 8);
  run.reference = r.Bool(row, 9);
  run.tensor_count = static_cast<uint64_t>(r.Int(row, 10));
  run.total_bytes = static_cast<uint64_t>(r.Int(row, 11));
  return run;
}

TensorAddress AddressFromRow(const PgResult& r, int row, int first) {
  TensorAddress address;
  address.checkpoint = r.Bytes(row, first);
  address.key = r.Bytes(row, first + 1);
  if (r.Bool(row, first + 2)) address.step = r.Int(row, first + 3);
  address.rank = static_cast<uint32_t>(r.Int(row, first + 4));
  return address;
}

// `column` starts with `prefix` (bytewise).
std::string PrefixWhere(const char* column, int param) {
  return absl::StrCat("substring(", column, " from 1 for length($", param,
                      "::bytea)) = $", param);
}

class PostgresS3Store : public Store {
 public:
  PostgresS3Store(std::shared_ptr<PgS3Context> ctx,
                  std::unique_ptr<PgConnection> liveness)
      : ctx_(std::move(ctx)),
        liveness_(std::move(liveness)),
        work_queue_(internal::NewPgWorkQueue(ctx_)) {
    if (ctx_->options.sweep_interval > absl::ZeroDuration()) {
      sweeper_ = std::thread([this] { SweepLoop(); });
    }
  }

  ~PostgresS3Store() override {
    stop_.Notify();
    if (sweeper_.joinable()) sweeper_.join();
  }

  // --- runs ----------------------------------------------------------------

  absl::Status CreateRun(const RunInfo& run) override {
    absl::Time created =
        run.created == absl::UnixEpoch() ? absl::Now() : run.created;
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec("INSERT INTO runs (name, framework, framework_version, "
                   "device, owner, labels, created_us, state, overwrite, "
                   "reference) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9) "
                   "ON CONFLICT (name) DO NOTHING",
                   PgParams()
                       .Bytes(run.name)
                       .Bytes(run.framework)
                       .Bytes(run.framework_version)
                       .Bytes(run.device)
                       .Bytes(run.owner)
                       .Bytes(EncodeLabels(run.labels))
                       .Int(absl::ToUnixMicros(created))
                       .Bool(run.overwrite)
                       .Bool(run.reference)));
    if (r.affected() == 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("run ", VisibleName(run.name), " already exists"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<RunInfo> GetRun(std::string_view name) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r, conn->Exec(absl::StrCat("SELECT ", kRunColumns,
                                            " FROM runs WHERE name = $1"),
                               PgParams().Bytes(name)));
    if (r.rows() == 0) return internal::RunNotFoundError(name);
    return RunFromRow(r, 0);
  }

  absl::StatusOr<std::vector<RunInfo>> ListRuns(
      std::string_view prefix) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec(absl::StrCat("SELECT ", kRunColumns, " FROM runs WHERE ",
                                PrefixWhere("name", 1), " ORDER BY name"),
                   PgParams().Bytes(prefix)));
    std::vector<RunInfo> out;
    out.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      REPROD_ASSIGN_OR_RETURN(RunInfo run, RunFromRow(r, i));
      out.push_back(std::move(run));
    }
    return out;
  }

  absl::StatusOr<RunInfo> SealRun(std::string_view name,
                                  RunState final_state) override {
    if (final_state == RunState::kOpen) {
      return absl::InvalidArgumentError(absl::StrCat(
          "run ", VisibleName(name), ": SealRun needs sealed or aborted"));
    }
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec(absl::StrCat("UPDATE runs SET state = $2 WHERE name = $1 "
                                "AND state = 0 RETURNING ",
                                kRunColumns),
                   PgParams().Bytes(name).Int(static_cast<int>(final_state))));
    if (r.rows() == 1) return RunFromRow(r, 0);
    REPROD_ASSIGN_OR_RETURN(RunInfo run, GetRun(name));
    return absl::FailedPreconditionError(
        absl::StrCat("run ", VisibleName(name), " is already ",
                     std::string(RunStateName(run.state))));
  }

  absl::StatusOr<uint64_t> DeleteRun(std::string_view name) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(PgTransaction txn, PgTransaction::Begin(conn.get()));
    REPROD_ASSIGN_OR_RETURN(
        PgResult r, txn.Exec("SELECT id, tensor_count FROM runs WHERE name = $1 "
                             "FOR UPDATE",
                             PgParams().Bytes(name)));
    if (r.rows() == 0) return internal::RunNotFoundError(name);
    const int64_t run_id = r.Int(0, 0);
    const auto count = static_cast<uint64_t>(r.Int(0, 1));
    // The objects stay readable for delete_grace (readers opened before
    // this commit keep reading); the sweep deletes them after.
    REPROD_RETURN_IF_ERROR(
        txn.Exec("INSERT INTO garbage (object_key, delete_after_us, bytes) "
                 "SELECT object_key, $2, byte_length FROM tensors "
                 "WHERE run_id = $1 AND object_key IS NOT NULL",
                 PgParams().Int(run_id).Int(GraceDeadline()))
            .status());
    REPROD_RETURN_IF_ERROR(
        txn.Exec("DELETE FROM runs WHERE id = $1", PgParams().Int(run_id))
            .status());
    REPROD_RETURN_IF_ERROR(txn.Commit());
    return count;
  }

  absl::StatusOr<RunInfo> SetRunReference(std::string_view name,
                                          bool reference) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec(absl::StrCat("UPDATE runs SET reference = $2 WHERE name = "
                                "$1 RETURNING ",
                                kRunColumns),
                   PgParams().Bytes(name).Bool(reference)));
    if (r.rows() == 0) return internal::RunNotFoundError(name);
    return RunFromRow(r, 0);
  }

  // --- tensors -------------------------------------------------------------

  absl::StatusOr<std::unique_ptr<TensorWriter>> BeginTensor(
      std::string_view run, const TensorHeader& header) override {
    REPROD_RETURN_IF_ERROR(internal::CheckHeader(run, header));
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r, conn->Exec("SELECT id, state, overwrite FROM runs "
                               "WHERE name = $1",
                               PgParams().Bytes(run)));
    if (r.rows() == 0) return internal::RunNotFoundError(run);
    const int64_t run_id = r.Int(0, 0);
    const auto state = static_cast<RunState>(r.Int(0, 1));
    if (state != RunState::kOpen) return internal::RunNotOpenError(run, state);
    const bool overwrite = r.Bool(0, 2);
    PgParams where;
    AddAddress(where, run_id, header.address);
    REPROD_ASSIGN_OR_RETURN(
        PgResult old,
        conn->Exec(absl::StrCat("SELECT entry FROM tensors WHERE ",
                                AddressWhere(1)),
                   where));
    bool verify_only = false;
    if (old.rows() == 1) {
      REPROD_ASSIGN_OR_RETURN(
          internal::IndexEntry stored,
          internal::DecodeIndexEntry(header.address, old.Bytes(0, 0)));
      if (internal::SameContent(stored.header, header)) {
        verify_only = true;
      } else if (!overwrite) {
        return internal::ConflictError(run, stored.header, header);
      }
    }
    return internal::NewPgS3TensorWriter(ctx_, std::string(run), run_id,
                                         header, verify_only);
  }

  absl::StatusOr<std::vector<TensorMeta>> ListTensors(
      std::string_view run, std::string_view checkpoint) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(int64_t run_id, RunId(*conn.get(), run));
    PgParams params;
    params.Int(run_id);
    std::string sql =
        "SELECT checkpoint, key, has_step, step, rank, entry FROM tensors "
        "WHERE run_id = $1";
    if (!checkpoint.empty()) {
      params.Bytes(checkpoint);
      sql += " AND checkpoint = $2";
    }
    sql += " ORDER BY sequence";
    REPROD_ASSIGN_OR_RETURN(PgResult r, conn->Exec(sql, params));
    std::vector<TensorMeta> out;
    out.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      const TensorAddress address = AddressFromRow(r, i, 0);
      absl::StatusOr<internal::IndexEntry> entry =
          internal::DecodeIndexEntry(address, r.Bytes(i, 5));
      if (!entry.ok()) return Damaged(run, address, entry.status());
      out.push_back(TensorMeta{entry->header, entry->sequence});
    }
    return out;
  }

  absl::StatusOr<std::unique_ptr<TensorReader>> OpenTensor(
      std::string_view run, const TensorAddress& address) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(int64_t run_id, RunId(*conn.get(), run));
    PgParams where;
    AddAddress(where, run_id, address);
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec(absl::StrCat("SELECT entry, object_key, block_crcs FROM "
                                "tensors WHERE ",
                                AddressWhere(1)),
                   where));
    if (r.rows() == 0) return internal::TensorNotFoundError(run, address);
    absl::StatusOr<internal::IndexEntry> entry =
        internal::DecodeIndexEntry(address, r.Bytes(0, 0));
    if (!entry.ok()) return Damaged(run, address, entry.status());
    return internal::NewPgS3TensorReader(
        ctx_, std::string(run), TensorMeta{entry->header, entry->sequence},
        std::string(r.Text(0, 1)), entry->chunk_size, r.Bytes(0, 2));
  }

  // --- reports -------------------------------------------------------------

  absl::Status PutReport(const StoredReport& report) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(PgTransaction txn, PgTransaction::Begin(conn.get()));
    StoredReport summary = report;
    summary.created = internal::TruncateToMicros(report.created);
    summary.renderings.clear();
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        txn.Exec("INSERT INTO reports (id, ref, cand, created_us, summary) "
                 "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                 PgParams()
                     .Text(report.id)
                     .Bytes(report.ref)
                     .Bytes(report.cand)
                     .Int(absl::ToUnixMicros(summary.created))
                     .Bytes(internal::EncodeReportSummary(summary))));
    if (r.affected() == 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("report ", VisibleName(report.id), " already exists"));
    }
    for (const auto& [format, body] : report.renderings) {
      REPROD_RETURN_IF_ERROR(
          txn.Exec("INSERT INTO report_renderings (id, format, body) VALUES "
                   "($1, $2, $3)",
                   PgParams().Text(report.id).Text(format).Bytes(body))
              .status());
    }
    return txn.Commit();
  }

  absl::StatusOr<StoredReport> GetReport(std::string_view id) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r, conn->Exec("SELECT summary FROM reports WHERE id = $1",
                               PgParams().Text(id)));
    if (r.rows() == 0) {
      return absl::NotFoundError(
          absl::StrCat("report ", VisibleName(id), " not found"));
    }
    REPROD_ASSIGN_OR_RETURN(StoredReport report,
                            internal::DecodeReportSummary(id, r.Bytes(0, 0)));
    REPROD_ASSIGN_OR_RETURN(
        PgResult renderings,
        conn->Exec("SELECT format, body FROM report_renderings WHERE id = $1",
                   PgParams().Text(id)));
    for (int i = 0; i < renderings.rows(); ++i) {
      report.renderings[std::string(renderings.Text(i, 0))] =
          renderings.Bytes(i, 1);
    }
    return report;
  }

  absl::StatusOr<std::vector<StoredReport>> ListReports(std::string_view run,
                                                        size_t limit) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    PgParams params;
    std::string sql = "SELECT id, summary FROM reports";
    if (!run.empty()) {
      params.Bytes(run);
      sql += " WHERE ref = $1 OR cand = $1";
    }
    params.Int(static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
    sql += absl::StrCat(" ORDER BY created_us DESC, id DESC LIMIT $",
                        params.size());
    REPROD_ASSIGN_OR_RETURN(PgResult r, conn->Exec(sql, params));
    std::vector<StoredReport> out;
    for (int i = 0; i < r.rows(); ++i) {
      REPROD_ASSIGN_OR_RETURN(
          StoredReport report,
          internal::DecodeReportSummary(r.Text(i, 0), r.Bytes(i, 1)));
      out.push_back(std::move(report));
    }
    return out;
  }

  // --- auth records --------------------------------------------------------

  absl::Status PutAuthRecord(std::string_view key,
                             std::string_view value) override {
    REPROD_RETURN_IF_ERROR(internal::CheckAuthKey(key));
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    return conn
        ->Exec("INSERT INTO auth_records (key, value) VALUES ($1, $2) "
               "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
               PgParams().Bytes(key).Bytes(value))
        .status();
  }

  absl::Status InsertAuthRecord(std::string_view key,
                                std::string_view value) override {
    REPROD_RETURN_IF_ERROR(internal::CheckAuthKey(key));
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r, conn->Exec("INSERT INTO auth_records (key, value) VALUES "
                               "($1, $2) ON CONFLICT (key) DO NOTHING",
                               PgParams().Bytes(key).Bytes(value)));
    if (r.affected() == 0) return internal::AuthRecordExistsError(key);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> GetAuthRecord(std::string_view key) override {
    REPROD_RETURN_IF_ERROR(internal::CheckAuthKey(key));
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r, conn->Exec("SELECT value FROM auth_records WHERE key = $1",
                               PgParams().Bytes(key)));
    if (r.rows() == 0) return internal::AuthRecordNotFoundError(key);
    return r.Bytes(0, 0);
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
  ListAuthRecords(std::string_view prefix) override {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec(absl::StrCat("SELECT key, value FROM auth_records WHERE ",
                                PrefixWhere("key", 1), " ORDER BY key"),
                   PgParams().Bytes(prefix)));
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      out.emplace_back(r.Bytes(i, 0), r.Bytes(i, 1));
    }
    return out;
  }

  // --- maintenance ---------------------------------------------------------

  absl::StatusOr<BackupInfo> Backup(const std::string& dir) override {
    return absl::UnimplementedError(absl::StrCat(
        "the postgres+s3 store is backed up by its engines (pg_dump or "
        "PostgreSQL's continuous archiving, and the object store's "
        "versioning or replication), not into ",
        dir, "; see deploy/README.md"));
  }

  // Sweeps now (garbage past its grace, dead replicas' uploads) and says
  // how many object bytes that gave back.
  absl::StatusOr<CompactInfo> Compact() override {
    REPROD_ASSIGN_OR_RETURN(uint64_t before, HeldBytes());
    REPROD_RETURN_IF_ERROR(Sweep());
    REPROD_ASSIGN_OR_RETURN(uint64_t after, HeldBytes());
    return CompactInfo{before, after};
  }

  WorkQueue* work_queue() override { return work_queue_.get(); }

  // Every read is an HTTP round trip (a few ms on loopback radosgw for a
  // small tensor): eight in flight per side hide most of it.
  int read_parallelism() const override { return 8; }

  // Reclaims the uploads of dead replicas and the garbage that is due.
  absl::Status Sweep() {
    absl::MutexLock sweeping(&sweep_mu_);
    REPROD_RETURN_IF_ERROR(SweepDeadReplicas());
    REPROD_RETURN_IF_ERROR(SweepAbandonedWork());
    return SweepGarbage();
  }

 private:
  absl::StatusOr<int64_t> RunId(PgConnection& conn, std::string_view run) {
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn.Exec("SELECT id FROM runs WHERE name = $1", PgParams().Bytes(run)));
    if (r.rows() == 0) return internal::RunNotFoundError(run);
    return r.Int(0, 0);
  }

  static absl::Status Damaged(std::string_view run,
                              const TensorAddress& address,
                              const absl::Status& status) {
    return absl::DataLossError(
        absl::StrCat(internal::DescribeTensor(run, address), ": ",
                     std::string(status.message())));
  }

  int64_t GraceDeadline() const {
    return NowMicros() +
           absl::ToInt64Microseconds(ctx_->options.delete_grace);
  }

  // Bytes of objects: named by tensors, waiting as garbage, being uploaded.
  absl::StatusOr<uint64_t> HeldBytes() {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult r,
        conn->Exec("SELECT (SELECT coalesce(sum(byte_length), 0) FROM tensors "
                   "WHERE object_key IS NOT NULL) + (SELECT coalesce(sum(bytes), "
                   "0) FROM garbage)"));
    return static_cast<uint64_t>(r.Int(0, 0));
  }

  absl::Status SweepDeadReplicas() {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    REPROD_ASSIGN_OR_RETURN(
        PgResult replicas,
        conn->Exec("SELECT DISTINCT replica FROM uploads WHERE replica <> $1",
                   PgParams().Int(ctx_->replica)));
    for (int i = 0; i < replicas.rows(); ++i) {
      const int64_t replica = replicas.Int(i, 0);
      // A free lock means the replica's session is gone: it died.
      REPROD_ASSIGN_OR_RETURN(
          PgResult locked,
          conn->Exec("SELECT pg_try_advisory_lock($1::int, $2::int)",
                     PgParams().Int(internal::kReplicaLockClass).Int(replica)));
      if (!locked.Bool(0, 0)) continue;
      absl::Status s = ReclaimUploadsOf(*conn.get(), replica);
      absl::Status unlocked =
          conn->Exec("SELECT pg_advisory_unlock($1::int, $2::int)",
                     PgParams().Int(internal::kReplicaLockClass).Int(replica))
              .status();
      REPROD_RETURN_IF_ERROR(s);
      REPROD_RETURN_IF_ERROR(unlocked);
    }
    return absl::OkStatus();
  }

  absl::Status ReclaimUploadsOf(PgConnection& conn, int64_t replica) {
    REPROD_ASSIGN_OR_RETURN(
        PgResult uploads,
        conn.Exec("SELECT object_key, upload_id FROM uploads WHERE replica = $1",
                  PgParams().Int(replica)));
    for (int i = 0; i < uploads.rows(); ++i) {
      const std::string key(uploads.Text(i, 0));
      const std::string upload_id(uploads.Text(i, 1));
      REPROD_RETURN_IF_ERROR(
          internal::DeleteObjectAndUploads(*ctx_->s3, key, upload_id));
      REPROD_RETURN_IF_ERROR(conn.Exec("DELETE FROM uploads WHERE object_key = $1",
                                       PgParams().Text(key))
                                 .status());
      spdlog::info("postgres+s3: reclaimed object {} of dead replica {}", key,
                   replica);
    }
    return absl::OkStatus();
  }

  // Jobs whose submitter died never get dropped; a day on, nobody waits.
  absl::Status SweepAbandonedWork() {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    return conn
        ->Exec("DELETE FROM work_batches WHERE created_us < $1",
               PgParams().Int(NowMicros() - absl::ToInt64Microseconds(absl::Hours(24))))
        .status();
  }

  absl::Status SweepGarbage() {
    REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, ctx_->pool->Acquire());
    while (true) {
      REPROD_ASSIGN_OR_RETURN(
          PgResult due,
          conn->Exec("SELECT object_key, upload_id FROM garbage "
                     "WHERE delete_after_us <= $1 ORDER BY delete_after_us "
                     "LIMIT 1000",
                     PgParams().Int(NowMicros())));
      if (due.rows() == 0) return absl::OkStatus();
      for (int i = 0; i < due.rows(); ++i) {
        const std::string key(due.Text(i, 0));
        REPROD_RETURN_IF_ERROR(internal::DeleteObjectAndUploads(
            *ctx_->s3, key, std::string(due.Text(i, 1))));
        REPROD_RETURN_IF_ERROR(
            conn->Exec("DELETE FROM garbage WHERE object_key = $1",
                       PgParams().Text(key))
                .status());
      }
    }
  }

  void SweepLoop() {
    while (!stop_.WaitForNotificationWithTimeout(ctx_->options.sweep_interval)) {
      if (absl::Status s = Sweep(); !s.ok()) {
        spdlog::warn("postgres+s3: sweep failed (retried in {}): {}",
                     absl::FormatDuration(ctx_->options.sweep_interval),
                     s.ToString());
      }
    }
  }

  std::shared_ptr<PgS3Context> ctx_;
  // Holds the advisory lock that tells other replicas this one lives.
  std::unique_ptr<PgConnection> liveness_;
  std::unique_ptr<WorkQueue> work_queue_;
  absl::Mutex sweep_mu_;
  absl::Notification stop_;
  std::thread sweeper_;
};

// Takes a replica id nobody holds and has uploads under, on `conn` (kept
// open by the store for as long as it lives).
absl::StatusOr<int32_t> ClaimReplicaId(PgConnection& conn) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    int32_t id = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&id), sizeof(id)) != 1) {
      id = static_cast<int32_t>(NowMicros());
    }
    id &= 0x7fffffff;
    if (id == 0) continue;
    REPROD_ASSIGN_OR_RETURN(
        PgResult locked,
        conn.Exec("SELECT pg_try_advisory_lock($1::int, $2::int)",
                  PgParams().Int(internal::kReplicaLockClass).Int(id)));
    if (!locked.Bool(0, 0)) continue;
    REPROD_ASSIGN_OR_RETURN(
        PgResult used, conn.Exec("SELECT 1 FROM uploads WHERE replica = $1 LIMIT 1",
                                 PgParams().Int(id)));
    if (used.rows() == 0) return id;
    REPROD_RETURN_IF_ERROR(
        conn.Exec("SELECT pg_advisory_unlock($1::int, $2::int)",
                  PgParams().Int(internal::kReplicaLockClass).Int(id))
            .status());
  }
  return absl::InternalError("could not claim a free replica id in 100 tries");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenPostgresS3Store(
    const PostgresS3StoreOptions& options) {
  if (options.pg_url.empty()) {
    return absl::InvalidArgumentError(
        "postgres+s3 store: no PostgreSQL URL (--pg-url)");
  }
  if (options.part_size < (uint64_t{5} << 20) || options.block_size == 0 ||
      options.pg_connections < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "postgres+s3 store: part size ", options.part_size,
        " must be at least 5 MiB, block size ", options.block_size,
        " above 0, and at least 2 PostgreSQL connections (", options.pg_connections,
        ")"));
  }
  if (!options.s3_prefix.empty() && !options.s3_prefix.ends_with('/')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "postgres+s3 store: the S3 prefix '", options.s3_prefix,
        "' must end with '/'"));
  }
  auto ctx = std::make_shared<PgS3Context>();
  ctx->options = options;
  REPROD_ASSIGN_OR_RETURN(ctx->s3, S3Client::Create(options.s3));
  REPROD_RETURN_IF_ERROR(ctx->s3->EnsureBucket());
  REPROD_ASSIGN_OR_RETURN(
      std::unique_ptr<PgConnection> liveness,
      PgConnection::Connect(options.pg_url, options.pg_schema));
  REPROD_RETURN_IF_ERROR(internal::ApplyMigrations(*liveness, options.pg_schema));
  REPROD_ASSIGN_OR_RETURN(ctx->replica, ClaimReplicaId(*liveness));
  ctx->pool = std::make_unique<PgPool>(options.pg_url, options.pg_schema,
                                       options.pg_connections);
  auto store = std::make_unique<PostgresS3Store>(ctx, std::move(liveness));
  if (absl::Status s = store->Sweep(); !s.ok()) {
    spdlog::warn("postgres+s3: first sweep failed (retried later): {}",
                 s.ToString());
  }
  spdlog::info("postgres+s3 store: schema {}, bucket {}, replica {}",
               options.pg_schema, options.s3.bucket, ctx->replica);
  return store;
}

}  // namespace reprod::storage

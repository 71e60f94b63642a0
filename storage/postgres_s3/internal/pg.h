// File: storage/postgres_s3/internal/pg.h
//
// A thin, exception-free layer over libpq for the postgres+s3 store:
// parameterised statements, results read by row and column, errors as
// absl::Status, and a pool of connections shared by the store's threads.
//
//   REPROD_ASSIGN_OR_RETURN(PgPool::Lease conn, pool.Acquire());
//   PgParams p;
//   p.Bytes(run_name).Int(42);
//   REPROD_ASSIGN_OR_RETURN(PgResult r, conn->Exec(
//       "SELECT id FROM runs WHERE name = $1 AND x = $2", p));
//   if (r.rows() == 1) id = r.Int(0, 0);
//
// Values go to the server as text, except bytea parameters (Bytes), which
// go as binary so that any byte survives; results come back as text and
// bytea columns are unescaped by Bytes().
//
// Errors: a lost or refused connection is Unavailable; unique_violation
// (SQLSTATE 23505) AlreadyExists; serialization failure and deadlock
// (40001, 40P01) Aborted; anything else Internal. Messages carry the
// server's message and the statement's first words, never parameters.
//
// Thread-safety: a PgConnection is used by one thread at a time; PgPool
// is thread-safe.
#ifndef REPROD_STORAGE_POSTGRES_S3_INTERNAL_PG_H_
#define REPROD_STORAGE_POSTGRES_S3_INTERNAL_PG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

struct pg_conn;
struct pg_result;

namespace reprod::storage::internal {

// Statement parameters, $1, $2, ... in the order added.
class PgParams {
 public:
  PgParams& Text(std::string_view value);
  PgParams& Int(int64_t value);
  PgParams& Bool(bool value);
  PgParams& Bytes(std::string_view value);  // bytea, sent as binary
  PgParams& Null();

  int size() const { return static_cast<int>(values_.size()); }
  std::vector<const char*> values() const;
  std::vector<int> lengths() const;
  const std::vector<int>& formats() const { return formats_; }
  const std::vector<unsigned int>& types() const { return types_; }

 private:
  std::vector<std::string> values_;
  std::vector<bool> is_null_;
  std::vector<int> formats_;
  std::vector<unsigned int> types_;  // Oid
};

// A statement's result; text format.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(pg_result* result);
  PgResult(PgResult&& other) noexcept;
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;
  ~PgResult();

  int rows() const;
  // Rows changed by INSERT/UPDATE/DELETE.
  uint64_t affected() const;
  bool IsNull(int row, int col) const;
  std::string_view Text(int row, int col) const;
  int64_t Int(int row, int col) const;  // 0 for NULL or garbage
  bool Bool(int row, int col) const;    // "t"
  std::string Bytes(int row, int col) const;  // bytea unescaped
  pg_result* raw() const { return result_; }

 private:
  pg_result* result_ = nullptr;
};

class PgConnection {
 public:
  // Connects with a libpq connection string or URL; `schema` (when not
  // empty) becomes the search_path. Unavailable when the server cannot be
  // reached, with libpq's reason.
  static absl::StatusOr<std::unique_ptr<PgConnection>> Connect(
      const std::string& conninfo, const std::string& schema);

  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  absl::StatusOr<PgResult> Exec(std::string_view sql,
                                const PgParams& params = PgParams());
  // Several statements without parameters (migrations).
  absl::Status ExecScript(std::string_view sql);

  // The connection broke (the pool then drops it instead of reusing it).
  bool broken() const;

 private:
  explicit PgConnection(pg_conn* conn) : conn_(conn) {}
  pg_conn* conn_;
};

// "\"name\"": an identifier quoted for SQL (doubles embedded quotes).
std::string QuoteIdentifier(std::string_view name);

// A transaction on one connection: BEGIN on Begin, ROLLBACK on destruction
// unless Commit succeeded.
class PgTransaction {
 public:
  static absl::StatusOr<PgTransaction> Begin(PgConnection* conn);
  PgTransaction(PgTransaction&& other) noexcept
      : conn_(other.conn_), open_(other.open_) {
    other.open_ = false;
  }
  PgTransaction& operator=(PgTransaction&&) = delete;
  ~PgTransaction();

  absl::StatusOr<PgResult> Exec(std::string_view sql,
                                const PgParams& params = PgParams()) {
    return conn_->Exec(sql, params);
  }
  absl::Status Commit();

 private:
  explicit PgTransaction(PgConnection* conn) : conn_(conn), open_(true) {}
  PgConnection* conn_;
  bool open_;
};

// Connections to one database, opened on demand up to `max_size`; Acquire
// waits while all are in use.
class PgPool {
 public:
  PgPool(std::string conninfo, std::string schema, int max_size)
      : conninfo_(std::move(conninfo)),
        schema_(std::move(schema)),
        max_size_(max_size) {}

  // Returns the connection to the pool when destroyed (or closes it when
  // it broke).
  class Lease {
   public:
    Lease(PgPool* pool, std::unique_ptr<PgConnection> conn)
        : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    PgConnection* operator->() const { return conn_.get(); }
    PgConnection* get() const { return conn_.get(); }

   private:
    PgPool* pool_;
    std::unique_ptr<PgConnection> conn_;
  };

  absl::StatusOr<Lease> Acquire();

  const std::string& conninfo() const { return conninfo_; }
  const std::string& schema() const { return schema_; }

 private:
  void Release(std::unique_ptr<PgConnection> conn);

  const std::string conninfo_;
  const std::string schema_;
  const int max_size_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<PgConnection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_POSTGRES_S3_INTERNAL_PG_H_

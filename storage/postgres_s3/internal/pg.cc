#include "storage/postgres_s3/internal/pg.h"

#include <libpq-fe.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace reprod::storage::internal {
namespace {

// Type OIDs of the parameters we send (pg_type.h); 0 lets the server infer.
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kBoolOid = 16;

// The statement's first words, for messages (never its parameters).
std::string StatementHead(std::string_view sql) {
  std::string head(sql.substr(0, 60));
  for (char& c : head) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  return sql.size() > 60 ? head + "..." : head;
}

void LogNotice(void* /*arg*/, const char* message) {
  std::string text(message);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  spdlog::debug("postgres: {}", text);
}

absl::Status ResultError(PGconn* conn, PGresult* result, std::string_view sql) {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = result ? PQresultErrorMessage(result) : PQerrorMessage(conn);
  message = std::string(absl::StripAsciiWhitespace(message));
  const std::string text =
      absl::StrCat("PostgreSQL: ", message, " (in '", StatementHead(sql), "')");
  if (PQstatus(conn) != CONNECTION_OK) return absl::UnavailableError(text);
  const std::string code = state ? state : "";
  if (code == "23505") return absl::AlreadyExistsError(text);
  if (code == "40001" || code == "40P01") return absl::AbortedError(text);
  if (code.starts_with("08") || code == "57P01" || code == "57P02" ||
      code == "57P03") {
    return absl::UnavailableError(text);
  }
  return absl::InternalError(text);
}

}  // namespace

// --- PgParams ----------------------------------------------------------------

PgParams& PgParams::Text(std::string_view value) {
  values_.emplace_back(value);
  is_null_.push_back(false);
  formats_.push_back(0);
  types_.push_back(0);
  return *this;
}

PgParams& PgParams::Int(int64_t value) {
  values_.push_back(std::to_string(value));
  is_null_.push_back(false);
  formats_.push_back(0);
  types_.push_back(kInt8Oid);
  return *this;
}

PgParams& PgParams::Bool(bool value) {
  values_.emplace_back(value ? "true" : "false");
  is_null_.push_back(false);
  formats_.push_back(0);
  types_.push_back(kBoolOid);
  return *this;
}

PgParams& PgParams::Bytes(std::string_view value) {
  values_.emplace_back(value);
  is_null_.push_back(false);
  formats_.push_back(1);
  types_.push_back(kByteaOid);
  return *this;
}

PgParams& PgParams::Null() {
  values_.emplace_back();
  is_null_.push_back(true);
  formats_.push_back(0);
  types_.push_back(0);
  return *this;
}

std::vector<const char*> PgParams::values() const {
  std::vector<const char*> out;
  out.reserve(values_.size());
  for (size_t i = 0; i < values_.size(); ++i) {
    out.push_back(is_null_[i] ? nullptr : values_[i].data());
  }
  return out;
}

std::vector<int> PgParams::lengths() const {
  std::vector<int> out;
  out.reserve(values_.size());
  for (const std::string& v : values_) out.push_back(static_cast<int>(v.size()));
  return out;
}

// --- PgResult ----------------------------------------------------------------

PgResult::PgResult(pg_result* result) : result_(result) {}

PgResult::PgResult(PgResult&& other) noexcept : result_(other.result_) {
  other.result_ = nullptr;
}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    if (result_ != nullptr) PQclear(result_);
    result_ = other.result_;
    other.result_ = nullptr;
  }
  return *this;
}

PgResult::~PgResult() {
  if (result_ != nullptr) PQclear(result_);
}

int PgResult::rows() const { return result_ ? PQntuples(result_) : 0; }

uint64_t PgResult::affected() const {
  if (result_ == nullptr) return 0;
  const char* n = PQcmdTuples(result_);
  return (n && *n) ? std::strtoull(n, nullptr, 10) : 0;
}

bool PgResult::IsNull(int row, int col) const {
  return PQgetisnull(result_, row, col) != 0;
}

std::string_view PgResult::Text(int row, int col) const {
  return std::string_view(PQgetvalue(result_, row, col),
                          static_cast<size_t>(PQgetlength(result_, row, col)));
}

int64_t PgResult::Int(int row, int col) const {
  std::string_view text = Text(row, col);
  int64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

bool PgResult::Bool(int row, int col) const { return Text(row, col) == "t"; }

std::string PgResult::Bytes(int row, int col) const {
  if (IsNull(row, col)) return {};
  size_t length = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result_, row, col)),
      &length);
  if (raw == nullptr) return {};
  std::string out(reinterpret_cast<const char*>(raw), length);
  PQfreemem(raw);
  return out;
}

// --- PgConnection --------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::Connect(
    const std::string& conninfo, const std::string& schema) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (conn == nullptr) {
    return absl::ResourceExhaustedError("PostgreSQL: out of memory connecting");
  }
  std::unique_ptr<PgConnection> out(new PgConnection(conn));
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string reason = absl::StrCat(absl::StripAsciiWhitespace(PQerrorMessage(conn)));
    return absl::UnavailableError(absl::StrCat(
        "cannot connect to PostgreSQL (", PQhost(conn) ? PQhost(conn) : "?", ":",
        PQport(conn) ? PQport(conn) : "?", "): ", reason));
  }
  PQsetNoticeProcessor(conn, &LogNotice, nullptr);
  REPROD_RETURN_IF_ERROR(out->Exec("SET client_min_messages TO warning").status());
  if (!schema.empty()) {
    REPROD_RETURN_IF_ERROR(
        out->Exec(absl::StrCat("SET search_path TO ", QuoteIdentifier(schema)))
            .status());
  }
  return out;
}

PgConnection::~PgConnection() { PQfinish(conn_); }

bool PgConnection::broken() const { return PQstatus(conn_) != CONNECTION_OK; }

absl::StatusOr<PgResult> PgConnection::Exec(std::string_view sql,
                                            const PgParams& params) {
  const std::string statement(sql);
  const std::vector<const char*> values = params.values();
  const std::vector<int> lengths = params.lengths();
  PgResult result(PQexecParams(conn_, statement.c_str(), params.size(),
                               params.types().data(), values.data(),
                               lengths.data(), params.formats().data(),
                               /*resultFormat=*/0));
  PGresult* raw = result.raw();
  const ExecStatusType status = raw ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return ResultError(conn_, raw, sql);
  }
  return result;
}

absl::Status PgConnection::ExecScript(std::string_view sql) {
  const std::string script(sql);
  PgResult result(PQexec(conn_, script.c_str()));
  PGresult* raw = result.raw();
  const ExecStatusType status = raw ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return ResultError(conn_, raw, sql);
  }
  return absl::OkStatus();
}

std::string QuoteIdentifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

// --- PgTransaction -------------------------------------------------------------

absl::StatusOr<PgTransaction> PgTransaction::Begin(PgConnection* conn) {
  REPROD_RETURN_IF_ERROR(conn->Exec("BEGIN").status());
  return PgTransaction(conn);
}

PgTransaction::~PgTransaction() {
  if (open_ && !conn_->broken()) {
    absl::Status s = conn_->Exec("ROLLBACK").status();
    if (!s.ok()) spdlog::warn("postgres: rollback failed: {}", s.ToString());
  }
}

absl::Status PgTransaction::Commit() {
  open_ = false;
  return conn_->Exec("COMMIT").status();
}

// --- PgPool --------------------------------------------------------------------

PgPool::Lease::~Lease() {
  if (pool_ != nullptr && conn_ != nullptr) pool_->Release(std::move(conn_));
}

absl::StatusOr<PgPool::Lease> PgPool::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    auto can_take = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < max_size_;
    };
    mu_.Await(absl::Condition(&can_take));
    if (!idle_.empty()) {
      std::unique_ptr<PgConnection> conn = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(conn));
    }
    ++open_;  // reserve a slot; connect outside the lock
  }
  absl::StatusOr<std::unique_ptr<PgConnection>> conn =
      PgConnection::Connect(conninfo_, schema_);
  if (!conn.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
    return conn.status();
  }
  return Lease(this, *std::move(conn));
}

void PgPool::Release(std::unique_ptr<PgConnection> conn) {
  absl::MutexLock lock(&mu_);
  if (conn->broken()) {
    --open_;
    return;  // closed by its destructor
  }
  idle_.push_back(std::move(conn));
}

}  // namespace reprod::storage::internal

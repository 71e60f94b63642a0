#include "storage/rocksdb/rocksdb_store.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "rocksdb/cache.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "spdlog/spdlog.h"
#include "storage/internal/tensor_checks.h"
#include "storage/rocksdb/internal/keys.h"
#include "storage/rocksdb/internal/records.h"
#include "storage/rocksdb/internal/rocksdb_store_impl.h"
#include "storage/rocksdb/internal/status.h"
#include "storage/rocksdb/internal/tensor_reader.h"
#include "storage/rocksdb/internal/tensor_writer.h"

namespace reprod::storage {
namespace internal {
namespace {

constexpr uint32_t kMaxChunkSize = 64u << 20;
// Above this many chunks an abandoned or replaced tensor's chunks are
// deleted with one range tombstone instead of point deletes (range
// tombstones slow down memtable reads in RocksDB 7.x, so use them sparingly).
constexpr uint64_t kMaxPointDeletes = 1024;
// Free bytes below which writes stopped by ENOSPC are not resumed, however
// low min_free_bytes is (resuming flushes the memtables).
constexpr uint64_t kMinResumeBytes = 1 << 20;
constexpr char kRunCounter[] = "run";
constexpr char kBlobCounter[] = "blob";

rocksdb::Slice ToSlice(std::string_view s) {
  return rocksdb::Slice(s.data(), s.size());
}

std::string_view ToView(const rocksdb::Slice& s) {
  return std::string_view(s.data(), s.size());
}

// Calls fn(key, value) for every key of `cf` starting with `prefix`, in key
// order, reading at `snapshot` (nullptr: now).
absl::Status ScanPrefix(
    rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, std::string_view prefix,
    const rocksdb::Snapshot* snapshot,
    const std::function<absl::Status(std::string_view, std::string_view)>& fn) {
  const std::string upper = PrefixUpperBound(prefix);
  const rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  if (!upper.empty()) ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, cf));
  for (it->Seek(ToSlice(prefix)); it->Valid(); it->Next()) {
    const std::string_view key = ToView(it->key());
    if (!key.starts_with(prefix)) break;
    REPROD_RETURN_IF_ERROR(fn(key, ToView(it->value())));
  }
  return FromRocksDb(it->status(), "scan");
}

// RocksDB's info log through spdlog instead of a LOG file in the store
// directory. Debian's librocksdb is built with assertions on, and its file
// logger aborts the process (`Assertion 'sync_without_flush_called_'`) when
// it writes again after a write of its own met ENOSPC, which the error
// handler does at once to report that very ENOSPC: a full disk must be an
// answer, not a crash. RocksDB's INFO lines go to debug, warnings and
// errors to warn and error.
class SpdlogLogger final : public rocksdb::Logger {
 public:
  explicit SpdlogLogger(std::string dir)
      : rocksdb::Logger(spdlog::should_log(spdlog::level::debug)
                            ? rocksdb::InfoLogLevel::INFO_LEVEL
                            : rocksdb::InfoLogLevel::WARN_LEVEL),
        dir_(std::move(dir)) {}

  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format,
            va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char line[2048];
    std::vsnprintf(line, sizeof(line), format, ap);
    const spdlog::level::level_enum to =
        level >= rocksdb::InfoLogLevel::HEADER_LEVEL  ? spdlog::level::debug
        : level >= rocksdb::InfoLogLevel::ERROR_LEVEL ? spdlog::level::err
        : level >= rocksdb::InfoLogLevel::WARN_LEVEL  ? spdlog::level::warn
                                                      : spdlog::level::debug;
    spdlog::log(to, "rocksdb {}: {}", dir_, line);
  }

 private:
  const std::string dir_;
};

// Turns RocksDB's own recovery from ENOSPC off and flags the store instead
// (RocksDbStore::MaybeResume resumes). RocksDB's recovery polls every 5 s
// for one write buffer (64 MiB) of free space and meanwhile answers every
// DB::Resume() with Busy; ours resumes at the first write that finds
// min_free_bytes free.
class NoSpaceListener final : public rocksdb::EventListener {
 public:
  NoSpaceListener(std::string dir, std::atomic<bool>* needs_resume)
      : dir_(std::move(dir)), needs_resume_(needs_resume) {}
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason reason,
                            rocksdb::Status bg_error,
                            bool* auto_recovery) override {
    if (!bg_error.IsNoSpace()) return;
    *auto_recovery = false;
    needs_resume_->store(true);
    spdlog::error(
        "store {}: the disk filled up during a {}: writes are refused "
        "(RESOURCE_EXHAUSTED) until space is freed; acknowledged tensors stay "
        "readable ({})",
        dir_, ReasonName(reason), bg_error.ToString());
  }

 private:
  static std::string_view ReasonName(rocksdb::BackgroundErrorReason reason) {
    switch (reason) {
      case rocksdb::BackgroundErrorReason::kFlush:
      case rocksdb::BackgroundErrorReason::kFlushNoWAL:
        return "memtable flush (to blob and table files)";
      case rocksdb::BackgroundErrorReason::kCompaction:
        return "compaction";
      case rocksdb::BackgroundErrorReason::kWriteCallback:
      case rocksdb::BackgroundErrorReason::kMemTable:
        return "write-ahead log write";
      case rocksdb::BackgroundErrorReason::kManifestWrite:
      case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL:
        return "manifest write";
    }
    return "write";
  }

  const std::string dir_;
  std::atomic<bool>* const needs_resume_;
};

rocksdb::ColumnFamilyOptions TableOptions(
    const std::shared_ptr<rocksdb::Cache>& cache, bool bloom) {
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  if (bloom) table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  rocksdb::ColumnFamilyOptions cf;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return cf;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RocksDbStore>> RocksDbStore::Open(
    const std::string& dir, const RocksDbStoreOptions& options) {
  if (dir.empty()) {
    return absl::InvalidArgumentError("store directory is empty");
  }
  if (options.chunk_size == 0 || options.chunk_size > kMaxChunkSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_size ", options.chunk_size, " is not in [1, ",
                     kMaxChunkSize, "]"));
  }
  if (options.chunk_write_buffer_bytes < (1 << 20)) {
    return absl::InvalidArgumentError(
        "chunk_write_buffer_bytes must be at least 1 MiB");
  }

  rocksdb::DBOptions db;
  db.create_if_missing = options.create_if_missing;
  db.create_missing_column_families = true;
  // Recovery replays a prefix of the WAL: a chunk that survives implies its
  // pending marker (written before it) survives too.
  db.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db.max_background_jobs = std::max(2, options.background_jobs);
  // "meta" sees a trickle of small writes; without a cap its memtable would
  // pin every WAL file the busy "chunks" family has long flushed. Each WAL
  // file is preallocated (1.1 write buffers) and every chunk byte sits in a
  // WAL and then a blob file: with 2 buffers at most two WAL files outlive
  // their flush (with 4, three: ~200 MiB more of the disk in use while 128
  // MiB of tensors were pushed), so the disk a flush needs stays within
  // min_free_bytes' default.
  db.max_total_wal_size = 2 * options.chunk_write_buffer_bytes;
  db.keep_log_file_num = 4;
  // Start writing back WAL and blob/SST data early so that a commit's fsync
  // and flushes do not stall on a large backlog of dirty pages.
  db.wal_bytes_per_sync = 4 << 20;
  db.bytes_per_sync = 4 << 20;
  db.info_log = std::make_shared<SpdlogLogger>(dir);

  const std::shared_ptr<rocksdb::Cache> cache =
      rocksdb::NewLRUCache(options.block_cache_bytes);
  rocksdb::ColumnFamilyOptions meta_cf = TableOptions(cache, /*bloom=*/true);
  rocksdb::ColumnFamilyOptions reports_cf = TableOptions(cache, /*bloom=*/true);
  rocksdb::ColumnFamilyOptions chunks_cf = TableOptions(cache, /*bloom=*/false);
  chunks_cf.write_buffer_size = options.chunk_write_buffer_bytes;
  // Chunk bytes stay in the memtable until a flush moves them to a blob
  // file, so memtables bound the store's share of server memory: at most 2
  // (one filling, one flushing) x chunk_write_buffer_bytes; when flushing
  // lags, writes stall instead of piling up. With 4, a 2 x 2 GiB push under
  // CPU load peaked at ~620 MiB RSS.
  chunks_cf.max_write_buffer_number = 2;
  chunks_cf.compression = rocksdb::kNoCompression;
  chunks_cf.enable_blob_files = true;
  chunks_cf.min_blob_size = 4096;
  chunks_cf.blob_file_size = options.blob_file_bytes;
  chunks_cf.blob_compression_type = rocksdb::kNoCompression;
  chunks_cf.enable_blob_garbage_collection = options.blob_garbage_collection;

  const std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {"meta", meta_cf},
      {"chunks", chunks_cf},
      {"reports", reports_cf},
  };
  std::unique_ptr<RocksDbStore> store(new RocksDbStore(dir, options));
  db.listeners.push_back(
      std::make_shared<NoSpaceListener>(dir, &store->needs_resume_));
  REPROD_RETURN_IF_ERROR(store->Init(db, cfs));
  REPROD_RETURN_IF_ERROR(store->CheckFormat());
  REPROD_RETURN_IF_ERROR(store->LoadCounters());
  REPROD_RETURN_IF_ERROR(store->RecoverPendingUploads());
  if (!store->read_only_) {
    REPROD_RETURN_IF_ERROR(store->segments_.Ensure());
    REPROD_ASSIGN_OR_RETURN(const uint64_t swept, store->SweepSegments(/*at_open=*/true));
    if (swept > 0) {
      spdlog::info("store {}: deleted {} segment files of uploads that never committed", dir,
                   swept);
    }
  }
  return store;
}

absl::Status RocksDbStore::Init(
    const rocksdb::DBOptions& db_options,
    const std::vector<rocksdb::ColumnFamilyDescriptor>& cfs) {
  if (db_options.create_if_missing) {
    // Created here, RocksDB does not log its absence as an error.
    std::error_code ignored;
    std::filesystem::create_directories(dir_, ignored);
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir_, cfs, &handles_, &raw);
  if (s.IsNoSpace()) {
    // Opening flushes the recovered WAL, which needs space: serve reads.
    const std::string why = s.ToString();
    handles_.clear();
    s = rocksdb::DB::OpenForReadOnly(db_options, dir_, cfs, &handles_, &raw);
    if (s.ok()) {
      read_only_ = true;
      spdlog::error(
          "store {}: opened READ-ONLY because the disk is full ({}): reads "
          "are served, writes refused (RESOURCE_EXHAUSTED); free space and "
          "restart reprodd to write again",
          dir_, why);
    }
  }
  if (!s.ok()) {
    if (s.IsIOError() &&
        absl::AsciiStrToLower(s.ToString()).find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store directory ", dir_,
          " is in use: another process (or another store in this process) "
          "has it open; rocksdb: ",
          s.ToString()));
    }
    if (s.IsInvalidArgument()) {  // e.g. no store and !create_if_missing
      return absl::FailedPreconditionError(
          absl::StrCat("store directory ", dir_, ": rocksdb: ", s.ToString()));
    }
    return Annotate(FromRocksDb(s, "open"),
                    absl::StrCat("store directory ", dir_));
  }
  db_.reset(raw);
  meta_ = handles_[1];
  chunks_ = handles_[2];
  reports_ = handles_[3];
  return absl::OkStatus();
}

RocksDbStore::~RocksDbStore() {
  if (db_ == nullptr) return;
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  }
  db_->Close().PermitUncheckedError();
}

absl::Status RocksDbStore::CheckFormat() {
  std::string value;
  const rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), meta_, ToSlice(kFormatKey), &value);
  if (s.IsNotFound()) {
    rocksdb::WriteBatch batch;
    batch.Put(meta_, ToSlice(kFormatKey), EncodeFormatRecord())
        .PermitUncheckedError();
    return Write(batch, /*sync=*/true, "write format record");
  }
  REPROD_RETURN_IF_ERROR(FromRocksDb(s, "read format record"));
  REPROD_RETURN_IF_ERROR(Annotate(CheckFormatRecord(value),
                                  absl::StrCat("store directory ", dir_)));
  // An older layout is read as it is (a run without a stats record counts
  // with its run record). Its version is raised before this build writes
  // stats records, so that a build predating them refuses the store instead
  // of counting with stale run records.
  if (value == EncodeFormatRecord() || read_only_) return absl::OkStatus();
  rocksdb::WriteBatch batch;
  batch.Put(meta_, ToSlice(kFormatKey), EncodeFormatRecord())
      .PermitUncheckedError();
  return Write(batch, /*sync=*/true, "upgrade format record");
}

absl::Status RocksDbStore::LoadCounters() {
  absl::MutexLock lock(&mu_);
  for (auto [name, counter] : {std::pair{kRunCounter, &next_run_id_},
                               std::pair{kBlobCounter, &next_blob_id_}}) {
    std::string value;
    const rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), meta_, CounterKey(name), &value);
    if (s.IsNotFound()) continue;
    REPROD_RETURN_IF_ERROR(FromRocksDb(s, "read counter"));
    REPROD_ASSIGN_OR_RETURN(*counter, DecodeCounter(value));
  }
  return absl::OkStatus();
}

absl::Status RocksDbStore::RecoverPendingUploads() {
  if (read_only_) return absl::OkStatus();  // left for a writable open
  rocksdb::WriteBatch batch;
  REPROD_RETURN_IF_ERROR(ScanPrefix(
      db_.get(), meta_, kPendingPrefix, nullptr,
      [&](std::string_view key, std::string_view value) -> absl::Status {
        uint64_t blob_id;
        if (!ParsePendingKey(key, &blob_id)) {
          return absl::DataLossError("malformed pending upload key");
        }
        REPROD_ASSIGN_OR_RETURN(const uint64_t run_id,
                                DecodePendingMarker(value));
        const std::string begin = ChunkKey(run_id, blob_id, 0);
        const std::string end = ChunkKey(run_id, blob_id + 1, 0);
        REPROD_RETURN_IF_ERROR(FromRocksDb(
            batch.DeleteRange(chunks_, begin, end), "recover upload"));
        return FromRocksDb(batch.Delete(meta_, ToSlice(key)), "recover upload");
      }));
  if (batch.Count() == 0) return absl::OkStatus();
  return Write(batch, /*sync=*/true, "recover pending uploads");
}

absl::Status RocksDbStore::Write(rocksdb::WriteBatch& batch, bool sync,
                                 std::string_view context) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  REPROD_RETURN_IF_ERROR(MaybeResume());
  const rocksdb::Status s = db_->Write(wo, &batch);
  NoteWriteError(s);
  return FromRocksDb(s, context);
}

absl::StatusOr<uint64_t> RocksDbStore::FreeBytes() const {
  struct statvfs fs;
  if (statvfs(dir_.c_str(), &fs) != 0) {
    return absl::UnavailableError(
        absl::StrCat("statvfs ", dir_, ": ", std::strerror(errno)));
  }
  return uint64_t{fs.f_bavail} * fs.f_frsize;
}

absl::Status RocksDbStore::MaybeResume() {
  if (read_only_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "disk full: store ", dir_,
        " was opened read-only on a full disk; free space and restart reprodd "
        "to write"));
  }
  if (!needs_resume_.load()) return absl::OkStatus();
  absl::MutexLock lock(&resume_mu_);
  if (!needs_resume_.load()) return absl::OkStatus();
  REPROD_ASSIGN_OR_RETURN(const uint64_t free_bytes, FreeBytes());
  const uint64_t resume_at = std::max(options_.min_free_bytes, kMinResumeBytes);
  const std::string stopped = absl::StrCat(
      "disk full: writes stopped when the disk filled up; ", free_bytes,
      " bytes are free in ", dir_, ", writes resume at ", resume_at);
  if (free_bytes < resume_at) {
    return absl::ResourceExhaustedError(
        absl::StrCat(stopped, " (--min-free-bytes)"));
  }
  const rocksdb::Status s = db_->Resume();
  if (!s.ok()) {
    spdlog::warn("store {}: resuming writes after disk full failed: {}", dir_,
                 s.ToString());
    return absl::ResourceExhaustedError(
        absl::StrCat(stopped, "; resuming failed: ", s.ToString()));
  }
  needs_resume_.store(false);
  spdlog::info("store {}: {} bytes free again; writes resumed", dir_,
               free_bytes);
  return absl::OkStatus();
}

absl::Status RocksDbStore::ReserveSpace(std::string_view run,
                                        const TensorHeader& header) {
  REPROD_RETURN_IF_ERROR(MaybeResume());
  const uint64_t min_free = options_.min_free_bytes;
  const uint64_t need = header.byte_length;
  if (min_free == 0) {
    reserved_bytes_.fetch_add(need);
    return absl::OkStatus();
  }
  REPROD_ASSIGN_OR_RETURN(const uint64_t free_bytes, FreeBytes());
  const uint64_t reserved = reserved_bytes_.fetch_add(need) + need;
  if (free_bytes < reserved || free_bytes - reserved < min_free) {
    reserved_bytes_.fetch_sub(need);
    return absl::ResourceExhaustedError(absl::StrCat(
        "disk full: ", DescribeTensor(run, header.address), " needs ", need,
        " bytes; ", free_bytes, " bytes are free in ", dir_, ", ",
        reserved - need, " are reserved by uploads in progress and ", min_free,
        " must stay free (--min-free-bytes)"));
  }
  return absl::OkStatus();
}

void RocksDbStore::DeleteChunks(rocksdb::WriteBatch& batch, uint64_t run_id,
                                uint64_t blob_id, uint64_t count) {
  if (count > kMaxPointDeletes) {
    batch
        .DeleteRange(chunks_, ChunkKey(run_id, blob_id, 0),
                     ChunkKey(run_id, blob_id + 1, 0))
        .PermitUncheckedError();
    return;
  }
  for (uint64_t i = 0; i < count; ++i) {
    batch.Delete(chunks_, ChunkKey(run_id, blob_id, i)).PermitUncheckedError();
  }
}

absl::StatusOr<RunRecord> RocksDbStore::ReadRun(
    std::string_view name, const rocksdb::Snapshot* snapshot) {
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  // One MultiGet reads both records at one sequence number, so even without
  // a snapshot the counters belong to the record read (a commit, a delete or
  // a re-create in between cannot mix in).
  const std::string keys[2] = {RunKey(name), RunStatsKey(name)};
  const rocksdb::Slice slices[2] = {ToSlice(keys[0]), ToSlice(keys[1])};
  rocksdb::PinnableSlice values[2];
  rocksdb::Status statuses[2];
  db_->MultiGet(ro, meta_, 2, slices, values, statuses);
  if (statuses[0].IsNotFound()) return RunNotFoundError(name);
  REPROD_RETURN_IF_ERROR(
      FromRocksDb(statuses[0], absl::StrCat("read run ", VisibleName(name))));
  absl::StatusOr<RunRecord> record = DecodeRunRecord(name, ToView(values[0]));
  if (!record.ok()) {
    return Annotate(record.status(), absl::StrCat("run ", VisibleName(name)));
  }
  // No stats record: a run of format version 1, counted in its run record.
  if (statuses[1].IsNotFound()) return record;
  REPROD_RETURN_IF_ERROR(FromRocksDb(
      statuses[1], absl::StrCat("read run stats ", VisibleName(name))));
  REPROD_RETURN_IF_ERROR(ApplyRunStats(ToView(values[1]), *record));
  return record;
}

absl::StatusOr<std::optional<IndexEntry>> RocksDbStore::ReadIndex(
    uint64_t run_id, const TensorAddress& address,
    const rocksdb::Snapshot* snapshot) {
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  rocksdb::PinnableSlice value;
  const rocksdb::Status s =
      db_->Get(ro, meta_, TensorKey(run_id, address), &value);
  if (s.IsNotFound()) return std::nullopt;
  REPROD_RETURN_IF_ERROR(FromRocksDb(s, "read tensor index"));
  absl::StatusOr<IndexEntry> entry = DecodeIndexEntry(address, ToView(value));
  if (!entry.ok()) {
    return Annotate(entry.status(),
                    absl::StrCat("tensor ",
                                 VisibleName(AddressToString(address))));
  }
  return std::optional<IndexEntry>(*std::move(entry));
}

// --- runs
// ---------------------------------------------------------------------

absl::Status RocksDbStore::CreateRun(const RunInfo& run) {
  absl::MutexLock lock(&mu_);
  std::string ignored;
  const rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), meta_, RunKey(run.name), &ignored);
  if (s.ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("run ", VisibleName(run.name), " already exists"));
  }
  if (!s.IsNotFound()) return FromRocksDb(s, "read run");
  RunRecord record;
  record.run_id = next_run_id_++;
  record.info = run;
  if (record.info.created == absl::UnixEpoch())
    record.info.created = absl::Now();
  record.info.created = TruncateToMicros(record.info.created);
  record.info.state = RunState::kOpen;
  record.info.tensor_count = 0;
  record.info.total_bytes = 0;
  rocksdb::WriteBatch batch;
  batch.Put(meta_, RunKey(run.name), EncodeRunRecord(record))
      .PermitUncheckedError();
  // Every run this build creates has its stats record, so a missing one
  // always means a run of the old layout.
  batch.Put(meta_, RunStatsKey(run.name), EncodeRunStats(StatsOf(record)))
      .PermitUncheckedError();
  batch.Put(meta_, CounterKey(kRunCounter), EncodeCounter(next_run_id_))
      .PermitUncheckedError();
  return Write(batch, options_.sync_commits, "create run");
}

absl::StatusOr<RunInfo> RocksDbStore::GetRun(std::string_view name) {
  REPROD_ASSIGN_OR_RETURN(RunRecord record, ReadRun(name, nullptr));
  return std::move(record.info);
}

absl::StatusOr<std::vector<RunInfo>> RocksDbStore::ListRuns(
    std::string_view prefix) {
  std::vector<RunInfo> out;
  // Stats records (keyed by run name like the run records) and run records
  // are read at one snapshot so that each run's counters match its record.
  rocksdb::ManagedSnapshot snapshot(db_.get());
  std::map<std::string, std::string, std::less<>> stats;
  REPROD_RETURN_IF_ERROR(ScanPrefix(
      db_.get(), meta_, RunStatsKey(prefix), snapshot.snapshot(),
      [&](std::string_view key, std::string_view value) -> absl::Status {
        stats.emplace(key.substr(1), value);
        return absl::OkStatus();
      }));
  REPROD_RETURN_IF_ERROR(ScanPrefix(
      db_.get(), meta_, RunKey(prefix), snapshot.snapshot(),
      [&](std::string_view key, std::string_view value) -> absl::Status {
        const std::string_view name = key.substr(1);
        absl::StatusOr<RunRecord> record = DecodeRunRecord(name, value);
        if (!record.ok()) {
          return Annotate(record.status(),
                          absl::StrCat("run ", VisibleName(name)));
        }
        // No stats record: format version 1, counted in the run record.
        if (auto it = stats.find(name); it != stats.end()) {
          REPROD_RETURN_IF_ERROR(ApplyRunStats(it->second, *record));
        }
        out.push_back(std::move(record->info));
        return absl::OkStatus();
      }));
  return out;
}

absl::StatusOr<RunInfo> RocksDbStore::SealRun(std::string_view name,
                                              RunState final_state) {
  if (final_state == RunState::kOpen) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", VisibleName(name), ": SealRun needs sealed or aborted"));
  }
  absl::MutexLock lock(&mu_);
  REPROD_ASSIGN_OR_RETURN(RunRecord record, ReadRun(name, nullptr));
  if (record.info.state != RunState::kOpen) {
    return absl::FailedPreconditionError(
        absl::StrCat("run ", VisibleName(name), " is already ",
                     std::string(RunStateName(record.info.state))));
  }
  record.info.state = final_state;
  rocksdb::WriteBatch batch;
  batch.Put(meta_, RunKey(name), EncodeRunRecord(record))
      .PermitUncheckedError();
  REPROD_RETURN_IF_ERROR(Write(batch, options_.sync_commits, "seal run"));
  return std::move(record.info);
}

absl::StatusOr<RunInfo> RocksDbStore::SetRunReference(std::string_view name,
                                                      bool reference) {
  absl::MutexLock lock(&mu_);
  REPROD_ASSIGN_OR_RETURN(RunRecord record, ReadRun(name, nullptr));
  record.info.reference = reference;
  rocksdb::WriteBatch batch;
  batch.Put(meta_, RunKey(name), EncodeRunRecord(record))
      .PermitUncheckedError();
  REPROD_RETURN_IF_ERROR(
      Write(batch, options_.sync_commits, "set run reference"));
  return std::move(record.info);
}

absl::StatusOr<uint64_t> RocksDbStore::DeleteRun(std::string_view name) {
  absl::MutexLock lock(&mu_);
  REPROD_ASSIGN_OR_RETURN(const RunRecord record, ReadRun(name, nullptr));
  const uint64_t id = record.run_id;
  rocksdb::WriteBatch batch;
  batch.Delete(meta_, RunKey(name)).PermitUncheckedError();
  batch.Delete(meta_, RunStatsKey(name)).PermitUncheckedError();
  batch.DeleteRange(meta_, TensorPrefix(id), TensorPrefix(id + 1))
      .PermitUncheckedError();
  batch.DeleteRange(chunks_, ChunkRunPrefix(id), ChunkRunPrefix(id + 1))
      .PermitUncheckedError();
  // Read under mu_, so no commit adds a file between the scan and the batch.
  REPROD_ASSIGN_OR_RETURN(const std::vector<uint64_t> files, RunSegments(id));
  REPROD_RETURN_IF_ERROR(Write(batch, options_.sync_commits, "delete run"));
  RemoveSegments(files);
  return record.info.tensor_count;
}

// --- tensors
// ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<TensorWriter>> RocksDbStore::BeginTensor(
    std::string_view run, const TensorHeader& header) {
  REPROD_RETURN_IF_ERROR(CheckHeader(run, header));
  REPROD_ASSIGN_OR_RETURN(const RunRecord record, ReadRun(run, nullptr));
  if (record.info.state != RunState::kOpen) {
    return RunNotOpenError(run, record.info.state);
  }
  REPROD_ASSIGN_OR_RETURN(const std::optional<IndexEntry> existing,
                          ReadIndex(record.run_id, header.address, nullptr));
  bool verify_only = false;
  if (existing.has_value()) {
    if (SameContent(existing->header, header)) {
      verify_only = true;
    } else if (!record.info.overwrite) {
      return ConflictError(run, existing->header, header);
    }
  }
  if (!verify_only) REPROD_RETURN_IF_ERROR(ReserveSpace(run, header));
  return NewRocksDbTensorWriter(this, std::string(run), record.run_id, header,
                                verify_only, verify_only ? 0 : header.byte_length);
}

absl::StatusOr<uint64_t> RocksDbStore::StartUpload(uint64_t run_id) {
  absl::MutexLock lock(&mu_);
  const uint64_t blob_id = next_blob_id_++;
  rocksdb::WriteBatch batch;
  batch.Put(meta_, PendingKey(blob_id), EncodePendingMarker(run_id))
      .PermitUncheckedError();
  batch.Put(meta_, CounterKey(kBlobCounter), EncodeCounter(next_blob_id_))
      .PermitUncheckedError();
  REPROD_RETURN_IF_ERROR(Write(batch, /*sync=*/false, "start upload"));
  return blob_id;
}

absl::StatusOr<CommitResult> RocksDbStore::CommitUpload(const UploadCommit& u) {
  const TensorHeader& header = *u.header;
  rocksdb::WriteBatch batch;
  if (!u.tail.empty() && u.blob_id.has_value()) {
    REPROD_RETURN_IF_ERROR(
        AddChunk(batch, chunks_,
                 ChunkKey(u.run_id, *u.blob_id, u.chunks_written), u.tail));
  }

  absl::MutexLock lock(&mu_);
  absl::StatusOr<RunRecord> read = ReadRun(u.run, nullptr);
  if (absl::IsNotFound(read.status())) {
    return RunDeletedError(u.run, header.address);
  }
  REPROD_RETURN_IF_ERROR(read.status());
  RunRecord& record = *read;
  if (record.run_id != u.run_id) return RunDeletedError(u.run, header.address);
  if (record.info.state != RunState::kOpen) {
    return RunNotOpenError(u.run, record.info.state);
  }
  REPROD_ASSIGN_OR_RETURN(const std::optional<IndexEntry> existing,
                          ReadIndex(u.run_id, header.address, nullptr));
  CommitKind kind = CommitKind::kStored;
  if (existing.has_value()) {
    if (SameContent(existing->header, header)) {
      if (u.blob_id.has_value()) {
        // Our copy is redundant: drop it (best effort; a leftover marker or
        // file is cleaned up at the next open).
        AbandonUpload(u.run_id, *u.blob_id, u.chunks_written, u.in_segment);
      }
      return CommitResult{CommitKind::kAlreadyPresent, existing->sequence};
    }
    if (!u.verify_only && !record.info.overwrite) {
      return ConflictError(u.run, existing->header, header);
    }
    kind = CommitKind::kReplaced;
  }
  if (u.verify_only) {
    return absl::AbortedError(absl::StrCat(
        DescribeTensor(u.run, header.address),
        ": the stored tensor changed while an identical copy was resent; "
        "send it again"));
  }

  IndexEntry entry;
  entry.header = header;
  entry.sequence = record.next_sequence++;
  entry.chunk_size = u.in_segment ? kSegmentBlock : u.chunk_size;
  entry.in_segment = u.in_segment;
  if (u.blob_id.has_value()) {
    entry.blob_id = *u.blob_id;
    batch.Delete(meta_, PendingKey(*u.blob_id)).PermitUncheckedError();
  } else {
    // Nothing written yet: the whole tensor (if any) is the inline tail.
    entry.blob_id = next_blob_id_++;
    batch.Put(meta_, CounterKey(kBlobCounter), EncodeCounter(next_blob_id_))
        .PermitUncheckedError();
    if (!u.tail.empty()) {
      REPROD_RETURN_IF_ERROR(AddChunk(
          batch, chunks_, ChunkKey(u.run_id, entry.blob_id, 0), u.tail));
    }
  }
  if (kind == CommitKind::kReplaced) {
    // A replaced segment file is deleted once the batch is written.
    DeleteChunks(batch, u.run_id, existing->blob_id, existing->num_chunks());
    record.info.total_bytes -= existing->header.byte_length;
  } else {
    ++record.info.tensor_count;
  }
  record.info.total_bytes += header.byte_length;
  batch.Put(meta_, TensorKey(u.run_id, header.address), EncodeIndexEntry(entry))
      .PermitUncheckedError();
  // Only the run's counters: rewriting the run record (up to 64 KiB of
  // labels) per tensor made a commit cost the run's metadata in WAL, memtable
  // and compaction bytes. Same batch as the index entry, so a crash keeps
  // both or neither.
  batch.Put(meta_, RunStatsKey(u.run), EncodeRunStats(StatsOf(record)))
      .PermitUncheckedError();
  REPROD_RETURN_IF_ERROR(Annotate(Write(batch, options_.sync_commits, "commit"),
                                  DescribeTensor(u.run, header.address)));
  if (kind == CommitKind::kReplaced && existing->in_segment) {
    RemoveSegments({existing->blob_id});
  }
  return CommitResult{kind, entry.sequence,
                      kind == CommitKind::kReplaced ? existing->header.byte_length : 0};
}

void RocksDbStore::AbandonUpload(uint64_t run_id, uint64_t blob_id,
                                 uint64_t chunks, bool in_segment) {
  // The file goes first: a marker without its file is harmless, a file
  // without its marker waits for the next open's sweep.
  if (in_segment) RemoveSegments({blob_id});
  rocksdb::WriteBatch batch;
  DeleteChunks(batch, run_id, blob_id, chunks);
  batch.Delete(meta_, PendingKey(blob_id)).PermitUncheckedError();
  Write(batch, /*sync=*/false, "abandon upload").IgnoreError();
}

void RocksDbStore::RemoveSegments(const std::vector<uint64_t>& blob_ids) {
  absl::MutexLock lock(&unlink_mu_);
  if (backups_running_ > 0) {
    deferred_unlinks_.insert(deferred_unlinks_.end(), blob_ids.begin(), blob_ids.end());
    return;
  }
  for (uint64_t id : blob_ids) segments_.Remove(id);
}

absl::Status RocksDbStore::AddSegments(std::string_view prefix, const rocksdb::Snapshot* snapshot,
                                       std::vector<uint64_t>& ids) {
  return ScanPrefix(
      db_.get(), meta_, prefix, snapshot,
      [&](std::string_view key, std::string_view value) -> absl::Status {
        REPROD_ASSIGN_OR_RETURN(TensorAddress address, ParseTensorKey(key));
        REPROD_ASSIGN_OR_RETURN(const IndexEntry entry, DecodeIndexEntry(address, value));
        if (entry.in_segment) ids.push_back(entry.blob_id);
        return absl::OkStatus();
      });
}

absl::StatusOr<std::vector<uint64_t>> RocksDbStore::RunSegments(uint64_t run_id) {
  std::vector<uint64_t> ids;
  REPROD_RETURN_IF_ERROR(AddSegments(TensorPrefix(run_id), nullptr, ids));
  return ids;
}

absl::StatusOr<std::vector<uint64_t>> RocksDbStore::LiveSegments(
    const rocksdb::Snapshot* snapshot, bool with_pending) {
  std::vector<uint64_t> ids;
  REPROD_RETURN_IF_ERROR(AddSegments(kTensorPrefix, snapshot, ids));
  if (with_pending) {
    REPROD_RETURN_IF_ERROR(ScanPrefix(
        db_.get(), meta_, kPendingPrefix, snapshot,
        [&](std::string_view key, std::string_view) -> absl::Status {
          uint64_t blob_id;
          if (ParsePendingKey(key, &blob_id)) ids.push_back(blob_id);
          return absl::OkStatus();
        }));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::StatusOr<uint64_t> RocksDbStore::SweepSegments(bool at_open) {
  REPROD_ASSIGN_OR_RETURN(const std::vector<uint64_t> files, segments_.List());
  if (files.empty()) return 0;
  uint64_t handed_out;
  {
    absl::MutexLock lock(&mu_);
    handed_out = next_blob_id_;
  }
  // Taken after handed_out was read: an upload with a smaller blob id has
  // its pending marker (or, committed, its index entry) in this snapshot.
  rocksdb::ManagedSnapshot snapshot(db_.get());
  REPROD_ASSIGN_OR_RETURN(const std::vector<uint64_t> live,
                          LiveSegments(snapshot.snapshot(), /*with_pending=*/!at_open));
  std::vector<uint64_t> dead;
  for (uint64_t id : files) {
    if (!at_open && id >= handed_out) continue;
    if (!std::binary_search(live.begin(), live.end(), id)) dead.push_back(id);
  }
  RemoveSegments(dead);
  return dead.size();
}

absl::StatusOr<std::vector<TensorMeta>> RocksDbStore::ListTensors(
    std::string_view run, std::string_view checkpoint) {
  rocksdb::ManagedSnapshot snapshot(db_.get());
  REPROD_ASSIGN_OR_RETURN(const RunRecord record,
                          ReadRun(run, snapshot.snapshot()));
  const std::string prefix = checkpoint.empty()
                                 ? TensorPrefix(record.run_id)
                                 : CheckpointPrefix(record.run_id, checkpoint);
  std::vector<TensorMeta> out;
  REPROD_RETURN_IF_ERROR(Annotate(
      ScanPrefix(
          db_.get(), meta_, prefix, snapshot.snapshot(),
          [&](std::string_view key, std::string_view value) -> absl::Status {
            REPROD_ASSIGN_OR_RETURN(TensorAddress address, ParseTensorKey(key));
            absl::StatusOr<IndexEntry> entry = DecodeIndexEntry(address, value);
            if (!entry.ok()) {
              return Annotate(
                  entry.status(),
                  absl::StrCat("tensor ",
                               VisibleName(AddressToString(address))));
            }
            out.push_back(
                TensorMeta{std::move(entry->header), entry->sequence});
            return absl::OkStatus();
          }),
      absl::StrCat("run ", VisibleName(run))));
  std::sort(out.begin(), out.end(),
            [](const TensorMeta& a, const TensorMeta& b) {
              return a.sequence < b.sequence;
            });
  return out;
}

absl::StatusOr<std::unique_ptr<TensorReader>> RocksDbStore::OpenTensor(
    std::string_view run, const TensorAddress& address) {
  auto snapshot = std::make_unique<rocksdb::ManagedSnapshot>(db_.get());
  REPROD_ASSIGN_OR_RETURN(const RunRecord record,
                          ReadRun(run, snapshot->snapshot()));
  REPROD_ASSIGN_OR_RETURN(
      std::optional<IndexEntry> entry,
      ReadIndex(record.run_id, address, snapshot->snapshot()));
  if (!entry.has_value()) return TensorNotFoundError(run, address);
  if (entry->in_segment) return OpenSegmentTensor(run, record.run_id, *entry);
  return NewRocksDbTensorReader(this, std::string(run), record.run_id,
                                *std::move(entry), std::move(snapshot));
}

absl::StatusOr<std::unique_ptr<TensorReader>> RocksDbStore::OpenSegmentTensor(
    std::string_view run, uint64_t run_id, const IndexEntry& entry) {
  const std::string what = DescribeTensor(run, entry.header.address);
  absl::StatusOr<std::unique_ptr<SegmentReader>> file = SegmentReader::Open(
      segments_.PathOf(entry.blob_id), entry.header.byte_length, what);
  if (absl::IsNotFound(file.status())) {
    // Deleted or replaced since the index entry was read (its file goes
    // right after the batch): gone now. Still named by the index: lost.
    absl::StatusOr<RunRecord> now = ReadRun(run, nullptr);
    if (!now.ok() || now->run_id != run_id) return TensorNotFoundError(run, entry.header.address);
    REPROD_ASSIGN_OR_RETURN(const std::optional<IndexEntry> current,
                            ReadIndex(run_id, entry.header.address, nullptr));
    if (!current.has_value()) return TensorNotFoundError(run, entry.header.address);
    if (!current->in_segment || current->blob_id != entry.blob_id) {
      return OpenTensor(run, entry.header.address);  // replaced meanwhile
    }
    return absl::DataLossError(std::string(file.status().message()));
  }
  REPROD_RETURN_IF_ERROR(file.status());
  return NewSegmentTensorReader(std::string(run), entry, *std::move(file));
}

// --- reports
// ------------------------------------------------------------------

absl::Status RocksDbStore::PutReport(const StoredReport& report) {
  absl::MutexLock lock(&mu_);
  std::string ignored;
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), reports_,
                                     ReportKey(report.id), &ignored);
  if (s.ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("report ", report.id, " already exists"));
  }
  if (!s.IsNotFound()) return FromRocksDb(s, "read report");
  rocksdb::WriteBatch batch;
  batch.Put(reports_, ReportKey(report.id), EncodeReportSummary(report))
      .PermitUncheckedError();
  for (const auto& [format, text] : report.renderings) {
    batch.Put(reports_, RenderingKey(report.id, format), EncodeRendering(text))
        .PermitUncheckedError();
  }
  return Write(batch, options_.sync_commits, "put report");
}

absl::StatusOr<StoredReport> RocksDbStore::GetReport(std::string_view id) {
  rocksdb::ManagedSnapshot snapshot(db_.get());
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot.snapshot();
  rocksdb::PinnableSlice value;
  const rocksdb::Status s = db_->Get(ro, reports_, ReportKey(id), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("report ", VisibleName(id), " not found"));
  }
  REPROD_RETURN_IF_ERROR(FromRocksDb(s, "read report"));
  const std::string context = absl::StrCat("report ", VisibleName(id));
  absl::StatusOr<StoredReport> report = DecodeReportSummary(id, ToView(value));
  if (!report.ok()) return Annotate(report.status(), context);
  const std::string prefix = RenderingPrefix(id);
  REPROD_RETURN_IF_ERROR(Annotate(
      ScanPrefix(
          db_.get(), reports_, prefix, snapshot.snapshot(),
          [&](std::string_view key, std::string_view value) -> absl::Status {
            REPROD_ASSIGN_OR_RETURN(std::string text, DecodeRendering(value));
            report->renderings.emplace(key.substr(prefix.size()),
                                       std::move(text));
            return absl::OkStatus();
          }),
      context));
  return report;
}

absl::StatusOr<std::vector<StoredReport>> RocksDbStore::ListReports(
    std::string_view run, size_t limit) {
  std::vector<StoredReport> out;
  if (limit == 0) return out;
  REPROD_RETURN_IF_ERROR(ScanPrefix(
      db_.get(), reports_, kReportPrefix, nullptr,
      [&](std::string_view key, std::string_view value) -> absl::Status {
        const std::string_view id = key.substr(kReportPrefix.size());
        absl::StatusOr<StoredReport> report = DecodeReportSummary(id, value);
        if (!report.ok()) {
          return Annotate(report.status(),
                          absl::StrCat("report ", VisibleName(id)));
        }
        if (run.empty() || report->ref == run || report->cand == run) {
          out.push_back(*std::move(report));
        }
        return absl::OkStatus();
      }));
  std::sort(out.begin(), out.end(),
            [](const StoredReport& a, const StoredReport& b) {
              if (a.created != b.created) return a.created > b.created;
              return a.id > b.id;
            });
  if (out.size() > limit) out.resize(limit);
  return out;
}

// --- auth records
// ------------------------------------------------------------

absl::Status RocksDbStore::PutAuthRecord(std::string_view key,
                                         std::string_view value) {
  REPROD_RETURN_IF_ERROR(CheckAuthKey(key));
  rocksdb::WriteBatch batch;
  batch.Put(meta_, AuthKey(key), EncodeAuthRecord(value))
      .PermitUncheckedError();
  // Always synced: a token printed to its holder must survive a crash.
  return Write(batch, /*sync=*/true, "put auth record");
}

absl::Status RocksDbStore::InsertAuthRecord(std::string_view key,
                                            std::string_view value) {
  REPROD_RETURN_IF_ERROR(CheckAuthKey(key));
  // One process owns the RocksDB directory; this mutex makes look-then-put
  // atomic within it.
  absl::MutexLock lock(&auth_insert_mu_);
  absl::StatusOr<std::string> existing = GetAuthRecord(key);
  if (existing.ok()) return AuthRecordExistsError(key);
  if (!absl::IsNotFound(existing.status())) return existing.status();
  return PutAuthRecord(key, value);
}

absl::StatusOr<std::string> RocksDbStore::GetAuthRecord(std::string_view key) {
  REPROD_RETURN_IF_ERROR(CheckAuthKey(key));
  rocksdb::PinnableSlice value;
  const rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), meta_, AuthKey(key), &value);
  if (s.IsNotFound()) return AuthRecordNotFoundError(key);
  REPROD_RETURN_IF_ERROR(FromRocksDb(s, "read auth record"));
  return DecodeAuthRecord(ToView(value));
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
RocksDbStore::ListAuthRecords(std::string_view prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  REPROD_RETURN_IF_ERROR(ScanPrefix(
      db_.get(), meta_, AuthKey(prefix), nullptr,
      [&](std::string_view key, std::string_view value) -> absl::Status {
        REPROD_ASSIGN_OR_RETURN(std::string decoded, DecodeAuthRecord(value));
        out.emplace_back(std::string(key.substr(kAuthPrefix.size())),
                         std::move(decoded));
        return absl::OkStatus();
      }));
  return out;
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<Store>> OpenRocksDbStore(
    const std::string& dir, const RocksDbStoreOptions& options) {
  REPROD_ASSIGN_OR_RETURN(std::unique_ptr<internal::RocksDbStore> store,
                          internal::RocksDbStore::Open(dir, options));
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace reprod::storage

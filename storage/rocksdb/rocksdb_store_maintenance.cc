// RocksDbStore's maintenance: Backup (a RocksDB checkpoint) and Compact
// (manual compaction with forced blob garbage collection), and
// RestoreRocksDbStore. See storage/store.h and rocksdb_store.h for the
// contracts.
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/options.h"
#include "rocksdb/utilities/checkpoint.h"
#include "spdlog/spdlog.h"
#include "storage/rocksdb/internal/rocksdb_store_impl.h"
#include "storage/rocksdb/internal/status.h"

namespace reprod::storage::internal {
namespace {

// Regular files directly in `dir` and in its `segments` folder (RocksDB
// makes no subfolders) and their total size. A file that vanishes while it is listed (RocksDB
// deletes obsolete files as compactions finish) is not counted.
absl::Status CountFiles(const std::string& dir, uint64_t* files, uint64_t* bytes) {
  std::error_code ec;
  *files = 0;
  *bytes = 0;
  std::filesystem::directory_iterator it(dir, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::error_code gone;
    if (!it->is_regular_file(gone)) continue;
    const uintmax_t size = it->file_size(gone);
    if (gone) continue;
    ++*files;
    *bytes += size;
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot list the files of ", dir, ": ", ec.message()));
  }
  SegmentDirectory(dir + "/segments").Count(files, bytes);
  return absl::OkStatus();
}

// Links (or, across filesystems, copies) every file of segments/ into
// `target`/segments. Segment files never change once written.
absl::Status LinkSegments(const SegmentDirectory& segments, const std::filesystem::path& target) {
  REPROD_ASSIGN_OR_RETURN(const std::vector<uint64_t> ids, segments.List());
  std::error_code ec;
  std::filesystem::create_directory(target / "segments", ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", (target / "segments").string(),
                                               ": ", ec.message()));
  }
  for (uint64_t id : ids) {
    const std::filesystem::path from = segments.PathOf(id);
    const std::filesystem::path to = target / "segments" / from.filename();
    std::filesystem::create_hard_link(from, to, ec);
    if (!ec) continue;
    ec.clear();
    std::filesystem::copy_file(from, to, ec);
    // A file deleted since it was listed belonged to no committed tensor
    // (deletions of committed ones wait for the backup): skip it.
    if (ec && std::filesystem::exists(from)) {
      return absl::UnavailableError(absl::StrCat("cannot link or copy ", from.string(), " to ",
                                                 to.string(), ": ", ec.message()));
    }
    ec.clear();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BackupInfo> RocksDbStore::Backup(const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path target = std::filesystem::absolute(dir, ec);
  if (ec || dir.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("backup directory '", dir, "' is not a path"));
  }
  if (std::filesystem::exists(std::filesystem::symlink_status(target, ec))) {
    return absl::AlreadyExistsError(absl::StrCat(
        "backup directory ", target.string(), " exists already; name a new one"));
  }
  if (!std::filesystem::is_directory(target.parent_path(), ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "backup directory ", target.string(), ": its parent ", target.parent_path().string(),
        " is not a directory"));
  }
  // Segment files of tensors deleted from now on stay until the backup has
  // linked them: its index (the checkpoint) may still name them.
  {
    absl::MutexLock lock(&unlink_mu_);
    ++backups_running_;
  }
  absl::Cleanup resume_unlinks = [this] {
    std::vector<uint64_t> deferred;
    {
      absl::MutexLock lock(&unlink_mu_);
      if (--backups_running_ == 0) deferred.swap(deferred_unlinks_);
    }
    RemoveSegments(deferred);
  };
  rocksdb::Checkpoint* raw = nullptr;
  REPROD_RETURN_IF_ERROR(FromRocksDb(rocksdb::Checkpoint::Create(db_.get(), &raw),
                                     "create checkpoint"));
  const std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  BackupInfo info;
  info.dir = dir;
  // log_size_for_flush 0: flush the memtables first, so the copy holds
  // blob and table files only, plus the WAL written since.
  const rocksdb::Status s =
      checkpoint->CreateCheckpoint(target.string(), /*log_size_for_flush=*/0, &info.sequence);
  if (!s.ok()) {
    if (s.IsNoSpace()) NoteWriteError(s);
    return Annotate(FromRocksDb(s, "checkpoint"),
                    absl::StrCat("backup of store ", dir_, " into ", target.string()));
  }
  // After the checkpoint: every file its index names exists now (files of
  // later uploads come along too; the backup's first open deletes them).
  REPROD_RETURN_IF_ERROR(Annotate(LinkSegments(segments_, target),
                                  absl::StrCat("backup of store ", dir_)));
  REPROD_RETURN_IF_ERROR(CountFiles(target.string(), &info.files, &info.bytes));
  spdlog::info("store {}: backup in {} ({} files, {} bytes, sequence {})", dir_,
               target.string(), info.files, info.bytes, info.sequence);
  return info;
}

absl::StatusOr<CompactInfo> RocksDbStore::Compact() {
  if (read_only_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "store ", dir_, " was opened read-only (the disk was full); restart reprodd with space "
        "free to compact it"));
  }
  CompactInfo info;
  uint64_t files = 0;
  REPROD_RETURN_IF_ERROR(CountFiles(dir_, &files, &info.bytes_before));
  // Segment files left by uploads that died with a crash of the machine
  // (their pending marker lost) or by deletions a crash interrupted.
  REPROD_ASSIGN_OR_RETURN(const uint64_t swept, SweepSegments(/*at_open=*/false));
  if (swept > 0) spdlog::info("store {}: deleted {} unused segment files", dir_, swept);
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  // Relocate every live chunk out of old blob files, so that files shared
  // with deleted runs or replaced tensors are freed.
  options.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kForce;
  options.blob_garbage_collection_age_cutoff = 1.0;
  for (rocksdb::ColumnFamilyHandle* family : handles_) {
    const rocksdb::Status s = db_->CompactRange(options, family, nullptr, nullptr);
    if (!s.ok()) {
      if (s.IsNoSpace()) NoteWriteError(s);
      return Annotate(FromRocksDb(s, "compact"),
                      absl::StrCat("store ", dir_, " family ", family->GetName()));
    }
  }
  REPROD_RETURN_IF_ERROR(CountFiles(dir_, &files, &info.bytes_after));
  spdlog::info("store {}: compacted, {} -> {} bytes", dir_, info.bytes_before, info.bytes_after);
  return info;
}

}  // namespace reprod::storage::internal

namespace reprod::storage {
namespace {

// Links `from` to `to` when it is a table or blob file (immutable in
// RocksDB) and both are on one filesystem; copies it otherwise. Sets
// *linked when it linked.
absl::Status LinkOrCopy(const std::filesystem::path& from, const std::filesystem::path& to,
                        bool* linked) {
  std::error_code ec;
  const std::string ext = from.extension().string();
  *linked = false;
  if (ext == ".sst" || ext == ".blob" || ext == ".seg") {
    std::filesystem::create_hard_link(from, to, ec);
    if (!ec) {
      *linked = true;
      return absl::OkStatus();
    }
  }
  ec.clear();
  std::filesystem::copy_file(from, to, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot copy ", from.string(), " to ", to.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

// FailedPrecondition unless `dir` is absent or an empty folder.
absl::Status CheckRestoreTarget(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(dir, ec))) return absl::OkStatus();
  if (std::filesystem::is_directory(dir, ec) && std::filesystem::is_empty(dir, ec)) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "data dir ", dir.string(),
      " exists and is not an empty folder; restore never overwrites a store: move it away "
      "(or name another --data-dir) and restore again"));
}

// Links or copies the regular files of `from` into `to` (created here).
absl::Status CopyFiles(const std::filesystem::path& from, const std::filesystem::path& to,
                       RestoreInfo* info) {
  std::error_code ec;
  std::filesystem::create_directory(to, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", to.string(), ": ", ec.message()));
  }
  for (const auto& entry : std::filesystem::directory_iterator(from, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    bool linked = false;
    REPROD_RETURN_IF_ERROR(LinkOrCopy(entry.path(), to / entry.path().filename(), &linked));
    ++info->files;
    info->linked += linked ? 1 : 0;
    info->bytes += entry.file_size(ec);
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot read backup ", from.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

// Copies the backup's files into `tmp` (created here).
absl::Status CopyBackup(const std::filesystem::path& backup, const std::filesystem::path& tmp,
                        RestoreInfo* info) {
  std::error_code ec;
  if (!std::filesystem::exists(backup / "CURRENT", ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "backup ", backup.string(),
        " is not a reprod store (no CURRENT file); name a folder that `reprodctl admin backup` "
        "wrote"));
  }
  REPROD_RETURN_IF_ERROR(CopyFiles(backup, tmp, info));
  // The segment files (storage/FORMAT.md); a backup of an older store has
  // none.
  if (std::filesystem::is_directory(backup / "segments", ec)) {
    REPROD_RETURN_IF_ERROR(CopyFiles(backup / "segments", tmp / "segments", info));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StoreCounts> CountRocksDbStore(const std::string& dir) {
  RocksDbStoreOptions options;
  options.create_if_missing = false;
  options.min_free_bytes = 0;
  REPROD_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenRocksDbStore(dir, options));
  REPROD_ASSIGN_OR_RETURN(std::vector<RunInfo> runs, store->ListRuns(""));
  StoreCounts counts;
  counts.runs = runs.size();
  for (const RunInfo& run : runs) counts.tensors += run.tensor_count;
  return counts;
}

absl::StatusOr<RestoreInfo> RestoreRocksDbStore(const std::string& backup_dir,
                                                const std::string& dir) {
  if (backup_dir.empty() || dir.empty()) {
    return absl::InvalidArgumentError("restore needs a backup folder and a data dir");
  }
  const std::filesystem::path target(dir);
  REPROD_RETURN_IF_ERROR(CheckRestoreTarget(target));
  std::filesystem::path tmp = target;
  tmp += ".restoring";
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);  // left by an interrupted restore
  RestoreInfo info;
  absl::Status done = CopyBackup(backup_dir, tmp, &info);
  if (done.ok()) {
    // Opened once: the format check and recovery run before the rename.
    absl::StatusOr<StoreCounts> counts = CountRocksDbStore(tmp.string());
    done = counts.status();
    if (counts.ok()) {
      info.runs = counts->runs;
      info.tensors = counts->tensors;
    }
  }
  if (done.ok()) {
    std::filesystem::remove(target, ec);  // an empty folder, or nothing
    std::filesystem::rename(tmp, target, ec);
    if (ec) {
      done = absl::UnavailableError(absl::StrCat("cannot rename ", tmp.string(), " to ", dir,
                                                 ": ", ec.message()));
    }
  }
  if (!done.ok()) {
    std::filesystem::remove_all(tmp, ec);
    return done;
  }
  return info;
}

}  // namespace reprod::storage

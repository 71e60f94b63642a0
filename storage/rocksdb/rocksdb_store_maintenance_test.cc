// Backup, Compact and the format-version refusal of the RocksDB store
// (storage/rocksdb/rocksdb_store_maintenance.cc).
#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/internal/keys.h"
#include "storage/rocksdb/internal/test_hooks.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "storage/store.h"
#include "storage/testing/store_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reprod::storage {
namespace {

using ::reprod::storage::testing::HeaderFor;
using ::reprod::storage::testing::ReadAll;
using ::reprod::storage::testing::WriteInPieces;
using ::reprod::testing::IsOk;
using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kRun[] = "team42/bert-paddle";

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 29 + i / 251);
  return out;
}

RunInfo MakeRun(std::string name) {
  RunInfo run;
  run.name = std::move(name);
  run.framework = "paddle";
  return run;
}

absl::StatusOr<CommitResult> Write(Store& store, std::string_view run, const TensorAddress& at,
                                   const std::vector<uint8_t>& bytes) {
  return WriteInPieces(store, run, HeaderFor(at, bytes), bytes, 4096);
}

// Bytes of the regular files in `dir` (one that vanishes meanwhile is skipped).
uint64_t DirBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code gone;
    const uintmax_t size = entry.is_regular_file(gone) ? entry.file_size(gone) : 0;
    if (!gone) total += size;
  }
  return total;
}

class RocksDbMaintenanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "rocksdb_maintenance_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/store";
    options_.chunk_size = 1000;
    options_.sync_commits = false;
    options_.min_free_bytes = 0;
    ASSERT_THAT(Reopen(), IsOk());
    ASSERT_THAT(store_->CreateRun(MakeRun(kRun)), IsOk());
  }

  void TearDown() override {
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }

  absl::Status Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<Store>> store = OpenRocksDbStore(dir_, options_);
    if (!store.ok()) return store.status();
    store_ = *std::move(store);
    return absl::OkStatus();
  }

  std::string root_, dir_;
  RocksDbStoreOptions options_;
  std::unique_ptr<Store> store_;
};

TEST_F(RocksDbMaintenanceTest, BackupHoldsWhatWasCommittedAndNothingInFlight) {
  const std::vector<uint8_t> a = Bytes(10'000, 1), b = Bytes(5'555, 2);
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "a", 1}, a), IsOk());
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "b", std::nullopt}, b), IsOk());
  ASSERT_THAT(store_->SetRunReference(kRun, true), IsOk());
  ASSERT_THAT(store_->PutAuthRecord("token/ab", "record"), IsOk());
  StoredReport report;
  report.id = "rpt-00000000000000aa";
  report.ref = kRun;
  report.created = absl::FromUnixSeconds(1000);
  report.renderings = {{"json", "{}"}};
  ASSERT_THAT(store_->PutReport(report), IsOk());
  // An upload in flight: three chunks written, no commit yet.
  const std::vector<uint8_t> c = Bytes(8'000, 3);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<TensorWriter> writer,
                       store_->BeginTensor(kRun, HeaderFor({"fwd", "c", 1}, c)));
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(c).subspan(0, 3'000)), IsOk());

  const std::string backup = root_ + "/backup-1";
  ASSERT_OK_AND_ASSIGN(BackupInfo info, store_->Backup(backup));
  EXPECT_EQ(info.dir, backup);
  EXPECT_GT(info.files, 3u);  // CURRENT, MANIFEST, OPTIONS, tables, ...
  EXPECT_EQ(info.bytes, DirBytes(backup));
  EXPECT_GT(info.sequence, 0u);
  // The original goes on: the upload in flight commits there.
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(c).subspan(3'000)), IsOk());
  ASSERT_THAT(writer->Commit(), IsOk());
  writer.reset();

  RocksDbStoreOptions open_options = options_;
  open_options.create_if_missing = false;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> copy, OpenRocksDbStore(backup, open_options));
  EXPECT_THAT(ReadAll(*copy, kRun, {"fwd", "a", 1}), IsOkAndHolds(a));
  EXPECT_THAT(ReadAll(*copy, kRun, {"fwd", "b", std::nullopt}), IsOkAndHolds(b));
  EXPECT_THAT(copy->OpenTensor(kRun, {"fwd", "c", 1}).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("fwd/c")));
  ASSERT_OK_AND_ASSIGN(RunInfo run, copy->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 2u);
  EXPECT_EQ(run.total_bytes, a.size() + b.size());
  EXPECT_TRUE(run.reference);
  EXPECT_THAT(copy->GetAuthRecord("token/ab"), IsOkAndHolds("record"));
  ASSERT_OK_AND_ASSIGN(StoredReport got, copy->GetReport(report.id));
  EXPECT_EQ(got.renderings, report.renderings);
  // The in-flight upload's three chunks were reclaimed on open: only a's
  // 10 and b's 6 chunks are left.
  EXPECT_THAT(internal::CountPendingUploads(*copy), IsOkAndHolds(0u));
  EXPECT_THAT(internal::CountChunkKeys(*copy), IsOkAndHolds(16u));
  // The copy is a store of its own: writing to it leaves the original alone.
  ASSERT_THAT(copy->DeleteRun(kRun), IsOk());
  EXPECT_THAT(ReadAll(*store_, kRun, {"fwd", "c", 1}), IsOkAndHolds(c));
  EXPECT_THAT(ReadAll(*store_, kRun, {"fwd", "a", 1}), IsOkAndHolds(a));
}

TEST_F(RocksDbMaintenanceTest, BackupHardLinksTablesOnTheSameFilesystem) {
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "a", 1}, Bytes(50'000, 4)), IsOk());
  const std::string backup = root_ + "/backup-links";
  ASSERT_THAT(store_->Backup(backup), IsOk());
  int linked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(backup)) {
    struct stat st {};
    ASSERT_EQ(stat(entry.path().c_str(), &st), 0);
    if (entry.path().extension() == ".sst" && st.st_nlink >= 2) ++linked;
  }
  EXPECT_GT(linked, 0) << "no table file of " << backup << " is a hard link";
}

TEST_F(RocksDbMaintenanceTest, BackupRefusesAnExistingOrOrphanDirectory) {
  const std::string taken = root_ + "/taken";
  ASSERT_TRUE(std::filesystem::create_directory(taken));
  EXPECT_THAT(store_->Backup(taken),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(taken)));
  const std::string orphan = root_ + "/no/such/parent";
  EXPECT_THAT(store_->Backup(orphan),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("parent")));
  EXPECT_THAT(store_->Backup(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a path")));
}

TEST_F(RocksDbMaintenanceTest, MemoryStoreHasNothingToBackUpOrCompact) {
  std::unique_ptr<Store> memory = CreateMemoryStore();
  EXPECT_THAT(memory->Backup(root_ + "/m"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("nothing on disk")));
  EXPECT_THAT(memory->Compact().status(),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("nothing to compact")));
}

TEST_F(RocksDbMaintenanceTest, CompactGivesBackTheSpaceOfDeletedRuns) {
  // 1 MiB chunks in small blob files, memtables flushed every MiB: two runs
  // of 12 MiB each whose chunks share blob files.
  options_.chunk_size = 1 << 20;
  options_.chunk_write_buffer_bytes = 1 << 20;
  options_.blob_file_bytes = 4 << 20;
  options_.segment_tensor_bytes = 0;  // all in RocksDB (segment_test covers files)
  ASSERT_THAT(Reopen(), IsOk());
  constexpr char kOther[] = "team42/bert-torch";
  ASSERT_THAT(store_->CreateRun(MakeRun(kOther)), IsOk());
  std::vector<std::vector<uint8_t>> kept;
  for (int i = 0; i < 6; ++i) {
    const std::vector<uint8_t> gone = Bytes(2 << 20, static_cast<uint8_t>(10 + i));
    kept.push_back(Bytes(2 << 20, static_cast<uint8_t>(40 + i)));
    ASSERT_THAT(Write(*store_, kRun, {"grad", absl::StrCat("w", i), 1}, gone), IsOk());
    ASSERT_THAT(Write(*store_, kOther, {"grad", absl::StrCat("w", i), 1}, kept.back()), IsOk());
  }
  ASSERT_THAT(store_->DeleteRun(kRun), IsOk());
  ASSERT_OK_AND_ASSIGN(CompactInfo info, store_->Compact());
  // Files RocksDB still deletes after the compaction only shrink it.
  EXPECT_LE(DirBytes(dir_), info.bytes_after);
  EXPECT_GE(info.bytes_before, 22u << 20);  // both runs were on disk
  // At least 10 of the deleted run's 12 MiB are given back.
  EXPECT_GE(info.bytes_before, info.bytes_after + (10u << 20))
      << info.bytes_before << " -> " << info.bytes_after;
  for (int i = 0; i < 6; ++i) {
    EXPECT_THAT(ReadAll(*store_, kOther, {"grad", absl::StrCat("w", i), 1}),
                IsOkAndHolds(kept[i]));
  }
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_THAT(ReadAll(*store_, kOther, {"grad", "w5", 1}), IsOkAndHolds(kept[5]));
}

// name -> size of every file in `dir` (not in its subfolders).
std::map<std::string, uint64_t> Listing(const std::string& dir) {
  std::map<std::string, uint64_t> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    out[entry.path().filename().string()] = entry.file_size();
  }
  return out;
}

TEST_F(RocksDbMaintenanceTest, RestoreMakesAStoreAndLeavesTheBackupAlone) {
  const std::vector<uint8_t> a = Bytes(70'000, 5);
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "a", 1}, a), IsOk());
  const std::string backup = root_ + "/backup";
  ASSERT_THAT(store_->Backup(backup), IsOk());
  store_.reset();
  const std::map<std::string, uint64_t> before = Listing(backup);

  const std::string restored = root_ + "/restored";
  ASSERT_OK_AND_ASSIGN(RestoreInfo info, RestoreRocksDbStore(backup, restored));
  EXPECT_EQ(info.runs, 1u);
  EXPECT_EQ(info.tensors, 1u);
  EXPECT_EQ(info.files, before.size());
  EXPECT_GT(info.linked, 0u);
  EXPECT_FALSE(std::filesystem::exists(restored + ".restoring"));
  EXPECT_EQ(Listing(backup), before);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> copy, OpenRocksDbStore(restored, options_));
    EXPECT_THAT(ReadAll(*copy, kRun, {"fwd", "a", 1}), IsOkAndHolds(a));
    ASSERT_THAT(copy->DeleteRun(kRun), IsOk());
    ASSERT_THAT(copy->Compact(), IsOk());
  }
  // Deleting and compacting in the restored store unlinked its files only.
  EXPECT_EQ(Listing(backup), before);
  RocksDbStoreOptions open_options = options_;
  open_options.create_if_missing = false;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> again, OpenRocksDbStore(backup, open_options));
  EXPECT_THAT(ReadAll(*again, kRun, {"fwd", "a", 1}), IsOkAndHolds(a));
}

TEST_F(RocksDbMaintenanceTest, RestoreRefusesAFullDataDirAndAFolderThatIsNoStore) {
  const std::string backup = root_ + "/backup";
  ASSERT_THAT(store_->Backup(backup), IsOk());
  // dir_ holds the live store.
  EXPECT_THAT(RestoreRocksDbStore(backup, dir_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(dir_), HasSubstr("not an empty folder"))));
  const std::string empty = root_ + "/empty";
  ASSERT_TRUE(std::filesystem::create_directory(empty));
  EXPECT_THAT(RestoreRocksDbStore(empty, root_ + "/out"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(empty), HasSubstr("not a reprod store"))));
  EXPECT_FALSE(std::filesystem::exists(root_ + "/out"));
  // An existing empty folder is a fine target.
  const std::string target = root_ + "/target";
  ASSERT_TRUE(std::filesystem::create_directory(target));
  EXPECT_THAT(RestoreRocksDbStore(backup, target), IsOk());
}

TEST_F(RocksDbMaintenanceTest, RestoreOfANewerFormatIsRefusedAndLeavesNothing) {
  ASSERT_THAT(internal::SetMetaValue(*store_, internal::kFormatKey,
                                     std::string("\x07reprod-store")),
              IsOk());
  const std::string backup = root_ + "/backup";
  ASSERT_THAT(store_->Backup(backup), IsOk());
  const std::string restored = root_ + "/restored";
  EXPECT_THAT(RestoreRocksDbStore(backup, restored),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("format version 7"), HasSubstr("reads versions 1 to 3"))));
  EXPECT_FALSE(std::filesystem::exists(restored));
  EXPECT_FALSE(std::filesystem::exists(restored + ".restoring"));
}

TEST_F(RocksDbMaintenanceTest, NewerFormatIsRefusedNamingBothVersions) {
  ASSERT_THAT(internal::SetMetaValue(*store_, internal::kFormatKey,
                                     std::string("\x04reprod-store")),
              IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                 AllOf(HasSubstr(dir_), HasSubstr("format version 4"),
                                       HasSubstr("reads versions 1 to 3"))));
}

}  // namespace
}  // namespace reprod::storage

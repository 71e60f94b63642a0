// RocksDB-specific behaviour: recovery after reopen and after a crash,
// corruption detection, space reclamation, locking and options. The
// behaviour shared with the memory store is in store_conformance_test.cc.
#include "storage/rocksdb/rocksdb_store.h"

#include <signal.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/internal/test_hooks.h"
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
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kRun[] = "team42/bert-paddle";

std::vector<uint8_t> Bytes(size_t n, uint8_t seed = 1) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<uint8_t>(seed + i * 31 + i / 253);
  }
  return out;
}

RunInfo MakeRun(std::string name, bool overwrite = false) {
  RunInfo run;
  run.name = std::move(name);
  run.framework = "torch";
  run.labels = {{"k", "v"}};
  run.overwrite = overwrite;
  return run;
}

absl::StatusOr<CommitResult> Write(Store& store, std::string_view run,
                                   const TensorAddress& address,
                                   const std::vector<uint8_t>& bytes,
                                   size_t piece = 1000) {
  return WriteInPieces(store, run, HeaderFor(address, bytes), bytes, piece);
}

class RocksDbStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "rocksdb_store_test_XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    options_.chunk_size = 7;
    options_.sync_commits = false;
    ASSERT_THAT(Reopen(), IsOk());
    ASSERT_THAT(store_->CreateRun(MakeRun(kRun)), IsOk());
  }

  void TearDown() override {
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  absl::Status Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenRocksDbStore(dir_, options_);
    if (!store.ok()) return store.status();
    store_ = *std::move(store);
    return absl::OkStatus();
  }

  uint64_t ChunkKeys() {
    absl::StatusOr<uint64_t> n = internal::CountChunkKeys(*store_);
    EXPECT_THAT(n, IsOk());
    return n.value_or(~uint64_t{0});
  }

  uint64_t PendingUploads() {
    absl::StatusOr<uint64_t> n = internal::CountPendingUploads(*store_);
    EXPECT_THAT(n, IsOk());
    return n.value_or(~uint64_t{0});
  }

  std::string dir_;
  RocksDbStoreOptions options_;
  std::unique_ptr<Store> store_;
};

TEST_F(RocksDbStoreTest, ReopenKeepsRunsTensorsAndReports) {
  const std::vector<uint8_t> a = Bytes(100), b = Bytes(3, 5);
  ASSERT_THAT(Write(*store_, kRun, {"ckpt", "a", 1}, a), IsOk());
  ASSERT_THAT(Write(*store_, kRun, {"ckpt", "b", std::nullopt}, b), IsOk());
  ASSERT_THAT(store_->CreateRun(MakeRun("team42/sealed")), IsOk());
  ASSERT_THAT(store_->SealRun("team42/sealed", RunState::kSealed), IsOk());
  StoredReport report;
  report.id = "rpt-0000000000000001";
  report.ref = kRun;
  report.created = absl::FromUnixSeconds(1000);
  report.renderings = {{"json", "{}"}};
  ASSERT_THAT(store_->PutReport(report), IsOk());

  // Chunk size changes between opens; old tensors keep theirs.
  options_.chunk_size = 1 << 20;
  ASSERT_THAT(Reopen(), IsOk());
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 2u);
  EXPECT_EQ(run.total_bytes, 103u);
  EXPECT_EQ(run.labels, MakeRun(kRun).labels);
  ASSERT_OK_AND_ASSIGN(run, store_->GetRun("team42/sealed"));
  EXPECT_EQ(run.state, RunState::kSealed);
  EXPECT_THAT(ReadAll(*store_, kRun, {"ckpt", "a", 1}), IsOkAndHolds(a));
  EXPECT_THAT(ReadAll(*store_, kRun, {"ckpt", "b", std::nullopt}),
              IsOkAndHolds(b));
  ASSERT_OK_AND_ASSIGN(StoredReport got, store_->GetReport(report.id));
  EXPECT_EQ(got.renderings, report.renderings);

  // Ids and sequences continue where they were: new data does not clobber
  // old data.
  const std::vector<uint8_t> c = Bytes(50, 9);
  ASSERT_OK_AND_ASSIGN(CommitResult done,
                       Write(*store_, kRun, {"ckpt", "c", std::nullopt}, c));
  EXPECT_EQ(done.sequence, 2u);
  ASSERT_THAT(store_->CreateRun(MakeRun("team42/new")), IsOk());
  ASSERT_THAT(Write(*store_, "team42/new", {"ckpt", "a", 1}, c), IsOk());
  EXPECT_THAT(ReadAll(*store_, kRun, {"ckpt", "a", 1}), IsOkAndHolds(a));
  EXPECT_THAT(ReadAll(*store_, "team42/new", {"ckpt", "a", 1}),
              IsOkAndHolds(c));
  EXPECT_EQ(PendingUploads(), 0u);
}

TEST_F(RocksDbStoreTest, ReopenKeepsReferenceFlagAndAuthRecords) {
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->SetRunReference(kRun, true));
  ASSERT_THAT(store_->PutAuthRecord("token/ab", "record"), IsOk());
  ASSERT_THAT(Reopen(), IsOk());
  ASSERT_OK_AND_ASSIGN(run, store_->GetRun(kRun));
  EXPECT_TRUE(run.reference);
  EXPECT_THAT(store_->GetAuthRecord("token/ab"), IsOkAndHolds("record"));
}

TEST_F(RocksDbStoreTest, CrashBeforeCommitLeavesNothingAndReclaimsChunks) {
  const std::vector<uint8_t> committed = Bytes(64, 3);  // 10 chunks of 7
  const std::vector<uint8_t> orphan = Bytes(700, 4);
  store_.reset();  // the child takes the directory's lock

  const pid_t pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    // Child: no gtest assertions here, only exit codes.
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenRocksDbStore(dir_, options_);
    if (!store.ok()) _exit(10);
    if (!Write(**store, kRun, {"c", "committed", std::nullopt}, committed)
             .ok()) {
      _exit(11);
    }
    absl::StatusOr<std::unique_ptr<TensorWriter>> writer =
        (*store)->BeginTensor(kRun,
                              HeaderFor({"c", "orphan", std::nullopt}, orphan));
    if (!writer.ok()) _exit(12);
    if (!(*writer)->Append(absl::MakeConstSpan(orphan).subspan(0, 500)).ok()) {
      _exit(13);
    }
    absl::StatusOr<uint64_t> pending = internal::CountPendingUploads(**store);
    if (!pending.ok() || *pending != 1) _exit(14);
    kill(getpid(), SIGKILL);
    _exit(15);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status))
      << "child exited with " << WEXITSTATUS(status);
  ASSERT_EQ(WTERMSIG(status), SIGKILL);

  ASSERT_THAT(Reopen(), IsOk());
  ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> list, store_->ListTensors(kRun));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].header.address.key, "committed");
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "committed", std::nullopt}),
              IsOkAndHolds(committed));
  EXPECT_THAT(store_->OpenTensor(kRun, {"c", "orphan", std::nullopt}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("c/orphan")));
  EXPECT_EQ(ChunkKeys(), 10u);  // the committed tensor's only
  EXPECT_EQ(PendingUploads(), 0u);
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 1u);

  // The address is free and new uploads do not collide with old blobs.
  ASSERT_THAT(Write(*store_, kRun, {"c", "orphan", std::nullopt}, orphan),
              IsOk());
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "orphan", std::nullopt}),
              IsOkAndHolds(orphan));
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "committed", std::nullopt}),
              IsOkAndHolds(committed));
}

TEST_F(RocksDbStoreTest, CorruptChunkIsDataLoss) {
  const std::vector<uint8_t> bytes = Bytes(50);  // chunks 0..7
  const TensorAddress address{"ckpt", "w", 3};
  ASSERT_THAT(Write(*store_, kRun, address, bytes), IsOk());
  ASSERT_THAT(internal::CorruptChunk(*store_, kRun, address, 2), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, address));
  std::vector<uint8_t> got(14);
  EXPECT_THAT(reader->Read(0, absl::MakeSpan(got)), IsOk());  // chunks 0, 1
  EXPECT_THAT(reader->Read(20, absl::MakeSpan(got)),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(kRun), HasSubstr("ckpt/w@3"),
                             HasSubstr("chunk 2 of 8"), HasSubstr("crc32c"))));
  EXPECT_THAT(ReadAll(*store_, kRun, address),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 2")));
}

TEST_F(RocksDbStoreTest, MissingChunkIsDataLoss) {
  const std::vector<uint8_t> bytes = Bytes(50);
  const TensorAddress address{"ckpt", "w", std::nullopt};
  ASSERT_THAT(Write(*store_, kRun, address, bytes), IsOk());
  ASSERT_THAT(internal::DeleteChunk(*store_, kRun, address, 7), IsOk());
  EXPECT_THAT(ReadAll(*store_, kRun, address),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("ckpt/w"), HasSubstr("chunk 7 of 8"),
                             HasSubstr("missing"))));
}

TEST_F(RocksDbStoreTest, AbandonedWriterDeletesItsChunks) {
  const std::vector<uint8_t> bytes = Bytes(100);
  {
    ASSERT_OK_AND_ASSIGN(
        auto writer,
        store_->BeginTensor(kRun, HeaderFor({"c", "k", 1}, bytes)));
    ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(0, 90)),
                IsOk());
    EXPECT_EQ(ChunkKeys(), 12u);
    EXPECT_EQ(PendingUploads(), 1u);
  }
  EXPECT_EQ(ChunkKeys(), 0u);
  EXPECT_EQ(PendingUploads(), 0u);
  // A failed Commit (wrong crc) abandons too.
  TensorHeader h = HeaderFor({"c", "k", 1}, bytes);
  h.crc32c ^= 1;
  {
    ASSERT_OK_AND_ASSIGN(auto writer, store_->BeginTensor(kRun, h));
    ASSERT_THAT(writer->Append(bytes), IsOk());
    EXPECT_THAT(writer->Commit(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("crc32c")));
  }
  EXPECT_EQ(ChunkKeys(), 0u);
  EXPECT_EQ(PendingUploads(), 0u);
}

TEST_F(RocksDbStoreTest, ResendOverwriteAndDeleteKeepChunkCountExact) {
  const std::vector<uint8_t> a = Bytes(70), b = Bytes(15, 8);
  ASSERT_THAT(store_->CreateRun(MakeRun("team42/ow", /*overwrite=*/true)),
              IsOk());
  ASSERT_THAT(Write(*store_, "team42/ow", {"c", "k", 1}, a), IsOk());
  EXPECT_EQ(ChunkKeys(), 10u);
  // Identical resend stores nothing.
  ASSERT_OK_AND_ASSIGN(CommitResult done,
                       Write(*store_, "team42/ow", {"c", "k", 1}, a));
  EXPECT_EQ(done.kind, CommitKind::kAlreadyPresent);
  EXPECT_EQ(ChunkKeys(), 10u);
  // Overwrite deletes the replaced tensor's chunks.
  ASSERT_OK_AND_ASSIGN(done, Write(*store_, "team42/ow", {"c", "k", 1}, b));
  EXPECT_EQ(done.kind, CommitKind::kReplaced);
  EXPECT_EQ(ChunkKeys(), 3u);
  // Two concurrent uploads of the same bytes: the second one's copy is
  // dropped at Commit.
  const std::vector<uint8_t> c = Bytes(30, 2);
  ASSERT_OK_AND_ASSIGN(auto w1,
                       store_->BeginTensor(kRun, HeaderFor({"c", "x", 1}, c)));
  ASSERT_OK_AND_ASSIGN(auto w2,
                       store_->BeginTensor(kRun, HeaderFor({"c", "x", 1}, c)));
  ASSERT_THAT(w1->Append(c), IsOk());
  ASSERT_THAT(w2->Append(c), IsOk());
  EXPECT_EQ(ChunkKeys(), 3u + 8u);
  ASSERT_THAT(w1->Commit(), IsOk());
  ASSERT_OK_AND_ASSIGN(done, w2->Commit());
  EXPECT_EQ(done.kind, CommitKind::kAlreadyPresent);
  w2.reset();
  EXPECT_EQ(ChunkKeys(), 3u + 5u);
  EXPECT_EQ(PendingUploads(), 0u);
  // DeleteRun removes the run's chunks, not others'.
  ASSERT_OK_AND_ASSIGN(uint64_t deleted, store_->DeleteRun("team42/ow"));
  EXPECT_EQ(deleted, 1u);
  EXPECT_EQ(ChunkKeys(), 5u);
  ASSERT_OK_AND_ASSIGN(deleted, store_->DeleteRun(kRun));
  EXPECT_EQ(deleted, 1u);
  EXPECT_EQ(ChunkKeys(), 0u);
}

TEST_F(RocksDbStoreTest, SmallTensorNeedsNoPendingMarker) {
  options_.chunk_size = 1 << 20;
  ASSERT_THAT(Reopen(), IsOk());
  const std::vector<uint8_t> bytes = Bytes(1000);
  ASSERT_OK_AND_ASSIGN(
      auto writer,
      store_->BeginTensor(kRun, HeaderFor({"c", "loss", 1}, bytes)));
  ASSERT_THAT(writer->Append(bytes), IsOk());
  EXPECT_EQ(PendingUploads(), 0u);
  EXPECT_EQ(ChunkKeys(), 0u);
  ASSERT_THAT(writer->Commit(), IsOk());
  EXPECT_EQ(ChunkKeys(), 1u);
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "loss", 1}), IsOkAndHolds(bytes));
}

TEST_F(RocksDbStoreTest, SecondOpenOfTheDirectoryIsFailedPrecondition) {
  EXPECT_THAT(OpenRocksDbStore(dir_, options_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(dir_), HasSubstr("in use"))));
}

TEST_F(RocksDbStoreTest, BadOptionsAndMissingDirectory) {
  RocksDbStoreOptions options;
  options.chunk_size = 0;
  EXPECT_THAT(
      OpenRocksDbStore(dir_ + "/other", options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunk_size")));
  options.chunk_size = 1 << 20;
  options.create_if_missing = false;
  EXPECT_THAT(
      OpenRocksDbStore(dir_ + "/missing", options),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("missing"), HasSubstr("does not exist"))));
}

TEST_F(RocksDbStoreTest, SyncedCommitsWork) {
  options_.sync_commits = true;
  ASSERT_THAT(Reopen(), IsOk());
  const std::vector<uint8_t> bytes = Bytes(3000);
  ASSERT_THAT(Write(*store_, kRun, {"c", "k", std::nullopt}, bytes), IsOk());
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "k", std::nullopt}),
              IsOkAndHolds(bytes));
  EXPECT_THAT(store_->ListRuns(""), IsOk());
}

TEST_F(RocksDbStoreTest, HooksRejectOtherStores) {
  std::unique_ptr<Store> memory = CreateMemoryStore();
  EXPECT_THAT(internal::CountChunkKeys(*memory),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a RocksDB store")));
}

TEST_F(RocksDbStoreTest, MinFreeBytesRefusesTensorsBeforeTheDiskFills) {
  struct statvfs fs;
  ASSERT_EQ(statvfs(dir_.c_str(), &fs), 0);
  const uint64_t free_bytes = uint64_t{fs.f_bavail} * fs.f_frsize;
  const std::vector<uint8_t> bytes = Bytes(1000);
  // More must stay free than there is (with 1 GiB to spare for other
  // processes freeing space meanwhile): refused before any byte is written.
  options_.min_free_bytes = free_bytes + (uint64_t{1} << 30);
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_THAT(
      store_->BeginTensor(kRun, HeaderFor({"ckpt", "big", 1}, bytes)).status(),
      StatusIs(absl::StatusCode::kResourceExhausted,
               AllOf(HasSubstr("disk full"), HasSubstr("ckpt/big"),
                     HasSubstr("needs 1000 bytes"),
                     HasSubstr("must stay free (--min-free-bytes)"))));
  // Runs and reads are not guarded: only tensor bytes are refused.
  EXPECT_THAT(store_->CreateRun(MakeRun("team42/other")), IsOk());
  ASSERT_OK_AND_ASSIGN(const std::vector<TensorMeta> none, store_->ListTensors(kRun));
  EXPECT_THAT(none, IsEmpty());
  // With the check off (0), the same tensor is stored.
  options_.min_free_bytes = 0;
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_THAT(Write(*store_, kRun, {"ckpt", "big", 1}, bytes), IsOk());
}

}  // namespace
}  // namespace reprod::storage

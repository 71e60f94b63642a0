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
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/internal/keys.h"
#include "storage/rocksdb/internal/records.h"
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

// A run with the most metadata a server accepts (64 labels of 1 KiB).
RunInfo MaxMetadataRun(std::string name) {
  RunInfo run = MakeRun(std::move(name));
  for (int i = 0; i < 64; ++i) {
    run.labels[absl::StrCat("label-", i)] = std::string(1024, 'a' + i % 26);
  }
  return run;
}

TEST_F(RocksDbStoreTest, CommitsDoNotRewriteTheRunMetadata) {
  constexpr char kBig[] = "team42/max-metadata";
  ASSERT_THAT(store_->CreateRun(MaxMetadataRun(kBig)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> record,
                       internal::GetMetaValue(*store_, internal::RunKey(kBig)));
  ASSERT_TRUE(record.has_value());
  ASSERT_GT(record->size(), 64u * 1024);
  ASSERT_OK_AND_ASSIGN(const uint64_t before,
                       internal::UserBytesWritten(*store_));
  constexpr int kTensors = 300;
  uint64_t payload = 0;
  for (int i = 0; i < kTensors; ++i) {
    const std::vector<uint8_t> bytes = Bytes(4, static_cast<uint8_t>(i));
    payload += bytes.size();
    ASSERT_THAT(Write(*store_, kBig, {"ckpt", absl::StrCat("t", i), 1}, bytes),
                IsOk());
  }
  ASSERT_OK_AND_ASSIGN(const uint64_t after,
                       internal::UserBytesWritten(*store_));
  // Rewriting the run record per commit costs kTensors x its ~67 KB (about
  // 20 MB); an index entry, a chunk and the run's counters are well under
  // 1 KiB per tensor, whatever the metadata.
  EXPECT_LT(after - before, uint64_t{kTensors} * 1024);
  EXPECT_GT(after - before, payload);  // the statistic does count writes
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kBig));
  EXPECT_EQ(run.tensor_count, uint64_t{kTensors});
  EXPECT_EQ(run.total_bytes, payload);
  EXPECT_EQ(run.labels, MaxMetadataRun(kBig).labels);
}

// tensor_count, total_bytes and the next sequence, as GetRun and ListRuns
// report them.
void ExpectCounters(Store& store, std::string_view run, uint64_t count,
                    uint64_t bytes) {
  ASSERT_OK_AND_ASSIGN(const RunInfo got, store.GetRun(run));
  EXPECT_EQ(got.tensor_count, count) << run;
  EXPECT_EQ(got.total_bytes, bytes) << run;
  ASSERT_OK_AND_ASSIGN(const std::vector<RunInfo> listed, store.ListRuns(run));
  ASSERT_EQ(listed.size(), 1u) << run;
  EXPECT_EQ(listed[0].tensor_count, count) << run;
  EXPECT_EQ(listed[0].total_bytes, bytes) << run;
  EXPECT_EQ(listed[0].labels, got.labels) << run;
}

TEST_F(RocksDbStoreTest, CountersFollowCommitsReplaceDeleteAndReopen) {
  constexpr char kOw[] = "team42/counted";
  ASSERT_THAT(store_->CreateRun(MakeRun(kOw, /*overwrite=*/true)), IsOk());
  ExpectCounters(*store_, kOw, 0, 0);
  ASSERT_OK_AND_ASSIGN(CommitResult done,
                       Write(*store_, kOw, {"c", "a", 1}, Bytes(10)));
  EXPECT_EQ(done.sequence, 0u);
  ASSERT_OK_AND_ASSIGN(done, Write(*store_, kOw, {"c", "b", 1}, Bytes(20)));
  EXPECT_EQ(done.sequence, 1u);
  ExpectCounters(*store_, kOw, 2, 30);
  // An identical resend counts nothing and takes no sequence.
  ASSERT_OK_AND_ASSIGN(done, Write(*store_, kOw, {"c", "a", 1}, Bytes(10)));
  EXPECT_EQ(done.kind, CommitKind::kAlreadyPresent);
  ExpectCounters(*store_, kOw, 2, 30);
  // A replacement swaps 20 bytes for 5 and takes the next sequence.
  ASSERT_OK_AND_ASSIGN(done, Write(*store_, kOw, {"c", "b", 1}, Bytes(5, 3)));
  EXPECT_EQ(done.kind, CommitKind::kReplaced);
  EXPECT_EQ(done.sequence, 2u);
  ExpectCounters(*store_, kOw, 2, 15);
  ASSERT_OK_AND_ASSIGN(done, Write(*store_, kOw, {"c", "e", std::nullopt}, {}));
  EXPECT_EQ(done.sequence, 3u);
  ExpectCounters(*store_, kOw, 3, 15);
  ExpectCounters(*store_, kRun, 0, 0);  // another run's counters stay apart

  ASSERT_THAT(Reopen(), IsOk());
  ExpectCounters(*store_, kOw, 3, 15);
  ASSERT_OK_AND_ASSIGN(done, Write(*store_, kOw, {"c", "d", 1}, Bytes(7)));
  EXPECT_EQ(done.sequence, 4u);
  // Metadata writes carry the counters along and do not reset them.
  ASSERT_OK_AND_ASSIGN(RunInfo info, store_->SetRunReference(kOw, true));
  EXPECT_EQ(info.tensor_count, 4u);
  EXPECT_EQ(info.total_bytes, 22u);
  ASSERT_OK_AND_ASSIGN(info, store_->SealRun(kOw, RunState::kSealed));
  EXPECT_EQ(info.tensor_count, 4u);
  ExpectCounters(*store_, kOw, 4, 22);

  ASSERT_THAT(store_->DeleteRun(kOw), IsOkAndHolds(4u));
  EXPECT_THAT(internal::GetMetaValue(*store_, internal::RunStatsKey(kOw)),
              IsOkAndHolds(std::nullopt));
  // A new run of the same name starts from zero.
  ASSERT_THAT(store_->CreateRun(MakeRun(kOw)), IsOk());
  ExpectCounters(*store_, kOw, 0, 0);
  ASSERT_OK_AND_ASSIGN(done, Write(*store_, kOw, {"c", "a", 1}, Bytes(3)));
  EXPECT_EQ(done.sequence, 0u);
  ExpectCounters(*store_, kOw, 1, 3);
}

// A store as format version 1 left it: counters only in the run record, no
// stats record, format record 0x01.
TEST_F(RocksDbStoreTest, OldLayoutRunsKeepTheirCountersAndContinue) {
  constexpr char kOld[] = "team42/old";
  ASSERT_THAT(store_->CreateRun(MakeRun(kOld)), IsOk());
  for (int i = 1; i <= 3; ++i) {  // 10 + 20 + 30 bytes, sequences 0..2
    ASSERT_THAT(Write(*store_, kOld, {"c", absl::StrCat("t", i), 1},
                      Bytes(10 * i, static_cast<uint8_t>(i))),
                IsOk());
  }
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> value,
                       internal::GetMetaValue(*store_, internal::RunKey(kOld)));
  ASSERT_TRUE(value.has_value());
  ASSERT_OK_AND_ASSIGN(internal::RunRecord record,
                       internal::DecodeRunRecord(kOld, *value));
  record.next_sequence = 3;
  record.info.tensor_count = 3;
  record.info.total_bytes = 60;
  ASSERT_THAT(internal::SetMetaValue(*store_, internal::RunKey(kOld),
                                     internal::EncodeRunRecord(record)),
              IsOk());
  ASSERT_THAT(internal::SetMetaValue(*store_, internal::RunStatsKey(kOld),
                                     std::nullopt),
              IsOk());
  ASSERT_THAT(internal::SetMetaValue(*store_, internal::kFormatKey,
                                     std::string("\x01reprod-store")),
              IsOk());

  ASSERT_THAT(Reopen(), IsOk());
  // Opened writable, the store announces the new layout before writing it.
  EXPECT_THAT(internal::GetMetaValue(*store_, internal::kFormatKey),
              IsOkAndHolds(std::optional<std::string>("\x03reprod-store")));
  ExpectCounters(*store_, kOld, 3, 60);
  ASSERT_OK_AND_ASSIGN(CommitResult done,
                       Write(*store_, kOld, {"c", "t4", 1}, Bytes(40)));
  EXPECT_EQ(done.sequence, 3u);
  ExpectCounters(*store_, kOld, 4, 100);
  ASSERT_THAT(Reopen(), IsOk());
  ExpectCounters(*store_, kOld, 4, 100);
  ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> tensors,
                       store_->ListTensors(kOld, ""));
  EXPECT_EQ(tensors.size(), 4u);

  // Counters of another run id are damage, reported with the run's name.
  ASSERT_THAT(internal::SetMetaValue(
                  *store_, internal::RunStatsKey(kOld),
                  internal::EncodeRunStats({record.run_id + 1, 0, 0, 0})),
              IsOk());
  EXPECT_THAT(store_->GetRun(kOld),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(kOld)));
  EXPECT_THAT(store_->ListRuns("team42/"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(kOld)));
}

// A rank-0 tensor keeps the key builds before ranks wrote (no migration);
// rank 1 has the tag 0x02 be32(1) after the step; a forged tag holding 0
// (a second key for the rank-0 tensor) is DataLoss naming the run.
TEST_F(RocksDbStoreTest, RankTagOnlyOnKeysOfNonZeroRanks) {
  ASSERT_THAT(Write(*store_, kRun, {"c", "k", 5}, Bytes(8)), IsOk());
  ASSERT_THAT(Write(*store_, kRun, {"c", "k", 5, 1}, Bytes(8, 2)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> run_value,
                       internal::GetMetaValue(*store_, internal::RunKey(kRun)));
  ASSERT_TRUE(run_value.has_value());
  ASSERT_OK_AND_ASSIGN(internal::RunRecord record, internal::DecodeRunRecord(kRun, *run_value));
  std::string rank0 = "t";
  for (int shift = 56; shift >= 0; shift -= 8) {
    rank0.push_back(static_cast<char>((record.run_id >> shift) & 0xff));
  }
  const char tail[] = {'c', 0, 'k', 0, 0x01, static_cast<char>(0x80), 0, 0, 0, 0, 0, 0, 5};
  rank0.append(tail, sizeof(tail));
  const std::string rank1 = rank0 + std::string("\x02\x00\x00\x00\x01", 5);
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> v0, internal::GetMetaValue(*store_, rank0));
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> v1, internal::GetMetaValue(*store_, rank1));
  ASSERT_TRUE(v0.has_value());
  ASSERT_TRUE(v1.has_value());
  EXPECT_THAT(internal::GetMetaValue(*store_, rank0 + std::string("\x02\x00\x00\x00\x00", 5)),
              IsOkAndHolds(std::nullopt));

  ASSERT_THAT(internal::SetMetaValue(*store_, rank0 + std::string("\x02\x00\x00\x00\x00", 5), *v0),
              IsOk());
  EXPECT_THAT(store_->ListTensors(kRun, ""),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(kRun), HasSubstr("rank tag holds 0"))));
  ASSERT_THAT(internal::SetMetaValue(*store_, rank0 + std::string("\x02\x00\x00\x00\x00", 5),
                                     std::nullopt),
              IsOk());
  ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> tensors, store_->ListTensors(kRun, ""));
  ASSERT_EQ(tensors.size(), 2u);
  EXPECT_EQ(tensors[0].header.address, (TensorAddress{"c", "k", 5, 0}));
  EXPECT_EQ(tensors[1].header.address, (TensorAddress{"c", "k", 5, 1}));
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

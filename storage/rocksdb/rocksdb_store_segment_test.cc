// Segment files (storage/FORMAT.md): large tensors in files of their own.
// Round trips, crash leftovers, on-disk damage, deletion, backup/restore
// and compaction, checked against the bytes written and the files on disk.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
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
using ::testing::SizeIs;

constexpr char kRun[] = "team42/bert-paddle";
constexpr uint64_t kMiB = 1 << 20;

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 1;
  for (uint8_t& b : out) {
    x = x * 1103515245u + 12345u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return out;
}

absl::StatusOr<CommitResult> Write(Store& store, std::string_view run,
                                   const TensorAddress& address,
                                   const std::vector<uint8_t>& bytes) {
  return WriteInPieces(store, run, HeaderFor(address, bytes), bytes, 100'003);
}

// Names of the files in `dir`/segments.
std::vector<std::string> SegmentFiles(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/segments", ec)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

void FlipByte(const std::string& path, uint64_t offset) {
  const int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  uint8_t b = 0;
  ASSERT_EQ(pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b ^= 0x40;
  ASSERT_EQ(pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  close(fd);
}

class SegmentStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "segment_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/store";
    options_.chunk_size = 4096;
    options_.sync_commits = false;
    options_.segment_tensor_bytes = 10'000;
    options_.min_free_bytes = 0;
    ASSERT_THAT(Reopen(), IsOk());
    RunInfo run;
    run.name = kRun;
    run.overwrite = true;
    ASSERT_THAT(store_->CreateRun(run), IsOk());
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

TEST_F(SegmentStoreTest, LargeTensorsGetAFileEachAndReadBackExactly) {
  const std::vector<uint8_t> big = Bytes(3 * kMiB + 5, 1);  // 4 blocks, the last 5 bytes
  const std::vector<uint8_t> small = Bytes(9'999, 2);        // under the threshold: chunks
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "big", 1}, big), IsOk());
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "small", 1}, small), IsOk());
  EXPECT_THAT(SegmentFiles(dir_), SizeIs(1));
  EXPECT_THAT(internal::CountChunkKeys(*store_), IsOkAndHolds(3u));  // small only
  // The file: payload, 4 block CRCs, 32-byte footer.
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/segments/" + SegmentFiles(dir_)[0]),
            big.size() + 4 * 4 + 32);

  for (int round = 0; round < 2; ++round) {
    EXPECT_THAT(ReadAll(*store_, kRun, {"fwd", "big", 1}), IsOkAndHolds(big));
    EXPECT_THAT(ReadAll(*store_, kRun, {"fwd", "small", 1}), IsOkAndHolds(small));
    // Windows across block boundaries, and the very last byte.
    ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, {"fwd", "big", 1}));
    for (uint64_t offset : {uint64_t{0}, kMiB - 3, 2 * kMiB + 17, big.size() - 1}) {
      std::vector<uint8_t> got(std::min<uint64_t>(70'000, big.size() - offset));
      ASSERT_THAT(reader->Read(offset, absl::MakeSpan(got)), IsOk());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), big.begin() + offset)) << offset;
    }
    std::vector<uint8_t> past(2);
    EXPECT_THAT(reader->Read(big.size() - 1, absl::MakeSpan(past)),
                StatusIs(absl::StatusCode::kOutOfRange, ::testing::_));
    reader.reset();
    ASSERT_THAT(Reopen(), IsOk());
  }
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 2u);
  EXPECT_EQ(run.total_bytes, big.size() + small.size());
}

TEST_F(SegmentStoreTest, MappedRangesHoldTheBytesAndAreVerified) {
  const std::vector<uint8_t> bytes = Bytes(2 * kMiB + 777, 12);  // blocks 0, 1, 2
  const TensorAddress address{"fwd", "m", 2};
  ASSERT_THAT(Write(*store_, kRun, address, bytes), IsOk());
  {
    ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, address));
    for (auto [offset, size] : {std::pair<uint64_t, uint64_t>{0, 10}, {kMiB - 5, 10},
                                {123, 2 * kMiB}, {bytes.size() - 1, 1}, {0, bytes.size()}}) {
      ASSERT_OK_AND_ASSIGN(std::unique_ptr<MappedBytes> mapped, reader->Map(offset, size));
      ASSERT_EQ(mapped->bytes().size(), size);
      EXPECT_TRUE(std::equal(mapped->bytes().begin(), mapped->bytes().end(),
                             bytes.begin() + offset))
          << offset;
    }
    EXPECT_THAT(reader->Map(bytes.size() - 1, 2).status(),
                StatusIs(absl::StatusCode::kOutOfRange, ::testing::_));
  }
  const std::string path = dir_ + "/segments/" + SegmentFiles(dir_).at(0);
  FlipByte(path, 2 * kMiB + 3);  // in block 2
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, address));
  EXPECT_THAT(reader->Map(0, 2 * kMiB), IsOk());
  EXPECT_THAT(reader->Map(kMiB, kMiB + 10).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("fwd/m@2"), HasSubstr("block 2 of 3"))));
}

TEST_F(SegmentStoreTest, WrongLengthOrCrcIsRefusedAndLeavesNoFile) {
  const std::vector<uint8_t> bytes = Bytes(50'000, 3);
  TensorHeader header = HeaderFor({"fwd", "x", 1}, bytes);
  header.crc32c ^= 1;
  EXPECT_THAT(WriteInPieces(*store_, kRun, header, bytes, 7'000),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("fwd/x@1"), HasSubstr("crc32c"))));
  header = HeaderFor({"fwd", "x", 1}, bytes);
  {
    ASSERT_OK_AND_ASSIGN(auto writer, store_->BeginTensor(kRun, header));
    ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).first(20'000)), IsOk());
    EXPECT_THAT(writer->Commit(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("received 20000 bytes")));
  }
  EXPECT_THAT(SegmentFiles(dir_), SizeIs(0));
  EXPECT_THAT(internal::CountPendingUploads(*store_), IsOkAndHolds(0u));
  EXPECT_THAT(store_->OpenTensor(kRun, {"fwd", "x", 1}).status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

// What a crash leaves is the directory as it is: a copy taken right after a
// commit, with another upload half written, holds the committed tensor and
// nothing of the other once opened.
TEST_F(SegmentStoreTest, CommittedSurvivesACrashAndHalfWrittenFilesAreSwept) {
  options_.sync_commits = true;
  ASSERT_THAT(Reopen(), IsOk());
  const std::vector<uint8_t> committed = Bytes(2 * kMiB + 100, 4);
  const std::vector<uint8_t> orphan = Bytes(kMiB, 5);
  ASSERT_THAT(Write(*store_, kRun, {"c", "committed", 1}, committed), IsOk());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<TensorWriter> writer,
                       store_->BeginTensor(kRun, HeaderFor({"c", "orphan", 1}, orphan)));
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(orphan).first(300'000)), IsOk());
  EXPECT_THAT(SegmentFiles(dir_), SizeIs(2));

  const std::string crashed = root_ + "/crashed";
  std::filesystem::copy(dir_, crashed, std::filesystem::copy_options::recursive);
  {
    RocksDbStoreOptions copy_options = options_;
    copy_options.create_if_missing = false;
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> after, OpenRocksDbStore(crashed, copy_options));
    EXPECT_THAT(ReadAll(*after, kRun, {"c", "committed", 1}), IsOkAndHolds(committed));
    EXPECT_THAT(after->OpenTensor(kRun, {"c", "orphan", 1}).status(),
                StatusIs(absl::StatusCode::kNotFound, HasSubstr("c/orphan")));
    EXPECT_THAT(internal::CountPendingUploads(*after), IsOkAndHolds(0u));
    EXPECT_THAT(SegmentFiles(crashed), SizeIs(1));  // the orphan's file is gone
  }
  // The upload in flight completes in the live store and survives a reopen.
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(orphan).subspan(300'000)), IsOk());
  ASSERT_THAT(writer->Commit(), IsOk());
  writer.reset();
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "orphan", 1}), IsOkAndHolds(orphan));
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "committed", 1}), IsOkAndHolds(committed));
  EXPECT_THAT(SegmentFiles(dir_), SizeIs(2));
}

TEST_F(SegmentStoreTest, DamagedFilesAreDataLossNamingTheTensor) {
  const std::vector<uint8_t> bytes = Bytes(2 * kMiB + 500, 6);  // blocks 0, 1, 2
  const TensorAddress address{"bwd", "w.grad", 3};
  ASSERT_THAT(Write(*store_, kRun, address, bytes), IsOk());
  ASSERT_THAT(SegmentFiles(dir_), SizeIs(1));
  const std::string path = dir_ + "/segments/" + SegmentFiles(dir_)[0];

  FlipByte(path, kMiB + 12'345);  // in block 1
  {
    ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, address));
    std::vector<uint8_t> got(1000);
    EXPECT_THAT(reader->Read(0, absl::MakeSpan(got)), IsOk());  // block 0 is intact
    EXPECT_THAT(reader->Read(kMiB + 10'000, absl::MakeSpan(got)),
                StatusIs(absl::StatusCode::kDataLoss,
                         AllOf(HasSubstr(kRun), HasSubstr("bwd/w.grad@3"), HasSubstr(path),
                               HasSubstr("block 1 of 3"), HasSubstr("crc32c"))));
  }
  EXPECT_THAT(ReadAll(*store_, kRun, address), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  FlipByte(path, kMiB + 12'345);  // repaired
  EXPECT_THAT(ReadAll(*store_, kRun, address), IsOkAndHolds(bytes));

  const uint64_t size = std::filesystem::file_size(path);
  FlipByte(path, size - 20);  // the footer
  EXPECT_THAT(store_->OpenTensor(kRun, address).status(),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr("bwd/w.grad@3"),
                                                          HasSubstr("footer"))));
  FlipByte(path, size - 20);
  FlipByte(path, bytes.size() + 5);  // the block CRC array
  EXPECT_THAT(store_->OpenTensor(kRun, address).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum array")));
  FlipByte(path, bytes.size() + 5);
  std::filesystem::resize_file(path, size - 1);
  EXPECT_THAT(store_->OpenTensor(kRun, address).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
  std::filesystem::remove(path);
  EXPECT_THAT(store_->OpenTensor(kRun, address).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("bwd/w.grad@3"), HasSubstr("does not exist"))));
}

TEST_F(SegmentStoreTest, ReplacingDeletingAndAbandoningFreeTheirFiles) {
  const std::vector<uint8_t> v1 = Bytes(kMiB, 7), v2 = Bytes(kMiB + 1, 8);
  ASSERT_THAT(Write(*store_, kRun, {"c", "t", 1}, v1), IsOk());
  const std::vector<std::string> first = SegmentFiles(dir_);
  ASSERT_THAT(first, SizeIs(1));
  // An identical resend stores nothing new.
  ASSERT_OK_AND_ASSIGN(CommitResult again, Write(*store_, kRun, {"c", "t", 1}, v1));
  EXPECT_EQ(again.kind, CommitKind::kAlreadyPresent);
  EXPECT_EQ(SegmentFiles(dir_), first);
  // A replacement gets a new file; the old one goes.
  ASSERT_OK_AND_ASSIGN(CommitResult replaced, Write(*store_, kRun, {"c", "t", 1}, v2));
  EXPECT_EQ(replaced.kind, CommitKind::kReplaced);
  EXPECT_EQ(replaced.replaced_bytes, v1.size());
  ASSERT_THAT(SegmentFiles(dir_), SizeIs(1));
  EXPECT_NE(SegmentFiles(dir_), first);
  EXPECT_THAT(ReadAll(*store_, kRun, {"c", "t", 1}), IsOkAndHolds(v2));
  // A reader opened before the run is deleted keeps reading its open file.
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, {"c", "t", 1}));
  {  // An abandoned upload leaves nothing.
    ASSERT_OK_AND_ASSIGN(auto writer, store_->BeginTensor(kRun, HeaderFor({"c", "u", 1}, v1)));
    ASSERT_THAT(writer->Append(absl::MakeConstSpan(v1).first(600'000)), IsOk());
    EXPECT_THAT(SegmentFiles(dir_), SizeIs(2));
  }
  EXPECT_THAT(SegmentFiles(dir_), SizeIs(1));
  EXPECT_THAT(store_->DeleteRun(kRun), IsOkAndHolds(1u));
  EXPECT_THAT(SegmentFiles(dir_), SizeIs(0));
  std::vector<uint8_t> got(v2.size());
  EXPECT_THAT(reader->Read(0, absl::MakeSpan(got)), IsOk());
  EXPECT_EQ(got, v2);
  EXPECT_THAT(internal::CountPendingUploads(*store_), IsOkAndHolds(0u));
}

TEST_F(SegmentStoreTest, BackupAndRestoreCarryTheFiles) {
  const std::vector<uint8_t> a = Bytes(kMiB + 3, 9), b = Bytes(20'000, 10);
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "a", 1}, a), IsOk());
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "b", 1}, b), IsOk());
  ASSERT_OK_AND_ASSIGN(BackupInfo info, store_->Backup(root_ + "/backup"));
  EXPECT_THAT(SegmentFiles(root_ + "/backup"), SizeIs(2));
  EXPECT_GE(info.bytes, a.size() + b.size());
  // The live store moves on; the backup keeps what it had.
  ASSERT_THAT(store_->DeleteRun(kRun), IsOk());
  EXPECT_THAT(SegmentFiles(dir_), SizeIs(0));
  ASSERT_OK_AND_ASSIGN(RestoreInfo restored,
                       RestoreRocksDbStore(root_ + "/backup", root_ + "/restored"));
  EXPECT_EQ(restored.tensors, 2u);
  EXPECT_THAT(SegmentFiles(root_ + "/restored"), SizeIs(2));
  RocksDbStoreOptions open = options_;
  open.create_if_missing = false;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> copy,
                       OpenRocksDbStore(root_ + "/restored", open));
  EXPECT_THAT(ReadAll(*copy, kRun, {"fwd", "a", 1}), IsOkAndHolds(a));
  EXPECT_THAT(ReadAll(*copy, kRun, {"fwd", "b", 1}), IsOkAndHolds(b));
}

TEST_F(SegmentStoreTest, CompactDeletesFilesNoTensorNames) {
  const std::vector<uint8_t> a = Bytes(kMiB, 11);
  ASSERT_THAT(Write(*store_, kRun, {"fwd", "a", 1}, a), IsOk());
  const std::string live = SegmentFiles(dir_).at(0);
  // A file of a blob id already handed out that nothing names (what a crash
  // during a deletion leaves), and one of an id not handed out yet (an
  // upload about to start): only the first goes.
  std::filesystem::copy_file(dir_ + "/segments/" + live,
                             absl::StrFormat("%s/segments/%016x.seg", dir_, 0));
  const std::string future = absl::StrFormat("%016x.seg", uint64_t{1} << 40);
  std::filesystem::copy_file(dir_ + "/segments/" + live, dir_ + "/segments/" + future);
  ASSERT_THAT(store_->Compact(), IsOk());
  EXPECT_THAT(SegmentFiles(dir_), ::testing::ElementsAre(live, future));
  EXPECT_THAT(ReadAll(*store_, kRun, {"fwd", "a", 1}), IsOkAndHolds(a));
  // At open, nothing is in flight: every unnamed file goes.
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_THAT(SegmentFiles(dir_), ::testing::ElementsAre(live));
}

}  // namespace
}  // namespace reprod::storage

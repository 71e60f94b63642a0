// ShmRegion and its checks: range arithmetic at the edges of uint64 (the
// expected verdicts written out by hand), names, registration against real
// shm objects (missing, too small, wrong key) and reads that meet a shrunk
// or unlinked object. The bytes read back are compared with the bytes the
// test wrote through its own file descriptor.
#include "server/shm_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::_;
using ::testing::HasSubstr;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

TEST(CheckShmRangeTest, InsideAndAtTheEdges) {
  EXPECT_THAT(CheckShmRange(100, 0, 100), IsOk());
  EXPECT_THAT(CheckShmRange(100, 100, 0), IsOk());
  EXPECT_THAT(CheckShmRange(100, 64, 36), IsOk());
  EXPECT_THAT(CheckShmRange(100, 0, 0), IsOk());
  EXPECT_THAT(CheckShmRange(kMax, kMax, 0), IsOk());
  EXPECT_THAT(CheckShmRange(kMax, 1, kMax - 1), IsOk());
}

TEST(CheckShmRangeTest, PastTheEndIsRefused) {
  EXPECT_THAT(CheckShmRange(100, 101, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("run past the region's 100")));
  EXPECT_THAT(CheckShmRange(100, 0, 101), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckShmRange(100, 64, 37), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckShmRange(0, 0, 1), StatusIs(absl::StatusCode::kInvalidArgument, _));
}

TEST(CheckShmRangeTest, OffsetPlusLengthWrappingAroundIsRefused) {
  // offset + length wraps to a small number (64 + (2^64 - 32) = 32 mod 2^64):
  // a naive `offset + length <= size` would pass.
  EXPECT_THAT(CheckShmRange(100, 64, kMax - 31), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckShmRange(100, kMax, 2), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckShmRange(kMax, kMax, 1), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckShmRange(kMax, 2, kMax - 1), StatusIs(absl::StatusCode::kInvalidArgument, _));
  // "Negative" offsets and lengths (a client's -1 cast to uint64).
  EXPECT_THAT(CheckShmRange(100, static_cast<uint64_t>(-1), 1),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckShmRange(100, 1, static_cast<uint64_t>(-1)),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
}

TEST(ValidateShmNameTest, OnlyReprodNamesOfOneEntry) {
  EXPECT_THAT(ValidateShmName("/reprod-123-abcdef"), IsOk());
  EXPECT_THAT(ValidateShmName("/reprod-a.b_c-D"), IsOk());
  EXPECT_THAT(ValidateShmName("/reprod-" + std::string(200, 'x')), IsOk());
  for (const std::string& bad : std::vector<std::string>{
           "", "/reprod-", "reprod-1", "/psm_1234", "/reprod-a/b", "/reprod-../x", "/reprod-a b",
           "/reprod-\n", "/REPROD-1", "/reprod-" + std::string(201, 'x'),
           std::string("/reprod-a\0b", 11)}) {
    EXPECT_THAT(ValidateShmName(bad), StatusIs(absl::StatusCode::kInvalidArgument, _)) << bad;
  }
}

// A shm object made by the test, removed at the end.
class ShmRegionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = absl::StrCat("/reprod-test-", ::getpid(), "-",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fd_ = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    ASSERT_GE(fd_, 0) << name_;
    bytes_.resize(4096 + 100);
    std::mt19937 rng(7);
    for (uint8_t& b : bytes_) b = static_cast<uint8_t>(rng());
    ASSERT_EQ(::pwrite(fd_, bytes_.data(), bytes_.size(), 0), static_cast<ssize_t>(bytes_.size()));
  }
  void TearDown() override {
    ::close(fd_);
    ::shm_unlink(name_.c_str());
  }
  std::string Key() const { return std::string(bytes_.begin(), bytes_.begin() + kShmKeyBytes); }

  // Reads [offset, offset + length) through a 1000-byte buffer.
  absl::Status ReadAll(const ShmRegion& region, uint64_t offset, uint64_t length,
                       std::vector<uint8_t>* out) {
    std::vector<uint8_t> buffer(1000);
    return region.Read(offset, length, absl::MakeSpan(buffer),
                       [out](absl::Span<const uint8_t> piece) {
                         out->insert(out->end(), piece.begin(), piece.end());
                         return absl::OkStatus();
                       });
  }

  std::string name_;
  int fd_ = -1;
  std::vector<uint8_t> bytes_;
};

TEST_F(ShmRegionTest, ReadsTheBytesWritten) {
  absl::StatusOr<std::unique_ptr<ShmRegion>> region = ShmRegion::Open(name_, bytes_.size(), Key());
  ASSERT_THAT(region.status(), IsOk());
  EXPECT_EQ((*region)->byte_size(), bytes_.size());
  EXPECT_EQ((*region)->object_bytes(), bytes_.size());
  std::vector<uint8_t> got;
  ASSERT_THAT(ReadAll(**region, 64, 3000, &got), IsOk());
  EXPECT_EQ(got, std::vector<uint8_t>(bytes_.begin() + 64, bytes_.begin() + 3064));
  got.clear();
  ASSERT_THAT(ReadAll(**region, bytes_.size(), 0, &got), IsOk());
  EXPECT_TRUE(got.empty());
}

TEST_F(ShmRegionTest, ReferencesPastTheRegisteredSizeAreRefused) {
  // Registered smaller than the object: the bound is the registered size.
  auto region = ShmRegion::Open(name_, 1000, Key());
  ASSERT_THAT(region.status(), IsOk());
  std::vector<uint8_t> got;
  EXPECT_THAT(ReadAll(**region, 999, 2, &got), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(ReadAll(**region, 1001, 0, &got), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(ReadAll(**region, 64, kMax - 10, &got),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_TRUE(got.empty());
}

TEST_F(ShmRegionTest, RegistrationChecks) {
  EXPECT_THAT(ShmRegion::Open("/reprod-test-missing-object", 64, Key()).status(),
              StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(ShmRegion::Open(name_, bytes_.size() + 1, Key()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fewer than")));
  EXPECT_THAT(ShmRegion::Open(name_, 63, Key()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(ShmRegion::Open(name_, kMaxShmRegionBytes + 1, Key()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(ShmRegion::Open(name_, 64, Key().substr(1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  std::string wrong = Key();
  wrong[31] ^= 1;
  EXPECT_THAT(ShmRegion::Open(name_, 64, wrong).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("key")));
  EXPECT_THAT(ShmRegion::Open("/dev/shm/x", 64, Key()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
}

TEST_F(ShmRegionTest, OnlyRegularObjectsAreOpenedNeverFollowingLinks) {
  const std::string base = absl::StrCat("/reprod-test-", ::getpid(), "-special-");
  const std::string dir = base + "dir", fifo = base + "fifo", link = base + "link";
  ASSERT_EQ(::mkdir(("/dev/shm" + dir).c_str(), 0700), 0);
  ASSERT_EQ(::mkfifo(("/dev/shm" + fifo).c_str(), 0600), 0);
  ASSERT_EQ(::symlink(("/dev/shm" + name_).c_str(), ("/dev/shm" + link).c_str()), 0);
  // A directory or a FIFO (whose open must not block) is not an object.
  EXPECT_THAT(ShmRegion::Open(dir, 64, Key()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular")));
  EXPECT_THAT(ShmRegion::Open(fifo, 64, Key()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular")));
  // A link to a real region is not followed.
  EXPECT_THAT(ShmRegion::Open(link, 64, Key()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Too many levels")));
  ::rmdir(("/dev/shm" + dir).c_str());
  ::unlink(("/dev/shm" + fifo).c_str());
  ::unlink(("/dev/shm" + link).c_str());
}

TEST_F(ShmRegionTest, ShrunkObjectIsRefusedNotACrash) {
  auto region = ShmRegion::Open(name_, bytes_.size(), Key());
  ASSERT_THAT(region.status(), IsOk());
  ASSERT_EQ(::ftruncate(fd_, 2000), 0);
  std::vector<uint8_t> got;
  EXPECT_THAT(ReadAll(**region, 64, 3000, &got),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shrank to 2000")));
  // What still lies inside the object reads as before.
  got.clear();
  ASSERT_THAT(ReadAll(**region, 64, 1936, &got), IsOk());
  EXPECT_EQ(got, std::vector<uint8_t>(bytes_.begin() + 64, bytes_.begin() + 2000));
}

TEST_F(ShmRegionTest, ShrinkingDuringTheReadIsRefused) {
  auto region = ShmRegion::Open(name_, bytes_.size(), Key());
  ASSERT_THAT(region.status(), IsOk());
  std::vector<uint8_t> buffer(1000);
  int pieces = 0;
  const absl::Status s =
      (*region)->Read(0, bytes_.size(), absl::MakeSpan(buffer), [&](absl::Span<const uint8_t>) {
        if (++pieces == 1) {
          EXPECT_EQ(::ftruncate(fd_, 1500), 0);  // after the first piece
        }
        return absl::OkStatus();
      });
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shrank")));
  EXPECT_EQ(pieces, 1);
}

TEST_F(ShmRegionTest, UnlinkAfterRegisteringIsHarmless) {
  auto region = ShmRegion::Open(name_, bytes_.size(), Key());
  ASSERT_THAT(region.status(), IsOk());
  ASSERT_EQ(::shm_unlink(name_.c_str()), 0);
  std::vector<uint8_t> got;
  ASSERT_THAT(ReadAll(**region, 0, bytes_.size(), &got), IsOk());
  EXPECT_EQ(got, bytes_);
}

TEST_F(ShmRegionTest, SinkErrorStopsTheRead) {
  auto region = ShmRegion::Open(name_, bytes_.size(), Key());
  ASSERT_THAT(region.status(), IsOk());
  std::vector<uint8_t> buffer(1000);
  int pieces = 0;
  EXPECT_THAT((*region)->Read(0, bytes_.size(), absl::MakeSpan(buffer),
                              [&](absl::Span<const uint8_t>) {
                                ++pieces;
                                return absl::DataLossError("store broke");
                              }),
              StatusIs(absl::StatusCode::kDataLoss, _));
  EXPECT_EQ(pieces, 1);
}

}  // namespace
}  // namespace reprod::server

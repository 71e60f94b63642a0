#include "formats/npz.h"

#include <string>

#include "common/mapped_file.h"
#include "formats/internal/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::formats {
namespace {

using ::reprod::formats::testing::Find;
using ::reprod::formats::testing::Keys;
using ::reprod::formats::testing::TestdataPath;
using ::reprod::formats::testing::Values;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string FixtureBytes(const std::string& name) {
  auto file = MappedFile::Open(TestdataPath(name));
  EXPECT_THAT(file, IsOk());
  return file.ok() ? std::string((*file)->bytes()) : std::string();
}

TEST(Npz, StoredMembers) {
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorFile(TestdataPath("savez.npz")));
  EXPECT_EQ(f.format, FileFormat::kNpz);
  EXPECT_THAT(Keys(f), ElementsAre("x", "y"));
  EXPECT_THAT(Values<float>(*Find(f, "x")), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(Find(f, "y")->shape(), (Shape{2, 2}));
  EXPECT_THAT(Values<int64_t>(*Find(f, "y")), ElementsAre(1, 2, 3, 4));
}

TEST(Npz, DeflatedMembersAndPickledObjectMember) {
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadNpz(MappedFile::FromString(
                                         FixtureBytes("savez_compressed.npz"), "c.npz")));
  EXPECT_THAT(Keys(f), ElementsAre("x", "d/k"));
  EXPECT_THAT(Values<float>(*Find(f, "x")), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Values<double>(*Find(f, "d/k")), ElementsAre(1, 1));
}

TEST(Npz, MemberClaimingOneTebibyteIsRefusedBeforeAllocation) {
  EXPECT_THAT(ReadTensorFile(TestdataPath("huge_member.npz")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("huge_member.npz:x.npy"),
                             HasSubstr("declared size 1099511627776"))));
}

TEST(Npz, MaxAllocBytesIsHonoured) {
  ReadOptions options;
  options.max_alloc_bytes = 100;
  EXPECT_THAT(ReadNpz(MappedFile::FromString(FixtureBytes("savez.npz"), "s.npz"), options),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("s.npz:x.npy")));
}

TEST(Npz, CorruptedDataFailsCrc) {
  std::string bytes = FixtureBytes("savez.npz");
  // Flip a byte inside the first member's array data (stored member).
  const size_t pos = bytes.find("\x93NUMPY") + 128 + 2;
  ASSERT_LT(pos, bytes.size());
  bytes[pos] ^= 0x40;
  EXPECT_THAT(ReadNpz(MappedFile::FromString(bytes, "crc.npz")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("crc.npz:x.npy")));
}

TEST(Npz, EveryPrefixFailsCleanly) {
  for (const char* name : {"savez.npz", "savez_compressed.npz"}) {
    const std::string bytes = FixtureBytes(name);
    for (size_t len = 0; len < bytes.size(); ++len) {
      auto r = ReadNpz(MappedFile::FromString(bytes.substr(0, len), name));
      ASSERT_FALSE(r.ok()) << name << " " << len;
      EXPECT_THAT(r.status().code(), AnyOf(absl::StatusCode::kDataLoss,
                                           absl::StatusCode::kInvalidArgument));
      EXPECT_THAT(std::string(r.status().message()), HasSubstr(name));
    }
  }
}

TEST(Npz, EmptyArchiveHasNoTensors) {
  const std::string eocd = std::string("PK\x05\x06", 4) + std::string(18, '\0');
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorBytes(MappedFile::FromString(eocd, "e.npz")));
  EXPECT_EQ(f.format, FileFormat::kNpz);
  EXPECT_TRUE(f.tensors.empty());
}

}  // namespace
}  // namespace reprod::formats

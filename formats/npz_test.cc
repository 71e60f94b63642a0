#include "formats/npz.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "formats/internal/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::formats {
namespace {

using ::reprod::formats::testing::Find;
using ::reprod::formats::testing::Keys;
using ::reprod::formats::testing::MakeZip;
using ::reprod::formats::testing::TestdataPath;
using ::reprod::formats::testing::Values;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
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

// An .npy of little-endian float32 with `shape` (numpy's tuple text) and
// `data` after the header, padded as numpy pads it (64-byte aligned data).
std::string Npy(const std::string& shape, const std::string& data) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  dict.append((64 - (10 + dict.size() + 1) % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  return out + dict + data;
}

// Sets the uncompressed size of every member in `zip` (local and central
// headers; one-member archives) to `size`, as a lying writer would.
void PatchDeclaredSize(std::string* zip, uint32_t size) {
  for (const auto& [magic, offset] : {std::pair<std::string, size_t>{"PK\x03\x04", 22},
                                      std::pair<std::string, size_t>{"PK\x01\x02", 24}}) {
    const size_t at = zip->find(magic);
    ASSERT_NE(at, std::string::npos) << magic;
    for (int k = 0; k < 4; ++k) (*zip)[at + offset + k] = static_cast<char>(size >> (8 * k));
  }
}

TEST(NpzBomb, ZipSizeLargerThanTheNpyHeaderIsRefusedBeforeDecompressing) {
  // The header says (1,) float32 (4 bytes); the member holds 1 MiB more.
  const std::string member = Npy("(1,)", std::string(4 + (1 << 20), '\0'));
  ASSERT_EQ(member.size(), 128u + 4 + (1 << 20));
  const std::string zip = MakeZip({{"x.npy", member}}, /*deflate=*/true);
  EXPECT_THAT(ReadNpz(MappedFile::FromString(zip, "bomb.npz")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bomb.npz:x.npy: npy header declares shape (1,) of '<f4'"),
                             HasSubstr("(132 bytes with the header)"),
                             HasSubstr("the zip declares 1048708 bytes"))));
}

TEST(NpzBomb, StreamLongerThanAnAgreeingDeclaredSizeStopsOneBytePast) {
  // Zip and header both say 132 bytes; the deflate stream holds 1 MiB more.
  std::string zip = MakeZip({{"x.npy", Npy("(1,)", std::string(4 + (1 << 20), '\0'))}},
                            /*deflate=*/true);
  PatchDeclaredSize(&zip, 132);
  EXPECT_THAT(ReadNpz(MappedFile::FromString(zip, "liar.npz")),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("liar.npz:x.npy: member is larger than its declared 132 bytes")));
}

TEST(NpzBomb, CompressionRatioLimit) {
  // 1 MiB of zeros deflates ~1000:1: over a 100:1 limit once the member is
  // past the free size, and read as usual below it (the default 64 MiB).
  const std::string zip =
      MakeZip({{"z.npy", Npy("(262144,)", std::string(1 << 20, '\0'))}}, /*deflate=*/true);
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadNpz(MappedFile::FromString(zip, "zeros.npz")));
  EXPECT_EQ(Find(f, "z")->shape(), (Shape{262144}));
  ReadOptions strict;
  strict.compression_ratio_free_bytes = 1 << 19;
  EXPECT_THAT(ReadNpz(MappedFile::FromString(zip, "zeros.npz"), strict),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("zeros.npz:z.npy: member expands"),
                             HasSubstr("(1048704 bytes from "),
                             HasSubstr("over the 100:1 limit"))));
  strict.max_compression_ratio = 0;  // off
  EXPECT_THAT(ReadNpz(MappedFile::FromString(zip, "zeros.npz"), strict), IsOk());
}

TEST(NpzBomb, RankOver64IsRefusedNamingTheMember) {
  std::string shape = "(";
  for (int k = 0; k < 65; ++k) shape += "1, ";
  shape += ")";
  const std::string zip = MakeZip({{"r.npy", Npy(shape, std::string(4, '\0'))}});
  EXPECT_THAT(ReadNpz(MappedFile::FromString(zip, "rank.npz")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rank.npz:r.npy: npy header: shape has 65 dimensions "
                                 "(at most 64 supported)")));
}

// A 10 KB member name with control bytes shows abbreviated (~200 bytes) in
// the error, not repeated whole, and no control byte reaches the message.
// (libzip reads names without the UTF-8 flag as CP437: "\n" arrives as a
// glyph; VisibleName escapes whatever is left.)
TEST(Npz, LongHostileMemberNameIsAbbreviatedAndEscapedInErrors) {
  const std::string name = "k\n\x1b[31m" + std::string(10'000, 'a') + "\r\tend.npy";
  const std::string zip = MakeZip({{name, "not an npy member"}});
  const absl::StatusOr<TensorFile> f = ReadNpz(MappedFile::FromString(zip, "h.npz"));
  ASSERT_FALSE(f.ok());
  const std::string msg(f.status().message());
  EXPECT_LT(msg.size(), 1024u) << msg.substr(0, 300);
  for (char c = 0; c < 0x20; ++c) {
    EXPECT_EQ(msg.find(c), std::string::npos) << static_cast<int>(c) << " in " << msg;
  }
  EXPECT_THAT(msg, HasSubstr("h.npz:k"));
  EXPECT_THAT(msg, HasSubstr("aaa...aaa"));
  EXPECT_THAT(msg,
              ::testing::ContainsRegex(R"(end\.npy \(100[0-9][0-9] bytes\): not an npy file)"));
}

TEST(Npz, EmptyArchiveHasNoTensors) {
  const std::string eocd = std::string("PK\x05\x06", 4) + std::string(18, '\0');
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorBytes(MappedFile::FromString(eocd, "e.npz")));
  EXPECT_EQ(f.format, FileFormat::kNpz);
  EXPECT_TRUE(f.tensors.empty());
}

}  // namespace
}  // namespace reprod::formats

#include "formats/torch.h"

#include <zip.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "common/mapped_file.h"
#include "formats/internal/array.h"
#include "formats/internal/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::formats {
namespace {

using ::reprod::formats::testing::Find;
using ::reprod::formats::testing::Keys;
using ::reprod::formats::testing::MakeZip;
using ::reprod::formats::testing::PickleWriter;
using ::reprod::formats::testing::PointsInto;
using ::reprod::formats::testing::TestdataPath;
using ::reprod::formats::testing::Values;
using ::reprod::testing::IsOk;
using ::reprod::testing::IsOkAndHolds;
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

absl::StatusOr<TensorFile> ReadBytes(const std::string& bytes, const std::string& name) {
  return ReadTensorBytes(MappedFile::FromString(bytes, name));
}

// torch._utils._rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu',
// numel) as a persistent id, offset, sizes, strides, False, OrderedDict()).
PickleWriter& TorchTensor(PickleWriter& w, std::string_view type, std::string_view key,
                          int32_t numel, int32_t offset, const std::vector<int32_t>& sizes,
                          const std::vector<int32_t>& strides) {
  w.Global("torch._utils", "_rebuild_tensor_v2").Op('(');
  w.Op('(').Str("storage").Global("torch", type).Str(key).Str("cpu").Int(numel).Op('t');
  w.Op('Q').Int(offset).Op('(');
  for (int32_t s : sizes) w.Int(s);
  w.Op('t').Op('(');
  for (int32_t s : strides) w.Int(s);
  w.Op('t').Op('\x89').Global("collections", "OrderedDict").Op(')').Op('R');
  return w.Op('t').Op('R');
}

// {"t": tensor} as torch.save's data.pkl.
std::string DictPickle(std::string_view type, std::string_view key, int32_t numel, int32_t offset,
                       const std::vector<int32_t>& sizes, const std::vector<int32_t>& strides) {
  PickleWriter w;
  w.Proto(2).Op('}').Str("t");
  TorchTensor(w, type, key, numel, offset, sizes, strides);
  return w.Op('s').Op('.').str();
}

// A legacy torch.save stream: magic, protocol version, system info, the
// object pickle, the storage keys, then each storage as (count, bytes).
std::string LegacyStream(
    const std::string& object, bool little_endian,
    const std::vector<std::pair<std::string, std::pair<uint64_t, std::string>>>& storages) {
  std::string out("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
  out += PickleWriter().Proto(2).Op('M').Op('\xe9').Op('\x03').Op('.').str();  // 1001
  out += PickleWriter()
             .Proto(2)
             .Op('}')
             .Str("little_endian")
             .Op(little_endian ? '\x88' : '\x89')
             .Op('s')
             .Op('.')
             .str();
  out += object;
  PickleWriter keys;
  keys.Proto(2).Op('(');
  for (const auto& s : storages) keys.Str(s.first);
  out += keys.Op('l').Op('.').str();
  for (const auto& s : storages) out += PickleWriter().U64(s.second.first).str() + s.second.second;
  return out;
}

std::string Floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

TEST(TorchFixtures, ZipArchiveFromRealTorchSave) {
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorFile(TestdataPath("torch_zip.pt")));
  EXPECT_EQ(f.format, FileFormat::kTorch);
  EXPECT_THAT(Keys(f), ElementsAre("w", "wt", "row", "cols", "sd/weight", "sd/bias", "p", "h", "bf",
                                   "i", "b", "s", "step"));
  EXPECT_THAT(f.skipped, ElementsAre(HasSubstr("name: str 'x'")));
  EXPECT_EQ(Find(f, "w")->shape(), (Shape{2, 3}));
  EXPECT_THAT(Values<float>(*Find(f, "w")), ElementsAre(0, 1, 2, 3, 4, 5));
  // Views of w's storage: transposed, a row at storage offset 3, and every
  // other column (stride 2) are made contiguous.
  EXPECT_EQ(Find(f, "wt")->shape(), (Shape{3, 2}));
  EXPECT_THAT(Values<float>(*Find(f, "wt")), ElementsAre(0, 3, 1, 4, 2, 5));
  EXPECT_EQ(Find(f, "row")->shape(), (Shape{3}));
  EXPECT_THAT(Values<float>(*Find(f, "row")), ElementsAre(3, 4, 5));
  EXPECT_EQ(Find(f, "cols")->shape(), (Shape{2, 2}));
  EXPECT_THAT(Values<float>(*Find(f, "cols")), ElementsAre(0, 2, 3, 5));
  EXPECT_THAT(Values<float>(*Find(f, "sd/weight")), ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_THAT(Values<float>(*Find(f, "sd/bias")), ElementsAre(0.5, -0.5));
  EXPECT_THAT(Values<float>(*Find(f, "p")), ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(Find(f, "h")->dtype(), DType::kFloat16);
  EXPECT_THAT(Values<uint16_t>(*Find(f, "h")), ElementsAre(0x3800, 0xbc00));
  EXPECT_EQ(Find(f, "bf")->dtype(), DType::kBFloat16);
  EXPECT_THAT(Values<uint16_t>(*Find(f, "bf")), ElementsAre(0x3fc0, 0xc000));
  EXPECT_THAT(Values<int64_t>(*Find(f, "i")), ElementsAre(-(int64_t{1} << 40), 7));
  EXPECT_EQ(Find(f, "b")->dtype(), DType::kBool);
  EXPECT_THAT(Values<uint8_t>(*Find(f, "b")), ElementsAre(1, 0));
  EXPECT_EQ(Find(f, "s")->shape(), Shape{});
  EXPECT_THAT(Values<double>(*Find(f, "s")), ElementsAre(2.5));
  EXPECT_THAT(Values<int64_t>(*Find(f, "step")), ElementsAre(3));
}

TEST(TorchFixtures, LegacyStreamFromRealTorchSaveBorrowsTheFile) {
  auto file = MappedFile::Open(TestdataPath("torch_legacy.pt"));
  ASSERT_THAT(file, IsOk());
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorBytes(*file));
  EXPECT_EQ(f.format, FileFormat::kTorch);
  EXPECT_THAT(Keys(f), ElementsAre("w", "wt", "row", "cols", "sd/weight", "sd/bias", "p", "h", "bf",
                                   "i", "b", "s", "step"));
  EXPECT_THAT(Values<float>(*Find(f, "wt")), ElementsAre(0, 3, 1, 4, 2, 5));
  EXPECT_THAT(Values<float>(*Find(f, "row")), ElementsAre(3, 4, 5));
  EXPECT_THAT(Values<float>(*Find(f, "cols")), ElementsAre(0, 2, 3, 5));
  EXPECT_THAT(Values<float>(*Find(f, "sd/bias")), ElementsAre(0.5, -0.5));
  EXPECT_THAT(Values<int64_t>(*Find(f, "i")), ElementsAre(-(int64_t{1} << 40), 7));
  // Contiguous views borrow the mapped file; the transposed one is a copy.
  EXPECT_TRUE(PointsInto(Find(f, "w")->data(), **file));
  EXPECT_TRUE(PointsInto(Find(f, "row")->data(), **file));
  EXPECT_FALSE(PointsInto(Find(f, "wt")->data(), **file));
}

TEST(TorchDetection, ZipWithDataPklIsTorchOtherZipsAreNpz) {
  EXPECT_THAT(DetectFormat(FixtureBytes("torch_zip.pt"), "a.pt"), IsOkAndHolds(FileFormat::kTorch));
  EXPECT_THAT(DetectFormat(FixtureBytes("torch_legacy.pt"), "a.pt"),
              IsOkAndHolds(FileFormat::kTorch));
  EXPECT_THAT(DetectFormat(FixtureBytes("savez.npz"), "a.npz"), IsOkAndHolds(FileFormat::kNpz));
  EXPECT_THAT(DetectFormat(FixtureBytes("np2_array_p5.pkl"), "a.pkl"),
              IsOkAndHolds(FileFormat::kPickle));
  EXPECT_STREQ(FileFormatName(FileFormat::kTorch), "torch");
}

TEST(TorchHandWritten, BareTensorIsOutputAndContiguousViewBorrowsTheMember) {
  PickleWriter w;
  w.Proto(2);
  TorchTensor(w, "FloatStorage", "0", 4, 1, {3}, {1}).Op('.');
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      ReadBytes(MakeZip({{"m/data.pkl", w.str()}, {"m/data/0", Floats({9, 1, 2, 3})}}), "bare.pt"));
  EXPECT_THAT(Keys(f), ElementsAre("output"));
  EXPECT_THAT(Values<float>(*Find(f, "output")), ElementsAre(1, 2, 3));
}

TEST(TorchHandWritten, DeflatedMembersAreRead) {
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      ReadBytes(MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "0", 4, 0, {2, 2}, {1, 2})},
                         {"m/data/0", Floats({1, 2, 3, 4})}},
                        /*deflate=*/true),
                "deflated.pt"));
  EXPECT_THAT(Values<float>(*Find(f, "t")), ElementsAre(1, 3, 2, 4));
}

TEST(TorchSafety, OsSystemGlobalIsRefusedNamingIt) {
  PickleWriter w;
  w.Proto(2).Global("os", "system").Str("touch /tmp/reprod-pwned").Op('\x85').Op('R').Op('.');
  EXPECT_THAT(ReadBytes(MakeZip({{"evil/data.pkl", w.str()}}), "/x/evil.pt"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("/x/evil.pt:evil/data.pkl"),
                             HasSubstr("refused pickle global 'os.system'"),
                             HasSubstr("nothing is executed"))));
  // A storage type outside torch's list, and a global in torch._utils that
  // is not a tensor rebuild, are refused too.
  PickleWriter q;
  q.Proto(2);
  TorchTensor(q, "QInt8Storage", "0", 1, 0, {1}, {1}).Op('.');
  EXPECT_THAT(ReadBytes(MakeZip({{"m/data.pkl", q.str()}}), "q.pt"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("'torch.QInt8Storage'")));
  PickleWriter e;
  e.Proto(2).Global("torch._utils", "_rebuild_from_type_v2").Op(')').Op('R').Op('.');
  EXPECT_THAT(ReadBytes(MakeZip({{"m/data.pkl", e.str()}}), "e.pt"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("'torch._utils._rebuild_from_type_v2'")));
}

TEST(TorchSafety, MissingStorageMemberIsInvalidNamingTheKey) {
  EXPECT_THAT(
      ReadBytes(MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "7", 4, 0, {4}, {1})},
                         {"m/data/0", Floats({1, 2, 3, 4})}}),
                "missing.pt"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("missing.pt"), HasSubstr("storage '7'"), HasSubstr("'m/data/7'"))));
}

TEST(TorchSafety, StorageOfTheWrongSizeIsInvalid) {
  // The pickle declares 8 floats, the member holds 4.
  EXPECT_THAT(ReadBytes(MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "0", 8, 0, {4}, {1})},
                                 {"m/data/0", Floats({1, 2, 3, 4})}}),
                        "short.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("short.pt:m/data/0"), HasSubstr("needs 32 bytes"))));
}

TEST(TorchSafety, StorageOverTheCompressionRatioIsRefusedBeforeDecompressing) {
  // 1 MiB of zero floats, sized right by the pickle, deflates ~1000:1.
  const std::string zip =
      MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "0", 1 << 18, 0, {1 << 18}, {1})},
               {"m/data/0", std::string(1 << 20, '\0')}},
              /*deflate=*/true);
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTorch(MappedFile::FromString(zip, "zeros.pt")));
  EXPECT_EQ(Find(f, "t")->shape(), (Shape{1 << 18}));
  ReadOptions strict;
  strict.compression_ratio_free_bytes = 1 << 19;
  EXPECT_THAT(ReadTorch(MappedFile::FromString(zip, "zeros.pt"), strict),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("zeros.pt:m/data/0: member expands"),
                             HasSubstr("over the 100:1 limit"))));
}

TEST(TorchSafety, ShapeRankOver64IsRefused) {
  const std::vector<int32_t> ones(65, 1);
  EXPECT_THAT(ReadBytes(MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "0", 1, 0, ones, ones)},
                                 {"m/data/0", Floats({1})}}),
                        "deep.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("deep.pt:m/data.pkl"),
                             HasSubstr("has 65 dimensions (at most 64 supported)"))));
}

TEST(TorchSafety, ViewsPastTheEndOfTheirStorageAreRefusedBeforeReading) {
  const std::string data = Floats({1, 2, 3, 4});
  struct Case {
    int32_t offset;
    std::vector<int32_t> sizes, strides;
  };
  for (const Case& c : std::vector<Case>{{1, {4}, {1}},        // one past the end
                                         {0, {2, 2}, {3, 1}},  // stride reaches element 4
                                         {5, {0}, {1}},        // empty: fine, see below
                                         {0, {2}, {-1}},       // negative stride
                                         {-1, {1}, {1}},       // negative offset
                                         {0, {2, 2}, {1}},     // ranks differ
                                         {0, {65536, 65536, 65536, 65536}, {1, 1, 1, 1}}}) {
    auto r = ReadBytes(
        MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "0", 4, c.offset, c.sizes, c.strides)},
                 {"m/data/0", data}}),
        "view.pt");
    if (c.sizes == std::vector<int32_t>{0}) {
      ASSERT_THAT(r, IsOk());
      EXPECT_EQ(Find(*r, "t")->num_elements(), 0);
      continue;
    }
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument,
                            AllOf(HasSubstr("view.pt:m/data.pkl"), HasSubstr("torch tensor"))))
        << c.offset;
  }
  EXPECT_THAT(ReadBytes(MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "0", 4, 1, {4}, {1})},
                                 {"m/data/0", data}}),
                        "view.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reaches past the end of storage '0' (FloatStorage of 4 "
                                 "elements, 16 bytes)")));
}

TEST(TorchSafety, MemberLargerThanItsDeclaredSizeIsRefused) {
  std::string zip = MakeZip({{"m/data.pkl", DictPickle("FloatStorage", "0", 4, 0, {4}, {1})},
                             {"m/data/0", Floats({1, 2, 3, 4})}},
                            /*deflate=*/true);
  // Shrink data.pkl's declared uncompressed size in the local and central
  // headers (its CRC unchanged): decompressing yields more than declared.
  const uint32_t real =
      static_cast<uint32_t>(DictPickle("FloatStorage", "0", 4, 0, {4}, {1}).size());
  int patched = 0;
  for (size_t pos = 0; pos + 46 < zip.size(); ++pos) {
    const std::string_view sig(zip.data() + pos, 4);
    size_t field = 0;
    if (sig == std::string_view("PK\x03\x04", 4)) field = pos + 22;
    if (sig == std::string_view("PK\x01\x02", 4)) field = pos + 24;
    if (field == 0 || internal::LoadLE32(zip.data() + field) != real) continue;
    const uint32_t lie = real - 10;
    for (int k = 0; k < 4; ++k) zip[field + k] = static_cast<char>((lie >> (8 * k)) & 0xff);
    ++patched;
  }
  ASSERT_EQ(patched, 2);
  auto r = ReadBytes(zip, "big.pt");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("big.pt:m/data.pkl")) << r.status();
}

TEST(TorchSafety, ConflictingStorageReferencesAndBadPersistentIds) {
  PickleWriter w;
  w.Proto(2).Op('(');
  TorchTensor(w, "FloatStorage", "0", 4, 0, {4}, {1});
  TorchTensor(w, "LongStorage", "0", 2, 0, {2}, {1});
  w.Op('t').Op('.');
  EXPECT_THAT(
      ReadBytes(MakeZip({{"m/data.pkl", w.str()}, {"m/data/0", Floats({1, 2, 3, 4})}}), "two.pt"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("referenced as FloatStorage of 4 elements and as LongStorage")));
  PickleWriter m;
  m.Proto(2).Op('(').Str("module").Op('N').Op('t').Op('Q').Op('.');
  EXPECT_THAT(ReadBytes(MakeZip({{"m/data.pkl", m.str()}}), "mod.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unsupported torch persistent id 'module'")));
}

TEST(TorchSafety, UnsupportedDTypeIsSkippedNotFailed) {
  // _rebuild_tensor_v3 over an untyped storage with a complex dtype.
  PickleWriter w;
  w.Proto(2).Op('}').Str("c").Global("torch._utils", "_rebuild_tensor_v3").Op('(');
  w.Op('(').Str("storage").Global("torch", "UntypedStorage").Str("0").Str("cpu").Int(16).Op('t');
  w.Op('Q').Int(0).Op('(').Int(2).Op('t').Op('(').Int(1).Op('t').Op('\x89');
  w.Global("collections", "OrderedDict").Op(')').Op('R').Global("torch", "complex64");
  w.Op('t').Op('R').Op('s').Op('.');
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      ReadBytes(MakeZip({{"m/data.pkl", w.str()}, {"m/data/0", std::string(16, '\0')}}), "c.pt"));
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_THAT(f.skipped, ElementsAre(HasSubstr("c: unsupported torch dtype complex64")));
}

TEST(TorchSafety, LegacyStreamHandWritten) {
  const std::string object = DictPickle("FloatStorage", "k", 4, 2, {2}, {1});
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      ReadBytes(LegacyStream(object, true, {{"k", {4, Floats({1, 2, 3, 4})}}}), "ok.pt"));
  EXPECT_EQ(f.format, FileFormat::kTorch);
  EXPECT_THAT(Values<float>(*Find(f, "t")), ElementsAre(3, 4));
  EXPECT_THAT(
      ReadBytes(LegacyStream(object, true, {{"k", {3, Floats({1, 2, 3})}}}), "n.pt"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n.pt: torch storage 'k' at offset")));
  EXPECT_THAT(ReadBytes(LegacyStream(object, true, {{"j", {4, Floats({1, 2, 3, 4})}}}), "j.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("storage key 'j' at offset")));
  EXPECT_THAT(ReadBytes(LegacyStream(object, true, {}), "none.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("storage 'k' is referenced but has no data")));
  EXPECT_THAT(ReadBytes(LegacyStream(object, false, {{"k", {4, Floats({1, 2, 3, 4})}}}), "be.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("big-endian")));
  // A count that would overflow is refused before any arithmetic on it.
  EXPECT_THAT(ReadBytes(LegacyStream(object, true, {{"k", {~uint64_t{0}, ""}}}), "o.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("o.pt")));
}

TEST(TorchSafety, LegacyStreamTruncated) {
  const std::string bytes = FixtureBytes("torch_legacy.pt");
  // The last storage's data is cut short.
  EXPECT_THAT(ReadBytes(bytes.substr(0, bytes.size() - 1), "cut.pt"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("cut.pt: truncated")));
  // Every prefix fails cleanly, naming the file.
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto r = ReadTorch(MappedFile::FromString(bytes.substr(0, len), "legacy.pt"));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("legacy.pt")) << len;
  }
}

TEST(TorchSafety, EveryPrefixOfTheZipFailsCleanly) {
  const std::string bytes = FixtureBytes("torch_zip.pt");
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto r = ReadTorch(MappedFile::FromString(bytes.substr(0, len), "zip.pt"));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_THAT(r.status().code(),
                AnyOf(absl::StatusCode::kDataLoss, absl::StatusCode::kInvalidArgument))
        << len;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("zip.pt")) << len;
  }
}

TEST(TensorFileTypes, OneTableOfExtensions) {
  EXPECT_EQ(TensorFileExtensionList(" "), ".npy .npz .pdparams .pdopt .pkl .pt .pth .safetensors");
  EXPECT_TRUE(IsTensorFileName("dir/forward_torch.NPY"));
  EXPECT_TRUE(IsTensorFileName("model.pth"));
  EXPECT_FALSE(IsTensorFileName("notes.txt"));
  EXPECT_FALSE(IsTensorFileName("team/run-pt"));
  ASSERT_TRUE(TensorFileTypeForPath("w.pt").has_value());
  EXPECT_EQ(TensorFileTypeForPath("w.pt")->format, FileFormat::kTorch);
  EXPECT_EQ(TensorFileTypeForPath("w.pdparams")->format, FileFormat::kPickle);
}

}  // namespace
}  // namespace reprod::formats

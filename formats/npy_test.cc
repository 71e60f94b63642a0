#include "formats/npy.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "formats/internal/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::formats {
namespace {

using ::reprod::formats::testing::PointsInto;
using ::reprod::formats::testing::Values;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// An .npy file with a v1 header `dict` (padded to 64 bytes) and `data`.
std::string MakeNpy(const std::string& dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  const size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
  header.append(total - prefix - header.size() - 1, ' ');
  header.push_back('\n');
  std::string out = std::string("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  for (size_t k = 0; k < (major == 1 ? 2u : 4u); ++k) {
    out.push_back(static_cast<char>((header.size() >> (8 * k)) & 0xff));
  }
  return out + header + data;
}

absl::StatusOr<TensorFile> Read(std::string bytes, std::string name = "t.npy") {
  return ReadNpy(MappedFile::FromString(std::move(bytes), std::move(name)));
}

template <typename T>
std::string Raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

TEST(Npy, EncodeMatchesNumpyBytes) {
  // np.save(f, np.arange(3, dtype=np.float32)) with numpy 2.x.
  const std::vector<float> v = {0, 1, 2};
  TensorView view{DType::kFloat32, Shape{3}, v.data()};
  ASSERT_OK_AND_ASSIGN(std::string bytes, EncodeNpy(view));
  std::string expected = std::string("\x93NUMPY\x01\x00\x76\x00", 10) +
                         "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
  expected.append(127 - expected.size(), ' ');
  expected += "\n" + Raw(v);
  EXPECT_EQ(bytes, expected);
}

TEST(Npy, RoundTripEveryDTypeAndShape) {
  std::vector<DType> types;  // every dtype numpy has
  for (DType t : AllDTypes()) {
    if (t != DType::kBFloat16) types.push_back(t);
  }
  const Shape shapes[] = {Shape{}, Shape{0}, Shape{5}, Shape{2, 3}, Shape{2, 0, 4},
                          Shape{1, 2, 3, 2}};
  for (DType t : types) {
    for (const Shape& s : shapes) {
      const size_t n = static_cast<size_t>(NumElements(s)) * DTypeSize(t);
      std::string data(n, '\0');
      for (size_t k = 0; k < n; ++k) data[k] = static_cast<char>(t == DType::kBool ? k % 2 : k * 7);
      ASSERT_OK_AND_ASSIGN(std::string bytes, EncodeNpy(TensorView{t, s, data.data()}));
      ASSERT_OK_AND_ASSIGN(NpyHeader h, ParseNpyHeader(bytes, "x"));
      EXPECT_EQ(h.data_offset % 64, 0u);
      auto file = MappedFile::FromString(bytes, "rt.npy");
      ASSERT_OK_AND_ASSIGN(TensorFile f, ReadNpy(file));
      EXPECT_EQ(f.format, FileFormat::kNpy);
      ASSERT_EQ(f.tensors.size(), 1u);
      EXPECT_EQ(f.tensors[0].key, "output");
      const Tensor& got = f.tensors[0].tensor;
      EXPECT_EQ(got.dtype(), t);
      EXPECT_EQ(got.shape(), s);
      ASSERT_EQ(got.num_bytes(), n);
      if (n > 0) {
        EXPECT_EQ(std::memcmp(got.data(), data.data(), n), 0);
        EXPECT_TRUE(PointsInto(got.data(), *file)) << "aligned C-order data must be borrowed";
      }
    }
  }
}

TEST(Npy, EncodeRefusesBFloat16) {
  const uint16_t v = 0x3f80;
  EXPECT_THAT(EncodeNpy(TensorView{DType::kBFloat16, Shape{1}, &v}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bfloat16")));
}

TEST(Npy, BigEndianIsSwapped) {
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      Read(MakeNpy("{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }",
                   std::string("\0\0\0\x01\xff\xff\xff\xfe", 8))));
  EXPECT_THAT(Values<int32_t>(f.tensors.at(0).tensor), ElementsAre(1, -2));
  // '>' on one-byte types is a no-op; '=' and '|' are little-endian here.
  ASSERT_OK_AND_ASSIGN(
      TensorFile g, Read(MakeNpy("{'descr': '>u1', 'fortran_order': False, 'shape': (2,), }",
                                 "\x01\x02")));
  EXPECT_THAT(Values<uint8_t>(g.tensors.at(0).tensor), ElementsAre(1, 2));
  const double d = 2.5;
  ASSERT_OK_AND_ASSIGN(
      TensorFile h, Read(MakeNpy("{'descr': '=f8', 'fortran_order': False, 'shape': (), }",
                                 Raw(std::vector<double>{d}))));
  EXPECT_THAT(Values<double>(h.tensors.at(0).tensor), ElementsAre(2.5));
}

TEST(Npy, UnsignedWideTypesInBothByteOrders) {
  // Hand-written maxima: 65535, 2^32 - 1, 2^64 - 1, big- and little-endian.
  ASSERT_OK_AND_ASSIGN(
      TensorFile a, Read(MakeNpy("{'descr': '>u2', 'fortran_order': False, 'shape': (2,), }",
                                 std::string("\xff\xff\x01\x02", 4))));
  EXPECT_EQ(a.tensors.at(0).tensor.dtype(), DType::kUInt16);
  EXPECT_THAT(Values<uint16_t>(a.tensors.at(0).tensor), ElementsAre(65535, 0x0102));
  ASSERT_OK_AND_ASSIGN(
      TensorFile b, Read(MakeNpy("{'descr': '>u4', 'fortran_order': False, 'shape': (2,), }",
                                 std::string("\xff\xff\xff\xff\x01\x02\x03\x04", 8))));
  EXPECT_EQ(b.tensors.at(0).tensor.dtype(), DType::kUInt32);
  EXPECT_THAT(Values<uint32_t>(b.tensors.at(0).tensor), ElementsAre(4294967295u, 0x01020304u));
  ASSERT_OK_AND_ASSIGN(
      TensorFile c, Read(MakeNpy("{'descr': '<u8', 'fortran_order': False, 'shape': (2,), }",
                                 Raw(std::vector<uint64_t>{~uint64_t{0}, 1}))));
  EXPECT_EQ(c.tensors.at(0).tensor.dtype(), DType::kUInt64);
  EXPECT_THAT(Values<uint64_t>(c.tensors.at(0).tensor), ElementsAre(~uint64_t{0}, 1u));
  ASSERT_OK_AND_ASSIGN(
      TensorFile d, Read(MakeNpy("{'descr': '>u8', 'fortran_order': False, 'shape': (1,), }",
                                 std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8))));
  EXPECT_THAT(Values<uint64_t>(d.tensors.at(0).tensor), ElementsAre(uint64_t{0x0102030405060708}));
  EXPECT_EQ(NpyDescr(DType::kUInt16), "<u2");
  EXPECT_EQ(NpyDescr(DType::kUInt32), "<u4");
  EXPECT_EQ(NpyDescr(DType::kUInt64), "<u8");
}

TEST(Npy, FortranOrderIsTransposedToCOrder) {
  // C-order [[0, 1, 2], [3, 4, 5]] stored column-major: 0 3 1 4 2 5.
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      Read(MakeNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                   Raw(std::vector<float>{0, 3, 1, 4, 2, 5}))));
  EXPECT_EQ(f.tensors.at(0).tensor.shape(), (Shape{2, 3}));
  EXPECT_THAT(Values<float>(f.tensors.at(0).tensor), ElementsAre(0, 1, 2, 3, 4, 5));
  // Big-endian and Fortran at once.
  ASSERT_OK_AND_ASSIGN(
      TensorFile g,
      Read(MakeNpy("{'descr': '>i2', 'fortran_order': True, 'shape': (2, 2), }",
                   std::string("\0\x01\0\x03\0\x02\0\x04", 8))));
  EXPECT_THAT(Values<int16_t>(g.tensors.at(0).tensor), ElementsAre(1, 2, 3, 4));
}

TEST(Npy, Versions2And3AndPython2Header) {
  const std::string data = Raw(std::vector<int64_t>{7, 8});
  for (int major : {2, 3}) {
    ASSERT_OK_AND_ASSIGN(
        TensorFile f, Read(MakeNpy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
                                   data, major)));
    EXPECT_THAT(Values<int64_t>(f.tensors.at(0).tensor), ElementsAre(7, 8));
  }
  ASSERT_OK_AND_ASSIGN(
      TensorFile g, Read(MakeNpy("{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (2L,)}",
                                 data)));
  EXPECT_EQ(g.tensors.at(0).tensor.shape(), Shape{2});
}

TEST(Npy, UnsupportedDescrsNameTheDescr) {
  for (const char* descr : {"<c8", "<U3", "|S4", "<M8[ns]", "<f16", "<u16", "<i3"}) {
    EXPECT_THAT(Read(MakeNpy(std::string("{'descr': '") + descr +
                             "', 'fortran_order': False, 'shape': (1,), }",
                             std::string(16, '\0')),
                     "/d/u.npy"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(std::string("/d/u.npy: unsupported npy dtype '") + descr)));
  }
  EXPECT_THAT(Read(MakeNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                           std::string(4, '\0'))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("structured")));
}

TEST(Npy, MalformedHeaders) {
  const std::string data(8, '\0');
  for (const char* dict : {"", "{", "{'descr': '<f4'}", "{'descr': '<f4', 'fortran_order': 1, "
                           "'shape': (2,)}", "{'descr': '<f4', 'fortran_order': False, "
                           "'shape': (-2,)}", "{'descr': '<f4', 'fortran_order': False, "
                           "'shape': [2]}", "{'descr': '<f4', 'fortran_order': False, "
                           "'shape': (99999999999999999999,)}", "__import__('os')"}) {
    EXPECT_THAT(Read(MakeNpy(dict, data)), StatusIs(absl::StatusCode::kInvalidArgument,
                                                    HasSubstr("t.npy")))
        << dict;
  }
  EXPECT_THAT(Read(std::string("\x93NUMPY\x09\x00", 8) + "xx"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version 9")));
  EXPECT_THAT(Read("NUMPY"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an npy")));
}

TEST(Npy, AbsurdShapesRefusedBeforeAllocation) {
  // 2^40 x 2^40 float32 overflows int64 bytes.
  EXPECT_THAT(Read(MakeNpy("{'descr': '<f4', 'fortran_order': False, "
                           "'shape': (1099511627776, 1099511627776), }", "")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflows")));
  // 2^62 bytes: over max_total_bytes.
  EXPECT_THAT(Read(MakeNpy("{'descr': '<f4', 'fortran_order': False, "
                           "'shape': (1073741824, 1073741824), }", "")),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("t.npy")));
  // Within limits but absent: truncated.
  EXPECT_THAT(Read(MakeNpy("{'descr': '<f4', 'fortran_order': True, "
                           "'shape': (1024, 1024), }", "abcd")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("needs 4194304 bytes")));
  // Header length over 1 MiB (v2).
  std::string big = std::string("\x93NUMPY\x02\x00", 8) + std::string("\xff\xff\xff\x7f", 4);
  EXPECT_THAT(Read(big), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header of")));
}

TEST(Npy, ConversionCopiesAreChargedToMaxAllocBytes) {
  ReadOptions options;
  options.max_alloc_bytes = 8;
  const std::string bytes = MakeNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }",
                                    std::string(16, '\0'));
  EXPECT_THAT(ReadNpy(MappedFile::FromString(bytes, "c.npy"), options),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("c.npy")));
}

TEST(Npy, EveryPrefixFailsCleanly) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  ASSERT_OK_AND_ASSIGN(std::string bytes, EncodeNpy(TensorView{DType::kFloat32, Shape{2, 3},
                                                               v.data()}));
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto r = Read(bytes.substr(0, len), "p.npy");
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_THAT(r.status().code(), ::testing::AnyOf(absl::StatusCode::kDataLoss,
                                                    absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("p.npy"));
  }
}

TEST(Npy, WriteNpyThenReadTensorFile) {
  const std::vector<int32_t> v = {4, 5, 6};
  const std::string path = ::testing::TempDir() + "/reprod_write_npy_test.npy";
  ASSERT_THAT(WriteNpy(path, TensorView{DType::kInt32, Shape{3}, v.data()}), IsOk());
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorFile(path));
  EXPECT_EQ(f.path, path);
  EXPECT_THAT(Values<int32_t>(f.tensors.at(0).tensor), ElementsAre(4, 5, 6));
  std::remove(path.c_str());
  EXPECT_THAT(WriteNpy("/nonexistent-dir/x.npy", TensorView{DType::kInt32, Shape{3}, v.data()}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent-dir/x.npy")));
}

}  // namespace
}  // namespace reprod::formats

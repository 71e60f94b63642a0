#include "formats/pickle.h"

#include <cstring>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "formats/internal/test_util.h"
#include "formats/npy.h"
#include "formats/tensor_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::formats {
namespace {

using ::reprod::formats::testing::Find;
using ::reprod::formats::testing::Keys;
using ::reprod::formats::testing::PickleWriter;
using ::reprod::formats::testing::PointsInto;
using ::reprod::formats::testing::TestdataPath;
using ::reprod::formats::testing::Values;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

absl::StatusOr<TensorFile> ReadBytes(std::string bytes, std::string name = "/x/evil.pkl") {
  return ReadPickle(MappedFile::FromString(std::move(bytes), std::move(name)));
}

absl::StatusOr<TensorFile> ReadFixture(const std::string& name) {
  auto file = MappedFile::Open(TestdataPath(name));
  if (!file.ok()) return file.status();
  return ReadTensorFile(TestdataPath(name));
}

// ---------------------------------------------------------------------------
// Real pickles from numpy 1.x and 2.x, protocols 2-5.

class DTypesFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(DTypesFixture, EveryDTypeAndLayout) {
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadFixture(GetParam()));
  EXPECT_EQ(f.format, FileFormat::kPickle);
  EXPECT_THAT(Keys(f), ElementsAre("b1", "i1", "u1", "i2", "i4", "i8", "f2", "f4", "f8",
                                   "be_i4", "be_f8", "fortran", "fortran3d", "zero_d",
                                   "empty"));
  EXPECT_TRUE(f.skipped.empty());
  EXPECT_EQ(Find(f, "b1")->dtype(), DType::kBool);
  EXPECT_THAT(Values<uint8_t>(*Find(f, "b1")), ElementsAre(1, 0, 1));
  EXPECT_THAT(Values<int8_t>(*Find(f, "i1")), ElementsAre(-1, 2, -3));
  EXPECT_EQ(Find(f, "u1")->dtype(), DType::kUInt8);
  EXPECT_THAT(Values<uint8_t>(*Find(f, "u1")), ElementsAre(1, 2, 255));
  EXPECT_THAT(Values<int16_t>(*Find(f, "i2")), ElementsAre(-300, 2, 3));
  EXPECT_THAT(Values<int32_t>(*Find(f, "i4")), ElementsAre(-70000, 2, 3));
  EXPECT_THAT(Values<int64_t>(*Find(f, "i8")), ElementsAre(-(int64_t{1} << 40), 2, 3));
  EXPECT_EQ(Find(f, "f2")->dtype(), DType::kFloat16);
  EXPECT_THAT(Values<uint16_t>(*Find(f, "f2")), ElementsAre(0x3800, 0xbc00, 0x7bff));
  EXPECT_EQ(Find(f, "f4")->shape(), (Shape{2, 3}));
  EXPECT_THAT(Values<float>(*Find(f, "f4")), ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_THAT(Values<double>(*Find(f, "f8")), ElementsAre(1.5, -2.25, 1e300));
  EXPECT_EQ(Find(f, "be_i4")->dtype(), DType::kInt32);
  EXPECT_THAT(Values<int32_t>(*Find(f, "be_i4")), ElementsAre(1, -2, 3));
  EXPECT_THAT(Values<double>(*Find(f, "be_f8")), ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(Find(f, "fortran")->shape(), (Shape{2, 3}));
  EXPECT_THAT(Values<int32_t>(*Find(f, "fortran")), ElementsAre(0, 1, 2, 3, 4, 5));
  std::vector<int16_t> iota(24);
  for (int k = 0; k < 24; ++k) iota[k] = static_cast<int16_t>(k);
  EXPECT_EQ(Values<int16_t>(*Find(f, "fortran3d")), iota);
  EXPECT_EQ(Find(f, "zero_d")->shape(), Shape{});
  EXPECT_THAT(Values<float>(*Find(f, "zero_d")), ElementsAre(3.5f));
  EXPECT_EQ(Find(f, "empty")->shape(), (Shape{0, 3}));
  EXPECT_EQ(Find(f, "empty")->num_bytes(), 0u);
}

INSTANTIATE_TEST_SUITE_P(NumpyVersionsAndProtocols, DTypesFixture,
                         ::testing::Values("np1_dtypes_p2.pkl", "np1_dtypes_p3.pkl",
                                           "np1_dtypes_p4.pkl", "np1_dtypes_p5.pkl",
                                           "np2_dtypes_p2.pkl", "np2_dtypes_p3.pkl",
                                           "np2_dtypes_p4.pkl", "np2_dtypes_p5.pkl"));

class NestedFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(NestedFixture, FlattensContainersAndScalars) {
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadFixture(GetParam()));
  EXPECT_THAT(Keys(f), ElementsAre("model/layer/weight", "list/0", "list/1", "list/2",
                                   "list/3", "tuple/0", "tuple/1", "od/z", "od/y",
                                   "scalar_f8", "scalar_b", "7", "u2"));
  EXPECT_THAT(Values<float>(*Find(f, "model/layer/weight")), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Values<int32_t>(*Find(f, "list/0")), ElementsAre(1));
  EXPECT_EQ(Find(f, "list/1")->dtype(), DType::kInt64);
  EXPECT_EQ(Find(f, "list/1")->shape(), Shape{});
  EXPECT_THAT(Values<int64_t>(*Find(f, "list/1")), ElementsAre(2));
  EXPECT_THAT(Values<double>(*Find(f, "list/2")), ElementsAre(2.5));
  EXPECT_EQ(Find(f, "list/3")->dtype(), DType::kBool);
  EXPECT_THAT(Values<uint8_t>(*Find(f, "list/3")), ElementsAre(1));
  EXPECT_EQ(Find(f, "tuple/0")->dtype(), DType::kFloat32);
  EXPECT_THAT(Values<float>(*Find(f, "tuple/0")), ElementsAre(1.25f));
  EXPECT_THAT(Values<int64_t>(*Find(f, "tuple/1")), ElementsAre(-7));
  EXPECT_THAT(Values<int64_t>(*Find(f, "od/z")), ElementsAre(1, 2));
  EXPECT_THAT(Values<double>(*Find(f, "scalar_f8")), ElementsAre(0.125));
  EXPECT_EQ(Find(f, "scalar_b")->dtype(), DType::kBool);
  EXPECT_THAT(Values<uint8_t>(*Find(f, "7")), ElementsAre(7));
  EXPECT_EQ(Find(f, "u2")->dtype(), DType::kUInt16);
  EXPECT_THAT(Values<uint16_t>(*Find(f, "u2")), ElementsAre(1, 2));
  EXPECT_THAT(f.skipped, ElementsAre(StartsWith("name: str 'a string'"), StartsWith("none: None")));
}

INSTANTIATE_TEST_SUITE_P(NumpyVersionsAndProtocols, NestedFixture,
                         ::testing::Values("np1_nested_p2.pkl", "np1_nested_p3.pkl",
                                           "np1_nested_p4.pkl", "np1_nested_p5.pkl",
                                           "np2_nested_p2.pkl", "np2_nested_p3.pkl",
                                           "np2_nested_p4.pkl", "np2_nested_p5.pkl",
                                           "np1_save_nested.npy", "np2_save_nested.npy"));

TEST(PickleFixtures, Protocol5FromBufferBareArray) {
  for (const char* name : {"np1_array_p5.pkl", "np2_array_p5.pkl"}) {
    ASSERT_OK_AND_ASSIGN(TensorFile f, ReadFixture(name));
    ASSERT_EQ(f.tensors.size(), 1u) << name;
    EXPECT_EQ(f.tensors[0].key, "output");
    EXPECT_EQ(f.tensors[0].tensor.shape(), (Shape{2, 3}));
    EXPECT_THAT(Values<float>(f.tensors[0].tensor), ElementsAre(0, 1, 2, 3, 4, 5));
  }
  for (const char* name : {"np1_fortran_p5.pkl", "np2_fortran_p5.pkl"}) {
    ASSERT_OK_AND_ASSIGN(TensorFile f, ReadFixture(name));
    ASSERT_EQ(f.tensors.size(), 1u) << name;
    EXPECT_EQ(f.tensors[0].tensor.shape(), (Shape{2, 3}));
    EXPECT_THAT(Values<double>(f.tensors[0].tensor), ElementsAre(0, 1, 2, 3, 4, 5));
  }
}

TEST(PickleFixtures, NpSaveOfDictNumpy1And2) {
  for (const char* name : {"np1_save_dict.npy", "np2_save_dict.npy"}) {
    ASSERT_OK_AND_ASSIGN(TensorFile f, ReadFixture(name));
    EXPECT_EQ(f.format, FileFormat::kNpyPickledDict);
    ASSERT_THAT(Keys(f), ElementsAre("a")) << name;
    EXPECT_EQ(f.tensors[0].tensor.dtype(), DType::kFloat32);
    EXPECT_THAT(Values<float>(f.tensors[0].tensor), ElementsAre(0, 1, 2));
  }
}

// The exact bytes numpy 2.4 writes for np.save(f, {'a': np.arange(3, dtype=np.float32)}).
TEST(PickleFixtures, NpSaveOfDictExactBytes) {
  const std::string hex =
      "934e554d5059010076007b276465736372273a20277c4f272c2027666f727472616e5f6f7264"
      "6572273a2046616c73652c20277368617065273a2028292c207d202020202020202020202020"
      "2020202020202020202020202020202020202020202020202020202020202020202020202020"
      "202020202020202020202020200a800495db000000000000008c166e756d70792e5f636f7265"
      "2e6d756c74696172726179948c0c5f7265636f6e7374727563749493948c056e756d7079948c"
      "076e6461727261799493944b0085944301629487945294284b012968038c0564747970659493"
      "948c024f3894898887945294284b038c017c944e4e4e4affffffff4affffffff4b3f74946289"
      "5d947d948c016194680268054b008594680787945294284b014b038594680b8c026634948988"
      "87945294284b038c013c944e4e4e4affffffff4affffffff4b0074946289430c000000000000"
      "803f000000409474946273617494622e";
  std::string bytes;
  for (size_t k = 0; k + 1 < hex.size(); k += 2) {
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(k, 2), nullptr, 16)));
  }
  ASSERT_OK_AND_ASSIGN(TensorFile f,
                       ReadTensorBytes(MappedFile::FromString(bytes, "forward_paddle.npy")));
  ASSERT_THAT(Keys(f), ElementsAre("a"));
  EXPECT_THAT(Values<float>(f.tensors[0].tensor), ElementsAre(0, 1, 2));
}

TEST(PickleFixtures, PaddleStateDictProtocols2And4) {
  for (const char* name : {"paddle_state_p2.pdparams", "paddle_state_p4.pdparams"}) {
    ASSERT_OK_AND_ASSIGN(TensorFile f, ReadFixture(name));
    EXPECT_EQ(f.format, FileFormat::kPickle);
    EXPECT_THAT(Keys(f), ElementsAre("linear.weight", "linear.bias")) << name;
    EXPECT_EQ(Find(f, "linear.weight")->shape(), (Shape{3, 2}));
    EXPECT_THAT(Values<float>(*Find(f, "linear.weight")), ElementsAre(0, 1, 2, 3, 4, 5));
    EXPECT_THAT(f.skipped, ElementsAre(StartsWith("StructuredToParameterName@@: paddle")));
  }
}

TEST(PickleFixtures, PaddleTensorTupleBecomesItsArray) {
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadFixture("paddle_varbase_p4.pdparams"));
  ASSERT_THAT(Keys(f), ElementsAre("t"));
  EXPECT_THAT(Values<float>(f.tensors[0].tensor), ElementsAre(1, 1));
}

// ---------------------------------------------------------------------------
// Safety: refused globals.

struct EvilGlobal {
  const char* module;
  const char* name;
};

class RefusedGlobal : public ::testing::TestWithParam<EvilGlobal> {};

TEST_P(RefusedGlobal, Protocol2Global) {
  const EvilGlobal g = GetParam();
  PickleWriter w;
  w.Proto(2).Global(g.module, g.name).Str("echo pwned").Op('\x85').Op('R').Op('.');
  const std::string full = std::string(g.module) + "." + g.name;
  EXPECT_THAT(ReadBytes(w.str()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("refused pickle global '" + full + "'"),
                             HasSubstr("at offset 2"), HasSubstr("/x/evil.pkl"))));
}

TEST_P(RefusedGlobal, Protocol4StackGlobal) {
  const EvilGlobal g = GetParam();
  PickleWriter w;
  w.Proto(4).StackGlobal(g.module, g.name).Str("x").Op('\x85').Op('R').Op('.');
  EXPECT_THAT(ReadBytes(w.str()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr(std::string("'") + g.module + "." + g.name + "'")));
}

TEST_P(RefusedGlobal, InstOpcode) {
  const EvilGlobal g = GetParam();
  PickleWriter w;
  w.Proto(2).Op('(').Str("x").Op('i').Raw(g.module).Op('\n').Raw(g.name).Op('\n').Op('.');
  EXPECT_THAT(ReadBytes(w.str()), StatusIs(absl::StatusCode::kPermissionDenied,
                                           HasSubstr(std::string(g.module) + "." + g.name)));
}

INSTANTIATE_TEST_SUITE_P(
    Evil, RefusedGlobal,
    ::testing::Values(EvilGlobal{"os", "system"}, EvilGlobal{"posix", "system"},
                      EvilGlobal{"builtins", "eval"}, EvilGlobal{"__builtin__", "eval"},
                      EvilGlobal{"builtins", "getattr"}, EvilGlobal{"builtins", "exec"},
                      EvilGlobal{"subprocess", "Popen"}, EvilGlobal{"numpy", "load"},
                      EvilGlobal{"numpy.core.multiarray", "_reconstructx"},
                      EvilGlobal{"numpy.testing._private.utils", "runstring"},
                      EvilGlobal{"collections", "OrderedDictX"}));

TEST(PickleSafety, EvilGlobalInsideNpyObjectArrayNamesFileAndOffset) {
  // An .npy whose object payload calls os.system.
  std::string header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  std::string npy = std::string("\x93NUMPY\x01\x00", 8);
  npy.push_back(static_cast<char>(header.size()));
  npy.push_back(0);
  npy += header;
  PickleWriter w;
  w.Proto(3).Global("os", "system").Str("rm -rf /").Op('\x85').Op('R').Op('.');
  npy += w.str();
  EXPECT_THAT(ReadTensorBytes(MappedFile::FromString(npy, "/x/evil.npy")),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("/x/evil.npy: refused pickle global 'os.system' at offset 130")));
}

TEST(PickleSafety, RefusesOutOfBandBuffersPersistentIdsAndExtensions) {
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(5).Op('\x97').Op('.').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out-of-band")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Str("0").Op('Q').Op('.').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("persistent")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Op('\x82').Op(1).Op('.').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("extension")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Op('\xff').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown pickle opcode")));
}

TEST(PickleSafety, AllowedGlobalMisusedIsInvalidNotExecuted) {
  // numpy.ndarray called directly, _codecs.encode with another codec.
  PickleWriter a;
  a.Proto(2).Global("numpy", "ndarray").Op(')').Op('R').Op('.');
  EXPECT_THAT(ReadBytes(a.str()), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("cannot call numpy.ndarray")));
  PickleWriter b;
  b.Proto(2).Global("_codecs", "encode").Str("x").Str("rot13").Op('\x86').Op('R').Op('.');
  EXPECT_THAT(ReadBytes(b.str()), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("unsupported encoding 'rot13'")));
}

// ---------------------------------------------------------------------------
// Hand-written pickles.

TEST(PickleHandWritten, BigArrayIsBorrowedFromTheMappedFile) {
  const size_t n = 2 * 1024 * 1024;  // 8 MB of float32
  std::string data(n * 4, '\0');
  for (size_t k = 0; k < n; ++k) {
    const float v = static_cast<float>(k);
    std::memcpy(&data[k * 4], &v, 4);
  }
  // Pad the key so the BINBYTES8 payload lands 4-byte aligned.
  for (size_t pad = 1; pad <= 8; ++pad) {
    PickleWriter w;
    w.Proto(4).Op('}').Str(std::string(pad, 'w'));
    w.Array({static_cast<int64_t>(n)}, "f4", "<", false, "");
    const size_t payload = w.size() - 2 /*'t','b'*/;
    if (payload % 4 != 0) continue;
    PickleWriter real;
    real.Proto(4).Op('}').Str(std::string(pad, 'w'));
    real.Array({static_cast<int64_t>(n)}, "f4", "<", false, data).Op('s').Op('.');
    auto file = MappedFile::FromString(real.str(), "big.pkl");
    ASSERT_OK_AND_ASSIGN(TensorFile f, ReadPickle(file));
    ASSERT_EQ(f.tensors.size(), 1u);
    const Tensor& t = f.tensors[0].tensor;
    EXPECT_TRUE(PointsInto(t.data(), *file)) << "tensor was copied";
    EXPECT_EQ(t.num_elements(), static_cast<int64_t>(n));
    float last;
    std::memcpy(&last, static_cast<const char*>(t.data()) + (n - 1) * 4, 4);
    EXPECT_EQ(last, static_cast<float>(n - 1));
    return;
  }
  FAIL() << "no padding aligned the payload";
}

TEST(PickleHandWritten, UnalignedArrayIsBorrowed) {
  for (size_t pad = 1; pad <= 4; ++pad) {
    PickleWriter w;
    w.Proto(4).Op('}').Str(std::string(pad, 'k'));
    w.Array({2}, "f4", "<", false, std::string("\0\0\x80\x3f\0\0\0\x40", 8)).Op('s').Op('.');
    auto file = MappedFile::FromString(w.str(), "u.pkl");
    ASSERT_OK_AND_ASSIGN(TensorFile f, ReadPickle(file));
    ASSERT_EQ(f.tensors.size(), 1u);
    const Tensor& t = f.tensors[0].tensor;
    // Zero copy even at an odd offset: the data pointer lies inside the file.
    EXPECT_TRUE(PointsInto(t.data(), *file)) << "pad " << pad;
    EXPECT_THAT(Values<float>(t), ElementsAre(1.0f, 2.0f));
  }
}

TEST(PickleHandWritten, BigEndianAndFortranAreConverted) {
  PickleWriter w;
  // int16 big-endian, Fortran (2, 2): on disk column-major [[1, 3], [2, 4]]^T.
  w.Proto(3).Op('}').Str("m");
  w.Array({2, 2}, "i2", ">", true, std::string("\0\x01\0\x02\0\x03\0\x04", 8)).Op('s').Op('.');
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(w.str()));
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_THAT(Values<int16_t>(f.tensors[0].tensor), ElementsAre(1, 3, 2, 4));
}

TEST(PickleHandWritten, UnsignedWideTypesAreReadInEveryLayout) {
  // Little-endian uint16/32/64 at their maxima, big-endian uint64, Fortran
  // uint32 (2, 2): column-major [[1, 3], [2, 4]]^T. complex64 is still skipped.
  auto le = [](auto... v) {
    std::string out;
    ((out.append(reinterpret_cast<const char*>(&v), sizeof(v))), ...);
    return out;
  };
  PickleWriter w;
  w.Proto(4).Op('}').Op('(');
  w.Str("u2").Array({2}, "u2", "<", false, le(uint16_t{65535}, uint16_t{7}));
  w.Str("u4").Array({2}, "u4", "<", false, le(uint32_t{4294967295u}, uint32_t{1}));
  w.Str("u8").Array({2}, "u8", "<", false, le(~uint64_t{0}, (uint64_t{1} << 53) + 1));
  w.Str("be_u8").Array({1}, "u8", ">", false, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  w.Str("f_u4").Array({2, 2}, "u4", "<", true, le(1u, 2u, 3u, 4u));
  w.Str("c8").Array({1}, "c8", "<", false, std::string(8, '\0'));
  w.Op('u').Op('.');
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(w.str()));
  EXPECT_THAT(Keys(f), ElementsAre("u2", "u4", "u8", "be_u8", "f_u4"));
  EXPECT_EQ(Find(f, "u2")->dtype(), DType::kUInt16);
  EXPECT_THAT(Values<uint16_t>(*Find(f, "u2")), ElementsAre(65535, 7));
  EXPECT_EQ(Find(f, "u4")->dtype(), DType::kUInt32);
  EXPECT_THAT(Values<uint32_t>(*Find(f, "u4")), ElementsAre(4294967295u, 1u));
  EXPECT_EQ(Find(f, "u8")->dtype(), DType::kUInt64);
  EXPECT_THAT(Values<uint64_t>(*Find(f, "u8")), ElementsAre(~uint64_t{0}, (uint64_t{1} << 53) + 1));
  EXPECT_THAT(Values<uint64_t>(*Find(f, "be_u8")), ElementsAre(uint64_t{0x0102030405060708}));
  EXPECT_EQ(Find(f, "f_u4")->shape(), (Shape{2, 2}));
  EXPECT_THAT(Values<uint32_t>(*Find(f, "f_u4")), ElementsAre(1u, 3u, 2u, 4u));
  EXPECT_THAT(f.skipped, ElementsAre(AllOf(StartsWith("c8: unsupported numpy dtype"),
                                           HasSubstr("c8"))));
}

TEST(PickleHandWritten, DuplicateKeysKeepPositionTakeLastValue) {
  PickleWriter w;
  w.Proto(2).Op('}').Op('(').Str("a").Int(1).Str("b").Int(2).Str("a").Int(3).Op('u');
  w.Op('(').Int(5).Int(6).Op('u').Op('.');  // int key 5
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(w.str()));
  EXPECT_THAT(Keys(f), ElementsAre("a", "b", "5"));
  EXPECT_THAT(Values<int64_t>(*Find(f, "a")), ElementsAre(3));
}

TEST(PickleHandWritten, TopLevelListAndScalar) {
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(PickleWriter().Proto(2).Op(']').Op('(').Int(1)
                                                   .Int(2).Op('e').Op('.').str()));
  EXPECT_THAT(Keys(f), ElementsAre("0", "1"));
  ASSERT_OK_AND_ASSIGN(TensorFile g, ReadBytes(PickleWriter().Proto(2).Int(9).Op('.').str()));
  EXPECT_THAT(Keys(g), ElementsAre("output"));
}

TEST(PickleHandWritten, SelfReferentialListTerminates) {
  // l = []; l.append(l)
  PickleWriter w;
  w.Proto(2).Op(']').Op('q').Op(0).Op('h').Op(0).Op('a').Op('.');
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(w.str()));
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_THAT(f.skipped, Contains(HasSubstr("nested deeper than")));
}

TEST(PickleHandWritten, ExponentialSharingIsRefused) {
  // l0 = [1, 1]; l_{k+1} = [l_k, l_k]: 2^40 leaves from a few hundred bytes.
  PickleWriter w;
  w.Proto(2).Op(']').Int(1).Op('a').Int(1).Op('a');
  for (int k = 0; k < 40; ++k) {
    w.Op('q').Op(0).Op(']').Op('h').Op(0).Op('a').Op('h').Op(0).Op('a');
  }
  w.Op('.');
  EXPECT_THAT(ReadBytes(w.str()), StatusIs(absl::StatusCode::kResourceExhausted,
                                           HasSubstr("shares objects")));
}

TEST(PickleHandWritten, AbsurdSizesRefusedWithoutAllocating) {
  // BINBYTES8 claiming 2^60 bytes.
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(4).Op('\x8e').U64(uint64_t{1} << 60).Op('.').str()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(4).Op('\x8d').U64(~uint64_t{0}).str()),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(4).Op('\x95').U64(uint64_t{1} << 62).str()),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  // An array of shape (2**40, 2**40) with 8 bytes of data.
  PickleWriter w;
  w.Proto(3).Array({int64_t{1} << 40, int64_t{1} << 40}, "f4", "<", false, "12345678").Op('.');
  EXPECT_THAT(ReadBytes(w.str()), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("overflows")));
  PickleWriter v;
  v.Proto(3).Array({int64_t{1} << 20, int64_t{1} << 20}, "f4", "<", false, "12345678").Op('.');
  EXPECT_THAT(ReadBytes(v.str()), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("needs 4398046511104 bytes")));
  // LONG_BINPUT at index 2^32-1 uses no more memory than index 0.
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Op('N').Op('r').U32(0xffffffffu).Op('.').str()),
              IsOk());
}

TEST(PickleHandWritten, StackAndMarkErrors) {
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Op('.').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("underflow")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Op('t').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("MARK")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Op('h').Op(3).str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("memo key 3")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Int(1).Int(2).Op('s').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Op('(').Op('.').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("underflow")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(6).Op('N').Op('.').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("protocol 6")));
  EXPECT_THAT(ReadBytes(PickleWriter().Proto(2).Raw(std::string("X\x02\0\0\0\xc3\x28", 7)).Op('.').str()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
}

// The bound PickleLimits puts on stack, memo and object counts for an
// n-byte pickle, as the message prints it.
std::string InputBound(size_t n) {
  return std::to_string(n / 4 + 65536) + " (bound for a " + std::to_string(n) + "-byte pickle";
}

TEST(PickleHandWritten, StackMemoAndObjectsAreBoundedByTheInputSize) {
  // 4 MB of DUP: one stack entry per byte without the input bound.
  const std::string dups = PickleWriter().Proto(2).Op('N').Raw(std::string(4 << 20, '2')).str();
  EXPECT_THAT(ReadBytes(dups), StatusIs(absl::StatusCode::kResourceExhausted,
                                        HasSubstr("/x/evil.pkl: pickle stack deeper than " +
                                                  InputBound(dups.size()))));
  // EMPTY_LIST, POP: one object per two bytes, on a shallow stack.
  std::string lists = PickleWriter().Proto(2).str();
  for (int k = 0; k < (1 << 20); ++k) lists += "]0";
  EXPECT_THAT(ReadBytes(lists), StatusIs(absl::StatusCode::kResourceExhausted,
                                         HasSubstr("/x/evil.pkl: pickle creates more objects "
                                                   "than " + InputBound(lists.size()))));
  // MEMOIZE (protocol 4): one memo entry per byte.
  const std::string memo =
      PickleWriter().Proto(4).Op('N').Raw(std::string(1 << 20, '\x94')).str();
  EXPECT_THAT(ReadBytes(memo), StatusIs(absl::StatusCode::kResourceExhausted,
                                        HasSubstr("/x/evil.pkl: pickle memo larger than " +
                                                  InputBound(memo.size()))));
  // MARK after MARK.
  const std::string marks = PickleWriter().Proto(2).Raw(std::string(1 << 20, '(')).str();
  EXPECT_THAT(ReadBytes(marks), StatusIs(absl::StatusCode::kResourceExhausted,
                                         HasSubstr("/x/evil.pkl: more open MARKs than " +
                                                   InputBound(marks.size()))));
}

TEST(PickleHandWritten, ShapeRankOver64IsRefused) {
  PickleWriter w;
  w.Proto(3).Array(std::vector<int64_t>(65, 1), "f4", "<", false, "1234").Op('.');
  EXPECT_THAT(ReadBytes(w.str()), StatusIs(absl::StatusCode::kInvalidArgument,
                                           AllOf(HasSubstr("/x/evil.pkl: "),
                                                 HasSubstr("has 65 dimensions (at most 64"))));
}

TEST(PickleHandWritten, TextOpcodesOfProtocol0) {
  const std::string p0 = "(dp0\nVunused\n";  // UNICODE opcode: refused
  EXPECT_THAT(ReadBytes(p0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  // INT, LONG, FLOAT, PUT, GET, DICT, SETITEM.
  const std::string ok = "(dp0\nI1\nI42\nsI2\nF2.5\np1\nsI3\ng1\nsL12L\nI01\ns.";
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(ok));
  EXPECT_THAT(Keys(f), ElementsAre("1", "2", "3", "12"));
  EXPECT_THAT(Values<double>(*Find(f, "3")), ElementsAre(2.5));
  EXPECT_EQ(Find(f, "12")->dtype(), DType::kBool);
}

TEST(PickleHandWritten, BigIntsAndNonStringKeysAreSkipped) {
  PickleWriter w;
  w.Proto(2).Op('}').Str("big").Op('\x8a').Op(9).Raw(std::string(8, '\0')).Op(1);
  w.Op('s').Op('N').Int(1).Op('s').Op('.');
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(w.str()));
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_THAT(f.skipped, ::testing::UnorderedElementsAre(HasSubstr("big: int outside int64"),
                                     HasSubstr("dict key is not a str or int")));
  // LONG1 with redundant sign bytes still fits int64.
  PickleWriter v;
  v.Proto(2).Op('\x8a').Op(9).Raw(std::string(9, '\xff')).Op('.');
  ASSERT_OK_AND_ASSIGN(TensorFile g, ReadBytes(v.str()));
  EXPECT_THAT(Values<int64_t>(g.tensors.at(0).tensor), ElementsAre(-1));
}

// Protocol 0 memo opcodes carry their index as a decimal line.
TEST(PickleHandWritten, TextMemoIndices) {
  // {"a": [1.5, 1.5]} where the float is stored with PUT 0 and reused with GET 0.
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes("(d\x8c\x01" "a(lF1.5\np0\nag0\nas."));
  EXPECT_EQ(f.tensors.size(), 2u);
  EXPECT_THAT(ReadBytes("(lpx\n."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed PUT")));
  EXPECT_THAT(ReadBytes("(lg-1\n."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed GET")));
}

TEST(PickleHandWritten, PaddleBigParameterSlicesAreJoined) {
  // paddle.save(protocol=2) of a parameter over 2^30 elements: flat slices
  // "w@@.0", "w@@.1" plus the table that says how to join them.
  PickleWriter w;
  w.Proto(2).Op('}').Op('(');
  w.Str("w@@.0").Array({3}, "f4", "<", false, std::string("\0\0\0\0\0\0\x80\x3f\0\0\0\x40", 12));
  w.Str("b").Array({1}, "i8", "<", false, std::string(8, '\0'));
  w.Str("w@@.1").Array({3}, "f4", ">", false, std::string("\x40\x40\0\0\x40\x80\0\0\x40\xa0\0\0", 12));
  w.Str("UnpackBigParamInfor@@").Op('}').Str("w").Op('}');
  w.Str("OriginShape").Op(']').Int(2).Op('a').Int(3).Op('a').Op('s');
  w.Str("slices").Op(']').Str("w@@.0").Op('a').Str("w@@.1").Op('a').Op('s');
  w.Op('s').Op('u').Op('.');
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadBytes(w.str()));
  EXPECT_THAT(Keys(f), ElementsAre("w", "b"));
  EXPECT_EQ(Find(f, "w")->shape(), (Shape{2, 3}));
  EXPECT_THAT(Values<float>(*Find(f, "w")), ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_THAT(f.skipped, ElementsAre(StartsWith("UnpackBigParamInfor@@: paddle")));
}

TEST(PickleHandWritten, SharedBufferCannotAmplifyCopies) {
  // 2000 big-endian arrays over one memoized 64 KiB buffer: each needs its
  // own byte-swapped copy (128 MB from a ~250 KB file).
  PickleWriter w;
  w.Proto(3).Bytes(std::string(65536, '\x01')).Op('q').Op(0).Op('0');
  w.Op(']').Op('(');
  for (int k = 0; k < 2000; ++k) {
    w.Global("numpy.core.multiarray", "_reconstruct").Global("numpy", "ndarray");
    w.Int(0).Op('\x85').Bytes("b").Op('\x87').Op('R');
    w.Op('(').Int(1).Int(16384).Op('\x85').DType("f4", ">").Op('\x89').Op('h').Op(0);
    w.Op('t').Op('b');
  }
  w.Op('e').Op('.');
  EXPECT_THAT(ReadBytes(w.str()), StatusIs(absl::StatusCode::kResourceExhausted,
                                           HasSubstr("times the input size")));
}

// ---------------------------------------------------------------------------
// Truncation: every prefix of every fixture fails cleanly.

TEST(PickleTruncation, EveryPrefixOfEveryFixtureFailsCleanly) {
  for (const char* name : {"np2_dtypes_p2.pkl", "np1_nested_p3.pkl", "np2_nested_p4.pkl",
                           "np2_dtypes_p5.pkl", "paddle_state_p2.pdparams"}) {
    auto file = MappedFile::Open(TestdataPath(name));
    ASSERT_THAT(file, IsOk());
    const std::string bytes((*file)->bytes());
    for (size_t len = 0; len + 1 < bytes.size(); ++len) {
      auto r = ReadBytes(bytes.substr(0, len), name);
      ASSERT_FALSE(r.ok()) << name << " prefix " << len;
      EXPECT_THAT(r.status().code(),
                  ::testing::AnyOf(absl::StatusCode::kDataLoss,
                                   absl::StatusCode::kInvalidArgument))
          << r.status();
      EXPECT_THAT(std::string(r.status().message()), HasSubstr(name));
    }
  }
}

}  // namespace
}  // namespace reprod::formats

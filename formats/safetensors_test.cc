#include "formats/safetensors.h"

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

using ::reprod::formats::testing::Find;
using ::reprod::formats::testing::Keys;
using ::reprod::formats::testing::PointsInto;
using ::reprod::formats::testing::TestdataPath;
using ::reprod::formats::testing::Values;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string WithHeader(const std::string& json, const std::string& data) {
  std::string out;
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<char>((json.size() >> (8 * k)) & 0xff));
  return out + json + data;
}

absl::StatusOr<TensorFile> Read(std::string bytes) {
  return ReadSafetensors(MappedFile::FromString(std::move(bytes), "m.safetensors"));
}

TEST(Safetensors, ReadsFixtureInDataOrder) {
  auto file = MappedFile::Open(TestdataPath("dtypes.safetensors"));
  ASSERT_THAT(file, IsOk());
  ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorBytes(*file));
  EXPECT_EQ(f.format, FileFormat::kSafetensors);
  EXPECT_EQ(f.tensors.size(), 6u);
  EXPECT_EQ(Find(f, "f32")->shape(), (Shape{2, 3}));
  EXPECT_THAT(Values<float>(*Find(f, "f32")), ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_EQ(Find(f, "f16")->dtype(), DType::kFloat16);
  EXPECT_THAT(Values<uint16_t>(*Find(f, "f16")), ElementsAre(0x3c00, 0x4000));
  EXPECT_THAT(Values<int64_t>(*Find(f, "i64")), ElementsAre(5));
  EXPECT_THAT(Values<uint8_t>(*Find(f, "u8")), ElementsAre(1, 2, 3));
  EXPECT_EQ(Find(f, "b")->dtype(), DType::kBool);
  EXPECT_EQ(Find(f, "a_first_key_late_data")->num_elements(), 0);
  for (const NamedTensor& t : f.tensors) {
    if (t.tensor.num_bytes() > 0 &&
        reinterpret_cast<uintptr_t>(t.tensor.data()) % DTypeSize(t.tensor.dtype()) == 0) {
      EXPECT_TRUE(PointsInto(t.tensor.data(), **file)) << t.key;
    }
  }
}

TEST(Safetensors, RoundTripKeepsProducerOrderAndEveryDType) {
  std::vector<NamedTensor> in;
  constexpr auto kAll = AllDTypes();
  const std::vector<DType> types(kAll.rbegin(), kAll.rend());
  int i = 0;
  for (DType t : types) {
    auto tensor = Tensor::Allocate(t, Shape{2, 2});
    ASSERT_THAT(tensor, IsOk());
    for (size_t k = 0; k < tensor->num_bytes(); ++k) {
      static_cast<char*>(tensor->mutable_data())[k] = static_cast<char>(t == DType::kBool ? k % 2 : k + i);
    }
    in.push_back(NamedTensor{"z" + std::to_string(99 - i++), *tensor});
  }
  ASSERT_OK_AND_ASSIGN(std::string bytes, EncodeSafetensors(in));
  ASSERT_OK_AND_ASSIGN(TensorFile f, Read(bytes));
  ASSERT_EQ(f.tensors.size(), in.size());
  for (size_t k = 0; k < in.size(); ++k) {
    EXPECT_EQ(f.tensors[k].key, in[k].key);  // data order, not the sorted key order
    EXPECT_EQ(f.tensors[k].tensor.dtype(), in[k].tensor.dtype());
    EXPECT_EQ(f.tensors[k].tensor.shape(), in[k].tensor.shape());
    EXPECT_EQ(std::memcmp(f.tensors[k].tensor.data(), in[k].tensor.data(),
                          in[k].tensor.num_bytes()), 0);
  }
  EXPECT_THAT(EncodeSafetensors({in[0], in[0]}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
}

TEST(Safetensors, UnsupportedDTypeIsSkippedWithItsName) {
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      Read(WithHeader(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]},)"
                      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                      "\x01\x02\x03\x04")));
  EXPECT_THAT(Keys(f), ElementsAre("b"));
  EXPECT_THAT(f.skipped, ElementsAre(HasSubstr("a: unsupported safetensors dtype 'F8_E4M3'")));
}

TEST(Safetensors, MalformedHeadersAndOffsets) {
  const std::string data(16, '\0');
  for (const char* json :
       {"", "[]", "{", R"({"a":1})", R"({"a":{"dtype":"F32","shape":[2]}})",
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
        R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}})",
        R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
        R"({"a":{"dtype":"F32","shape":[9223372036854775807,9223372036854775807],"data_offsets":[0,8]}})",
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,7]}})"}) {
    EXPECT_THAT(Read(WithHeader(json, data)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("m.safetensors")))
        << json;
  }
}

TEST(Safetensors, OverlappingOffsetsAreRefusedNamingBothTensors) {
  const std::string data(16, '\0');
  EXPECT_THAT(Read(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              data)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("m.safetensors: tensors 'a' [0, 8) and 'b' [4, 12) overlap")));
  // Two names for the same bytes.
  EXPECT_THAT(Read(WithHeader(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                              R"("a":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}})",
                              data)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensors 'a' [8, 16) and 'b' [8, 16) overlap")));
  // Contained in a bigger one, and an entry of a skipped dtype counts too.
  EXPECT_THAT(Read(WithHeader(R"({"big":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                              R"("in":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                              data)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensors 'big' [0, 16) and 'in' [12, 16) overlap")));
  EXPECT_THAT(Read(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("f8":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[6,10]}})",
                              data)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensors 'a' [0, 8) and 'f8' [6, 10) overlap")));
  EXPECT_THAT(Read(WithHeader(R"({"f8":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[14,18]}})",
                              data)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("key 'f8': data_offsets [14, 18) outside the 16-byte data")));
  // Empty tensors share offsets with anything; adjacent ranges do not overlap.
  ASSERT_OK_AND_ASSIGN(
      TensorFile f,
      Read(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                      data)));
  EXPECT_EQ(f.tensors.size(), 3u);
}

TEST(Safetensors, RankOver64IsRefusedNamingTheKey) {
  std::string shape = "[";
  for (int k = 0; k < 65; ++k) shape += k == 0 ? "1" : ",1";
  shape += "]";
  EXPECT_THAT(
      Read(WithHeader(R"({"deep":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})",
                      std::string(4, '\0'))),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("m.safetensors: key 'deep': shape must be at most 64 non-negative "
                         "integers (has 65)")));
}

TEST(Safetensors, AbsurdAndTruncatedSizes) {
  std::string huge(8, '\0');
  huge[7] = 0x10;  // 2^60
  EXPECT_THAT(Read(huge + "{}"), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("header length 1152921504606846976")));
  EXPECT_THAT(Read(WithHeader("{}", "").substr(0, 9)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  EXPECT_THAT(Read("1234"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("m.safetensors")));
  // Data declared past the end of the file.
  EXPECT_THAT(Read(WithHeader(R"({"a":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}})",
                              "abcd")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("key 'a'")));
  // A declaration over max_total_bytes.
  ReadOptions options;
  options.max_total_bytes = 1024;
  EXPECT_THAT(ReadSafetensors(MappedFile::FromString(
                                  WithHeader(R"({"a":{"dtype":"F32","shape":[1024],)"
                                             R"("data_offsets":[0,4096]}})", ""),
                                  "m.safetensors"),
                              options),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("key 'a'")));
}

TEST(Safetensors, EveryPrefixFailsCleanly) {
  auto file = MappedFile::Open(TestdataPath("dtypes.safetensors"));
  ASSERT_THAT(file, IsOk());
  const std::string bytes((*file)->bytes());
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto r = Read(bytes.substr(0, len));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_THAT(r.status().code(),
                AnyOf(absl::StatusCode::kDataLoss, absl::StatusCode::kInvalidArgument));
  }
}

}  // namespace
}  // namespace reprod::formats

#include "formats/internal/array.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::formats::internal {
namespace {

using ::reprod::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<int32_t> AsInt32(const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.num_elements()));
  std::memcpy(v.data(), t.data(), v.size() * 4);
  return v;
}

TEST(MakeTensor, BorrowsAlignedCOrderLittleEndian) {
  auto owner = std::make_shared<std::vector<int32_t>>(std::vector<int32_t>{1, 2, 3});
  ArrayBytes a;
  a.dtype = DType::kInt32;
  a.shape = Shape{3};
  a.data = reinterpret_cast<const char*>(owner->data());
  a.owner = owner;
  ReadBudget budget(ReadOptions{});
  budget.AllowCopies(1024);
  ASSERT_OK_AND_ASSIGN(Tensor t, MakeTensor(a, &budget, "x"));
  EXPECT_EQ(t.data(), owner->data());
  EXPECT_EQ(t.mutable_data(), nullptr);
}

// Unaligned little-endian C-order bytes are borrowed too: consumers load
// through memcpy (common/tensor.h), and copying would cost a pass over data.
TEST(MakeTensor, BorrowsUnalignedData) {
  auto owner = std::make_shared<std::string>(std::string("\0\x01\0\0\0\x02\0\0\0", 9));
  ArrayBytes a;
  a.dtype = DType::kInt32;
  a.shape = Shape{2};
  a.data = owner->data() + 1;
  a.owner = owner;
  ReadBudget budget(ReadOptions{});
  budget.AllowCopies(1024);
  ASSERT_OK_AND_ASSIGN(Tensor t, MakeTensor(a, &budget, "x"));
  EXPECT_EQ(static_cast<const void*>(t.data()), static_cast<const void*>(a.data));
  EXPECT_THAT(AsInt32(t), ElementsAre(1, 2));
}

TEST(MakeTensor, FortranThreeDimsWithByteSwap) {
  // Shape (2, 3, 4): value at C index (i, j, k) is 100i + 10j + k; stored in
  // Fortran order (i fastest), big-endian.
  const Shape shape{2, 3, 4};
  std::string raw;
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 3; ++j) {
      for (int i = 0; i < 2; ++i) {
        const int32_t v = 100 * i + 10 * j + k;
        for (int b = 3; b >= 0; --b) raw.push_back(static_cast<char>((v >> (8 * b)) & 0xff));
      }
    }
  }
  ArrayBytes a;
  a.dtype = DType::kInt32;
  a.shape = shape;
  a.fortran = true;
  a.big_endian = true;
  a.data = raw.data();
  ReadBudget budget(ReadOptions{});
  budget.AllowCopies(1024);
  ASSERT_OK_AND_ASSIGN(Tensor t, MakeTensor(a, &budget, "x"));
  std::vector<int32_t> want;
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 4; ++k) want.push_back(100 * i + 10 * j + k);
    }
  }
  EXPECT_EQ(AsInt32(t), want);
}

TEST(MakeTensor, FortranWithUnitDimsIsBorrowed) {
  auto owner = std::make_shared<std::vector<int32_t>>(std::vector<int32_t>{1, 2, 3});
  ArrayBytes a;
  a.dtype = DType::kInt32;
  a.shape = Shape{1, 3, 1};
  a.fortran = true;
  a.data = reinterpret_cast<const char*>(owner->data());
  a.owner = owner;
  ReadBudget budget(ReadOptions{});
  budget.AllowCopies(1024);
  ASSERT_OK_AND_ASSIGN(Tensor t, MakeTensor(a, &budget, "x"));
  EXPECT_EQ(t.data(), owner->data());
}

TEST(ReadBudget, RefusesOverflowAndLimits) {
  ReadOptions o;
  o.max_total_bytes = 100;
  o.max_alloc_bytes = 10;
  ReadBudget b(o);
  EXPECT_TRUE(b.ChargeDeclared(60, "f").ok());
  EXPECT_THAT(b.ChargeDeclared(41, "f"), StatusIs(absl::StatusCode::kResourceExhausted,
                                                  HasSubstr("f: declared")));
  EXPECT_THAT(b.ChargeDeclared(~uint64_t{0}, "f"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("f")));
  EXPECT_THAT(b.ChargeAlloc(11, "g"), StatusIs(absl::StatusCode::kResourceExhausted,
                                               HasSubstr("g: allocating")));
  // Copies are bounded by kCopyFactor x the input (+1 MiB) as well.
  ReadBudget c(ReadOptions{});
  EXPECT_THAT(c.ChargeCopy(1, "h"), StatusIs(absl::StatusCode::kResourceExhausted,
                                             HasSubstr("times the input size")));
  c.AllowCopies(10);
  EXPECT_TRUE(c.ChargeCopy(640 + (1 << 20), "h").ok());
  EXPECT_THAT(c.ChargeCopy(1, "h"), StatusIs(absl::StatusCode::kResourceExhausted,
                                             HasSubstr("h: copying")));
}

TEST(Strings, Utf8AndQuoting) {
  EXPECT_TRUE(IsValidUtf8("abc\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // truncated
  EXPECT_EQ(Quote("a'b\n"), "'a\\'b\\x0a'");
  EXPECT_EQ(HexPrefix("\x93NUMPY", 3), "93 4e 55");
}

}  // namespace
}  // namespace reprod::formats::internal

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/dtype.h"
#include "common/half.h"
#include "common/mapped_file.h"
#include "common/logging.h"
#include "common/names.h"
#include "common/tensor.h"
#include "common/visible.h"
#include "spdlog/details/log_msg.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

TEST(DType, NamesRoundTrip) {
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto t = static_cast<DType>(i);
    EXPECT_EQ(DTypeFromName(DTypeName(t)), t);
  }
  EXPECT_EQ(DTypeFromName("float128"), std::nullopt);
  EXPECT_EQ(DTypeSize(DType::kBFloat16), 2u);
}

// Hand-computed float16 values (IEEE 754 binary16).
TEST(Half, Float16DecodesExactly) {
  EXPECT_EQ(Float16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Float16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(Float16ToFloat(0x7bff), 65504.0f);                 // max
  EXPECT_EQ(Float16ToFloat(0x0001), std::ldexp(1.0f, -24));    // min subnormal
  EXPECT_EQ(Float16ToFloat(0x03ff), std::ldexp(1023.0f, -24)); // max subnormal
  EXPECT_EQ(Float16ToFloat(0x0400), std::ldexp(1.0f, -14));    // min normal
  const float neg_zero = Float16ToFloat(0x8000);
  EXPECT_EQ(neg_zero, 0.0f);
  EXPECT_TRUE(std::signbit(neg_zero));
  EXPECT_EQ(Float16ToFloat(0x7c00), INFINITY);
  EXPECT_EQ(Float16ToFloat(0xfc00), -INFINITY);
  EXPECT_TRUE(std::isnan(Float16ToFloat(0x7e00)));
}

TEST(Half, BFloat16DecodesExactly) {
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0x7f7f), 3.3895313892515355e38f);  // max
  EXPECT_EQ(BFloat16ToFloat(0x0001), std::ldexp(1.0f, -133));  // min subnormal
  EXPECT_TRUE(std::signbit(BFloat16ToFloat(0x8000)));
  EXPECT_EQ(BFloat16ToFloat(0xff80), -INFINITY);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(0x7fc0)));
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(1.00390625f), 0x3f80);  // tie -> even
}

TEST(Shape, CheckedNumElements) {
  EXPECT_EQ(*CheckedNumElements({}, DType::kFloat32), 1);
  EXPECT_EQ(*CheckedNumElements({3, 0, 5}, DType::kFloat32), 0);
  EXPECT_THAT(CheckedNumElements({-1, 2}, DType::kFloat32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  EXPECT_THAT(CheckedNumElements({int64_t{1} << 40, int64_t{1} << 40}, DType::kInt8),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflows")));
  EXPECT_THAT(CheckedNumElements({int64_t{1} << 62}, DType::kFloat64),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte size")));
  // The itemsize overload (object arrays) checks the same way.
  EXPECT_EQ(*CheckedNumElements(Shape{4, 5}, int64_t{3}), 20);
  EXPECT_THAT(CheckedNumElements(Shape{int64_t{1} << 61}, int64_t{8}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte size")));
  EXPECT_THAT(CheckedNumElements(Shape{2, -3}, int64_t{1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  EXPECT_EQ(ShapeToString({5}), "(5,)");
  EXPECT_EQ(ShapeToString({2, 3}), "(2, 3)");
  EXPECT_EQ(ShapeToString({}), "()");
}

TEST(Tensor, AllocateAndBorrow) {
  auto t = Tensor::Allocate(DType::kFloat32, {2, 3});
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->num_bytes(), 24u);
  ASSERT_NE(t->mutable_data(), nullptr);
  float one = 1.0f;
  std::memcpy(t->mutable_data(), &one, 4);
  Tensor copy = *t;  // shares bytes
  EXPECT_EQ(static_cast<const float*>(copy.data())[0], 1.0f);
  auto owner = std::make_shared<int>(7);
  Tensor b = Tensor::Borrow(DType::kInt32, {1}, owner.get(), owner);
  EXPECT_EQ(b.mutable_data(), nullptr);
  EXPECT_EQ(owner.use_count(), 2);
}

TEST(MappedFile, MissingFileNamesPath) {
  EXPECT_THAT(MappedFile::Open("/nonexistent/x.npy"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/x.npy")));
  EXPECT_THAT(MappedFile::Open("/tmp"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("not a regular file")));
  auto mem = MappedFile::FromString("abc");
  EXPECT_EQ(mem->bytes(), "abc");
}


// RFC 3720 (iSCSI) B.4 test vectors and the classic "123456789" check value.
TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(""), 0u);
}

// Bit-at-a-time CRC-32C, independent of the implementation under test.
uint32_t ReferenceCrc32c(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFF;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
  }
  return ~c;
}

TEST(Crc32c, LongBuffersAtEveryAlignmentMatchTheBitwiseReference) {
  // Sizes around the interleaved blocks (3 x 8192 and 3 x 256 bytes) and
  // their remainders, at odd start addresses.
  std::vector<uint8_t> data(3 * 8192 * 3 + 3 * 256 * 2 + 64);
  uint32_t x = 12345;
  for (uint8_t& b : data) b = static_cast<uint8_t>((x = x * 1103515245 + 12345) >> 16);
  for (size_t size : {size_t{0}, size_t{7}, size_t{767}, size_t{768}, size_t{769},
                      size_t{24575}, size_t{24576}, size_t{24577}, size_t{24576 + 768 + 9},
                      size_t{3 * 24576 + 5}, data.size() - 8}) {
    for (size_t offset : {size_t{0}, size_t{1}, size_t{3}, size_t{7}}) {
      ASSERT_LE(offset + size, data.size());
      const uint8_t* p = data.data() + offset;
      EXPECT_EQ(Crc32c(p, size), ReferenceCrc32c(p, size)) << size << " at +" << offset;
      // And continued from a running CRC.
      const size_t half = size / 2;
      EXPECT_EQ(Crc32cExtend(Crc32c(p, half), p + half, size - half),
                ReferenceCrc32c(p, size))
          << size << " split at " << half;
    }
  }
}

TEST(Crc32c, ExtendEqualsOneShotAtEverySplit) {
  std::string data(1000, '\0');
  uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  const uint32_t whole = Crc32c(data);
  for (size_t split = 0; split <= data.size(); split += 7) {
    const uint32_t a = Crc32c(data.data(), split);
    EXPECT_EQ(Crc32cExtend(a, data.data() + split, data.size() - split), whole)
        << "split at " << split;
  }
}

TEST(Crc32c, CombineOfTwoPartsEqualsTheWholeAtEverySplit) {
  std::string data(3000, '\0');
  uint32_t x = 777;
  for (char& c : data) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  const uint32_t whole = ReferenceCrc32c(reinterpret_cast<const uint8_t*>(data.data()),
                                         data.size());
  for (size_t split = 0; split <= data.size(); split += 13) {
    const uint32_t a = Crc32c(data.data(), split);
    const uint32_t b = Crc32c(data.data() + split, data.size() - split);
    EXPECT_EQ(Crc32cCombine(a, b, data.size() - split), whole) << "split at " << split;
  }
  // Blocks of one size folded in order, as a segment writer does (the
  // per-thread table cache is hit after the first block).
  uint32_t folded = 0;
  for (size_t at = 0; at < data.size(); at += 256) {
    const size_t n = std::min<size_t>(256, data.size() - at);
    folded = Crc32cCombine(folded, Crc32c(data.data() + at, n), n);
  }
  EXPECT_EQ(folded, whole);
}

TEST(Names, RunNames) {
  EXPECT_THAT(ValidateRunName("team42/bert-paddle"), IsOk());
  EXPECT_THAT(ValidateRunName("a.b_c/d-e.1"), IsOk());
  for (const char* bad : {"", "noslash", "a/b/c", "/b", "a/", "a b/c", "a/..",
                          "./x", "a/b\n"}) {
    EXPECT_THAT(ValidateRunName(bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("invalid run name")))
        << bad;
  }
  EXPECT_THAT(ValidateRunName(std::string(129, 'a') + "/b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("longer than 128")));
}

TEST(Names, CheckpointNames) {
  EXPECT_THAT(ValidateCheckpointName("bp_align"), IsOk());
  EXPECT_THAT(ValidateCheckpointName("step-1.5+x"), IsOk());
  EXPECT_THAT(ValidateCheckpointName("a/b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("character '/' at offset 1")));
  EXPECT_THAT(ValidateCheckpointName(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST(Names, TensorKeys) {
  EXPECT_THAT(ValidateTensorKey("encoder/layer.0/attention:q[1]+b-c_d"),
              IsOk());
  EXPECT_THAT(ValidateTensorKey("a//b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("empty part at offset 2")));
  EXPECT_THAT(ValidateTensorKey("/a"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("empty part at offset 0")));
  EXPECT_THAT(ValidateTensorKey(std::string("a\0b", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("character '\\x00' at offset 1")));
  EXPECT_THAT(ValidateTensorKey("bad key"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("offset 3")));
  EXPECT_THAT(ValidateTensorKey(std::string(1025, 'k')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("longer than 1024")));
}

TEST(Names, DotSegmentsRefused) {
  for (const char* bad : {"..", ".", "a/../b", "a/.", "./a", "a/.."}) {
    EXPECT_THAT(ValidateTensorKey(bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("are not names")))
        << bad;
  }
  EXPECT_THAT(ValidateTensorKey("a/../b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("invalid tensor key 'a/../b': '..' at offset 2")));
  EXPECT_THAT(ValidateTensorKey("a..b/.c/d."), IsOk());
  for (const char* bad : {".", ".."}) {
    EXPECT_THAT(ValidateCheckpointName(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("are not names")));
  }
  EXPECT_THAT(ValidateRunName("ns/.."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'..' at offset 3")));
}

TEST(Names, PolicyNamesAndKeyFragments) {
  EXPECT_THAT(ValidatePolicyName("team-policy"), IsOk());
  EXPECT_THAT(ValidatePolicyName("reprod_log(mean, 0.01) ü"), IsOk());  // a label
  EXPECT_THAT(ValidatePolicyName("a\x1b[31mred"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("invalid policy name 'a\\x1b[31mred': character '\\x1b' "
                                 "at offset 1")));
  EXPECT_THAT(ValidatePolicyName("x\u202ey"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("character '\\u202e' at offset 1")));
  EXPECT_THAT(ValidatePolicyName("bad\xff"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid UTF-8")));
  EXPECT_THAT(ValidatePolicyName(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1-256")));
  EXPECT_THAT(ValidatePolicyName(std::string(257, 'p')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1-256 bytes")));
  EXPECT_THAT(ValidateKeyFragment(""), IsOk());
  EXPECT_THAT(ValidateKeyFragment("encoder.layer."), IsOk());
  EXPECT_THAT(ValidateKeyFragment("a/"), IsOk());
  EXPECT_THAT(ValidateKeyFragment("/.."), IsOk());  // "x/.." + "y": not a whole segment
  EXPECT_THAT(ValidateKeyFragment("a/../b"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'..' at offset 2")));
  EXPECT_THAT(ValidateKeyFragment("a\nb"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("invalid key fragment 'a\\nb': character '\\n' at offset 1")));
}

TEST(Names, LongNamesAbbreviatedInErrors) {
  const std::string key = std::string(5000, 'k') + "\n";
  absl::Status s = ValidateTensorKey(key);
  ASSERT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(5001 bytes)")));
  EXPECT_LT(s.message().size(), 400u) << s.message();
}

TEST(Visible, EscapesEveryControlByteAndBidiOverride) {
  EXPECT_EQ(VisibleText("plain key/ü/日本"), "plain key/ü/日本");
  EXPECT_EQ(VisibleText("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(VisibleText(std::string("\x1b[2J\0\x7f", 6)), "\\x1b[2J\\x00\\x7f");
  EXPECT_EQ(VisibleText("x\u202ey\u2066z\u2069\u200f"), "x\\u202ey\\u2066z\\u2069\\u200f");
  EXPECT_EQ(VisibleText("\xc2\x85"), "\\u0085");          // C1 NEL
  EXPECT_EQ(VisibleText("\xff\xc3(\xe2\x80"), "\\xff\\xc3(\\xe2\\x80");  // not UTF-8
  EXPECT_EQ(VisibleText("\xc0\xaf"), "\\xc0\\xaf");        // overlong '/'
  EXPECT_EQ(VisibleText("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // surrogate
  EXPECT_EQ(VisibleText("back\\slash"), "back\\slash");
}

TEST(Visible, EveryByteValueGivesPrintableIdempotentText) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  all += "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069";
  const std::string shown = VisibleText(all);
  for (unsigned char c : shown) {
    EXPECT_TRUE(c >= 0x20 && c != 0x7f) << static_cast<int>(c);
  }
  EXPECT_EQ(shown.find("\xe2\x80\xae"), std::string::npos);
  EXPECT_EQ(shown.find("\xe2\x81\xa6"), std::string::npos);
  EXPECT_EQ(VisibleText(shown), shown);
}

TEST(Visible, NamesAbbreviatedHeadTailWithByteCount) {
  EXPECT_EQ(VisibleName("short\n"), "short\\n");
  EXPECT_EQ(VisibleName(std::string(200, 'a')), std::string(200, 'a'));
  const std::string key = std::string(100, 'h') + std::string(10000, 'm') + std::string(100, 't');
  EXPECT_EQ(VisibleName(key), std::string(100, 'h') + "..." + std::string(100, 't') +
                                  " (10200 bytes)");
  // Cuts fall on character boundaries: no half "é" becomes "\xc3".
  const std::string accents = "\xc3\xa9" + std::string(300, 'x') + "\xc3\xa9";
  const std::string cut = VisibleName(accents, 21);
  EXPECT_EQ(cut.find("\\x"), std::string::npos) << cut;
  EXPECT_EQ(VisibleName(accents, 21), "\xc3\xa9" "xxxxxxxx...xxxxxxxxx\xc3\xa9 (304 bytes)");
}

TEST(Logging, FormatterShowsClientBytesOnOneVisibleLine) {
  auto formatter = MakeLogFormatter();
  const std::string payload = "key a\n[2026-01-01 00:00:00.000] [info] forged\x1b[0m\u202e";
  spdlog::details::log_msg msg("reprod", spdlog::level::info, payload);
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  const std::string line(out.data(), out.size());
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;  // only the line end
  EXPECT_NE(line.find("key a\\n[2026-01-01 00:00:00.000] [info] forged\\x1b[0m\\u202e"),
            std::string::npos)
      << line;
  const std::string huge_payload(3 << 20, 'f');  // log_msg keeps a view
  spdlog::details::log_msg huge("reprod", spdlog::level::info, huge_payload);
  out.clear();
  formatter->format(huge, out);
  EXPECT_LT(out.size(), kMaxLogMessageBytes + 100);
  EXPECT_NE(std::string(out.data(), out.size()).find("(3145728 bytes)"), std::string::npos);
}

TEST(Logging, JsonLinesEscapeTheMessage) {
  auto formatter = MakeLogFormatter(LogFormat::kJson);
  const std::string payload = "run \"a\\b\"\nforged\x01\xff end";
  spdlog::details::log_msg msg("reprod", spdlog::level::warn, payload);
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  const std::string line(out.data(), out.size());
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  // The message as VisibleName shows it, then `"` and `\` JSON-escaped:
  // `run "a\b"` + `\n` + `forged\x01\xff end` (visible escapes).
  EXPECT_NE(line.find(R"("level":"warning","msg":"run \"a\\b\"\\nforged\\x01\\xff end"})"),
            std::string::npos)
      << line;
  EXPECT_TRUE(line.starts_with(R"({"time":")")) << line;
  // 2026-12-02T05:00:00.123Z: ISO 8601 in UTC.
  const size_t t = std::string_view(R"({"time":")").size();
  ASSERT_GT(line.size(), t + 24);
  EXPECT_EQ(line[t + 10], 'T') << line;
  EXPECT_EQ(line.substr(t + 23, 2), "Z\"") << line;
}

TEST(Logging, ParseLogFormat) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("JSON").ok());
  EXPECT_NE(ParseLogFormat("xml").status().message().find("'xml' (text, json)"),
            std::string::npos);
}

}  // namespace
}  // namespace reprod

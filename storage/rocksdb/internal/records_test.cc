// Encoding of keys and records (storage/FORMAT.md): round trips, ordering,
// and DataLoss on every kind of damage.
#include "storage/rocksdb/internal/records.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/rocksdb/internal/coding.h"
#include "storage/rocksdb/internal/keys.h"
#include "tests/testing/status_matchers.h"

namespace reprod::storage::internal {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(CodingTest, VarintsRoundTripAndRejectGarbage) {
  const std::vector<uint64_t> values = {
      0, 1, 127, 128, 300, 1ull << 35, std::numeric_limits<uint64_t>::max()};
  std::string buf;
  for (uint64_t v : values) PutVarint64(&buf, v);
  Decoder d(buf);
  for (uint64_t want : values) {
    uint64_t got = 0;
    ASSERT_TRUE(d.Varint64(&got));
    EXPECT_EQ(got, want);
  }
  EXPECT_TRUE(d.done());
  uint64_t v;
  EXPECT_FALSE(Decoder("\x80").Varint64(&v));  // truncated
  EXPECT_FALSE(Decoder(std::string(10, '\xff') + "\x01").Varint64(&v));
  EXPECT_FALSE(
      Decoder("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02").Varint64(&v));
  std::string_view s;
  EXPECT_FALSE(Decoder("\x05"
                       "abc")
                   .LengthPrefixed(&s));
}

TEST(CodingTest, BigEndianSortsNumerically) {
  std::string a, b;
  PutBigEndian64(&a, 255);
  PutBigEndian64(&b, 256);
  EXPECT_LT(a, b);
  EXPECT_EQ(DecodeBigEndian64(b.data()), 256u);
}

TEST(KeysTest, TensorKeysRoundTripAndOrder) {
  const std::vector<TensorAddress> addresses = {
      {"bp", "a/b", std::nullopt},
      {"bp", "a/b", std::numeric_limits<int64_t>::min()},
      {"bp", "a/b", -1},
      {"bp", "a/b", 0},
      {"bp", "a/b", 7},
      {"bp", "a/b", std::numeric_limits<int64_t>::max()},
      {"bp", "a/b/c", std::nullopt},
      {"bp_align", "a", std::nullopt},
  };
  std::string previous;
  for (const TensorAddress& a : addresses) {
    const std::string key = TensorKey(42, a);
    EXPECT_TRUE(key.starts_with(TensorPrefix(42)));
    EXPECT_TRUE(key.starts_with(CheckpointPrefix(42, a.checkpoint)));
    EXPECT_GT(key, previous) << AddressToString(a);
    previous = key;
    ASSERT_OK_AND_ASSIGN(TensorAddress back, ParseTensorKey(key));
    EXPECT_EQ(back, a);
  }
  // Checkpoint "bp" does not capture "bp_align".
  EXPECT_FALSE(
      TensorKey(42, addresses.back()).starts_with(CheckpointPrefix(42, "bp")));
  EXPECT_LT(TensorKey(42, addresses.back()), TensorPrefix(43));
}

TEST(KeysTest, MalformedTensorKeysAreDataLoss) {
  const std::string good = TensorKey(1, {"c", "k", 5});
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THAT(ParseTensorKey(good.substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("malformed")))
        << n;
  }
  EXPECT_THAT(ParseTensorKey(good + "x"),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
}

TEST(KeysTest, ChunkAndPendingKeys) {
  EXPECT_LT(ChunkKey(1, 2, 255), ChunkKey(1, 2, 256));
  EXPECT_LT(ChunkKey(1, 2, ~uint64_t{0}), ChunkKey(1, 3, 0));
  EXPECT_LT(ChunkKey(1, ~uint64_t{0}, 0), ChunkRunPrefix(2));
  EXPECT_TRUE(ChunkKey(7, 1, 1).starts_with(ChunkRunPrefix(7)));
  uint64_t blob = 0;
  ASSERT_TRUE(ParsePendingKey(PendingKey(99), &blob));
  EXPECT_EQ(blob, 99u);
  EXPECT_FALSE(ParsePendingKey("p123", &blob));
  EXPECT_EQ(PrefixUpperBound("ab"), "ac");
  EXPECT_EQ(PrefixUpperBound(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixUpperBound(std::string("\xff", 1)), "");
}

// Every strict prefix of a good value and a wrong version byte → DataLoss.
template <typename Decode>
void ExpectDamageIsDataLoss(const std::string& good, Decode decode) {
  ASSERT_THAT(decode(good), IsOk());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THAT(decode(good.substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")))
        << "truncated to " << n;
  }
  std::string wrong_version = good;
  wrong_version[0] = 9;
  EXPECT_THAT(decode(wrong_version),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("version 9")));
  EXPECT_THAT(decode(good + "x"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
}

TEST(RecordsTest, RunRecordRoundTrips) {
  RunRecord r;
  r.run_id = 12345;
  r.next_sequence = 77;
  r.info.framework = "paddle";
  r.info.framework_version = "2.6";
  r.info.device = "gpu";
  r.info.owner = "bob";
  r.info.labels = {{"a", "1"}, {"b", std::string("\0x", 2)}};
  r.info.created = absl::FromUnixMicros(-5);
  r.info.state = RunState::kAborted;
  r.info.overwrite = true;
  r.info.tensor_count = 70;
  r.info.total_bytes = 1ull << 40;
  const std::string v = EncodeRunRecord(r);
  EXPECT_EQ(static_cast<uint8_t>(v[0]), kRecordVersion);
  ASSERT_OK_AND_ASSIGN(RunRecord back, DecodeRunRecord("ns/run", v));
  EXPECT_EQ(back.run_id, r.run_id);
  EXPECT_EQ(back.next_sequence, 77u);
  EXPECT_EQ(back.info.name, "ns/run");
  EXPECT_EQ(back.info.framework, "paddle");
  EXPECT_EQ(back.info.framework_version, "2.6");
  EXPECT_EQ(back.info.device, "gpu");
  EXPECT_EQ(back.info.owner, "bob");
  EXPECT_EQ(back.info.labels, r.info.labels);
  EXPECT_EQ(back.info.created, r.info.created);
  EXPECT_EQ(back.info.state, RunState::kAborted);
  EXPECT_TRUE(back.info.overwrite);
  EXPECT_EQ(back.info.tensor_count, 70u);
  EXPECT_EQ(back.info.total_bytes, 1ull << 40);
  ExpectDamageIsDataLoss(
      v, [](const std::string& s) { return DecodeRunRecord("ns/run", s); });
  std::string bad_state = v;
  bad_state[4] = 7;  // version, run_id (2 bytes), next_sequence, state
  EXPECT_THAT(DecodeRunRecord("ns/run", bad_state).status().code(),
              absl::StatusCode::kDataLoss);
}

TEST(RecordsTest, RunRecordReferenceFlagIsAnOptionalTrailer) {
  RunRecord r;
  r.run_id = 3;
  r.info.owner = "bob";
  r.info.labels = {{"k", "v"}};
  const std::string plain = EncodeRunRecord(r);
  r.info.reference = true;
  const std::string flagged = EncodeRunRecord(r);
  // A run without flags is encoded exactly as before the flag existed (so
  // older builds still read it); the flag adds varint(1) at the end.
  EXPECT_EQ(flagged, plain + std::string(1, '\x01'));
  ASSERT_OK_AND_ASSIGN(RunRecord back, DecodeRunRecord("ns/run", plain));
  EXPECT_FALSE(back.info.reference);
  ASSERT_OK_AND_ASSIGN(back, DecodeRunRecord("ns/run", flagged));
  EXPECT_TRUE(back.info.reference);
  EXPECT_EQ(back.info.labels, r.info.labels);
  EXPECT_EQ(back.info.owner, "bob");
  // Unknown bits, an explicit zero, a truncated varint or bytes after the
  // flags are damage.
  for (const std::string& bad :
       {plain + std::string(1, '\x02'), plain + std::string(1, '\x00'),
        plain + std::string(1, '\x81'), flagged + "x"}) {
    EXPECT_THAT(DecodeRunRecord("ns/run", bad),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
  }
}

TEST(RecordsTest, RunStatsRoundTripAndApplyToTheirRunOnly) {
  const RunStats stats{/*run_id=*/300, /*next_sequence=*/9,
                       /*tensor_count=*/7, /*total_bytes=*/1ull << 40};
  const std::string v = EncodeRunStats(stats);
  // FORMAT.md: 0x01 varint(run-id) varint(next-sequence) varint(count)
  // varint(bytes); 300 = 0xac 0x02, 2^40 = 0x80 x5 0x80 0x20.
  EXPECT_EQ(v, std::string("\x01\xac\x02\x09\x07\x80\x80\x80\x80\x80\x20",
                           11));
  ExpectDamageIsDataLoss(v,
                         [](const std::string& s) { return DecodeRunStats(s); });
  RunRecord record;
  record.run_id = 300;
  record.info.name = "ns/run";
  record.info.labels = {{"k", "v"}};
  ASSERT_THAT(ApplyRunStats(v, record), IsOk());
  EXPECT_EQ(record.next_sequence, 9u);
  EXPECT_EQ(record.info.tensor_count, 7u);
  EXPECT_EQ(record.info.total_bytes, 1ull << 40);
  EXPECT_EQ(record.info.labels.size(), 1u);
  const RunStats back = StatsOf(record);
  EXPECT_EQ(EncodeRunStats(back), v);
  record.run_id = 301;
  EXPECT_THAT(ApplyRunStats(v, record),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("ns/run"), HasSubstr("run id 300"))));
  EXPECT_THAT(ApplyRunStats("\x01", record),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("ns/run")));
}

TEST(KeysTest, RunStatsKeysSortLikeRunKeys) {
  EXPECT_EQ(RunStatsKey("ns/a"), "sns/a");
  EXPECT_EQ(RunKey("ns/a"), "rns/a");
  EXPECT_LT(RunStatsKey("ns/a"), RunStatsKey("ns/b"));
  // A ListRuns prefix scan of stats keys covers exactly the runs it lists.
  EXPECT_TRUE(RunStatsKey("ns/abc").starts_with(RunStatsKey("ns/a")));
}

TEST(RecordsTest, AuthRecordsKeepEveryByte) {
  const std::string value("a\0\xff", 3);
  const std::string v = EncodeAuthRecord(value);
  EXPECT_EQ(v, std::string(1, static_cast<char>(kRecordVersion)) + value);
  EXPECT_THAT(DecodeAuthRecord(v), IsOkAndHolds(value));
  EXPECT_THAT(DecodeAuthRecord(EncodeAuthRecord("")), IsOkAndHolds(""));
  EXPECT_THAT(DecodeAuthRecord(""),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
  EXPECT_THAT(DecodeAuthRecord(std::string("\x09x")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("version 9")));
  EXPECT_EQ(AuthKey("abc"), "aabc");
  EXPECT_EQ(AuthKey(""), kAuthPrefix);
}

TEST(RecordsTest, IndexEntryRoundTrips) {
  IndexEntry e;
  e.header.dtype = DType::kBFloat16;
  e.header.shape = {3, 0, 1 << 20};
  e.header.byte_length = 0;
  e.header.crc32c = 0xdeadbeef;
  e.sequence = 5;
  e.blob_id = 1ull << 50;
  e.chunk_size = 1 << 20;
  const TensorAddress a{"c", "k", -2};
  const std::string v = EncodeIndexEntry(e);
  ASSERT_OK_AND_ASSIGN(IndexEntry back, DecodeIndexEntry(a, v));
  EXPECT_EQ(back.header.address, a);
  EXPECT_EQ(back.header.dtype, DType::kBFloat16);
  EXPECT_EQ(back.header.shape, e.header.shape);
  EXPECT_EQ(back.header.crc32c, 0xdeadbeefu);
  EXPECT_EQ(back.sequence, 5u);
  EXPECT_EQ(back.blob_id, 1ull << 50);
  EXPECT_EQ(back.chunk_size, 1u << 20);
  EXPECT_EQ(back.num_chunks(), 0u);
  ExpectDamageIsDataLoss(
      v, [&](const std::string& s) { return DecodeIndexEntry(a, s); });
  std::string bad_dtype = v;
  bad_dtype[1] = static_cast<char>(kNumDTypes);
  EXPECT_THAT(DecodeIndexEntry(a, bad_dtype).status().code(),
              absl::StatusCode::kDataLoss);
  e.header.byte_length = 10;
  e.chunk_size = 4;
  EXPECT_EQ(e.num_chunks(), 3u);
}

// A tensor in a segment file: the flags field follows; a chunked entry is
// written without it, byte for byte as before segment files.
TEST(RecordsTest, SegmentIndexEntryCarriesItsFlag) {
  IndexEntry e;
  e.header.dtype = DType::kFloat32;
  e.header.shape = {4};
  e.header.byte_length = 16;
  e.blob_id = 9;
  e.chunk_size = 1 << 20;
  const TensorAddress a{"c", "k", std::nullopt};
  const std::string chunked = EncodeIndexEntry(e);
  e.in_segment = true;
  const std::string segment = EncodeIndexEntry(e);
  EXPECT_EQ(segment, chunked + std::string("\x01"));
  ASSERT_OK_AND_ASSIGN(IndexEntry back, DecodeIndexEntry(a, segment));
  EXPECT_TRUE(back.in_segment);
  EXPECT_EQ(back.blob_id, 9u);
  EXPECT_EQ(back.num_chunks(), 0u);  // no chunks to delete or read
  ASSERT_OK_AND_ASSIGN(IndexEntry plain, DecodeIndexEntry(a, chunked));
  EXPECT_FALSE(plain.in_segment);
  EXPECT_EQ(plain.num_chunks(), 1u);
  for (const std::string& bad : {chunked + std::string("\x02"), chunked + std::string(1, '\0'),
                                 segment + std::string("\x01")}) {
    EXPECT_THAT(DecodeIndexEntry(a, bad),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("location flags")));
  }
}

TEST(RecordsTest, ReportSummaryRoundTrips) {
  StoredReport r;
  r.ref = "a/ref";
  r.cand = "a/cand";
  r.policy = "strict";
  r.backend = "cuda";
  r.passed = true;
  r.created = absl::FromUnixMicros(1700000000000001);
  r.tensors = 1;
  r.passed_tensors = 2;
  r.warned = 3;
  r.failed = 4;
  r.missing_in_ref = 5;
  r.missing_in_cand = 6;
  r.first_failure = TensorAddress{"c", "k", 9};
  r.renderings = {{"json", "{}"}};  // not part of the summary
  const std::string v = EncodeReportSummary(r);
  ASSERT_OK_AND_ASSIGN(StoredReport back, DecodeReportSummary("rpt-1", v));
  EXPECT_EQ(back.id, "rpt-1");
  EXPECT_EQ(back.ref, r.ref);
  EXPECT_EQ(back.cand, r.cand);
  EXPECT_EQ(back.policy, r.policy);
  EXPECT_EQ(back.backend, r.backend);
  EXPECT_TRUE(back.passed);
  EXPECT_EQ(back.created, r.created);
  EXPECT_EQ(back.tensors + back.passed_tensors + back.warned + back.failed +
                back.missing_in_ref + back.missing_in_cand,
            21u);
  EXPECT_EQ(back.missing_in_cand, 6u);
  EXPECT_EQ(back.first_failure, r.first_failure);
  EXPECT_TRUE(back.renderings.empty());
  EXPECT_EQ(back.policy_hash, "");
  ExpectDamageIsDataLoss(
      v, [](const std::string& s) { return DecodeReportSummary("rpt-1", s); });

  // With the optional trailing policy hash.
  r.policy_hash = std::string(64, 'a');
  const std::string w = EncodeReportSummary(r);
  ASSERT_OK_AND_ASSIGN(back, DecodeReportSummary("rpt-1", w));
  EXPECT_EQ(back.policy_hash, r.policy_hash);
  EXPECT_EQ(back.first_failure, r.first_failure);
  EXPECT_THAT(DecodeReportSummary("rpt-1", w + "x").status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
  EXPECT_THAT(DecodeReportSummary("rpt-1", w.substr(0, w.size() - 1)).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
}

TEST(RecordsTest, SmallRecords) {
  ASSERT_OK_AND_ASSIGN(uint64_t next, DecodeCounter(EncodeCounter(1ull << 40)));
  EXPECT_EQ(next, 1ull << 40);
  ExpectDamageIsDataLoss(EncodeCounter(300),
                         [](const std::string& s) { return DecodeCounter(s); });
  ASSERT_OK_AND_ASSIGN(uint64_t run,
                       DecodePendingMarker(EncodePendingMarker(3)));
  EXPECT_EQ(run, 3u);
  ExpectDamageIsDataLoss(EncodePendingMarker(300), [](const std::string& s) {
    return DecodePendingMarker(s);
  });
  ASSERT_OK_AND_ASSIGN(
      std::string text,
      DecodeRendering(EncodeRendering(std::string("a\0b", 3))));
  EXPECT_EQ(text, std::string("a\0b", 3));
  EXPECT_THAT(DecodeRendering("").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(CheckFormatRecord(EncodeFormatRecord()), IsOk());
  EXPECT_EQ(EncodeFormatRecord(), std::string("\x03reprod-store"));
  // Versions 1 (no run stats records) and 2 (no segment files) are still read.
  EXPECT_THAT(CheckFormatRecord(std::string("\x01reprod-store")), IsOk());
  EXPECT_THAT(CheckFormatRecord(std::string("\x02reprod-store")), IsOk());
  for (const char version : {'\x00', '\x04'}) {
    std::string other = EncodeFormatRecord();
    other[0] = version;
    EXPECT_THAT(CheckFormatRecord(other),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr(absl::StrCat("version ", int{version}))));
  }
  EXPECT_THAT(CheckFormatRecord("garbage").code(), absl::StatusCode::kDataLoss);
}

TEST(RecordsTest, ChunkValuesAreChecked) {
  const std::string payload = "0123456789";
  char header[kChunkHeaderSize];
  EncodeChunkHeader(Crc32c(payload), header);
  const std::string value = std::string(header, kChunkHeaderSize) + payload;
  ASSERT_OK_AND_ASSIGN(std::string_view back, DecodeChunk(value, 10));
  EXPECT_EQ(back, payload);
  EXPECT_THAT(DecodeChunk(value, 11),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("holds 10 bytes, expected 11")));
  std::string flipped = value;
  flipped.back() ^= 1;
  EXPECT_THAT(DecodeChunk(flipped, 10),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
  std::string wrong_version = value;
  wrong_version[0] = 2;
  EXPECT_THAT(DecodeChunk(wrong_version, 10),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("version 2")));
  EXPECT_THAT(DecodeChunk("\x01", 0).status().code(),
              absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace reprod::storage::internal

// Encoding of keys and records (storage/FORMAT.md): round trips, ordering,
// and DataLoss on every kind of damage.
#include "storage/rocksdb/internal/records.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/placement.h"
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
      {"bp", "a/b", std::nullopt, 1},
      {"bp", "a/b", std::nullopt, kMaxRank},
      {"bp", "a/b", std::numeric_limits<int64_t>::min()},
      {"bp", "a/b", -1},
      {"bp", "a/b", 0},
      {"bp", "a/b", 7},
      {"bp", "a/b", 7, 1},
      {"bp", "a/b", 7, 256},
      {"bp", "a/b", std::numeric_limits<int64_t>::max()},
      {"bp", "a/b", std::numeric_limits<int64_t>::max(), 3},
      {"bp", "a/b/c", std::nullopt},
      {"bp_align", "a", std::nullopt},
  };
  std::string previous;
  for (size_t i = 0; i < addresses.size(); ++i) {
    const TensorAddress& a = addresses[i];
    // The list is in address order (checkpoint, key, step, rank); keys sort
    // the same way.
    if (i > 0) {
      EXPECT_LT(addresses[i - 1], a) << AddressToString(a);
    }
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

std::string Bytes(std::initializer_list<uint8_t> bytes) {
  return std::string(bytes.begin(), bytes.end());
}

// Rank 0 has no tag: its key is byte for byte what builds before ranks wrote
// (no migration). Other ranks append 0x02 be32(rank).
TEST(KeysTest, RankTagOnlyForNonZeroRanks) {
  const std::string run42 = Bytes({'t', 0, 0, 0, 0, 0, 0, 0, 42});
  const std::string step5 = run42 + Bytes({'c', 0, 'k', 0, 0x01, 0x80, 0, 0, 0, 0, 0, 0, 5});
  const std::string no_step = run42 + Bytes({'c', 0, 'k', 0, 0x00});
  EXPECT_EQ(TensorKey(42, {"c", "k", 5}), step5);
  EXPECT_EQ(TensorKey(42, {"c", "k", 5, 0}), step5);
  EXPECT_EQ(TensorKey(42, {"c", "k", std::nullopt, 0}), no_step);
  EXPECT_EQ(TensorKey(42, {"c", "k", 5, 1}), step5 + Bytes({0x02, 0, 0, 0, 1}));
  EXPECT_EQ(TensorKey(42, {"c", "k", std::nullopt, 0x0a0b0c}),
            no_step + Bytes({0x02, 0x00, 0x0a, 0x0b, 0x0c}));
  EXPECT_THAT(ParseTensorKey(step5 + Bytes({0x02, 0, 0, 0, 1})),
              IsOkAndHolds(TensorAddress{"c", "k", 5, 1}));
  EXPECT_THAT(ParseTensorKey(no_step + Bytes({0x02, 0x00, 0x0f, 0xff, 0xff})),
              IsOkAndHolds(TensorAddress{"c", "k", std::nullopt, kMaxRank}));
  // A tagged 0 would be a second key for the rank-0 tensor; ranks above
  // kMaxRank are never stored.
  EXPECT_THAT(ParseTensorKey(step5 + Bytes({0x02, 0, 0, 0, 0})),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank tag holds 0")));
  EXPECT_THAT(ParseTensorKey(no_step + Bytes({0x02, 0x00, 0x10, 0x00, 0x00})),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank tag holds 1048576")));
  // An unknown tag, a partial rank, trailing bytes.
  const std::string rank1 = step5 + Bytes({0x02, 0, 0, 0, 1});
  for (const std::string& bad : {step5 + Bytes({0x03, 0, 0, 0, 1}), rank1 + "x",
                                 no_step + Bytes({0x01, 0, 0, 0, 1})}) {
    EXPECT_THAT(ParseTensorKey(bad), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("malformed")));
  }
  for (size_t n = step5.size() + 1; n < rank1.size(); ++n) {
    EXPECT_THAT(ParseTensorKey(rank1.substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("malformed")))
        << n;
  }
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
  // Zero, an unknown bit, a second flags field; bit 1 without a placement.
  for (const std::string& bad : {chunked + std::string(1, '\0'), chunked + std::string("\x04"),
                                 segment + std::string("\x01")}) {
    EXPECT_THAT(DecodeIndexEntry(a, bad),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt tensor index")));
  }
  EXPECT_THAT(DecodeIndexEntry(a, chunked + std::string("\x02")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad placement")));
}

// A placement follows flag bit 1; an entry without one (kNone) is written as
// before placements existed.
TEST(RecordsTest, IndexEntryCarriesItsPlacement) {
  IndexEntry e;
  e.header.dtype = DType::kFloat32;
  e.header.shape = {4, 300};
  e.header.byte_length = 4800;
  e.blob_id = 9;
  e.chunk_size = 1 << 20;
  const TensorAddress a{"c", "k", 3, 1};
  const std::string plain = EncodeIndexEntry(e);
  ASSERT_OK_AND_ASSIGN(IndexEntry back, DecodeIndexEntry(a, plain));
  EXPECT_EQ(back.header.placement, Placement{});
  EXPECT_EQ(back.header.address, a);

  // Rows 4..7 of 8 x 300: u8(kind 1) varint(dim 0) varint(n 2)
  // varint(8) varint(300 = 0xac 0x02) varint(4) varint(0).
  e.header.placement = Placement::Shard(0, {8, 300}, {4, 0});
  const std::string shard = EncodeIndexEntry(e);
  EXPECT_EQ(shard, plain + Bytes({0x02, 0x01, 0x00, 0x02, 0x08, 0xac, 0x02, 0x04, 0x00}));
  ASSERT_OK_AND_ASSIGN(back, DecodeIndexEntry(a, shard));
  EXPECT_EQ(back.header.placement, e.header.placement);
  EXPECT_FALSE(back.in_segment);

  e.in_segment = true;
  e.header.placement = Placement::Replicate();
  const std::string replicate = EncodeIndexEntry(e);
  EXPECT_EQ(replicate, plain + Bytes({0x03, 0x02, 0x00, 0x00}));
  ASSERT_OK_AND_ASSIGN(back, DecodeIndexEntry(a, replicate));
  EXPECT_EQ(back.header.placement, Placement::Replicate());
  EXPECT_TRUE(back.in_segment);
  EXPECT_EQ(back.num_chunks(), 0u);

  e.in_segment = false;
  e.header.placement = Placement::Partial();
  ASSERT_OK_AND_ASSIGN(back, DecodeIndexEntry(a, EncodeIndexEntry(e)));
  EXPECT_EQ(back.header.placement, Placement::Partial());

  // Every cut inside the placement, trailing bytes, kind 0 (never written)
  // or 4 (unknown), a shard that does not fit its global shape.
  for (size_t n = plain.size() + 1; n < shard.size(); ++n) {
    EXPECT_THAT(DecodeIndexEntry(a, shard.substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt tensor index"))) << n;
  }
  EXPECT_THAT(DecodeIndexEntry(a, shard + "x"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("trailing")));
  for (uint8_t kind : {0, 4}) {
    std::string bad = shard;
    bad[plain.size() + 1] = static_cast<char>(kind);
    EXPECT_THAT(DecodeIndexEntry(a, bad),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad placement")));
  }
  std::string too_far = shard;
  too_far[plain.size() + 7] = 0x05;  // offset 5 + 4 rows > 8
  EXPECT_THAT(DecodeIndexEntry(a, too_far),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("exceeds the global size")));
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

// A first failure at rank 0 is written as before ranks existed; another
// rank sets bit 1 of the address byte and follows the step as a varint.
TEST(RecordsTest, ReportFirstFailureKeepsItsRank) {
  StoredReport r;
  r.ref = "a/ref";
  r.cand = "a/cand";
  r.first_failure = TensorAddress{"c", "k", 9};
  const std::string rank0 = EncodeReportSummary(r);
  // ... u8(has-failure 1) str(c) str(k) u8(flags 1) fixed64(9).
  EXPECT_TRUE(rank0.ends_with(Bytes({1, 1, 'c', 1, 'k', 1, 9, 0, 0, 0, 0, 0, 0, 0})));
  r.first_failure->rank = 300;
  const std::string rank300 = EncodeReportSummary(r);
  EXPECT_EQ(rank300.substr(0, rank0.size() - 9), rank0.substr(0, rank0.size() - 9));
  EXPECT_TRUE(rank300.ends_with(Bytes({'k', 3, 9, 0, 0, 0, 0, 0, 0, 0, 0xac, 0x02})));
  ASSERT_OK_AND_ASSIGN(StoredReport back, DecodeReportSummary("rpt-1", rank300));
  EXPECT_EQ(back.first_failure, r.first_failure);
  ExpectDamageIsDataLoss(
      rank300, [](const std::string& s) { return DecodeReportSummary("rpt-1", s); });
  r.first_failure = TensorAddress{"c", "k", std::nullopt, 2};
  ASSERT_OK_AND_ASSIGN(back, DecodeReportSummary("rpt-1", EncodeReportSummary(r)));
  EXPECT_EQ(back.first_failure, r.first_failure);
  // The bit with a rank of 0 (never written), an unknown bit.
  std::string zero = EncodeReportSummary(r);
  zero.back() = 0;
  EXPECT_THAT(DecodeReportSummary("rpt-1", zero).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("first_failure")));
  std::string unknown = rank0;
  unknown[rank0.size() - 9] = 0x05;
  EXPECT_THAT(DecodeReportSummary("rpt-1", unknown).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("first_failure")));
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

// AuditLog against the memory store and a RocksDB store in a temp dir:
// chains verify, tampering (a flipped byte, a removed record, a forged
// record) is named by sequence, signed runs whose content changes are named.
#include "server/auth/audit_log.h"

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "common/placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "storage/testing/store_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server::auth {
namespace {

using ::reprod::storage::testing::HeaderFor;
using ::reprod::storage::testing::WriteInPieces;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

const absl::Time kT0 = absl::FromUnixSeconds(1800000000);

AuditEntry Entry(std::string verb, std::string object, absl::Status result = absl::OkStatus()) {
  AuditEntry e;
  e.actor = {"team42 CI", Role::kSubmitter};
  e.verb = std::move(verb);
  e.object = std::move(object);
  e.result = std::move(result);
  return e;
}

// Runs each test once on a memory store and once on RocksDB stores in
// fresh temp dirs (NewStore may be called again for a second store).
class AuditLogTest : public ::testing::TestWithParam<bool> {
 protected:
  bool rocksdb() const { return GetParam(); }

  std::unique_ptr<storage::Store> NewStore() {
    if (!rocksdb()) return storage::CreateMemoryStore();
    std::string dir = (std::filesystem::temp_directory_path() / "audit_XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) return nullptr;
    dirs_.push_back(dir);
    absl::StatusOr<std::unique_ptr<storage::Store>> s = storage::OpenRocksDbStore(dir, {});
    return s.ok() ? std::move(*s) : nullptr;
  }

  void SetUp() override {
    store_ = NewStore();
    ASSERT_NE(store_, nullptr);
    ASSERT_OK_AND_ASSIGN(log_, AuditLog::Open(*store_));
  }

  void TearDown() override {
    log_.reset();
    store_.reset();
    for (const std::string& d : dirs_) std::filesystem::remove_all(d);
  }

  // Appends n records: verbs cycle, objects "team42/run-<i % 10>".
  void AppendMany(AuditLog& log, int n) {
    const char* verbs[] = {"create", "push", "seal", "abort", "delete", "publish"};
    for (int i = 0; i < n; ++i) {
      ASSERT_OK_AND_ASSIGN(AuditRecord r,
                           log.Append(Entry(verbs[i % 6], absl::StrCat("team42/run-", i % 10)),
                                      kT0 + absl::Seconds(i)));
      ASSERT_EQ(r.sequence, static_cast<uint64_t>(i));
    }
  }

  // Writes one uint8 tensor into `run` (created when absent).
  void PutTensor(std::string_view run, storage::TensorAddress address, std::vector<uint8_t> bytes,
                 storage::CommitKind want = storage::CommitKind::kStored) {
    if (!store_->GetRun(run).ok()) {
      storage::RunInfo info;
      info.name = std::string(run);
      info.overwrite = true;
      ASSERT_THAT(store_->CreateRun(info), IsOk());
    }
    ASSERT_OK_AND_ASSIGN(storage::CommitResult done,
                         WriteInPieces(*store_, run, HeaderFor(address, bytes), bytes, 3));
    ASSERT_EQ(done.kind, want);
  }

  std::vector<std::string> dirs_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<AuditLog> log_;
};

INSTANTIATE_TEST_SUITE_P(Stores, AuditLogTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "RocksDb" : "Memory"; });

TEST_P(AuditLogTest, AThousandRecordsChainAndVerify) {
  AppendMany(*log_, 1000);
  EXPECT_THAT(log_->Verify(), IsOk());

  ASSERT_OK_AND_ASSIGN(auto all, store_->ListAuthRecords(kAuditKeyPrefix));
  ASSERT_THAT(all, SizeIs(1000));
  EXPECT_EQ(all[0].first, "audit/00000000000000000000");
  EXPECT_EQ(all[999].first, "audit/00000000000000000999");
  ASSERT_OK_AND_ASSIGN(AuditRecord r0, DecodeAuditRecord(all[0].first, all[0].second));
  ASSERT_OK_AND_ASSIGN(AuditRecord r1, DecodeAuditRecord(all[1].first, all[1].second));
  EXPECT_EQ(r0.prev_hash, std::string(64, '0'));
  EXPECT_EQ(r1.prev_hash, r0.hash);
  EXPECT_EQ(r1.verb, "push");
  EXPECT_EQ(r1.object, "team42/run-1");
  EXPECT_EQ(r1.time, kT0 + absl::Seconds(1));
  EXPECT_EQ(r1.result, "ok");

  // A reopened log continues the chain at the head.
  ASSERT_OK_AND_ASSIGN(auto reopened, AuditLog::Open(*store_));
  ASSERT_OK_AND_ASSIGN(AuditRecord next, reopened->Append(Entry("token", "judges"), kT0));
  EXPECT_EQ(next.sequence, 1000u);
  ASSERT_OK_AND_ASSIGN(AuditRecord r999, DecodeAuditRecord(all[999].first, all[999].second));
  EXPECT_EQ(next.prev_hash, r999.hash);
  EXPECT_THAT(reopened->Verify(), IsOk());

  // Newest first, filtered by object.
  ASSERT_OK_AND_ASSIGN(std::vector<AuditRecord> run3, log_->List("team42/run-3", 0));
  ASSERT_THAT(run3, SizeIs(100));
  EXPECT_EQ(run3.front().sequence, 993u);
  EXPECT_EQ(run3.back().sequence, 3u);
  ASSERT_OK_AND_ASSIGN(std::vector<AuditRecord> last, log_->List("", 2));
  ASSERT_THAT(last, SizeIs(2));
  EXPECT_EQ(last[0].sequence, 1000u);
  EXPECT_EQ(last[1].sequence, 999u);
}

TEST_P(AuditLogTest, FlippedByteNamesItsRecord) {
  AppendMany(*log_, 40);
  const std::string key = AuditKey(17);
  ASSERT_OK_AND_ASSIGN(std::string value, store_->GetAuthRecord(key));
  const std::string original = value;

  // One byte of the object's value: "team42/run-7" -> "team42/run-6".
  const size_t at = value.find("run-7");
  ASSERT_NE(at, std::string::npos);
  value[at + 4] ^= 0x01;
  ASSERT_THAT(store_->PutAuthRecord(key, value), IsOk());
  EXPECT_THAT(log_->Verify(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 17 "), HasSubstr("hash mismatch"))));

  // One byte of the JSON structure: undecodable, still named.
  value = original;
  value[0] ^= 0x01;  // '{' -> 'z'
  ASSERT_THAT(store_->PutAuthRecord(key, value), IsOk());
  EXPECT_THAT(log_->Verify(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 17 "), HasSubstr("undecodable"))));

  // One byte of the stored hash itself.
  value = original;
  const size_t h = value.find("\"hash\":\"");
  ASSERT_NE(h, std::string::npos);
  char& digit = value[h + 8];
  digit = digit == '0' ? '1' : '0';
  ASSERT_THAT(store_->PutAuthRecord(key, value), IsOk());
  EXPECT_THAT(log_->Verify(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 17 "), HasSubstr("hash mismatch"))));

  ASSERT_THAT(store_->PutAuthRecord(key, original), IsOk());
  EXPECT_THAT(log_->Verify(), IsOk());
}

TEST_P(AuditLogTest, ForgedRecordWithItsOwnHashBreaksTheNextLink) {
  AppendMany(*log_, 10);
  ASSERT_OK_AND_ASSIGN(std::string value, store_->GetAuthRecord(AuditKey(4)));
  ASSERT_OK_AND_ASSIGN(AuditRecord r, DecodeAuditRecord(AuditKey(4), value));
  r.result = "PERMISSION_DENIED";
  r.hash = ComputeAuditHash(r);  // self-consistent forgery
  ASSERT_THAT(store_->PutAuthRecord(AuditKey(4), EncodeAuditRecord(r)), IsOk());
  EXPECT_THAT(log_->Verify(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 5 "), HasSubstr("broken link"))));
}

TEST_P(AuditLogTest, RecordRemovedFromTheMiddleIsMissing) {
  AppendMany(*log_, 1000);
  // The Store has no auth-record delete: copy every record but 500 into a
  // second store of the same kind, which is that store with 500 removed.
  std::unique_ptr<storage::Store> copy = NewStore();
  ASSERT_NE(copy, nullptr);
  ASSERT_OK_AND_ASSIGN(auto all, store_->ListAuthRecords(kAuditKeyPrefix));
  for (const auto& [key, value] : all) {
    if (key != AuditKey(500)) {
      ASSERT_THAT(copy->PutAuthRecord(key, value), IsOk());
    }
  }
  ASSERT_OK_AND_ASSIGN(auto copied_log, AuditLog::Open(*copy));
  EXPECT_THAT(copied_log->Verify(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 501 "), HasSubstr("missing sequence"),
                             HasSubstr("record 500 is missing"))));
  // Without the first record as well: record 1 is named.
  std::unique_ptr<storage::Store> headless = NewStore();
  ASSERT_NE(headless, nullptr);
  for (const auto& [key, value] : all) {
    if (key != AuditKey(0)) {
      ASSERT_THAT(headless->PutAuthRecord(key, value), IsOk());
    }
  }
  ASSERT_OK_AND_ASSIGN(auto headless_log, AuditLog::Open(*headless));
  EXPECT_THAT(headless_log->Verify(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 1 "), HasSubstr("record 0 is missing"))));
}

TEST_P(AuditLogTest, AnExistingSequenceIsNeverReplaced) {
  // Two writers on one store (replicas on a shared postgres+s3 store): the
  // second opened before the first appended, so it tries sequence 0 too.
  ASSERT_OK_AND_ASSIGN(auto second, AuditLog::Open(*store_));  // same head: empty
  ASSERT_OK_AND_ASSIGN(AuditRecord first, log_->Append(Entry("create", "team42/a"), kT0));
  ASSERT_OK_AND_ASSIGN(std::string stored, store_->GetAuthRecord(AuditKey(0)));

  // Sequence 0 is not replaced: the second writer chains after it.
  ASSERT_OK_AND_ASSIGN(AuditRecord moved, second->Append(Entry("delete", "team42/a"), kT0));
  EXPECT_EQ(moved.sequence, 1u);
  EXPECT_EQ(moved.prev_hash, first.hash);
  ASSERT_OK_AND_ASSIGN(std::string after, store_->GetAuthRecord(AuditKey(0)));
  EXPECT_EQ(after, stored);

  // The first writer, now behind, catches up the same way; the records
  // form one chain that verifies.
  ASSERT_OK_AND_ASSIGN(AuditRecord r2, log_->Append(Entry("push", "team42/a"), kT0));
  EXPECT_EQ(r2.sequence, 2u);
  EXPECT_EQ(r2.prev_hash, moved.hash);
  ASSERT_OK_AND_ASSIGN(auto all, store_->ListAuthRecords(kAuditKeyPrefix));
  EXPECT_THAT(all, SizeIs(3));
  EXPECT_THAT(log_->Verify(), IsOk());
  EXPECT_THAT(second->Verify(), IsOk());
}

TEST_P(AuditLogTest, WritersRacingOnOneStoreFormOneChain) {
  ASSERT_OK_AND_ASSIGN(auto second, AuditLog::Open(*store_));
  constexpr int kEach = 60;
  std::thread other([&] {
    for (int i = 0; i < kEach; ++i) {
      ASSERT_THAT(second->Append(Entry("push", "team42/b"), kT0).status(), IsOk());
    }
  });
  for (int i = 0; i < kEach; ++i) {
    ASSERT_THAT(log_->Append(Entry("seal", "team42/a"), kT0).status(), IsOk());
  }
  other.join();
  ASSERT_OK_AND_ASSIGN(auto all, store_->ListAuthRecords(kAuditKeyPrefix));
  EXPECT_THAT(all, SizeIs(2 * kEach));
  EXPECT_EQ(all.back().first, AuditKey(2 * kEach - 1));
  EXPECT_THAT(log_->Verify(), IsOk());
}

TEST_P(AuditLogTest, ResultsAndBadEntries) {
  ASSERT_OK_AND_ASSIGN(AuditRecord r,
                       log_->Append(Entry("seal", "team42/a", absl::NotFoundError("x")), kT0));
  EXPECT_EQ(r.result, "NOT_FOUND");
  EXPECT_THAT(log_->Append(Entry("", "team42/a"), kT0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty verb")));
  EXPECT_THAT(log_->Append(Entry("push", std::string("team42/\n")), kT0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("object")));
  ASSERT_OK_AND_ASSIGN(auto all, store_->ListAuthRecords(kAuditKeyPrefix));
  EXPECT_THAT(all, SizeIs(1));
}

TEST(AuditEncodingTest, CanonicalEncodingIsLengthPrefixedInFieldOrder) {
  AuditRecord r;
  r.sequence = 7;
  r.time = absl::FromUnixNanos(5);
  r.actor = {"ci", Role::kJudge};
  r.verb = "sign";
  r.object = "rpt-1";
  r.result = "ok";
  r.details = {{"b", "2"}, {"a", "1"}};
  r.prev_hash = std::string(64, 'f');
  const std::string want =
      absl::StrCat("15:reprod-audit-v1;1:7;1:5;2:ci;5:judge;4:sign;5:rpt-1;2:ok;",
                   "64:", std::string(64, 'f'), ";1:2;1:a;1:1;1:b;1:2;");
  EXPECT_EQ(CanonicalAuditEncoding(r), want);
  EXPECT_EQ(ComputeAuditHash(r), ToHex(HashToken(want)));
  r.hash = "not part of the encoding";
  EXPECT_EQ(CanonicalAuditEncoding(r), want);
}

TEST_P(AuditLogTest, RunDigestCoversTheIndexInAddressOrder) {
  // Same tensors in two arrival orders: same digest.
  PutTensor("team42/x", {"fwd", "logits", std::nullopt}, {1, 2, 3});
  PutTensor("team42/x", {"bp", "loss", 2}, {9});
  PutTensor("team42/y", {"bp", "loss", 2}, {9});
  PutTensor("team42/y", {"fwd", "logits", std::nullopt}, {1, 2, 3});
  ASSERT_OK_AND_ASSIGN(std::string x, RunDigest(*store_, "team42/x"));
  ASSERT_OK_AND_ASSIGN(std::string y, RunDigest(*store_, "team42/y"));
  EXPECT_EQ(x, y);

  // The encoding, written out by hand.
  const std::string want =
      absl::StrCat("20:reprod-run-digest-v1;1:2;", "2:bp;4:loss;1:2;5:uint8;1:1;8:",
                   absl::StrFormat("%08x", Crc32c(std::string_view("\x09", 1))), ";",
                   "3:fwd;6:logits;1:-;5:uint8;1:3;8:",
                   absl::StrFormat("%08x", Crc32c(std::string_view("\x01\x02\x03", 3))), ";");
  EXPECT_EQ(x, ToHex(HashToken(want)));
  EXPECT_THAT(RunDigest(*store_, "team42/none"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/none")));
}

// A rank or a placement is part of what a digest covers: moving a tensor to
// another rank or changing its placement changes the digest. Rank 0 without
// a placement is encoded as before ranks existed.
TEST_P(AuditLogTest, RunDigestCoversRanksAndPlacements) {
  PutTensor("team42/r0", {"fwd", "logits", 3}, {1, 2, 3});
  PutTensor("team42/r1", {"fwd", "logits", 3, 1}, {1, 2, 3});
  ASSERT_OK_AND_ASSIGN(std::string r0, RunDigest(*store_, "team42/r0"));
  ASSERT_OK_AND_ASSIGN(std::string r1, RunDigest(*store_, "team42/r1"));
  const std::string crc = absl::StrFormat("%08x", Crc32c(std::string_view("\x01\x02\x03", 3)));
  const std::string base =
      absl::StrCat("20:reprod-run-digest-v1;1:1;3:fwd;6:logits;1:3;5:uint8;1:3;8:", crc, ";");
  EXPECT_EQ(r0, ToHex(HashToken(base)));
  EXPECT_EQ(r1, ToHex(HashToken(base + "6:rank=1;")));

  storage::RunInfo info;
  info.name = "team42/shard";
  ASSERT_THAT(store_->CreateRun(info), IsOk());
  const std::vector<uint8_t> bytes = {1, 2, 3};
  storage::TensorHeader h = HeaderFor({"fwd", "logits", 3, 1}, bytes);
  h.placement = Placement::Shard(0, {6}, {3});
  ASSERT_THAT(WriteInPieces(*store_, "team42/shard", h, bytes, 3), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string shard, RunDigest(*store_, "team42/shard"));
  EXPECT_EQ(shard,
            ToHex(HashToken(base + "6:rank=1;34:placement=shard(0) of (6,) at (3,);")));
}

TEST_P(AuditLogTest, VerifySignaturesNamesTheRunChangedAfterSigning) {
  PutTensor("ref/bert-torch", {"fwd", "logits", std::nullopt}, {1, 2, 3, 4});
  PutTensor("team42/bert-paddle", {"fwd", "logits", std::nullopt}, {1, 2, 3, 4});
  PutTensor("team42/bert-paddle", {"bp", "loss", 0}, {5});
  AppendMany(*log_, 5);
  SignedVerdict v;
  v.report_id = "rpt-00000000000000aa";
  v.ref_run = "ref/bert-torch";
  v.cand_run = "team42/bert-paddle";
  ASSERT_OK_AND_ASSIGN(v.ref_run_digest, RunDigest(*store_, v.ref_run));
  ASSERT_OK_AND_ASSIGN(v.cand_run_digest, RunDigest(*store_, v.cand_run));
  v.policy_hash = std::string(64, 'c');
  v.server_version = "0.1.0";
  ASSERT_OK_AND_ASSIGN(AuditRecord sign, log_->SignVerdict(v, {"judges", Role::kJudge}, kT0));
  EXPECT_EQ(sign.sequence, 5u);
  EXPECT_EQ(sign.verb, "sign");
  EXPECT_EQ(sign.object, v.report_id);
  ASSERT_OK_AND_ASSIGN(std::vector<AuditRecord> head, log_->List("", 2));
  EXPECT_EQ(sign.prev_hash, head[1].hash);  // the chain head at signing
  EXPECT_EQ(sign.details.at("policy_hash"), v.policy_hash);
  ASSERT_OK_AND_ASSIGN(std::vector<AuditRecord> of_cand, log_->List(v.cand_run, 0));
  ASSERT_THAT(of_cand, SizeIs(1));
  EXPECT_EQ(of_cand[0].sequence, 5u);
  EXPECT_THAT(log_->VerifySignatures(), IsOk());
  EXPECT_THAT(log_->Verify(), IsOk());

  // Same bytes again: an idempotent resend changes nothing.
  PutTensor("team42/bert-paddle", {"bp", "loss", 0}, {5}, storage::CommitKind::kAlreadyPresent);
  EXPECT_THAT(log_->VerifySignatures(), IsOk());

  // Different bytes under the same address (the run allows overwrite).
  PutTensor("team42/bert-paddle", {"bp", "loss", 0}, {6}, storage::CommitKind::kReplaced);
  EXPECT_THAT(log_->VerifySignatures(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 5 "), HasSubstr(v.report_id),
                             HasSubstr("run team42/bert-paddle changed after signing"),
                             Not(HasSubstr("ref/bert-torch")))));
  PutTensor("team42/bert-paddle", {"bp", "loss", 0}, {5}, storage::CommitKind::kReplaced);
  EXPECT_THAT(log_->VerifySignatures(), IsOk());

  // Deleted and re-added with another shape: the reference run is named.
  ASSERT_THAT(store_->DeleteRun("ref/bert-torch").status(), IsOk());
  EXPECT_THAT(log_->VerifySignatures(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("run ref/bert-torch was deleted after signing")));
  PutTensor("ref/bert-torch", {"fwd", "logits", std::nullopt}, {1, 2, 3, 4, 0});
  EXPECT_THAT(
      log_->VerifySignatures(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("run ref/bert-torch changed after signing")));
  // The chain itself is intact: the tampering was in the runs.
  EXPECT_THAT(log_->Verify(), IsOk());
}

TEST_P(AuditLogTest, SignVerdictChecksItsFields) {
  SignedVerdict v;
  v.report_id = "rpt-1";
  v.ref_run = "a/b";
  v.cand_run = "a/c";
  v.ref_run_digest = "abc";
  v.cand_run_digest = std::string(64, '0');
  EXPECT_THAT(log_->SignVerdict(v, {"j", Role::kJudge}, kT0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rpt-1")));
}

}  // namespace
}  // namespace reprod::server::auth

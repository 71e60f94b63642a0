// review_ops.h against real stores: the audit chain (1,000 records, a
// flipped byte in a stored record), publishing, tokens (never recorded), and
// signed verdicts whose run digests are recomputed here from the tensor
// index (an independent oracle) and whose runs' tensor bytes are checked
// after a byte of a stored chunk is flipped on disk.
#include "server/review_ops.h"

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/audit_log.h"
#include "server/auth/token.h"
#include "server/auth/token_store.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/internal/test_hooks.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "storage/testing/store_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::reprod::storage::testing::HeaderFor;
using ::reprod::storage::testing::WriteInPieces;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr char kRef[] = "upstream/bert-torch";
constexpr char kCand[] = "team42/bert-paddle";

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 7);
  return out;
}

auth::Principal Judge() {
  auth::Principal p;
  p.id = "0123456789ab";
  p.label = "the judge";
  p.role = auth::Role::kJudge;
  return p;
}

// The RunDigest encoding written out independently: "<len>:<bytes>;" per
// field, tensors sorted by (checkpoint, key, step).
std::string Field(const std::string& s) { return absl::StrCat(s.size(), ":", s, ";"); }

std::string ExpectedDigest(storage::Store& store, const std::string& run) {
  absl::StatusOr<std::vector<storage::TensorMeta>> tensors = store.ListTensors(run);
  EXPECT_THAT(tensors, IsOk());
  std::sort(tensors->begin(), tensors->end(), [](const auto& a, const auto& b) {
    return a.header.address < b.header.address;
  });
  std::string out = Field("reprod-run-digest-v1") + Field(absl::StrCat(tensors->size()));
  for (const storage::TensorMeta& t : *tensors) {
    const storage::TensorHeader& h = t.header;
    out += Field(h.address.checkpoint) + Field(h.address.key) +
           Field(h.address.step ? absl::StrCat(*h.address.step) : "-") +
           Field(std::string(DTypeName(h.dtype))) + Field(absl::StrJoin(h.shape, ",")) +
           Field(absl::StrFormat("%08x", h.crc32c));
  }
  return auth::ToHex(auth::HashToken(out));
}

// A store that hands out one run's tensor bytes with the first byte
// flipped, as a disk whose chunk checksums were forged along with the data
// would: only the tensor-level crc32c check can see it.
class FlippingStore : public storage::Store {
 public:
  FlippingStore(storage::Store& inner, std::string run) : inner_(inner), run_(std::move(run)) {}

  absl::Status CreateRun(const storage::RunInfo& r) override { return inner_.CreateRun(r); }
  absl::StatusOr<storage::RunInfo> GetRun(std::string_view n) override { return inner_.GetRun(n); }
  absl::StatusOr<std::vector<storage::RunInfo>> ListRuns(std::string_view p) override {
    return inner_.ListRuns(p);
  }
  absl::StatusOr<storage::RunInfo> SealRun(std::string_view n, storage::RunState s) override {
    return inner_.SealRun(n, s);
  }
  absl::StatusOr<uint64_t> DeleteRun(std::string_view n) override { return inner_.DeleteRun(n); }
  absl::StatusOr<storage::RunInfo> SetRunReference(std::string_view n, bool r) override {
    return inner_.SetRunReference(n, r);
  }
  absl::StatusOr<std::unique_ptr<storage::TensorWriter>> BeginTensor(
      std::string_view run, const storage::TensorHeader& h) override {
    return inner_.BeginTensor(run, h);
  }
  absl::StatusOr<std::vector<storage::TensorMeta>> ListTensors(std::string_view run,
                                                               std::string_view cp) override {
    return inner_.ListTensors(run, cp);
  }
  absl::StatusOr<std::unique_ptr<storage::TensorReader>> OpenTensor(
      std::string_view run, const storage::TensorAddress& a) override {
    absl::StatusOr<std::unique_ptr<storage::TensorReader>> r = inner_.OpenTensor(run, a);
    if (!r.ok() || run != run_) return r;
    return std::unique_ptr<storage::TensorReader>(new Flipping(*std::move(r)));
  }
  absl::Status PutReport(const storage::StoredReport& r) override { return inner_.PutReport(r); }
  absl::StatusOr<storage::StoredReport> GetReport(std::string_view id) override {
    return inner_.GetReport(id);
  }
  absl::StatusOr<std::vector<storage::StoredReport>> ListReports(std::string_view run,
                                                                 size_t limit) override {
    return inner_.ListReports(run, limit);
  }
  absl::Status PutAuthRecord(std::string_view k, std::string_view v) override {
    return inner_.PutAuthRecord(k, v);
  }
  absl::Status InsertAuthRecord(std::string_view k, std::string_view v) override {
    return inner_.InsertAuthRecord(k, v);
  }
  absl::StatusOr<std::string> GetAuthRecord(std::string_view k) override {
    return inner_.GetAuthRecord(k);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListAuthRecords(
      std::string_view p) override {
    return inner_.ListAuthRecords(p);
  }

 private:
  class Flipping : public storage::TensorReader {
   public:
    explicit Flipping(std::unique_ptr<storage::TensorReader> inner) : inner_(std::move(inner)) {}
    const storage::TensorMeta& meta() const override { return inner_->meta(); }
    absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) override {
      absl::Status s = inner_->Read(offset, dst);
      if (s.ok() && offset == 0 && !dst.empty()) dst[0] ^= 0x80;
      return s;
    }

   private:
    std::unique_ptr<storage::TensorReader> inner_;
  };

  storage::Store& inner_;
  std::string run_;
};

class ReviewOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "review_ops_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    storage::RocksDbStoreOptions options;
    options.chunk_size = 64;
    options.sync_commits = false;
    ASSERT_OK_AND_ASSIGN(store_, storage::OpenRocksDbStore(dir_, options));
    Attach();
  }
  void TearDown() override {
    audit_.reset();
    tokens_.reset();
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  void Attach() {
    tokens_ = std::make_unique<auth::TokenStore>(*store_);
    ASSERT_OK_AND_ASSIGN(audit_, auth::AuditLog::Open(*store_));
    env_.store = store_.get();
    env_.tokens = tokens_.get();
    env_.audit = audit_.get();
  }
  // Two runs of two tensors each (the candidate's second differs), and a
  // report of them.
  void MakeSignableReport(const std::string& id, std::string policy_hash) {
    for (const char* name : {kRef, kCand}) {
      storage::RunInfo run;
      run.name = name;
      run.overwrite = true;
      ASSERT_THAT(store_->CreateRun(run), IsOk());
      const uint8_t seed = name == std::string(kRef) ? 1 : 2;
      for (const char* key : {"logits", "loss"}) {
        const std::vector<uint8_t> bytes = Bytes(200, key == std::string("loss") ? seed : 1);
        const storage::TensorAddress address{"forward", key, std::nullopt};
        ASSERT_THAT(WriteInPieces(*store_, name, HeaderFor(address, bytes), bytes, 50), IsOk());
      }
    }
    storage::StoredReport report;
    report.id = id;
    report.ref = kRef;
    report.cand = kCand;
    report.policy = "reprod";
    report.policy_hash = std::move(policy_hash);
    report.created = absl::Now();
    ASSERT_THAT(store_->PutReport(report), IsOk());
  }

  std::string dir_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<auth::TokenStore> tokens_;
  std::unique_ptr<auth::AuditLog> audit_;
  ServiceEnv env_;
};

TEST_F(ReviewOpsTest, LocalPrincipalIsAnAdminNamedLocal) {
  const auth::Principal p = LocalPrincipal();
  EXPECT_EQ(p.label, "local");
  EXPECT_EQ(p.role, auth::Role::kAdmin);
  EXPECT_FALSE(p.scope.has_value());
  EXPECT_EQ(ActorOf(std::nullopt).label, "local");
  EXPECT_EQ(ActorOf(Judge()).label, "the judge");
}

TEST_F(ReviewOpsTest, ClientStringsAreRecordedAsPrintableAscii) {
  // A framework "PyTörch\n" from a client is recorded (not refused, which
  // would fail the CreateRun it belongs to) with its other bytes as \xHH.
  ASSERT_THAT(RecordAudit(env_, Judge(), "create", "team42/b\x1b", absl::OkStatus(),
                          {{"framework", "PyT\xc3\xb6rch\n"}}),
              IsOk());
  ASSERT_OK_AND_ASSIGN(std::vector<auth::AuditRecord> records, audit_->List("", 0));
  ASSERT_THAT(records, SizeIs(1));
  EXPECT_EQ(records[0].object, "team42/b\\x1b");
  EXPECT_EQ(records[0].details.at("framework"), "PyT\\xc3\\xb6rch\\x0a");
  EXPECT_THAT(audit_->Verify(), IsOk());
}

TEST_F(ReviewOpsTest, ThousandRecordChainVerifiesAndAFlippedByteIsNamed) {
  for (int i = 0; i < 1000; ++i) {
    ASSERT_THAT(RecordAudit(env_, Judge(), "push", absl::StrCat("team42/run-", i),
                            i % 7 == 0 ? absl::NotFoundError("x") : absl::OkStatus(),
                            {{"tensors", absl::StrCat(i)}}),
                IsOk());
  }
  ASSERT_THAT(VerifyAudit(env_), IsOk());
  ASSERT_OK_AND_ASSIGN(auto all, audit_->List("", 0));
  ASSERT_THAT(all, SizeIs(1000));
  EXPECT_EQ(all.front().sequence, 999u);
  EXPECT_EQ(all.back().result, "NOT_FOUND");  // record 0: 0 % 7 == 0

  // Flip one byte of record 500's stored value (inside its object name).
  const std::string key = auth::AuditKey(500);
  ASSERT_OK_AND_ASSIGN(std::string value, store_->GetAuthRecord(key));
  const size_t at = value.find("team42/run-500");
  ASSERT_NE(at, std::string::npos);
  value[at + 7] ^= 0x01;  // 'r' -> 's'
  ASSERT_THAT(store_->PutAuthRecord(key, value), IsOk());
  EXPECT_THAT(VerifyAudit(env_),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("audit record 500"), HasSubstr("hash mismatch"))));
}

TEST_F(ReviewOpsTest, PublishIsRecordedWithItsResult) {
  storage::RunInfo run;
  run.name = kRef;
  ASSERT_THAT(store_->CreateRun(run), IsOk());
  ASSERT_OK_AND_ASSIGN(storage::RunInfo published, SetReference(env_, Judge(), kRef, true));
  EXPECT_TRUE(published.reference);
  ASSERT_OK_AND_ASSIGN(storage::RunInfo stored, store_->GetRun(kRef));
  EXPECT_TRUE(stored.reference);
  EXPECT_THAT(SetReference(env_, Judge(), "team7/none", true).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team7/none")));
  ASSERT_OK_AND_ASSIGN(storage::RunInfo withdrawn, SetReference(env_, Judge(), kRef, false));
  EXPECT_FALSE(withdrawn.reference);

  ASSERT_OK_AND_ASSIGN(auto records, audit_->List("", 0));  // newest first
  ASSERT_THAT(records, SizeIs(3));
  EXPECT_EQ(records[2].verb, "publish");
  EXPECT_EQ(records[2].object, kRef);
  EXPECT_EQ(records[2].result, "ok");
  EXPECT_EQ(records[2].actor.label, "the judge");
  EXPECT_EQ(records[2].actor.role, auth::Role::kJudge);
  EXPECT_EQ(records[1].object, "team7/none");
  EXPECT_EQ(records[1].result, "NOT_FOUND");
  EXPECT_EQ(records[0].verb, "unpublish");
  EXPECT_THAT(VerifyAudit(env_), IsOk());
}

TEST_F(ReviewOpsTest, TokensAreRecordedWithoutTheSecretAndRevokedAtOnce) {
  auth::TokenSpec spec;
  spec.role = auth::Role::kSubmitter;
  spec.scope = "team42";
  spec.label = "team42 CI";
  ASSERT_OK_AND_ASSIGN(auth::IssuedToken issued, CreateToken(env_, LocalPrincipal(), spec));
  ASSERT_THAT(tokens_->Authenticate(issued.token, absl::Now()), IsOk());
  ASSERT_OK_AND_ASSIGN(auto listed, ListTokens(env_));
  ASSERT_THAT(listed, SizeIs(1));
  ASSERT_OK_AND_ASSIGN(auth::TokenRecord revoked,
                       RevokeToken(env_, LocalPrincipal(), issued.record.id()));
  EXPECT_TRUE(revoked.revoked);
  EXPECT_THAT(tokens_->Authenticate(issued.token, absl::Now()),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("revoked")));
  EXPECT_THAT(RevokeToken(env_, LocalPrincipal(), "ffffffffffff").status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  spec.scope = "";  // a submitter needs a scope
  EXPECT_THAT(CreateToken(env_, LocalPrincipal(), spec).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));

  ASSERT_OK_AND_ASSIGN(auto records, audit_->List("", 0));
  ASSERT_THAT(records, SizeIs(4));
  EXPECT_EQ(records[3].verb, "token-create");
  EXPECT_EQ(records[3].object, "team42 CI");
  EXPECT_EQ(records[3].details.at("id"), issued.record.id());
  EXPECT_EQ(records[3].details.at("role"), "submitter");
  EXPECT_EQ(records[3].details.at("scope"), "team42");
  EXPECT_EQ(records[2].verb, "token-revoke");
  EXPECT_EQ(records[2].object, "team42 CI");
  EXPECT_EQ(records[1].result, "NOT_FOUND");
  EXPECT_EQ(records[0].result, "INVALID_ARGUMENT");
  // The secret (and its hex part) is in no stored record.
  ASSERT_OK_AND_ASSIGN(auto raw, store_->ListAuthRecords(auth::kAuditKeyPrefix));
  for (const auto& [key, value] : raw) {
    EXPECT_EQ(value.find(issued.token.substr(4)), std::string::npos) << key;
  }
}

TEST_F(ReviewOpsTest, SignBindsBothRunDigestsThePolicyAndTheChainHead) {
  MakeSignableReport("rpt-0000000000000001", std::string(64, 'e'));
  ASSERT_THAT(RecordAudit(env_, LocalPrincipal(), "create", kRef, absl::OkStatus()), IsOk());
  ASSERT_OK_AND_ASSIGN(auto head, audit_->List("", 1));
  ASSERT_OK_AND_ASSIGN(auth::AuditRecord sig,
                       SignReport(env_, Judge(), "rpt-0000000000000001"));
  EXPECT_EQ(sig.verb, "sign");
  EXPECT_EQ(sig.object, "rpt-0000000000000001");
  EXPECT_EQ(sig.actor.label, "the judge");
  EXPECT_EQ(sig.prev_hash, head[0].hash);  // the chain head at signing
  EXPECT_EQ(sig.details.at("ref_run"), kRef);
  EXPECT_EQ(sig.details.at("cand_run"), kCand);
  EXPECT_EQ(sig.details.at("ref_run_digest"), ExpectedDigest(*store_, kRef));
  EXPECT_EQ(sig.details.at("cand_run_digest"), ExpectedDigest(*store_, kCand));
  EXPECT_NE(sig.details.at("ref_run_digest"), sig.details.at("cand_run_digest"));
  EXPECT_EQ(sig.details.at("policy_hash"), std::string(64, 'e'));
  EXPECT_EQ(sig.details.at("policy_hash_of"), "spec");
  EXPECT_EQ(sig.details.at("server_version"), ServerVersion());
  ASSERT_OK_AND_ASSIGN(auto signatures, ReportSignatures(env_, "rpt-0000000000000001"));
  ASSERT_THAT(signatures, SizeIs(1));
  EXPECT_EQ(signatures[0].hash, sig.hash);
  EXPECT_THAT(VerifyAudit(env_), IsOk());

  // A refused sign-off (as the gate records it) binds nothing and verifies.
  ASSERT_THAT(RecordAudit(env_, Judge(), "sign", "rpt-0000000000000001",
                          absl::PermissionDeniedError("no"), {{"route", "x"}}),
              IsOk());
  EXPECT_THAT(VerifyAudit(env_), IsOk());
  ASSERT_OK_AND_ASSIGN(signatures, ReportSignatures(env_, "rpt-0000000000000001"));
  EXPECT_THAT(signatures, SizeIs(1));

  EXPECT_THAT(SignReport(env_, Judge(), "rpt-00000000000000ff").status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  ASSERT_OK_AND_ASSIGN(auto last, audit_->List("", 1));
  EXPECT_EQ(last[0].verb, "sign");
  EXPECT_EQ(last[0].result, "NOT_FOUND");
  ASSERT_OK_AND_ASSIGN(signatures, ReportSignatures(env_, "rpt-00000000000000ff"));
  EXPECT_THAT(signatures, SizeIs(0));  // failed sign-offs are no signatures
}

TEST_F(ReviewOpsTest, OldReportsSignTheHashOfTheirPolicyName) {
  MakeSignableReport("rpt-0000000000000002", "");
  ASSERT_OK_AND_ASSIGN(auth::AuditRecord sig, SignReport(env_, Judge(), "rpt-0000000000000002"));
  EXPECT_EQ(sig.details.at("policy_hash"),
            auth::ToHex(auth::HashToken("policy-name:reprod")));
  EXPECT_EQ(sig.details.at("policy_hash_of"), "name");
}

TEST_F(ReviewOpsTest, PolicySpecHashIsStableAndSeesEveryField) {
  v1::PolicySpec a;
  a.set_preset("reprod");
  v1::PolicySpec b = a;
  EXPECT_EQ(PolicySpecHash(a), PolicySpecHash(b));
  b.add_as_bf16("forward/*");
  EXPECT_NE(PolicySpecHash(a), PolicySpecHash(b));
  v1::PolicySpec c;
  c.set_preset("competition");
  EXPECT_NE(PolicySpecHash(a), PolicySpecHash(c));
  EXPECT_EQ(PolicySpecHash(a).size(), 64u);
}

TEST_F(ReviewOpsTest, AChangedSignedRunIsNamedByVerify) {
  MakeSignableReport("rpt-0000000000000003", std::string(64, 'e'));
  ASSERT_THAT(SignReport(env_, Judge(), "rpt-0000000000000003"), IsOk());
  ASSERT_THAT(VerifyAudit(env_), IsOk());
  // Replace a tensor of the candidate (the run allows overwrite): its crc32c
  // and so the run digest change.
  const std::vector<uint8_t> other = Bytes(200, 9);
  const storage::TensorAddress loss{"forward", "loss", std::nullopt};
  ASSERT_THAT(WriteInPieces(*store_, kCand, HeaderFor(loss, other), other, 50), IsOk());
  EXPECT_THAT(VerifyAudit(env_),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("rpt-0000000000000003"), HasSubstr(kCand),
                             HasSubstr("changed after signing"))));
}

TEST_F(ReviewOpsTest, AFlippedTensorByteOfASignedRunIsNamedByVerify) {
  MakeSignableReport("rpt-0000000000000004", std::string(64, 'e'));
  ASSERT_OK_AND_ASSIGN(auth::AuditRecord sig,
                       SignReport(env_, Judge(), "rpt-0000000000000004"));
  ASSERT_THAT(VerifyAudit(env_), IsOk());
  // On disk: one byte of the reference's logits (chunk 2), index untouched,
  // so RunDigest alone cannot see it.
  ASSERT_THAT(storage::internal::CorruptChunk(*store_, kRef, {"forward", "logits", std::nullopt},
                                              2),
              IsOk());
  ASSERT_THAT(audit_->VerifySignatures(), IsOk());  // the index did not change
  EXPECT_THAT(VerifyAudit(env_),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(absl::StrCat("audit record ", sig.sequence)),
                             HasSubstr("rpt-0000000000000004"), HasSubstr(kRef),
                             HasSubstr("forward/logits"))));
}

TEST_F(ReviewOpsTest, BytesThatDisagreeWithTheirCrcAreNamedByVerify) {
  MakeSignableReport("rpt-0000000000000005", std::string(64, 'e'));
  ASSERT_OK_AND_ASSIGN(auth::AuditRecord sig, SignReport(env_, Judge(), "rpt-0000000000000005"));
  FlippingStore flipping(*store_, kCand);
  ServiceEnv env = env_;
  env.store = &flipping;
  ASSERT_THAT(audit_->VerifySignatures(), IsOk());
  EXPECT_THAT(VerifyAudit(env),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(absl::StrCat("audit record ", sig.sequence)),
                             HasSubstr(kCand), HasSubstr("forward/logits"),
                             HasSubstr("the index says"))));
  FlippingStore other(*store_, "team7/unsigned");  // unsigned runs are not read
  env.store = &other;
  EXPECT_THAT(VerifyAudit(env), IsOk());
}

TEST_F(ReviewOpsTest, WithoutAnAuditLogOperationsRefuse) {
  ServiceEnv bare;
  bare.store = store_.get();
  EXPECT_THAT(RecordAudit(bare, Judge(), "push", kRef, absl::OkStatus()),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_THAT(ListTokens(bare).status(), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
}

}  // namespace
}  // namespace reprod::server

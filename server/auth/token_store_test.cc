// TokenStore against the memory store and a reopened RocksDB store.
#include "server/auth/token_store.h"

#include <filesystem>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server::auth {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

const absl::Time kNow = absl::FromUnixSeconds(1800000000);

TokenSpec Spec(Role role, std::string scope, std::string label) {
  TokenSpec s;
  s.role = role;
  s.scope = std::move(scope);
  s.label = std::move(label);
  return s;
}

class TokenStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<storage::Store> store_ = storage::CreateMemoryStore();
  TokenStore tokens_{*store_};
};

TEST_F(TokenStoreTest, CreatedTokensAuthenticateWithTheirRoleAndScope) {
  ASSERT_OK_AND_ASSIGN(IssuedToken sub,
                       tokens_.Create(Spec(Role::kSubmitter, "team42/*", "team42 CI"), kNow));
  ASSERT_OK_AND_ASSIGN(IssuedToken judge, tokens_.Create(Spec(Role::kJudge, "", "judges"), kNow));
  EXPECT_TRUE(IsWellFormedToken(sub.token));
  EXPECT_EQ(sub.record.scope, "team42");  // stored canonical
  EXPECT_EQ(sub.record.created, kNow);
  EXPECT_FALSE(sub.record.expires.has_value());

  ASSERT_OK_AND_ASSIGN(Principal p, tokens_.Authenticate(sub.token, kNow));
  EXPECT_EQ(p.role, Role::kSubmitter);
  EXPECT_EQ(p.label, "team42 CI");
  ASSERT_TRUE(p.scope.has_value());
  EXPECT_EQ(p.scope->ns(), "team42");
  EXPECT_EQ(p.id, ToHex(HashToken(sub.token)).substr(0, 12));
  ASSERT_OK_AND_ASSIGN(p, tokens_.Authenticate(judge.token, kNow));
  EXPECT_EQ(p.role, Role::kJudge);
  EXPECT_FALSE(p.scope.has_value());
}

TEST_F(TokenStoreTest, OnlyTheHashIsStored) {
  ASSERT_OK_AND_ASSIGN(IssuedToken t, tokens_.Create(Spec(Role::kAdmin, "", "root"), kNow));
  ASSERT_OK_AND_ASSIGN(auto records, store_->ListAuthRecords(""));
  ASSERT_THAT(records, SizeIs(1));
  const std::string secret = t.token.substr(4);
  EXPECT_EQ(records[0].first, "token/" + ToHex(HashToken(t.token)));
  EXPECT_THAT(records[0].first, Not(HasSubstr(secret)));
  EXPECT_THAT(records[0].second, Not(HasSubstr(secret)));
  EXPECT_THAT(records[0].second, HasSubstr("\"label\":\"root\""));
}

TEST_F(TokenStoreTest, MissingMalformedUnknownExpiredRevokedAreUnauthenticated) {
  TokenSpec spec = Spec(Role::kJudge, "", "short-lived");
  spec.expires_in = absl::Hours(1);
  ASSERT_OK_AND_ASSIGN(IssuedToken t, tokens_.Create(spec, kNow));
  EXPECT_EQ(t.record.expires, kNow + absl::Hours(1));
  EXPECT_THAT(tokens_.Authenticate(t.token, kNow + absl::Minutes(59)), IsOk());
  EXPECT_THAT(tokens_.Authenticate(t.token, kNow + absl::Hours(1)),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       AllOf(HasSubstr("'short-lived' expired"), Not(HasSubstr(t.token)))));

  EXPECT_THAT(tokens_.Authenticate("", kNow),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("no token")));
  EXPECT_THAT(tokens_.Authenticate("rpd_nothex", kNow),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("malformed")));
  // A one-digit change of a real token is unknown.
  std::string forged = t.token;
  forged.back() = forged.back() == '0' ? '1' : '0';
  EXPECT_THAT(tokens_.Authenticate(forged, kNow),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("unknown token")));

  ASSERT_OK_AND_ASSIGN(IssuedToken r, tokens_.Create(Spec(Role::kAdmin, "", "ops"), kNow));
  ASSERT_OK_AND_ASSIGN(TokenRecord revoked, tokens_.Revoke(r.record.id()));
  EXPECT_TRUE(revoked.revoked);
  EXPECT_THAT(tokens_.Authenticate(r.token, kNow),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("'ops' was revoked")));
  EXPECT_THAT(tokens_.Revoke(r.record.id().substr(0, 8)), IsOk());  // again
  EXPECT_THAT(tokens_.Authenticate(t.token, kNow), IsOk());         // others unharmed
}

TEST_F(TokenStoreTest, ListAndRevokeById) {
  ASSERT_OK_AND_ASSIGN(IssuedToken a, tokens_.Create(Spec(Role::kAdmin, "", "a"), kNow));
  ASSERT_OK_AND_ASSIGN(IssuedToken b, tokens_.Create(Spec(Role::kSubmitter, "t", "b"), kNow));
  ASSERT_OK_AND_ASSIGN(std::vector<TokenRecord> all, tokens_.List());
  ASSERT_THAT(all, SizeIs(2));
  EXPECT_LT(all[0].id(), all[1].id());
  EXPECT_THAT(tokens_.Revoke("00000000"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("00000000")));
  EXPECT_THAT(tokens_.Revoke("abc"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("8-64")));
  EXPECT_THAT(tokens_.Revoke("ABCDEF0123"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hex")));
  ASSERT_THAT(tokens_.Revoke(b.record.id()), IsOk());
  ASSERT_OK_AND_ASSIGN(all, tokens_.List());
  for (const TokenRecord& r : all) EXPECT_EQ(r.revoked, r.label == "b");
  (void)a;
}

TEST_F(TokenStoreTest, BadSpecsAreRefused) {
  EXPECT_THAT(tokens_.Create(Spec(Role::kSubmitter, "", "x"), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a scope")));
  EXPECT_THAT(tokens_.Create(Spec(Role::kJudge, "team42", "x"), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("judge token has no scope")));
  EXPECT_THAT(tokens_.Create(Spec(Role::kSubmitter, "team*", "x"), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scope")));
  EXPECT_THAT(tokens_.Create(Spec(Role::kAdmin, "", ""), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("label")));
  EXPECT_THAT(tokens_.Create(Spec(Role::kAdmin, "", "a\nb"), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("label")));
  TokenSpec past = Spec(Role::kAdmin, "", "x");
  past.expires_in = -absl::Seconds(1);
  EXPECT_THAT(tokens_.Create(past, kNow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("future")));
  ASSERT_OK_AND_ASSIGN(auto records, store_->ListAuthRecords(""));
  EXPECT_THAT(records, SizeIs(0));
}

TEST_F(TokenStoreTest, QuotaIsKeptForSubmittersOnly) {
  TokenSpec big = Spec(Role::kSubmitter, "team42", "big");
  big.quota_bytes = uint64_t{5} << 40;  // past 2^32: survives the JSON round trip
  ASSERT_OK_AND_ASSIGN(IssuedToken t, tokens_.Create(big, kNow));
  ASSERT_OK_AND_ASSIGN(Principal p, tokens_.Authenticate(t.token, kNow));
  EXPECT_EQ(p.quota_bytes, uint64_t{5} << 40);
  TokenSpec none = Spec(Role::kSubmitter, "team42", "unlimited");
  none.quota_bytes = 0;  // set, and zero: no namespace limit for this token
  ASSERT_OK_AND_ASSIGN(IssuedToken z, tokens_.Create(none, kNow));
  ASSERT_OK_AND_ASSIGN(p, tokens_.Authenticate(z.token, kNow));
  EXPECT_EQ(p.quota_bytes, std::optional<uint64_t>(0));
  ASSERT_OK_AND_ASSIGN(IssuedToken d, tokens_.Create(Spec(Role::kSubmitter, "t", "d"), kNow));
  ASSERT_OK_AND_ASSIGN(p, tokens_.Authenticate(d.token, kNow));
  EXPECT_FALSE(p.quota_bytes.has_value());
  ASSERT_OK_AND_ASSIGN(auto listed, tokens_.List());
  int with_quota = 0;
  for (const TokenRecord& r : listed) with_quota += r.quota_bytes.has_value();
  EXPECT_EQ(with_quota, 2);

  TokenSpec judge = Spec(Role::kJudge, "", "j");
  judge.quota_bytes = 10;
  EXPECT_THAT(tokens_.Create(judge, kNow),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("judge token has no quota")));
  const std::string key = "token/" + ToHex(HashToken(d.token));
  ASSERT_OK_AND_ASSIGN(std::string record, store_->GetAuthRecord(key));
  record.insert(record.size() - 1, ",\"quota_bytes\":-5");
  ASSERT_THAT(store_->PutAuthRecord(key, record), IsOk());
  EXPECT_THAT(tokens_.Authenticate(d.token, kNow),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad quota_bytes")));
}

TEST_F(TokenStoreTest, DamagedRecordIsDataLossNamingTheKey) {
  ASSERT_OK_AND_ASSIGN(IssuedToken t, tokens_.Create(Spec(Role::kAdmin, "", "a"), kNow));
  const std::string key = "token/" + ToHex(HashToken(t.token));
  for (const std::string& bad : {std::string("{"), std::string("[]"), std::string("{\"v\":2}"),
                                 std::string("{\"v\":1,\"hash\":\"00\"}")}) {
    ASSERT_THAT(store_->PutAuthRecord(key, bad), IsOk());
    EXPECT_THAT(tokens_.Authenticate(t.token, kNow),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr(key)))
        << bad;
  }
  // A record moved under another hash's key does not authenticate.
  ASSERT_OK_AND_ASSIGN(IssuedToken other, tokens_.Create(Spec(Role::kJudge, "", "j"), kNow));
  ASSERT_OK_AND_ASSIGN(std::string good,
                       store_->GetAuthRecord("token/" + ToHex(HashToken(other.token))));
  ASSERT_THAT(store_->PutAuthRecord(key, good), IsOk());
  EXPECT_THAT(tokens_.Authenticate(t.token, kNow),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("does not match its key")));
}

TEST(TokenStoreRocksDbTest, TokensSurviveReopen) {
  std::string dir = (std::filesystem::temp_directory_path() / "tokens_XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  std::string token;
  {
    ASSERT_OK_AND_ASSIGN(auto store, storage::OpenRocksDbStore(dir, {}));
    TokenStore tokens(*store);
    TokenSpec spec = Spec(Role::kSubmitter, "team42", "ci");
    spec.expires_in = absl::Hours(24) * 30;
    ASSERT_OK_AND_ASSIGN(IssuedToken t, tokens.Create(spec, kNow));
    token = t.token;
  }
  {
    ASSERT_OK_AND_ASSIGN(auto store, storage::OpenRocksDbStore(dir, {}));
    TokenStore tokens(*store);
    ASSERT_OK_AND_ASSIGN(Principal p, tokens.Authenticate(token, kNow));
    EXPECT_EQ(p.label, "ci");
    EXPECT_EQ(p.scope->ns(), "team42");
    EXPECT_THAT(tokens.Authenticate(token, kNow + absl::Hours(24) * 30),
                StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("expired")));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace reprod::server::auth

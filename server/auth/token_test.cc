// Tokens: their shape, SHA-256 against published test vectors, scopes and
// expiry durations.
#include "server/auth/token.h"

#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server::auth {
namespace {

using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

TEST(TokenTest, GeneratedTokensAreWellFormedAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 64; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string token, GenerateToken());
    EXPECT_EQ(token.size(), 4u + 64u);
    EXPECT_TRUE(token.starts_with("rpd_")) << token;
    EXPECT_TRUE(IsWellFormedToken(token)) << token;
    seen.insert(token);
  }
  EXPECT_EQ(seen.size(), 64u);
}

TEST(TokenTest, MalformedTokensAreRecognised) {
  const std::string hex64(64, 'a');
  EXPECT_TRUE(IsWellFormedToken("rpd_" + hex64));
  EXPECT_FALSE(IsWellFormedToken(""));
  EXPECT_FALSE(IsWellFormedToken("rpd_"));
  EXPECT_FALSE(IsWellFormedToken("rpd_" + hex64.substr(1)));
  EXPECT_FALSE(IsWellFormedToken("rpd_" + hex64 + "a"));
  EXPECT_FALSE(IsWellFormedToken("rpx_" + hex64));
  EXPECT_FALSE(IsWellFormedToken("rpd_" + std::string(64, 'A')));
  EXPECT_FALSE(IsWellFormedToken("rpd_" + std::string(63, 'a') + "g"));
  EXPECT_FALSE(IsWellFormedToken("Bearer rpd_" + hex64));
}

TEST(TokenTest, HashIsSha256OfTheWholeString) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(ToHex(HashToken("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ToHex(HashToken("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const std::string h = HashToken("abc");
  EXPECT_EQ(h.size(), 32u);
  EXPECT_EQ(TokenId(h), "ba7816bf8f01");
}

TEST(TokenTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(TokenTest, Roles) {
  EXPECT_THAT(ParseRole("submitter"), IsOkAndHolds(Role::kSubmitter));
  EXPECT_THAT(ParseRole("judge"), IsOkAndHolds(Role::kJudge));
  EXPECT_THAT(ParseRole("admin"), IsOkAndHolds(Role::kAdmin));
  EXPECT_THAT(ParseRole("Admin"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("submitter, judge, admin")));
}

TEST(ScopeTest, BothSpellingsNameOneNamespace) {
  ASSERT_OK_AND_ASSIGN(Scope plain, Scope::Parse("team42"));
  ASSERT_OK_AND_ASSIGN(Scope star, Scope::Parse("team42/*"));
  EXPECT_EQ(plain.ns(), "team42");
  EXPECT_EQ(star.ns(), "team42");
  for (const Scope& s : {plain, star}) {
    EXPECT_TRUE(s.Matches("team42/bert-paddle"));
    EXPECT_TRUE(s.Matches("team42/x"));
    EXPECT_FALSE(s.Matches("team42x/bert"));
    EXPECT_FALSE(s.Matches("team4/bert"));
    EXPECT_FALSE(s.Matches("team42.b/bert"));
    EXPECT_FALSE(s.Matches("team42"));
    EXPECT_FALSE(s.Matches("team42/"));
    EXPECT_FALSE(s.Matches("team42/a/b"));
    EXPECT_FALSE(s.Matches("xteam42/bert"));
    EXPECT_FALSE(s.Matches(""));
  }
}

TEST(ScopeTest, AnythingElseIsRejected) {
  for (const char* bad : {"", "/*", "*", "team*", "team42/", "team42/bert", "team42/**", "a/b/*",
                          "team 42", "..", "."}) {
    EXPECT_THAT(Scope::Parse(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NAMESPACE or NAMESPACE/*")))
        << bad;
  }
  EXPECT_THAT(Scope::Parse(std::string(128, 'n')), ::reprod::testing::IsOk());
  EXPECT_THAT(Scope::Parse(std::string(129, 'n')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scope")));
}

TEST(TokenTest, ExpiresIn) {
  EXPECT_THAT(ParseExpiresIn("30d"), IsOkAndHolds(absl::Hours(720)));
  EXPECT_THAT(ParseExpiresIn("720h"), IsOkAndHolds(absl::Hours(720)));
  EXPECT_THAT(ParseExpiresIn("90m"), IsOkAndHolds(absl::Minutes(90)));
  for (const char* bad : {"", "0d", "-1d", "0s", "-5h", "inf", "soon", "1w", "d"}) {
    EXPECT_THAT(ParseExpiresIn(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive duration")))
        << bad;
  }
}

}  // namespace
}  // namespace reprod::server::auth

// `reprodd token` against a real data directory: the printed token
// authenticates after the command exits; a directory held open (a running
// server) is refused with the reason.
#include "server/auth/token_command.h"

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/token_store.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server::auth {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

class TokenCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / "tokcmd_XXXXXX").string();
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), "token");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    out_.str("");
    err_.str("");
    return RunTokenCommand(static_cast<int>(argv.size()), argv.data(), out_, err_);
  }

  std::string dir_;
  std::ostringstream out_, err_;
};

TEST_F(TokenCommandTest, CreatePrintsATokenThatAuthenticates) {
  ASSERT_EQ(Run({"create", "--role", "submitter", "--scope", "team42/*", "--label", "team42 CI",
                 "--expires-in", "30d", "--quota-bytes", "4096", "--data-dir", dir_}),
            0)
      << err_.str();
  std::string token = out_.str();
  ASSERT_TRUE(token.ends_with("\n"));
  token.pop_back();
  EXPECT_TRUE(IsWellFormedToken(token)) << token;
  EXPECT_THAT(err_.str(), HasSubstr("submitter of team42, 'team42 CI'"));
  EXPECT_THAT(err_.str(), Not(HasSubstr(token)));

  ASSERT_EQ(Run({"--data-dir", dir_, "list"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("submitter\tteam42\t4096\t"));
  EXPECT_THAT(out_.str(), HasSubstr("\tno\tteam42 CI\n"));
  EXPECT_THAT(out_.str(), Not(HasSubstr(token.substr(4))));

  {
    ASSERT_OK_AND_ASSIGN(auto store, storage::OpenRocksDbStore(dir_, {}));
    TokenStore tokens(*store);
    ASSERT_OK_AND_ASSIGN(Principal p, tokens.Authenticate(token, absl::Now()));
    EXPECT_EQ(p.role, Role::kSubmitter);
    EXPECT_EQ(p.scope->ns(), "team42");
    EXPECT_EQ(p.quota_bytes, std::optional<uint64_t>(4096));
    EXPECT_THAT(tokens.Authenticate(token, absl::Now() + absl::Hours(24 * 31)),
                StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("expired")));
  }

  const std::string id = ToHex(HashToken(token)).substr(0, 10);
  ASSERT_EQ(Run({"revoke", id, "--data-dir", dir_}), 0) << err_.str();
  EXPECT_THAT(err_.str(), HasSubstr("revoked"));
  ASSERT_OK_AND_ASSIGN(auto store, storage::OpenRocksDbStore(dir_, {}));
  TokenStore tokens(*store);
  EXPECT_THAT(tokens.Authenticate(token, absl::Now()),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("revoked")));
}

TEST_F(TokenCommandTest, ARunningServerHoldsTheDirectory) {
  ASSERT_OK_AND_ASSIGN(auto held, storage::OpenRocksDbStore(dir_, {}));
  EXPECT_EQ(Run({"create", "--role", "admin", "--label", "ops", "--data-dir", dir_}), 1);
  EXPECT_THAT(err_.str(), HasSubstr("in use"));
  EXPECT_THAT(err_.str(), HasSubstr("stop reprodd first"));
  EXPECT_EQ(out_.str(), "");
}

TEST_F(TokenCommandTest, BadUsageIsExitTwoAndStoresNothing) {
  EXPECT_EQ(Run({"create", "--role", "root", "--label", "x", "--data-dir", dir_}), 2);
  EXPECT_EQ(Run({"create", "--role", "submitter", "--label", "x", "--data-dir", dir_}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("needs a scope"));
  EXPECT_EQ(Run({"create", "--role", "judge", "--label", "x", "--expires-in", "soon", "--data-dir",
                 dir_}),
            2);
  EXPECT_THAT(err_.str(), HasSubstr("positive duration"));
  EXPECT_EQ(Run({"revoke", "xyz", "--data-dir", dir_}), 2);
  EXPECT_EQ(Run({}), 2);
  EXPECT_EQ(Run({"create", "--role", "admin", "--label", "x", "--quota-bytes", "5", "--data-dir",
                 dir_}),
            2);
  EXPECT_THAT(err_.str(), HasSubstr("admin token has no quota"));
  EXPECT_EQ(Run({"create", "--role", "submitter", "--scope", "t", "--label", "x", "--quota-bytes",
                 "-1", "--data-dir", dir_}),
            2);
  ASSERT_EQ(Run({"list", "--data-dir", dir_}), 0);
  EXPECT_EQ(out_.str(), "id\trole\tscope\tquota\tcreated\texpires\trevoked\tlabel\n");
}

}  // namespace
}  // namespace reprod::server::auth

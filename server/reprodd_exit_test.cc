// reprodd's exit codes on a data dir it cannot use, run as a real process:
// a store written by a newer format is refused with exit 2 and a message
// naming both versions, by the server and by `reprodd restore`.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/rocksdb/internal/keys.h"
#include "storage/rocksdb/internal/test_hooks.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::reprod::testing::IsOk;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct Outcome {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

Outcome RunReprodd(const std::string& args) {
  Outcome out;
  const std::string command = absl::StrCat(REPRODD_PATH, " ", args, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  if (WIFEXITED(status)) out.exit_code = WEXITSTATUS(status);
  return out;
}

class ReprodExitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "reprodd_exit_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }

  // A store in `dir` whose format record says version 9.
  void MakeNewerStore(const std::string& dir) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<storage::Store> store, storage::OpenRocksDbStore(dir));
    ASSERT_THAT(storage::internal::SetMetaValue(*store, storage::internal::kFormatKey,
                                                std::string("\x09reprod-store")),
                IsOk());
  }

  std::string root_;
};

TEST_F(ReprodExitTest, ServerRefusesANewerFormatWithExit2NamingBothVersions) {
  const std::string data = root_ + "/data";
  MakeNewerStore(data);
  const Outcome out =
      RunReprodd(absl::StrCat("--data-dir ", data, " --listen 127.0.0.1:0 --http-listen off"));
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_THAT(out.output, AllOf(HasSubstr(data), HasSubstr("format version 9"),
                                HasSubstr("reads versions 1 to 3")));
}

TEST_F(ReprodExitTest, RestoreRefusesANewerFormatWithExit2) {
  const std::string data = root_ + "/data";
  MakeNewerStore(data);
  const Outcome out = RunReprodd(absl::StrCat("restore ", data, " --data-dir ", root_, "/restored"));
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_THAT(out.output, AllOf(HasSubstr("format version 9"), HasSubstr("reads versions 1 to 3")));
  EXPECT_FALSE(std::filesystem::exists(root_ + "/restored"));
}

TEST_F(ReprodExitTest, ADataDirInUseIsExit2) {
  const std::string data = root_ + "/data";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<storage::Store> held, storage::OpenRocksDbStore(data));
  const Outcome out =
      RunReprodd(absl::StrCat("--data-dir ", data, " --listen 127.0.0.1:0 --http-listen off"));
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_THAT(out.output, HasSubstr("in use"));
}

}  // namespace
}  // namespace reprod::server

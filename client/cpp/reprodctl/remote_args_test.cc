// reprodctl's remote commands without a server: argument handling, the
// remote/offline choice of compare, policy flags on the wire, exit codes and
// printing helpers.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "client/cpp/reprodctl/cli.h"
#include "client/cpp/reprodctl/compare_remote.h"
#include "client/cpp/reprodctl/policy_spec.h"
#include "client/cpp/reprodctl/remote_util.h"
#include "client/cpp/reprodctl/watch_line.h"
#include "core/policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::reprodctl {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

// Parses `args` (without the program name) with a fresh Cli.
void Parse(Cli& cli, std::vector<std::string> args) {
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  cli.app().parse(reversed);  // CLI11 takes a reversed vector
}

TEST(Cli, ServerDefaultsToLoopbackAndIsAGlobalOptionAnywhere) {
  {
    Cli cli;
    Parse(cli, {"runs", "ls"});
    EXPECT_EQ(cli.global().server, "127.0.0.1:50051");
  }
  {
    Cli cli;
    Parse(cli, {"--server", "h:1", "runs", "ls"});
    EXPECT_EQ(cli.global().server, "h:1");
  }
  {
    Cli cli;
    Parse(cli, {"runs", "show", "a/b", "--server", "h:2"});
    EXPECT_EQ(cli.global().server, "h:2");
  }
  {
    Cli cli;
    Parse(cli, {"push", "x.npy", "--run", "a/b", "--server", "h:3"});
    EXPECT_EQ(cli.global().server, "h:3");
  }
}

TEST(Cli, ServerFromEnvironment) {
  setenv("REPROD_SERVER", "envhost:7", 1);
  Cli cli;
  Parse(cli, {"report", "ls"});
  unsetenv("REPROD_SERVER");
  EXPECT_EQ(cli.global().server, "envhost:7");
}

TEST(Cli, RepeatableCheckpointTakesOneValuePerFlag) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"compare", "--checkpoint", "forward", "a/b", "c/d"},
           {"compare", "a/b", "--checkpoint", "forward", "c/d", "--checkpoint", "loss"},
           {"watch", "--checkpoint", "forward,loss", "a/b", "c/d"},
       }) {
    Cli cli;
    EXPECT_NO_THROW(Parse(cli, args)) << ::testing::PrintToString(args);
  }
}

TEST(Cli, UsageErrors) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"push", "x.npy"},                  // --run is required
           {"push", "--run", "a/b"},           // no file
           {"runs"},                           // needs ls/show/seal/rm
           {"runs", "show"},                   // needs RUN
           {"runs", "ls", "--format", "xml"},  // text or json
           {"report"},                         // needs get/ls
           {"report", "get"},                  // needs ID
           {"watch", "a/b"},                   // needs two runs
           {"compare", "a/b"},                 // needs two arguments
       }) {
    Cli cli;
    EXPECT_THROW(Parse(cli, args), CLI::ParseError) << ::testing::PrintToString(args);
  }
}

TEST(Cli, MainMapsUsageErrorsToExitTwoAndHelpToZero) {
  const char* bad[] = {"reprodctl", "push", "x.npy"};
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Cli().Main(3, bad), kExitBadInput);
  ::testing::internal::GetCapturedStderr();
  for (const char* cmd : {"push", "runs", "watch", "report"}) {
    const char* help[] = {"reprodctl", cmd, "--help"};
    ::testing::internal::CaptureStdout();
    EXPECT_EQ(Cli().Main(3, help), kExitPass);
    const std::string out = ::testing::internal::GetCapturedStdout();
    EXPECT_THAT(out, HasSubstr("Example")) << cmd;
    EXPECT_THAT(out, HasSubstr("reprodctl ")) << cmd;
  }
}

TEST(Cli, RemoteCommandsRefuseBadRunNamesBeforeConnecting) {
  // The server address points nowhere: a name check that happened after
  // connecting would exit 3, not 2.
  for (std::vector<const char*> args : std::vector<std::vector<const char*>>{
           {"reprodctl", "--server", "127.0.0.1:1", "runs", "show", "no-namespace"},
           {"reprodctl", "--server", "127.0.0.1:1", "watch", "a/b", "bad name/x"},
           {"reprodctl", "--server", "127.0.0.1:1", "compare", "--remote", "a/b", "c"},
           {"reprodctl", "--server", "127.0.0.1:1", "report", "ls", "--run", "x"},
       }) {
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(Cli().Main(static_cast<int>(args.size()), args.data()), kExitBadInput);
    EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("error"));
  }
}

TEST(Cli, UnreachableServerIsExitThreeWithAHint) {
  const char* args[] = {"reprodctl", "--server", "127.0.0.1:1", "runs", "ls"};
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Cli().Main(5, args), kExitUnreachable);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("127.0.0.1:1"));
  EXPECT_THAT(err, HasSubstr("reprodd"));
  EXPECT_THAT(err, HasSubstr("--server"));
}

TEST(CompareTargetsAreRuns, RunNamesGoRemoteFilesStayOffline) {
  EXPECT_TRUE(CompareTargetsAreRuns("bert/torch", "bert/paddle", false));
  EXPECT_FALSE(CompareTargetsAreRuns("forward_torch.npy", "forward_paddle.npy", false));
  // Two-part paths that look like tensor files stay files (a typo is
  // reported as a missing file, not a missing run).
  EXPECT_FALSE(CompareTargetsAreRuns("logs/forward_torch.npy", "logs/forward_paddle.npy", false));
  EXPECT_FALSE(CompareTargetsAreRuns("/abs/path/x", "/abs/path/y", false));
  EXPECT_FALSE(CompareTargetsAreRuns("bert/torch", "forward_paddle.npy", false));
  EXPECT_TRUE(CompareTargetsAreRuns("anything", "at all", true));

  // An existing path is a file even when it parses as a run name.
  const fs::path dir = fs::path(::testing::TempDir()) / "cmp_targets";
  fs::create_directories(dir / "team");
  std::ofstream(dir / "team" / "run") << "x";
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  EXPECT_FALSE(CompareTargetsAreRuns("team/run", "team/other", false));
  EXPECT_TRUE(CompareTargetsAreRuns("team/other", "team/third", false));
  fs::current_path(cwd);
  fs::remove_all(dir);
}

TEST(ExitCodeForStatus, UnreachableIsThreeEverythingElseTwo) {
  EXPECT_EQ(ExitCodeForStatus(absl::OkStatus()), kExitPass);
  EXPECT_EQ(ExitCodeForStatus(absl::UnavailableError("x")), kExitUnreachable);
  EXPECT_EQ(ExitCodeForStatus(absl::DeadlineExceededError("x")), kExitUnreachable);
  EXPECT_EQ(ExitCodeForStatus(absl::NotFoundError("run 'a/b' not found")), kExitBadInput);
  EXPECT_EQ(ExitCodeForStatus(absl::InvalidArgumentError("x")), kExitBadInput);
  EXPECT_EQ(ExitCodeForStatus(absl::AlreadyExistsError("x")), kExitBadInput);
  EXPECT_EQ(ExitCodeForStatus(absl::FailedPreconditionError("x")), kExitBadInput);
  // Disk full / quota: final, exit 2, never "unreachable".
  EXPECT_EQ(ExitCodeForStatus(absl::ResourceExhaustedError("disk full")), kExitBadInput);
}

PolicyFlags Flags() {
  PolicyFlags f;
  f.default_preset = "reprod";
  return f;
}

TEST(PolicySpecFromFlags, PresetDefaultAndNamed) {
  ASSERT_OK_AND_ASSIGN(v1::PolicySpec spec, PolicySpecFromFlags(Flags(), {}));
  EXPECT_EQ(spec.preset(), "reprod");
  PolicyFlags f = Flags();
  f.preset = "competition";
  ASSERT_OK_AND_ASSIGN(spec, PolicySpecFromFlags(f, {"forward", "loss"}));
  EXPECT_EQ(spec.preset(), "competition");
  EXPECT_THAT(spec.checkpoints(), ::testing::ElementsAre("forward", "loss"));
  f.preset = "nope";
  EXPECT_THAT(PolicySpecFromFlags(f, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nope")));
  EXPECT_THAT(PolicySpecFromFlags(Flags(), {"bad ckpt"}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(PolicySpecFromFlags, PolicyFileTravelsAsItsText) {
  const fs::path path = fs::path(::testing::TempDir()) / "remote_policy.yaml";
  const std::string text = "defaults: {metric: max_abs, max: 1.0e-5}\n";
  std::ofstream(path) << text;
  PolicyFlags f = Flags();
  f.policy_file = path.string();
  ASSERT_OK_AND_ASSIGN(v1::PolicySpec spec, PolicySpecFromFlags(f, {}));
  EXPECT_EQ(spec.document(), text);
  std::ofstream(path) << "defaults: {metric: bogus, max: 1}\n";
  EXPECT_THAT(PolicySpecFromFlags(f, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bogus")));
  fs::remove(path);
  EXPECT_FALSE(PolicySpecFromFlags(f, {}).ok());
}

TEST(PolicySpecFromFlags, ShortcutsBecomeAnEquivalentDocument) {
  PolicyFlags f = Flags();
  f.threshold = 1e-5;
  f.method = "all";
  ASSERT_OK_AND_ASSIGN(v1::PolicySpec spec, PolicySpecFromFlags(f, {}));
  ASSERT_OK_AND_ASSIGN(core::Policy parsed, core::ParsePolicy(spec.document(), "<wire>"));
  ASSERT_OK_AND_ASSIGN(core::Policy local, f.Resolve());
  EXPECT_EQ(parsed.name, local.name);
  ASSERT_EQ(parsed.defaults.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(parsed.defaults[i].metric, local.defaults[i].metric);
    EXPECT_EQ(parsed.defaults[i].bound, 1e-5);
  }

  PolicyFlags g = Flags();
  g.atol = 1e-6;
  g.rtol = 1e-4;
  ASSERT_OK_AND_ASSIGN(spec, PolicySpecFromFlags(g, {}));
  ASSERT_OK_AND_ASSIGN(parsed, core::ParsePolicy(spec.document(), "<wire>"));
  ASSERT_EQ(parsed.defaults.size(), 1u);
  EXPECT_EQ(parsed.defaults[0].metric, core::Metric::kAllclose);
  EXPECT_EQ(parsed.defaults[0].atol, 1e-6);
  EXPECT_EQ(parsed.defaults[0].rtol, 1e-4);

  PolicyFlags bad = Flags();
  bad.threshold = -1;
  EXPECT_FALSE(PolicySpecFromFlags(bad, {}).ok());
}

TEST(VerdictLine, StatusAddressStatsAndReason) {
  v1::TensorVerdict v;
  v.mutable_address()->set_checkpoint("bp_align");
  v.mutable_address()->set_key("loss");
  v.mutable_address()->set_step(3);
  v.set_status(v1::TENSOR_STATUS_FAIL);
  v.set_mean_abs(0.0012);
  v.set_max_abs(0.1);
  v.set_reason("mean_abs = 0.0012 > max 1e-06");
  EXPECT_EQ(VerdictLine(v),
            "FAIL  bp_align/loss@3  mean_abs 0.0012  max_abs 0.1  mean_abs = 0.0012 > max 1e-06");
  v1::TensorVerdict m;
  m.mutable_address()->set_checkpoint("forward");
  m.mutable_address()->set_key("aux");
  m.set_status(v1::TENSOR_STATUS_MISSING_IN_CAND);
  EXPECT_EQ(VerdictLine(m), "MISSING_IN_CAND  forward/aux");
}

TEST(Formatting, BytesShapesTables) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(uint64_t{3} << 30), "3.0 GiB");
  google::protobuf::RepeatedField<int64_t> shape;
  EXPECT_EQ(FormatShape(shape), "()");
  shape.Add(5);
  EXPECT_EQ(FormatShape(shape), "(5,)");
  shape.Add(4);
  EXPECT_EQ(FormatShape(shape), "(5, 4)");
  EXPECT_EQ(FormatTable({{"NAME", "N"}, {"a/long-name", "1"}, {"b", ""}}),
            "NAME         N\na/long-name  1\nb\n");
}

}  // namespace
}  // namespace reprod::reprodctl

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/testing/status_matchers.h"

namespace reprod::kernels {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

TEST(BackendRegistryTest, ParseBackendKind) {
  ASSERT_OK_AND_ASSIGN(BackendKind a, ParseBackendKind("auto"));
  EXPECT_EQ(a, BackendKind::kAuto);
  ASSERT_OK_AND_ASSIGN(BackendKind c, ParseBackendKind("cpu"));
  EXPECT_EQ(c, BackendKind::kCpu);
  ASSERT_OK_AND_ASSIGN(BackendKind g, ParseBackendKind("cuda"));
  EXPECT_EQ(g, BackendKind::kCuda);
  EXPECT_THAT(ParseBackendKind("gpu"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown backend \"gpu\"; choose one of: auto, cpu, cuda")));
  EXPECT_THAT(ParseBackendKind(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
}

TEST(BackendRegistryTest, CreateCpuAndAuto) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Backend> cpu, CreateBackend(BackendKind::kCpu, 2));
  EXPECT_EQ(cpu->name(), "cpu");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Backend> any, CreateBackend(BackendKind::kAuto));
  // auto is cuda only when built with it and a device answers.
  const bool cuda_usable = BuiltWithCuda() && CreateBackend(BackendKind::kCuda).ok();
  EXPECT_EQ(any->name(), cuda_usable ? "cuda" : "cpu");
  EXPECT_THAT(CreateBackend(BackendKind::kCpu, -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("threads")));
}

TEST(BackendRegistryTest, CudaWithoutCuda) {
  if (BuiltWithCuda()) GTEST_SKIP() << "built with CUDA";
  EXPECT_THAT(CreateBackend(BackendKind::kCuda),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("this build has no CUDA backend (built without nvcc)")));
}

TEST(BackendRegistryTest, CreatedBackendWorks) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Backend> backend, CreateBackend(BackendKind::kCpu));
  const float a[3] = {1, 2, 3}, b[3] = {1, 2, 4};
  DiffTask task;
  task.ref = TensorView{DType::kFloat32, Shape{3}, a};
  task.cand = TensorView{DType::kFloat32, Shape{3}, b};
  ASSERT_OK_AND_ASSIGN(DiffStats s, backend->Compare(task));
  EXPECT_EQ(s.max_abs, 1.0);
  EXPECT_EQ(s.max_index, 2u);
  std::vector<DiffStats> out(1);
  EXPECT_THAT(backend->CompareBatch({&task, 1}, absl::MakeSpan(out)), IsOk());
  EXPECT_EQ(out[0].max_index, 2u);
}

}  // namespace
}  // namespace reprod::kernels

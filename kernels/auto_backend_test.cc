// AutoBackend routing and calibration, with a stand-in for the GPU: a
// backend that computes like the cpu (so results can be checked against an
// independent CpuBackend) but has its own name, merge order and, when asked,
// a delay per call, and counts the tasks it gets.
#include "kernels/auto_backend.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/diff_stats.h"
#include "kernels/testing/host_resident_backend.h"
#include "kernels/testing/reference_diff.h"
#include "tests/testing/status_matchers.h"

namespace reprod::kernels {
namespace {

using ::reprod::kernels::testing::ExpectIdentical;
using ::reprod::kernels::testing::HostTensor;
using ::reprod::kernels::testing::MakeTensor;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

class StandIn final : public Backend {
 public:
  // cpu_grid: plans and merges like the cpu backend (the cpu stand-in);
  // otherwise the base class's plans and sequential merge, like cuda.
  StandIn(std::string name, std::chrono::milliseconds delay = std::chrono::milliseconds(0),
          bool cpu_grid = false)
      : name_(std::move(name)), delay_(delay), cpu_grid_(cpu_grid) {}
  std::string_view name() const override { return name_; }
  absl::StatusOr<DiffStats> Compare(const DiffTask& task) override {
    tasks_ += 1;
    std::this_thread::sleep_for(delay_);
    return inner_.Compare(task);
  }
  absl::Status CompareBatch(absl::Span<const DiffTask> tasks,
                            absl::Span<DiffStats> out) override {
    tasks_ += static_cast<int>(tasks.size());
    std::this_thread::sleep_for(delay_);
    return inner_.CompareBatch(tasks, out);
  }
  FlatWindowPlan PlanFlatWindows(DType r, DType c, int64_t elements,
                                 int64_t max_window) const override {
    return cpu_grid_ ? inner_.PlanFlatWindows(r, c, elements, max_window)
                     : Backend::PlanFlatWindows(r, c, elements, max_window);
  }
  TransposedWindowPlan PlanTransposedWindows(DType r, DType c, int64_t m, int64_t n,
                                             int64_t max_window) const override {
    return cpu_grid_ ? inner_.PlanTransposedWindows(r, c, m, n, max_window)
                     : Backend::PlanTransposedWindows(r, c, m, n, max_window);
  }
  DiffStats MergeWindows(absl::Span<const DiffStats> windows) const override {
    return cpu_grid_ ? inner_.MergeWindows(windows) : Backend::MergeWindows(windows);
  }
  int tasks() const { return tasks_; }

 private:
  std::string name_;
  std::chrono::milliseconds delay_;
  bool cpu_grid_;
  CpuBackend inner_{1};
  std::atomic<int> tasks_{0};
};

struct Pairs {
  HostTensor flat_ref, flat_cand, t_ref, t_cand;
  DiffTask flat, transposed;
};

Pairs MakePairs() {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> dist(0.0, 1.0);
  const int64_t m = 37, n = 53;
  std::vector<double> r(static_cast<size_t>(m * n)), c(r.size()), ct(r.size());
  for (size_t i = 0; i < r.size(); ++i) {
    r[i] = dist(rng);
    c[i] = r[i] + 1e-5 * dist(rng);
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) ct[j * m + i] = c[i * n + j];
  }
  Pairs p;
  p.flat_ref = MakeTensor(DType::kFloat32, r);
  p.flat_cand = MakeTensor(DType::kFloat32, c);
  p.t_ref = MakeTensor(DType::kFloat64, r, Shape{m, n});
  p.t_cand = MakeTensor(DType::kFloat64, ct, Shape{n, m});
  p.flat.ref = p.flat_ref.view();
  p.flat.cand = p.flat_cand.view();
  p.transposed.ref = p.t_ref.view();
  p.transposed.cand = p.t_cand.view();
  p.transposed.transpose_cand = true;
  return p;
}

struct Made {
  StandIn* cpu;
  StandIn* gpu;
  std::unique_ptr<AutoBackend> backend;
};

Made Make(double cpu_gbs, double cuda_gbs) {
  auto cpu = std::make_unique<StandIn>("cpu", std::chrono::milliseconds(0), true);
  auto gpu = std::make_unique<StandIn>("cuda");
  Made m{cpu.get(), gpu.get(), nullptr};
  AutoCalibration cal;
  cal.cpu_gbs = cpu_gbs;
  cal.cuda_gbs = cuda_gbs;
  m.backend = std::make_unique<AutoBackend>(std::move(cpu), std::move(gpu), cal);
  return m;
}

TEST(AutoBackendTest, ElementWiseFollowsTheCalibrationTransposedGoesToCuda) {
  const Pairs p = MakePairs();
  CpuBackend oracle;
  for (const bool cuda_faster : {false, true}) {
    Made m = cuda_faster ? Make(10, 20) : Make(20, 10);
    EXPECT_EQ(m.backend->name(),
              cuda_faster ? "auto (element-wise: cuda, transposed: cuda)"
                          : "auto (element-wise: cpu, transposed: cuda)");
    EXPECT_EQ(&m.backend->BackendFor(p.flat), cuda_faster ? static_cast<Backend*>(m.gpu)
                                                          : static_cast<Backend*>(m.cpu));
    EXPECT_EQ(&m.backend->BackendFor(p.transposed), static_cast<Backend*>(m.gpu));
    ASSERT_OK_AND_ASSIGN(DiffStats flat, m.backend->Compare(p.flat));
    ASSERT_OK_AND_ASSIGN(DiffStats transposed, m.backend->Compare(p.transposed));
    EXPECT_EQ(m.gpu->tasks(), cuda_faster ? 2 : 1);
    EXPECT_EQ(m.cpu->tasks(), cuda_faster ? 0 : 1);
    ASSERT_OK_AND_ASSIGN(DiffStats want_flat, oracle.Compare(p.flat));
    ASSERT_OK_AND_ASSIGN(DiffStats want_t, oracle.Compare(p.transposed));
    ExpectIdentical(flat, want_flat, "flat");
    ExpectIdentical(transposed, want_t, "transposed");
  }
}

TEST(AutoBackendTest, MixedBatchKeepsEveryResultAtItsPosition) {
  const Pairs p = MakePairs();
  Made m = Make(20, 10);
  std::vector<DiffTask> tasks;
  for (int i = 0; i < 9; ++i) {
    DiffTask t = i % 3 == 1 ? p.transposed : p.flat;
    t.index_base = static_cast<uint64_t>(1000 * i);  // tells the results apart
    tasks.push_back(t);
  }
  std::vector<DiffStats> out(tasks.size());
  ASSERT_TRUE(m.backend->CompareBatch(tasks, absl::MakeSpan(out)).ok());
  EXPECT_EQ(m.gpu->tasks(), 3);
  EXPECT_EQ(m.cpu->tasks(), 6);
  CpuBackend oracle;
  for (size_t i = 0; i < tasks.size(); ++i) {
    ASSERT_OK_AND_ASSIGN(DiffStats want, oracle.Compare(tasks[i]));
    ExpectIdentical(out[i], want, "task " + std::to_string(i));
  }
  // An invalid task is named by its position in the caller's batch.
  tasks[7].cand.shape = Shape{3};
  EXPECT_THAT(m.backend->CompareBatch(tasks, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task 7")));
  EXPECT_THAT(m.backend->CompareBatch(tasks, absl::MakeSpan(out).subspan(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outputs")));
}

// Keyed refs (DiffTask::ref_key) with a resident cache on the "cuda" side
// (a host-memory stand-in with the cuda backend's contract).
TEST(AutoBackendTest, KeyedPairsGoToCudaWhenMovingOnlyCandMakesItFaster) {
  Pairs p = MakePairs();
  DiffTask keyed = p.flat;
  keyed.ref_key = "run/x@0";
  CpuBackend oracle;
  ASSERT_OK_AND_ASSIGN(DiffStats want, oracle.Compare(p.flat));
  struct Case {
    double cpu_gbs, cuda_gbs;
    size_t budget;
    bool keyed_to_cuda;
  };
  // 2 * 6 > 10: cuda wins moving half the bytes; 2 * 4 < 10: it does not;
  // no budget: no cache, so no reason to route keyed pairs differently.
  for (const Case& c : {Case{10, 6, 1 << 20, true}, Case{10, 4, 1 << 20, false},
                        Case{10, 6, 0, false}}) {
    SCOPED_TRACE(::testing::Message() << c.cpu_gbs << " " << c.cuda_gbs << " " << c.budget);
    auto cpu = std::make_unique<StandIn>("cpu", std::chrono::milliseconds(0), true);
    auto gpu = std::make_unique<testing::HostResidentBackend>(c.budget, "cuda");
    Backend* cpu_ptr = cpu.get();
    Backend* gpu_ptr = gpu.get();
    AutoCalibration cal;
    cal.cpu_gbs = c.cpu_gbs;
    cal.cuda_gbs = c.cuda_gbs;
    AutoBackend backend(std::move(cpu), std::move(gpu), cal);
    EXPECT_EQ(&backend.BackendFor(p.flat), cpu_ptr);  // unkeyed: the calibration
    EXPECT_EQ(&backend.BackendFor(keyed), c.keyed_to_cuda ? gpu_ptr : cpu_ptr);
    EXPECT_EQ(backend.ReducerName(keyed), c.keyed_to_cuda ? "cuda" : "cpu");
    // Twice: a miss that fills the cache, then a hit.
    for (int i = 0; i < 2; ++i) {
      ASSERT_OK_AND_ASSIGN(DiffStats got, backend.Compare(keyed));
      ExpectIdentical(got, want, "keyed");
    }
    const ResidentStats rs = backend.resident_stats();
    EXPECT_EQ(rs.budget_bytes, c.budget);
    EXPECT_EQ(rs.hits, c.keyed_to_cuda ? 1u : 0u);
    EXPECT_EQ(rs.misses, c.keyed_to_cuda ? 1u : 0u);
    // The element-wise windows follow the cpu's grid; with keyed windows
    // possibly on cuda, a multi-window plan is not claimed exact.
    const FlatWindowPlan plan =
        backend.PlanFlatWindows(DType::kFloat32, DType::kFloat32, 1 << 24, 1 << 20);
    EXPECT_LT(plan.elements, 1 << 24);
    if (c.keyed_to_cuda) {
      EXPECT_FALSE(plan.exact);
    }
  }
}

TEST(AutoBackendTest, AHeldRefWithoutHostDataAlwaysGoesToCuda) {
  Pairs p = MakePairs();
  auto cpu = std::make_unique<StandIn>("cpu", std::chrono::milliseconds(0), true);
  auto gpu = std::make_unique<testing::HostResidentBackend>(1 << 20, "cuda");
  testing::HostResidentBackend* gpu_ptr = gpu.get();
  AutoCalibration cal;
  cal.cpu_gbs = 100;  // cuda never wins by the numbers
  cal.cuda_gbs = 1;
  AutoBackend backend(std::move(cpu), std::move(gpu), cal);
  DiffTask keyed = p.flat;
  keyed.ref_key = "run/x@0";
  EXPECT_EQ(backend.BackendFor(keyed).name(), "cpu");
  // Not resident yet: nothing to hold, and a null ref is refused.
  EXPECT_EQ(backend.HoldResidentRef("run/x@0"), nullptr);
  DiffTask bare = keyed;
  bare.ref.data = nullptr;
  EXPECT_THAT(backend.Compare(bare), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not resident")));
  // An unkeyed null ref is invalid, as for any backend.
  DiffTask unkeyed = bare;
  unkeyed.ref_key = {};
  EXPECT_THAT(backend.Compare(unkeyed),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no data")));
  // Made resident on the cuda side, held: the bare task goes there and
  // reads the cached copy.
  ASSERT_TRUE(gpu_ptr->Compare(keyed).ok());
  std::shared_ptr<const void> hold = backend.HoldResidentRef("run/x@0");
  ASSERT_NE(hold, nullptr);
  EXPECT_EQ(backend.BackendFor(bare).name(), "cuda");
  CpuBackend oracle;
  ASSERT_OK_AND_ASSIGN(DiffStats want, oracle.Compare(p.flat));
  ASSERT_OK_AND_ASSIGN(DiffStats got, backend.Compare(bare));
  ExpectIdentical(got, want, "held");
  std::vector<DiffTask> batch = {bare, p.flat, bare};
  std::vector<DiffStats> out(batch.size());
  ASSERT_TRUE(backend.CompareBatch(batch, absl::MakeSpan(out)).ok());
  for (const DiffStats& o : out) ExpectIdentical(o, want, "batch");
  EXPECT_EQ(backend.resident_stats().hits, 3u);
}

TEST(AutoBackendTest, WindowsComeFromTheBackendThatReducesThem) {
  Made cpu_flat = Make(20, 10);
  CpuBackend cpu;
  const int64_t big = CpuBackend::kChunkElements * 8;
  const FlatWindowPlan want =
      cpu.PlanFlatWindows(DType::kFloat32, DType::kFloat32, big, CpuBackend::kChunkElements * 2);
  const FlatWindowPlan got = cpu_flat.backend->PlanFlatWindows(
      DType::kFloat32, DType::kFloat32, big, CpuBackend::kChunkElements * 2);
  EXPECT_EQ(got.elements, want.elements);
  EXPECT_EQ(got.exact, want.exact);
  EXPECT_TRUE(got.exact);
  // Transposed: the stand-in's (base class) plan, exact only as one tile
  // while element-wise pairs (and so MergeWindows) belong to the cpu.
  const TransposedWindowPlan one = cpu_flat.backend->PlanTransposedWindows(
      DType::kFloat32, DType::kFloat32, 10, 10, 1000);
  EXPECT_TRUE(one.exact);
  const TransposedWindowPlan several = cpu_flat.backend->PlanTransposedWindows(
      DType::kFloat32, DType::kFloat32, 100, 10, 200);
  EXPECT_EQ(several.rows, 20);
  EXPECT_FALSE(several.exact);
  // All on the stand-in: its own plan and merge, exact flags untouched.
  Made all_gpu = Make(10, 20);
  const TransposedWindowPlan single_owner = all_gpu.backend->PlanTransposedWindows(
      DType::kFloat32, DType::kFloat32, 100, 10, 200);
  EXPECT_FALSE(single_owner.exact);  // the base class plan is exact only for one window
  // MergeWindows: the element-wise backend's order (cpu: pairwise tree;
  // stand-in: sequential); 1e16, 1, -1e16, 1 tells them apart.
  std::vector<DiffStats> parts(4);
  const double sums[4] = {1e16, 1, -1e16, 1};
  for (int i = 0; i < 4; ++i) {
    parts[i].count = 1;
    parts[i].sum_abs = sums[i];
  }
  EXPECT_EQ(cpu_flat.backend->MergeWindows(parts).sum_abs, cpu.MergeWindows(parts).sum_abs);
  EXPECT_EQ(all_gpu.backend->MergeWindows(parts).sum_abs, SequentialMerge(parts).sum_abs);
  EXPECT_NE(cpu.MergeWindows(parts).sum_abs, SequentialMerge(parts).sum_abs);
}

TEST(AutoBackendTest, CalibrationMeasuresBothAndPicksTheFaster) {
  CpuBackend cpu;
  StandIn slow("slow", std::chrono::milliseconds(20));
  ASSERT_OK_AND_ASSIGN(AutoCalibration cal, CalibrateAuto(cpu, slow, 1 << 16, 2));
  EXPECT_EQ(cal.elements, 1u << 16);
  // 512 KiB in at least 20 ms: at most ~0.03 GB/s for the slow one.
  EXPECT_LT(cal.cuda_gbs, 0.03);
  EXPECT_GT(cal.cpu_gbs, cal.cuda_gbs);
  EXPECT_FALSE(cal.cuda_for_element_wise());
  // Other way round: the slow one as "cpu".
  ASSERT_OK_AND_ASSIGN(AutoCalibration rev, CalibrateAuto(slow, cpu, 1 << 16, 2));
  EXPECT_TRUE(rev.cuda_for_element_wise());
  EXPECT_THAT(CalibrateAuto(cpu, slow, 0, 2), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

// A backend whose results differ from the cpu's fails the calibration.
TEST(AutoBackendTest, CalibrationRejectsABackendThatDisagrees) {
  class Broken final : public Backend {
   public:
    std::string_view name() const override { return "broken"; }
    absl::StatusOr<DiffStats> Compare(const DiffTask& task) override {
      absl::StatusOr<DiffStats> s = inner_.Compare(task);
      if (s.ok()) s->mismatches += 1;
      return s;
    }
    absl::Status CompareBatch(absl::Span<const DiffTask> t, absl::Span<DiffStats> o) override {
      return inner_.CompareBatch(t, o);
    }

   private:
    CpuBackend inner_{1};
  } broken;
  CpuBackend cpu;
  EXPECT_THAT(CalibrateAuto(cpu, broken, 1 << 12, 1),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("disagree")));
}

}  // namespace
}  // namespace reprod::kernels

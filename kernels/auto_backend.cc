#include "kernels/auto_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {
namespace {

// Best wall time of `runs` calls after one warm-up, in seconds.
absl::StatusOr<double> BestSeconds(Backend& backend, const DiffTask& task, int runs,
                                   DiffStats* stats) {
  double best = 0;
  for (int i = 0; i <= runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<DiffStats> s = backend.Compare(task);
    const auto t1 = std::chrono::steady_clock::now();
    if (!s.ok()) return s.status();
    *stats = *s;
    const double sec = std::chrono::duration<double>(t1 - t0).count();
    if (i == 1 || (i > 1 && sec < best)) best = sec;
  }
  return best;
}

}  // namespace

absl::StatusOr<AutoCalibration> CalibrateAuto(Backend& cpu, Backend& cuda, uint64_t elements,
                                              int runs) {
  if (elements < 1 || runs < 1) {
    return absl::InvalidArgumentError("CalibrateAuto: elements and runs must be >= 1");
  }
  // A cheap deterministic fill: values in [-1, 1), cand = ref + a small
  // perturbation (the kernels' fast paths, as real data takes them).
  std::vector<float> ref(elements), cand(elements);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (uint64_t i = 0; i < elements; ++i) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    const uint64_t r = s * 2685821657736338717ull;
    ref[i] = static_cast<float>(static_cast<int64_t>(r >> 40) - (int64_t{1} << 23)) * 0x1p-23f;
    cand[i] = ref[i] * (1.0f + 0x1p-20f * static_cast<float>(static_cast<int>(r & 0xff) - 128));
  }
  DiffTask task;
  const Shape shape{static_cast<int64_t>(elements)};
  task.ref = TensorView{DType::kFloat32, shape, ref.data()};
  task.cand = TensorView{DType::kFloat32, shape, cand.data()};
  DiffStats on_cpu, on_cuda;
  absl::StatusOr<double> cpu_s = BestSeconds(cpu, task, runs, &on_cpu);
  if (!cpu_s.ok()) return cpu_s.status();
  absl::StatusOr<double> cuda_s = BestSeconds(cuda, task, runs, &on_cuda);
  if (!cuda_s.ok()) return cuda_s.status();
  if (on_cpu.count != on_cuda.count || on_cpu.mismatches != on_cuda.mismatches ||
      on_cpu.max_index != on_cuda.max_index || !(on_cpu.histogram == on_cuda.histogram)) {
    return absl::InternalError(absl::StrCat(
        "auto calibration: ", std::string(cpu.name()), " and ", std::string(cuda.name()),
        " disagree on the calibration pair (count ", on_cpu.count, " vs ", on_cuda.count,
        ", mismatches ", on_cpu.mismatches, " vs ", on_cuda.mismatches, ", max index ",
        on_cpu.max_index, " vs ", on_cuda.max_index, ")"));
  }
  const double bytes = 8.0 * static_cast<double>(elements);
  AutoCalibration c;
  c.cpu_gbs = bytes / std::max(*cpu_s, 1e-9) / 1e9;
  c.cuda_gbs = bytes / std::max(*cuda_s, 1e-9) / 1e9;
  c.elements = elements;
  return c;
}

AutoBackend::AutoBackend(std::unique_ptr<Backend> cpu, std::unique_ptr<Backend> cuda,
                         const AutoCalibration& calibration)
    : cpu_(std::move(cpu)), cuda_(std::move(cuda)), calibration_(calibration) {
  element_wise_ = calibration_.cuda_for_element_wise() ? cuda_.get() : cpu_.get();
  resident_to_cuda_ =
      cuda_->resident_stats().budget_bytes > 0 && calibration_.cuda_for_resident_refs();
  name_ = absl::StrCat("auto (element-wise: ", std::string(element_wise_->name()),
                       ", transposed: ", std::string(cuda_->name()), ")");
}

Backend& AutoBackend::BackendFor(const DiffTask& task) const {
  if (task.transpose_cand) return *cuda_;
  // A ref without host data is only on the device (held by the caller).
  if (task.ref.data == nullptr && !task.ref_key.empty()) return *cuda_;
  if (resident_to_cuda_ && !task.ref_key.empty()) return *cuda_;
  return *element_wise_;
}

absl::StatusOr<DiffStats> AutoBackend::Compare(const DiffTask& task) {
  return BackendFor(task).Compare(task);
}

absl::Status AutoBackend::CompareBatch(absl::Span<const DiffTask> tasks,
                                       absl::Span<DiffStats> out) {
  // Validated here so that an invalid task is reported by its position in
  // the caller's batch, not in a part of it.
  if (absl::Status s = ValidateDiffBatch(tasks, out.size(), /*allow_resident_ref=*/true);
      !s.ok()) {
    return s;
  }
  std::vector<size_t> to_cuda, to_cpu;
  for (size_t i = 0; i < tasks.size(); ++i) {
    (&BackendFor(tasks[i]) == cuda_.get() ? to_cuda : to_cpu).push_back(i);
  }
  if (to_cuda.empty()) return cpu_->CompareBatch(tasks, out);
  if (to_cpu.empty()) return cuda_->CompareBatch(tasks, out);
  auto run_part = [&out, &tasks](Backend& backend, const std::vector<size_t>& which) {
    std::vector<DiffTask> part;
    part.reserve(which.size());
    for (size_t i : which) part.push_back(tasks[i]);
    std::vector<DiffStats> results(which.size());
    absl::Status s = backend.CompareBatch(part, absl::MakeSpan(results));
    if (!s.ok()) return s;
    for (size_t k = 0; k < which.size(); ++k) out[which[k]] = results[k];
    return absl::OkStatus();
  };
  // The GPU part on its own thread (it mostly waits for copies and kernels)
  // while the cores reduce theirs; the two parts write disjoint slots of out.
  std::future<absl::Status> gpu_part = std::async(
      std::launch::async | std::launch::deferred, [&] { return run_part(*cuda_, to_cuda); });
  absl::Status cpu_status = run_part(*cpu_, to_cpu);
  absl::Status gpu_status = gpu_part.get();
  return gpu_status.ok() ? cpu_status : gpu_status;
}

FlatWindowPlan AutoBackend::PlanFlatWindows(DType ref_dtype, DType cand_dtype, int64_t elements,
                                            int64_t max_window_elements) const {
  FlatWindowPlan plan =
      element_wise_->PlanFlatWindows(ref_dtype, cand_dtype, elements, max_window_elements);
  // Keyed windows may go to cuda and merge in the cpu's order: only a
  // single window is then sure to be exact.
  if (resident_to_cuda_ && element_wise_ != cuda_.get() && plan.elements < elements) {
    plan.exact = false;
  }
  return plan;
}

TransposedWindowPlan AutoBackend::PlanTransposedWindows(DType ref_dtype, DType cand_dtype,
                                                        int64_t m, int64_t n,
                                                        int64_t max_window_elements) const {
  TransposedWindowPlan plan =
      cuda_->PlanTransposedWindows(ref_dtype, cand_dtype, m, n, max_window_elements);
  // MergeWindows merges in the element-wise backend's order: cuda's plan is
  // only exact for a single tile then.
  const bool single = plan.rows >= m && plan.cols >= n;
  if (element_wise_ != cuda_.get() && !single) plan.exact = false;
  return plan;
}

DiffStats AutoBackend::MergeWindows(absl::Span<const DiffStats> windows) const {
  return element_wise_->MergeWindows(windows);
}

std::shared_ptr<const void> AutoBackend::HoldResidentRef(std::string_view key) {
  return cuda_->HoldResidentRef(key);
}

ResidentStats AutoBackend::resident_stats() const { return cuda_->resident_stats(); }

}  // namespace reprod::kernels

// File: kernels/auto_backend.h
//
// AutoBackend: what `--backend auto` gives on a machine with a CUDA device
// (issue [G] item 3). It owns a cpu and a cuda backend and sends each task
// to the one that is faster for it:
//   - transposed pairs go to cuda (it tiles them through shared memory; the
//     cpu reads one side with a stride);
//   - element-wise pairs in host memory go to whichever reduced a
//     host-resident float32 pair faster at start-up (AutoCalibration, logged
//     once). Sixteen CPU cores usually beat the GPU here, because every
//     byte must first cross PCIe; a GPU wins only where the link or the
//     cores are slow.
//   - element-wise pairs whose ref is keyed (DiffTask::ref_key) go to cuda
//     when its resident-ref cache is on (CudaBackendOptions::resident_bytes)
//     and moving only cand makes it the faster
//     (AutoCalibration::cuda_for_resident_refs); a keyed ref without host
//     data (held on the device) always does.
// `--backend cpu` / `--backend cuda` bypass it. Where no device answers,
// CreateBackend(kAuto) returns the cpu backend itself and this class is not
// used.
//
//   AutoCalibration cal = *CalibrateAuto(*cpu, *cuda);
//   AutoBackend backend(std::move(cpu), std::move(cuda), cal);
//   backend.name();   // "auto (element-wise: cpu, transposed: cuda)"
//
// The name states the routing, so a report (which carries the backend's
// name) says which backend reduced each of its pairs: element-wise pairs
// by the first, transposed pairs by the second.
//
// Windows (kernels/chunk_grid.h): element-wise plans are the element-wise
// backend's; transposed plans are cuda's. MergeWindows merges in the
// element-wise backend's order, so a transposed plan is marked exact only
// when both kinds go to cuda.
//
// Thread-safety: as the wrapped backends (both are safe to call from several
// threads at once).
#ifndef REPROD_KERNELS_AUTO_BACKEND_H_
#define REPROD_KERNELS_AUTO_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/diff_stats.h"

namespace reprod::kernels {

// Start-up measurement behind the element-wise routing: both backends on the
// same host-resident float32 pair (best of a few runs), in GB/s of both
// inputs read. The cuda figure is end to end (staging, H2D copy, kernel).
struct AutoCalibration {
  double cpu_gbs = 0;
  double cuda_gbs = 0;
  uint64_t elements = 0;  // pairs of the calibration pair
  // Element-wise pairs go to cuda only when it was measured faster.
  bool cuda_for_element_wise() const { return cuda_gbs > cpu_gbs; }
  // With a resident-ref cache, keyed element-wise pairs go to cuda when it
  // is faster moving only cand: half the calibration pair's bytes cross
  // the link, so twice the measured rate.
  bool cuda_for_resident_refs() const { return 2 * cuda_gbs > cpu_gbs; }
};

// Times `cpu` and `cuda` on a host-resident float32 pair of `elements`
// pairs (filled here; the best of `runs` after one warm-up each). The two
// results must agree on every count (else Internal: a backend is broken).
// InvalidArgument for elements < 1 or runs < 1.
absl::StatusOr<AutoCalibration> CalibrateAuto(Backend& cpu, Backend& cuda,
                                              uint64_t elements = uint64_t{1} << 24,
                                              int runs = 3);

class AutoBackend final : public Backend {
 public:
  AutoBackend(std::unique_ptr<Backend> cpu, std::unique_ptr<Backend> cuda,
              const AutoCalibration& calibration);

  // "auto (element-wise: cpu|cuda, transposed: cuda)".
  std::string_view name() const override { return name_; }

  // The backend that reduces `task` (see the routing above).
  Backend& BackendFor(const DiffTask& task) const;
  std::string_view ReducerName(const DiffTask& task) const override {
    return BackendFor(task).ReducerName(task);
  }

  absl::StatusOr<DiffStats> Compare(const DiffTask& task) override;

  // Splits the batch by backend, runs both parts (the cuda part on a thread
  // of its own while the cpu reduces its part), and puts every result back at
  // its task's position. InvalidArgument as Backend::CompareBatch.
  absl::Status CompareBatch(absl::Span<const DiffTask> tasks,
                            absl::Span<DiffStats> out) override;

  FlatWindowPlan PlanFlatWindows(DType ref_dtype, DType cand_dtype, int64_t elements,
                                 int64_t max_window_elements) const override;
  TransposedWindowPlan PlanTransposedWindows(DType ref_dtype, DType cand_dtype, int64_t m,
                                             int64_t n,
                                             int64_t max_window_elements) const override;
  DiffStats MergeWindows(absl::Span<const DiffStats> windows) const override;
  // The cuda backend's resident-ref cache (see the routing of keyed pairs).
  std::shared_ptr<const void> HoldResidentRef(std::string_view key) override;
  ResidentStats resident_stats() const override;

  const AutoCalibration& calibration() const { return calibration_; }

 private:
  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<Backend> cuda_;
  AutoCalibration calibration_;
  Backend* element_wise_;  // cpu_ or cuda_
  bool resident_to_cuda_ = false;  // keyed element-wise pairs go to cuda
  std::string name_;
};

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_AUTO_BACKEND_H_

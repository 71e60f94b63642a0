// The one place that knows which backends this binary has. The only file
// with #if REPROD_HAVE_CUDA: everything else sees only backend.h, so
// builds with and without nvcc differ in this one translation unit.
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "spdlog/spdlog.h"
#if REPROD_HAVE_CUDA
#include "kernels/auto_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/internal/device_resident_timing.h"
#endif

namespace reprod::kernels {

absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name) {
  if (name == "auto") return BackendKind::kAuto;
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown backend \"", std::string(name), "\"; choose one of: auto, cpu, cuda"));
}

namespace {

void WarnCacheUnused(size_t gpu_cache_bytes, std::string_view why) {
  if (gpu_cache_bytes > 0) {
    spdlog::warn("gpu cache of {} bytes not used: {}", gpu_cache_bytes, why);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, int threads,
                                                       size_t gpu_cache_bytes) {
#if REPROD_HAVE_CUDA
  CudaBackendOptions cuda_options;
  cuda_options.resident_bytes = gpu_cache_bytes;
#endif
  if (threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be >= 0 (0 = all cores), got ", threads));
  }
  switch (kind) {
    case BackendKind::kCpu:
      WarnCacheUnused(gpu_cache_bytes, "the backend is cpu");
      return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(threads));
    case BackendKind::kAuto:
#if REPROD_HAVE_CUDA
    {
      // Any start-up error (no driver, no device) falls back to the cpu
      // with one log line.
      absl::StatusOr<std::unique_ptr<Backend>> cuda = CreateCudaBackend(cuda_options);
      if (cuda.ok()) {
        // Element-wise pairs go where the measurement says they are faster;
        // transposed pairs to cuda (kernels/auto_backend.h).
        auto cpu = std::make_unique<CpuBackend>(threads);
        absl::StatusOr<AutoCalibration> cal = CalibrateAuto(*cpu, **cuda);
        if (!cal.ok()) {
          spdlog::warn("auto backend: calibration failed ({}); using cuda for every pair",
                       cal.status().ToString());
          return cuda;
        }
        auto backend = std::make_unique<AutoBackend>(std::move(cpu), std::move(*cuda), *cal);
        // What the cuda figure is made of: the pinned upload and the kernel
        // alone on device-resident data (same pair size). Logged, not used:
        // the routing follows the end-to-end measurement above.
        absl::StatusOr<internal::DeviceResidentTiming> t = internal::TimeDeviceResidentPair(
            cal->elements, CudaBackendOptions().chunk_elements, 3);
        const std::string parts =
            t.ok() ? absl::StrFormat(
                         "pinned H2D %.1f GB/s, kernel on device-resident data %.1f GB/s",
                         t->bytes / t->h2d_ms / 1e6, t->bytes / t->kernel_ms / 1e6)
                   : absl::StrCat("device-resident timing failed: ", t.status().ToString());
        spdlog::info(
            "auto backend: on a host-resident float32 pair of {} elements cpu reads {:.1f} GB/s, "
            "cuda {:.1f} GB/s (staging, copy and kernel; {}): {}",
            cal->elements, cal->cpu_gbs, cal->cuda_gbs, parts, backend->name());
        return std::unique_ptr<Backend>(std::move(backend));
      }
      spdlog::info("CUDA backend unavailable ({}); using cpu", cuda.status().ToString());
      WarnCacheUnused(gpu_cache_bytes, "no CUDA device");
    }
#else
      spdlog::info("no CUDA backend in this build; using cpu");
      WarnCacheUnused(gpu_cache_bytes, "no CUDA backend in this build");
#endif
      return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(threads));
    case BackendKind::kCuda:
#if REPROD_HAVE_CUDA
      return CreateCudaBackend(cuda_options);
#else
      return absl::FailedPreconditionError(
          "this build has no CUDA backend (built without nvcc)");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid BackendKind ", static_cast<int>(kind)));
}

bool BuiltWithCuda() {
#if REPROD_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace reprod::kernels

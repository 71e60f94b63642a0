// File: kernels/testing/host_resident_backend.h
//
// HostResidentBackend: a cpu backend with a resident-ref cache in host
// memory, keeping the contract of DiffTask::ref_key and
// Backend::HoldResidentRef exactly as the cuda backend does (the same
// kernels::ResidentRefs, with host memory for the copies),
// so callers of the contract (AutoBackend routing, the stored compare that
// skips reading resident refs) are tested without a GPU. Header-only, for
// tests.
//
//   HostResidentBackend backend(/*budget_bytes=*/1 << 20, "cuda");
//   task.ref_key = "run/x@0";
//   backend.Compare(task);          // miss: ref copied into the cache
//   auto hold = backend.HoldResidentRef("run/x@0");
//   task.ref.data = nullptr;        // allowed while held
//   backend.Compare(task);          // hit: the cached copy is read
#ifndef REPROD_KERNELS_TESTING_HOST_RESIDENT_BACKEND_H_
#define REPROD_KERNELS_TESTING_HOST_RESIDENT_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/diff_stats.h"
#include "kernels/resident_refs.h"

namespace reprod::kernels::testing {

class HostResidentBackend final : public Backend {
 public:
  explicit HostResidentBackend(size_t budget_bytes, std::string name = "cuda")
      : name_(std::move(name)),
        refs_(budget_bytes,
              ResidentRefs::Memory{
                  .allocate = [](size_t bytes) -> void* { return new unsigned char[bytes]; },
                  .upload = [](void* dst, const void* src, size_t bytes) {
                    std::memcpy(dst, src, bytes);
                    return absl::OkStatus();
                  },
                  .free = [](void* copy) {
                    delete[] static_cast<unsigned char*>(copy);
                    return absl::OkStatus();
                  }}) {}

  std::string_view name() const override { return name_; }

  absl::StatusOr<DiffStats> Compare(const DiffTask& task) override {
    DiffStats out;
    absl::Status s = CompareBatch(absl::MakeConstSpan(&task, 1), absl::MakeSpan(&out, 1));
    if (!s.ok()) return s;
    return out;
  }

  absl::Status CompareBatch(absl::Span<const DiffTask> tasks,
                            absl::Span<DiffStats> out) override {
    if (absl::Status s = ValidateDiffBatch(tasks, out.size(), true); !s.ok()) return s;
    ResidentRefs::Resolved resident;
    if (absl::Status s = refs_.Resolve(tasks, &resident); !s.ok()) return s;
    std::vector<DiffTask> resolved(tasks.begin(), tasks.end());
    for (size_t t = 0; t < tasks.size(); ++t) {
      if (resident.copies[t] != nullptr) resolved[t].ref.data = resident.copies[t];
    }
    absl::Status status = inner_.CompareBatch(resolved, out);
    refs_.Release(resident);
    return status;
  }

  std::shared_ptr<const void> HoldResidentRef(std::string_view key) override {
    return refs_.Hold(key);
  }

  ResidentStats resident_stats() const override { return refs_.Stats(); }

 private:
  std::string name_;
  CpuBackend inner_{1};
  ResidentRefs refs_;
};

}  // namespace reprod::kernels::testing

#endif  // REPROD_KERNELS_TESTING_HOST_RESIDENT_BACKEND_H_

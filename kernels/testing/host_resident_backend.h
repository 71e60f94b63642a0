// File: kernels/testing/host_resident_backend.h
//
// HostResidentBackend: a cpu backend with a resident-ref cache in host
// memory, keeping the contract of DiffTask::ref_key and
// Backend::HoldResidentRef exactly as the cuda backend does (the same
// kernels::ResidentLru policy, the same hits / misses / admitted counters),
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
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/diff_stats.h"
#include "kernels/resident_lru.h"

namespace reprod::kernels::testing {

class HostResidentBackend final : public Backend {
 public:
  explicit HostResidentBackend(size_t budget_bytes, std::string name = "cuda")
      : name_(std::move(name)), lru_(budget_bytes) {}
  ~HostResidentBackend() override {
    for (void* p : lru_.Clear()) delete[] static_cast<unsigned char*>(p);
  }

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
    std::vector<DiffTask> resolved(tasks.begin(), tasks.end());
    std::vector<std::string> held;
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      std::map<std::string, void*, std::less<>> seen;  // repeats: one lookup
      for (size_t t = 0; t < tasks.size() && status.ok(); ++t) {
        const DiffTask& task = tasks[t];
        const size_t bytes =
            static_cast<size_t>(task.ref.num_elements()) * DTypeSize(task.ref.dtype);
        if (task.ref_key.empty() || bytes == 0) continue;
        if (auto it = seen.find(task.ref_key); it != seen.end()) {
          ++(it->second != nullptr ? counters_.hits : counters_.misses);
          if (it->second != nullptr) {
            resolved[t].ref.data = it->second;
          } else if (task.ref.data == nullptr) {
            status = absl::FailedPreconditionError(
                absl::StrCat("task ", t, ": ref has no data and is not resident"));
          }
          continue;
        }
        void*& slot = seen[std::string(task.ref_key)];
        if (void* h = lru_.Acquire(task.ref_key)) {
          slot = h;
          ++counters_.hits;
          held.emplace_back(task.ref_key);
          resolved[t].ref.data = h;
          continue;
        }
        ++counters_.misses;
        if (task.ref.data == nullptr) {
          status = absl::FailedPreconditionError(
              absl::StrCat("task ", t, ": ref has no data and is not resident"));
          break;
        }
        std::vector<void*> evicted;
        if (!lru_.MakeRoom(bytes, task.ref_is_reference, &evicted)) continue;
        for (void* e : evicted) delete[] static_cast<unsigned char*>(e);
        auto* copy = new unsigned char[bytes];
        std::memcpy(copy, task.ref.data, bytes);
        lru_.Insert(task.ref_key, bytes, task.ref_is_reference, copy);
        slot = copy;
        held.emplace_back(task.ref_key);
        counters_.admitted_bytes += bytes;
        resolved[t].ref.data = copy;
      }
    }
    if (status.ok()) status = inner_.CompareBatch(resolved, out);
    absl::MutexLock lock(&mu_);
    for (const std::string& k : held) lru_.Release(k);
    return status;
  }

  std::shared_ptr<const void> HoldResidentRef(std::string_view key) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return HoldShared(lru_, mu_, key);  // locks mu_ itself
  }

  ResidentStats resident_stats() const override {
    absl::MutexLock lock(&mu_);
    ResidentStats r = counters_;
    r.budget_bytes = lru_.budget_bytes();
    r.used_bytes = lru_.used_bytes();
    r.entries = lru_.entries();
    r.evictions = lru_.evictions();
    r.rejections = lru_.rejections();
    return r;
  }

 private:
  std::string name_;
  CpuBackend inner_{1};
  mutable absl::Mutex mu_;
  ResidentLru lru_ ABSL_GUARDED_BY(mu_);
  ResidentStats counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reprod::kernels::testing

#endif  // REPROD_KERNELS_TESTING_HOST_RESIDENT_BACKEND_H_

#include "kernels/resident_refs.h"

#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/status_macros.h"

namespace reprod::kernels {

ResidentRefs::ResidentRefs(size_t budget_bytes, Memory memory)
    : memory_(std::move(memory)), lru_(budget_bytes) {}

ResidentRefs::~ResidentRefs() {
  absl::MutexLock lock(&mu_);
  for (void* copy : lru_.Clear()) memory_.free(copy).IgnoreError();
}

absl::Status ResidentRefs::Resolve(absl::Span<const DiffTask> tasks, Resolved* out) {
  out->copies.assign(tasks.size(), nullptr);
  out->held.clear();
  absl::Status status = [&]() -> absl::Status {
    absl::MutexLock lock(&mu_);
    std::map<std::string_view, const unsigned char*> seen;
    for (size_t t = 0; t < tasks.size(); ++t) {
      const DiffTask& task = tasks[t];
      if (task.ref_key.empty()) continue;
      const size_t bytes =
          static_cast<size_t>(task.ref.num_elements()) * DTypeSize(task.ref.dtype);
      if (bytes == 0) continue;
      auto not_resident = [&] {
        return absl::FailedPreconditionError(absl::StrCat(
            "task ", t, ": ref has no data and is not resident (key '",
            std::string(task.ref_key),
            "'); hold it with HoldResidentRef before passing a null ref"));
      };
      if (auto it = seen.find(task.ref_key); it != seen.end()) {
        out->copies[t] = it->second;
        ++(it->second != nullptr ? counters_.hits : counters_.misses);
        if (it->second == nullptr && task.ref.data == nullptr) return not_resident();
        continue;
      }
      const unsigned char*& copy = seen[task.ref_key];
      if (void* h = lru_.Acquire(task.ref_key)) {
        copy = static_cast<const unsigned char*>(h);
        out->held.push_back(task.ref_key);
        out->copies[t] = copy;
        ++counters_.hits;
        continue;
      }
      ++counters_.misses;
      if (task.ref.data == nullptr) return not_resident();
      std::vector<void*> evicted;
      if (lru_.budget_bytes() == 0 || !lru_.MakeRoom(bytes, task.ref_is_reference, &evicted)) {
        continue;
      }
      // Every evicted copy is freed even when one free fails (the LRU has
      // let go of them all); the first error is returned.
      absl::Status freed = absl::OkStatus();
      for (void* e : evicted) {
        if (absl::Status s = memory_.free(e); !s.ok() && freed.ok()) freed = s;
      }
      REPROD_RETURN_IF_ERROR(freed);
      void* fresh = memory_.allocate(bytes);
      if (fresh == nullptr) {
        ++counters_.rejections;  // out of memory: stream this one
        continue;
      }
      if (absl::Status s = memory_.upload(fresh, task.ref.data, bytes); !s.ok()) {
        memory_.free(fresh).IgnoreError();
        return s;
      }
      lru_.Insert(task.ref_key, bytes, task.ref_is_reference, fresh);
      copy = static_cast<const unsigned char*>(fresh);
      out->held.push_back(task.ref_key);
      out->copies[t] = copy;
      counters_.admitted_bytes += bytes;
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    Release(*out);
    out->held.clear();
  }
  return status;
}

void ResidentRefs::Release(const Resolved& resolved) {
  absl::MutexLock lock(&mu_);
  for (std::string_view key : resolved.held) lru_.Release(key);
}

std::shared_ptr<const void> ResidentRefs::Hold(std::string_view key) {
  absl::MutexLock lock(&mu_);
  void* h = lru_.Acquire(key);
  if (h == nullptr) return nullptr;
  return std::shared_ptr<const void>(h, [this, k = std::string(key)](const void*) {
    absl::MutexLock l(&mu_);
    lru_.Release(k);
  });
}

ResidentStats ResidentRefs::Stats() const {
  absl::MutexLock lock(&mu_);
  ResidentStats r = counters_;
  r.budget_bytes = lru_.budget_bytes();
  r.used_bytes = lru_.used_bytes();
  r.entries = lru_.entries();
  r.evictions = lru_.evictions();
  r.rejections = counters_.rejections + lru_.rejections();
  return r;
}

}  // namespace reprod::kernels

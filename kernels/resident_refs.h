// File: kernels/resident_refs.h
//
// ResidentRefs: the resident-ref cache of a backend (DiffTask::ref_key,
// Backend::HoldResidentRef, `reprodd --gpu-cache-bytes`): the eviction
// policy (kernels/resident_lru.h), its lock, the hit / miss counters and the
// resolution of a batch's keyed refs to cached copies. The copies' memory
// is the owner's (Memory: device memory in the cuda backend, host memory in
// the test stand-in kernels/testing/host_resident_backend.h), so the whole
// cache logic is one piece of code, tested on the CPU.
//
//   ResidentRefs refs(budget, memory);
//   ResidentRefs::Resolved r;
//   REPROD_RETURN_IF_ERROR(refs.Resolve(tasks, &r));
//   // r.copies[t]: task t's cached ref, or null (stream ref.data)
//   refs.Release(r);   // after the batch was reduced
//
// A batch holds its copies from Resolve to Release, and only copies
// without holds are evicted (freed, inside Resolve) or freed by the
// destructor: an owner that calls Release once the batch's reads are done
// (the cuda backend: after its rounds finished) never frees a copy in use.
//
// Thread-safety: every member may be called from any thread.
#ifndef REPROD_KERNELS_RESIDENT_REFS_H_
#define REPROD_KERNELS_RESIDENT_REFS_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/resident_lru.h"

namespace reprod::kernels {

class ResidentRefs {
 public:
  // Where copies live. allocate: null when there is no room (the miss then
  // streams as usual and counts as a rejection); upload: host bytes into a
  // copy; free: gives a copy back.
  struct Memory {
    std::function<void*(size_t bytes)> allocate;
    std::function<absl::Status(void* dst, const void* src, size_t bytes)> upload;
    std::function<absl::Status(void* copy)> free;
  };

  // budget_bytes 0: nothing is ever admitted.
  ResidentRefs(size_t budget_bytes, Memory memory);
  ~ResidentRefs();
  ResidentRefs(const ResidentRefs&) = delete;
  ResidentRefs& operator=(const ResidentRefs&) = delete;

  // A batch's copies, held until Release.
  struct Resolved {
    std::vector<const unsigned char*> copies;  // per task; null: not cached
    std::vector<std::string_view> held;        // keys (the tasks' own strings)
  };

  // copies[t]: the copy of task t's keyed ref, found (a hit) or uploaded
  // into the cache (a miss that fits); null for unkeyed or empty refs and
  // misses that do not fit. A key repeated in the batch is looked up once:
  // its repeats count as hits (or misses) but not as uses, which would make
  // every newcomer the most recent entry and undo bimodal insertion.
  // FailedPrecondition, naming the task and key, for a keyed ref without
  // host data that is not resident; the memory's errors. Nothing stays held
  // after an error.
  absl::Status Resolve(absl::Span<const DiffTask> tasks, Resolved* out);

  // Drops the holds of a successful Resolve.
  void Release(const Resolved& resolved);

  // Backend::HoldResidentRef: a handle that keeps `key`'s copy until it is
  // destroyed; null when the key is not resident. Must not outlive this.
  std::shared_ptr<const void> Hold(std::string_view key);

  // Backend::resident_stats.
  ResidentStats Stats() const;

 private:
  const Memory memory_;
  mutable absl::Mutex mu_;
  ResidentLru lru_ ABSL_GUARDED_BY(mu_);
  ResidentStats counters_ ABSL_GUARDED_BY(mu_);  // hits, misses, admitted, failed allocations
};

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_RESIDENT_REFS_H_

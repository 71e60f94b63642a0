// File: storage/work_queue.h
//
// WorkQueue: batches of work that any process sharing a store may take,
// for the distributed compare (server/distributed_compare.h). Only stores
// that several processes share have one (postgres+s3: a table claimed with
// SELECT ... FOR UPDATE SKIP LOCKED); Store::work_queue() is nullptr for
// the others.
//
//   REPROD_ASSIGN_OR_RETURN(uint64_t job, queue->Submit({{spec, bytes}, ...}));
//   // every replica, in a loop:
//   REPROD_ASSIGN_OR_RETURN(std::optional<ClaimedWork> w, queue->Claim(true));
//   if (w) queue->Finish(w->job, w->batch, Do(w->spec));
//   // the submitter:
//   REPROD_ASSIGN_OR_RETURN(std::vector<WorkResult> r, queue->Results(job));
//   queue->Drop(job);
//
// A batch claimed by a process that dies goes back to pending (the store
// notices the process is gone: postgres+s3 through the replica's advisory
// lock) at the next Results call or sweep. Specs and results are opaque
// bytes to the queue.
//
// Thread-safety: every method may be called from several threads at once.
#ifndef REPROD_STORAGE_WORK_QUEUE_H_
#define REPROD_STORAGE_WORK_QUEUE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace reprod::storage {

// One batch to submit: its description and its size (bytes to read), by
// which claimers pick.
struct WorkItem {
  std::string spec;
  uint64_t bytes = 0;
};

struct ClaimedWork {
  uint64_t job = 0;
  uint32_t batch = 0;
  std::string spec;
};

// A batch as the submitter sees it.
struct WorkResult {
  enum class State { kPending, kClaimed, kDone, kFailed };
  State state = State::kPending;
  std::string result;  // kDone
  std::string error;   // kFailed: the worker's message
};

class WorkQueue {
 public:
  virtual ~WorkQueue() = default;

  // Publishes the batches of a new job (numbered 0, 1, ... in order);
  // returns the job's id.
  virtual absl::StatusOr<uint64_t> Submit(const std::vector<WorkItem>& items) = 0;

  // Takes one pending batch of any job, the largest first (largest_first:
  // a GPU replica, fastest on big pairs) or the smallest first; nullopt
  // when none is pending.
  virtual absl::StatusOr<std::optional<ClaimedWork>> Claim(bool largest_first) = 0;

  // Records the outcome of a batch this process claimed: its result, or
  // its error (the message is kept).
  virtual absl::Status Finish(uint64_t job, uint32_t batch,
                              const absl::StatusOr<std::string>& result) = 0;

  // The job's batches in order; batches claimed by processes that died are
  // put back to pending first.
  virtual absl::StatusOr<std::vector<WorkResult>> Results(uint64_t job) = 0;

  // Forgets the job (pending batches included).
  virtual absl::Status Drop(uint64_t job) = 0;

  // Processes sharing the store that take work now (this one included).
  virtual absl::StatusOr<int> LiveWorkers() = 0;
};

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_WORK_QUEUE_H_

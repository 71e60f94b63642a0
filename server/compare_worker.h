// File: server/compare_worker.h
//
// CompareWorker: a thread that takes batches of distributed compares from
// the store's work queue (storage/work_queue.h) and reduces them
// (ReduceWorkBatch in store_compare.h), so that every replica sharing a
// postgres+s3 store helps with every replica's compares. Started by
// ReprodServer when the store has a queue; idles with a poll every
// `idle_poll` when there is no work.
//
//   auto worker = CompareWorker::Start(*store, *backend);   // nullptr: no queue
//   ...
//   worker.reset();   // stops after the batch in hand
//
// Thread-safety: construction and destruction from one thread; the worker
// thread only uses the store and backend (both allow concurrent use).
#ifndef REPROD_SERVER_COMPARE_WORKER_H_
#define REPROD_SERVER_COMPARE_WORKER_H_

#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "storage/store.h"

namespace reprod::server {

class CompareWorker {
 public:
  // nullptr when the store has no work queue.
  static std::unique_ptr<CompareWorker> Start(storage::Store& store, kernels::Backend& backend,
                                              absl::Duration idle_poll = absl::Milliseconds(50));
  ~CompareWorker();
  CompareWorker(const CompareWorker&) = delete;
  CompareWorker& operator=(const CompareWorker&) = delete;

 private:
  CompareWorker(storage::Store& store, kernels::Backend& backend, absl::Duration idle_poll);
  void Loop();

  storage::Store& store_;
  kernels::Backend& backend_;
  const absl::Duration idle_poll_;
  absl::Notification stop_;
  std::thread thread_;
};

// GPU backends take the largest batches first (StoreCompareOptions).
bool ClaimsLargestFirst(const kernels::Backend& backend);

}  // namespace reprod::server

#endif  // REPROD_SERVER_COMPARE_WORKER_H_

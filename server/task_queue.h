// File: server/task_queue.h
//
// TaskQueue: a fixed set of worker threads running posted tasks in FIFO
// order. The ingest reactors post the blocking part of their work (store
// writes, the commit's fsync, audit records) here, so gRPC's callback
// threads never block and the number of threads does not grow with the
// number of streams.
//
// Thread-safety: Post is thread-safe and may be called from a task. The
// destructor runs the tasks still queued, then joins the workers; nothing
// may Post after it started.
#ifndef REPROD_SERVER_TASK_QUEUE_H_
#define REPROD_SERVER_TASK_QUEUE_H_

#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace reprod::server {

class TaskQueue {
 public:
  // Starts `workers` (>= 1) threads.
  explicit TaskQueue(int workers);
  ~TaskQueue();
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  void Post(absl::AnyInvocable<void() &&> task);

  int workers() const { return static_cast<int>(threads_.size()); }

 private:
  void WorkerLoop();

  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_TASK_QUEUE_H_

// File: kernels/cpu/thread_pool.h
//
// ThreadPool: a persistent fork-join pool for the cpu backend. Workers are
// started once and sleep on a condition variable between jobs, so a
// ParallelFor costs a few microseconds (one wake-up), not a thread creation.
// The calling thread always takes part in its own job, so a pool of N
// threads runs N - 1 workers.
//
//   ThreadPool pool(0);  // all hardware threads
//   std::vector<double> partial(chunks);
//   pool.ParallelFor(chunks, [&](int64_t i) { partial[i] = Work(i); });
//
// Indices are handed out one at a time from an atomic counter, in
// increasing order, to whichever thread asks next (dynamic scheduling);
// callers that need determinism write per-index results and combine them in
// index order afterwards (as the cpu backend does).
//
// Thread-safety: ParallelFor may be called from several threads at once and
// from inside a running ParallelFor body (nested calls make progress because
// every caller works on its own job). The destructor must not race with
// ParallelFor.
#ifndef REPROD_KERNELS_CPU_THREAD_POOL_H_
#define REPROD_KERNELS_CPU_THREAD_POOL_H_

#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace reprod::kernels {

class ThreadPool {
 public:
  // `threads`: degree of parallelism including the calling thread; 0 means
  // std::thread::hardware_concurrency() (at least 1). Starts threads - 1
  // workers.
  explicit ThreadPool(int threads);
  // Stops and joins the workers.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Degree of parallelism (workers + the caller).
  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i) exactly once for every i in [0, n), on the calling thread
  // and on idle workers, and returns when all calls have returned. n <= 0
  // does nothing; n == 1 (or a 1-thread pool) runs inline without touching
  // the pool. fn must be safe to call concurrently and must not throw.
  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn);

 private:
  struct Job;

  void WorkerLoop();
  // Claims and runs indices of `job` until none are left.
  static void RunIndices(Job* job);

  absl::Mutex mu_;
  absl::CondVar work_cv_;  // signalled when a job is posted or on stop
  absl::CondVar done_cv_;  // signalled when a job's last worker leaves it
  std::deque<Job*> jobs_ ABSL_GUARDED_BY(mu_);  // jobs that may have indices left
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

// A process-wide pool with all hardware threads, created on first use and
// never destroyed (so it is usable until exit, from any static context).
ThreadPool& DefaultThreadPool();

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_CPU_THREAD_POOL_H_

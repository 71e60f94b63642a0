#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <thread>

namespace reprod::kernels {

struct ThreadPool::Job {
  Job(int64_t n_in, absl::FunctionRef<void(int64_t)> fn_in) : n(n_in), fn(fn_in) {}

  const int64_t n;
  const absl::FunctionRef<void(int64_t)> fn;
  std::atomic<int64_t> next{0};
  // Workers currently inside RunIndices for this job; guarded by the pool's
  // mu_. The caller may return once the job is off the list and this is 0.
  int active = 0;
  bool listed = true;  // still in jobs_ (guarded by mu_)
};

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(threads, 1);
  workers_.reserve(static_cast<size_t>(threads - 1));
  for (int i = 0; i + 1 < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    work_cv_.SignalAll();
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunIndices(Job* job) {
  for (;;) {
    const int64_t i = job->next.fetch_add(1, std::memory_order_relaxed);
    if (i >= job->n) return;
    job->fn(i);
  }
}

void ThreadPool::ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn) {
  if (n <= 0) return;
  if (n == 1 || workers_.empty()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  Job job(n, fn);
  {
    absl::MutexLock lock(&mu_);
    jobs_.push_back(&job);
    // Wake at most as many workers as there are indices beyond ours.
    const int64_t wake = std::min<int64_t>(n - 1, static_cast<int64_t>(workers_.size()));
    if (wake == static_cast<int64_t>(workers_.size())) {
      work_cv_.SignalAll();
    } else {
      for (int64_t i = 0; i < wake; ++i) work_cv_.Signal();
    }
  }
  RunIndices(&job);
  absl::MutexLock lock(&mu_);
  if (job.listed) {
    jobs_.erase(std::find(jobs_.begin(), jobs_.end(), &job));
    job.listed = false;
  }
  while (job.active > 0) done_cv_.Wait(&mu_);
}

void ThreadPool::WorkerLoop() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    while (!stop_ && jobs_.empty()) work_cv_.Wait(&mu_);
    if (stop_) return;
    Job* job = jobs_.front();
    ++job->active;
    mu_.Unlock();
    RunIndices(job);
    mu_.Lock();
    // Every index is claimed: take the job off the list so no other worker
    // picks it up, then let its caller return once we are out of it.
    if (job->listed) {
      jobs_.erase(std::find(jobs_.begin(), jobs_.end(), job));
      job->listed = false;
    }
    if (--job->active == 0) done_cv_.SignalAll();
  }
}

ThreadPool& DefaultThreadPool() {
  static ThreadPool* const pool = new ThreadPool(0);
  return *pool;
}

}  // namespace reprod::kernels

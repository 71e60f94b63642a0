#include "kernels/cpu/thread_pool.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace reprod::kernels {
namespace {

TEST(ThreadPoolTest, EveryIndexExactlyOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {0, 1, 2, 3, 100, 10000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.ParallelFor(n, [&](int64_t i) { hits[i].fetch_add(1); });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
    }
  }
}

TEST(ThreadPoolTest, DefaultSizeIsHardware) {
  ThreadPool pool(0);
  EXPECT_GE(pool.num_threads(), 1);
  EXPECT_GE(DefaultThreadPool().num_threads(), 1);
}

TEST(ThreadPoolTest, UsesSeveralThreads) {
  ThreadPool pool(3);
  std::atomic<int> running{0}, peak{0};
  pool.ParallelFor(3, [&](int64_t) {
    const int now = ++running;
    int p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
    // Wait (bounded) for the others to arrive.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (running.load() < 3 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    --running;
  });
  EXPECT_EQ(peak.load(), 3);
}

TEST(ThreadPoolTest, NestedAndConcurrentCalls) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) {
        pool.ParallelFor(8, [&](int64_t) {
          pool.ParallelFor(16, [&](int64_t j) { total.fetch_add(j); });
        });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 50 * 8 * (15 * 16 / 2));
}

TEST(ThreadPoolTest, ManySmallJobsAreCheap) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 2000; ++i) pool.ParallelFor(2, [&](int64_t j) { sum += j; });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(sum.load(), 2000);
  // A fork-join is microseconds; generous bound for loaded CI machines.
  EXPECT_LT(seconds, 2.0);
}

}  // namespace
}  // namespace reprod::kernels

#include "server/ingest_budget.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"
#include "server/task_queue.h"

namespace reprod::server {
namespace {

TEST(IngestBudget, ReservesAtOnceWhileThereIsRoom) {
  IngestBudget budget(100);
  bool resumed = false;
  EXPECT_TRUE(budget.Acquire(60, [&] { resumed = true; }));
  EXPECT_TRUE(budget.Acquire(60, [&] { resumed = true; }));  // 60 < 100: room
  EXPECT_FALSE(resumed);  // a stream told "now" reads by itself; no callback
  EXPECT_EQ(budget.used(), 120u);
  // The message came in smaller than reserved: trade the reservation.
  budget.Charge(10);
  budget.Release(60);
  EXPECT_EQ(budget.used(), 70u);
  EXPECT_EQ(budget.peak(), 130u);  // both counted for a moment
}

TEST(IngestBudget, ParksWhenFullAndResumesInOrderWithTheirReservations) {
  IngestBudget budget(100);
  budget.Charge(60);
  budget.Charge(60);  // past the limit: the messages had already arrived
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(budget.Acquire(30, [&order, i] { order.push_back(i); }));
  }
  EXPECT_EQ(budget.parked(), 3u);
  budget.Release(10);  // 110: still full
  EXPECT_TRUE(order.empty());
  budget.Release(60);  // 50: room; the first takes 30 -> 80, the second -> 110
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  EXPECT_EQ(budget.used(), 110u);
  // A newcomer does not overtake the parked one.
  EXPECT_FALSE(budget.Acquire(5, [&order] { order.push_back(9); }));
  budget.Poke();  // still full: nothing
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  budget.Release(100);  // 10: both the rest
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 9}));
  EXPECT_EQ(budget.parked(), 0u);
  EXPECT_EQ(budget.used(), 45u);
  EXPECT_EQ(budget.peak(), 120u);
}

TEST(TaskQueue, RunsEveryTaskAndDrainsOnDestruction) {
  std::atomic<int> ran{0};
  {
    TaskQueue queue(3);
    EXPECT_EQ(queue.workers(), 3);
    for (int i = 0; i < 1000; ++i) {
      queue.Post([&ran, &queue, i] {
        ++ran;
        if (i % 100 == 0) queue.Post([&ran] { ++ran; });  // posting from a task
      });
    }
  }
  EXPECT_EQ(ran.load(), 1010);
}

}  // namespace
}  // namespace reprod::server

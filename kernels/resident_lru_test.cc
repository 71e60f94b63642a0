#include "kernels/resident_lru.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reprod::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Distinct fake handles (the policy never dereferences them).
void* H(int i) { return reinterpret_cast<void*>(static_cast<uintptr_t>(0x1000 + i)); }

// Inserts `key` of `bytes` after MakeRoom, then drops the insert's hold.
std::vector<void*> Add(ResidentLru& lru, const char* key, size_t bytes, bool reference, int h) {
  std::vector<void*> evicted;
  EXPECT_TRUE(lru.MakeRoom(bytes, reference, &evicted)) << key;
  lru.Insert(key, bytes, reference, H(h));
  lru.Release(key);
  return evicted;
}

TEST(ResidentLru, HitReturnsTheHandleAndMissReturnsNull) {
  ResidentLru lru(100);
  EXPECT_EQ(lru.Acquire("a"), nullptr);
  Add(lru, "a", 40, false, 1);
  EXPECT_EQ(lru.Acquire("a"), H(1));
  lru.Release("a");
  EXPECT_EQ(lru.used_bytes(), 40u);
  EXPECT_EQ(lru.entries(), 1u);
}

TEST(ResidentLru, EvictsLeastRecentlyUsedFirst) {
  ResidentLru lru(100);
  Add(lru, "a", 40, false, 1);
  Add(lru, "b", 40, false, 2);
  // Using a makes b the least recently used.
  ASSERT_EQ(lru.Acquire("a"), H(1));
  lru.Release("a");
  EXPECT_THAT(Add(lru, "c", 40, false, 3), ElementsAre(H(2)));
  EXPECT_EQ(lru.Acquire("b"), nullptr);
  EXPECT_EQ(lru.used_bytes(), 80u);
  EXPECT_EQ(lru.evictions(), 1u);
  // c had to evict, so it went in at the cold end (bimodal insertion): the
  // next newcomer takes c's room before a's.
  EXPECT_THAT(Add(lru, "d", 40, false, 4), ElementsAre(H(3)));
  // Once used, d is the most recent: a large newcomer evicts a, then d.
  ASSERT_EQ(lru.Acquire("d"), H(4));
  lru.Release("d");
  EXPECT_THAT(Add(lru, "e", 100, false, 5), ElementsAre(H(1), H(4)));
  EXPECT_EQ(lru.used_bytes(), 100u);
}

// Cyclic passes over twice the cache (a compare larger than the budget,
// repeated): plain LRU would never hit; bimodal insertion keeps what came
// first and hits it on every later pass.
TEST(ResidentLru, RepeatedScansLargerThanTheCacheStillHit) {
  ResidentLru lru(10 * 8);  // room for 8 of 16 entries
  int hits_per_pass[4] = {};
  for (int pass = 0; pass < 4; ++pass) {
    for (int i = 0; i < 16; ++i) {
      const std::string key = "t" + std::to_string(i);
      if (lru.Acquire(key) != nullptr) {
        ++hits_per_pass[pass];
        lru.Release(key);
        continue;
      }
      std::vector<void*> evicted;
      if (lru.MakeRoom(10, false, &evicted)) {
        lru.Insert(key, 10, false, H(i));
        lru.Release(key);
      }
    }
  }
  EXPECT_EQ(hits_per_pass[0], 0);
  // The first 7 admitted stay (the 8th room turns over); LRU would give 0.
  for (int pass = 1; pass < 4; ++pass) EXPECT_GE(hits_per_pass[pass], 7) << pass;
}

// Every kMruInsertEvery-th pressured newcomer goes in hot, so a new working
// set displaces an old one that is no longer used.
TEST(ResidentLru, ANewWorkingSetTakesOverGradually) {
  ResidentLru lru(4);
  for (int i = 0; i < 4; ++i) Add(lru, ("old" + std::to_string(i)).c_str(), 1, false, i);
  for (int round = 0; round < 40; ++round) {
    for (int i = 0; i < 4; ++i) {
      const std::string key = "new" + std::to_string(i);
      if (lru.Acquire(key) != nullptr) {
        lru.Release(key);
        continue;
      }
      std::vector<void*> evicted;
      ASSERT_TRUE(lru.MakeRoom(1, false, &evicted));
      lru.Insert(key, 1, false, H(100 + i));
      lru.Release(key);
    }
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(lru.Acquire("old" + std::to_string(i)), nullptr) << i;
    EXPECT_NE(lru.Acquire("new" + std::to_string(i)), nullptr) << i;
  }
}

TEST(ResidentLru, AnExactFitEvictsNothing) {
  ResidentLru lru(100);
  Add(lru, "a", 60, false, 1);
  EXPECT_THAT(Add(lru, "b", 40, false, 2), IsEmpty());
  EXPECT_EQ(lru.used_bytes(), 100u);
}

TEST(ResidentLru, HeldEntriesAreNeverEvicted) {
  ResidentLru lru(100);
  Add(lru, "a", 50, false, 1);
  Add(lru, "b", 50, false, 2);
  ASSERT_EQ(lru.Acquire("a"), H(1));  // held
  ASSERT_EQ(lru.Acquire("b"), H(2));  // held, and now the most recent
  std::vector<void*> evicted;
  EXPECT_FALSE(lru.MakeRoom(10, false, &evicted));
  EXPECT_THAT(evicted, IsEmpty());
  EXPECT_EQ(lru.rejections(), 1u);
  lru.Release("a");
  // a is unheld but more recent than nothing else evictable: it goes.
  EXPECT_TRUE(lru.MakeRoom(10, false, &evicted));
  EXPECT_THAT(evicted, ElementsAre(H(1)));
  lru.Release("b");
}

TEST(ResidentLru, HoldsCountEveryAcquire) {
  ResidentLru lru(100);
  Add(lru, "a", 100, false, 1);
  ASSERT_EQ(lru.Acquire("a"), H(1));
  ASSERT_EQ(lru.Acquire("a"), H(1));
  lru.Release("a");
  std::vector<void*> evicted;
  EXPECT_FALSE(lru.MakeRoom(1, false, &evicted));  // still held once
  lru.Release("a");
  lru.Release("a");  // more releases than holds: ignored
  EXPECT_TRUE(lru.MakeRoom(1, false, &evicted));
  EXPECT_THAT(evicted, ElementsAre(H(1)));
}

TEST(ResidentLru, OrdinaryNewcomersNeverEvictReferences) {
  ResidentLru lru(100);
  Add(lru, "ref", 60, true, 1);
  Add(lru, "x", 40, false, 2);
  // An ordinary newcomer may only take x's room: 40 < 50, refused whole.
  std::vector<void*> evicted;
  EXPECT_FALSE(lru.MakeRoom(50, false, &evicted));
  EXPECT_THAT(evicted, IsEmpty());
  EXPECT_EQ(lru.entries(), 2u);
  // 40 it can have, although the reference entry is the older one.
  EXPECT_THAT(Add(lru, "y", 40, false, 3), ElementsAre(H(2)));
  EXPECT_EQ(lru.Acquire("ref"), H(1));
  lru.Release("ref");
}

TEST(ResidentLru, ReferenceNewcomersTakeOrdinaryEntriesBeforeReferences) {
  ResidentLru lru(100);
  Add(lru, "ref1", 40, true, 1);  // the oldest
  Add(lru, "x", 30, false, 2);
  Add(lru, "ref2", 30, true, 3);
  // 30 bytes for a new reference: x goes, although ref1 is older.
  EXPECT_THAT(Add(lru, "ref3", 30, true, 4), ElementsAre(H(2)));
  // 60 more: no ordinary entry left, so references go from the cold end:
  // ref3 (it had to evict, so it went in there), then ref1, the oldest.
  EXPECT_THAT(Add(lru, "ref4", 60, true, 5), ElementsAre(H(4), H(1)));
  EXPECT_EQ(lru.used_bytes(), 90u);
}

TEST(ResidentLru, LargerThanTheBudgetIsRefused) {
  ResidentLru lru(100);
  Add(lru, "a", 10, false, 1);
  std::vector<void*> evicted;
  EXPECT_FALSE(lru.MakeRoom(101, true, &evicted));
  EXPECT_THAT(evicted, IsEmpty());
  EXPECT_EQ(lru.entries(), 1u);
  ResidentLru off(0);  // a zero budget admits nothing
  EXPECT_FALSE(off.MakeRoom(1, false, &evicted));
}

TEST(ResidentLru, InsertOfAPresentKeyChangesNothing) {
  ResidentLru lru(100);
  Add(lru, "a", 10, false, 1);
  lru.Insert("a", 10, false, H(9));
  lru.Release("a");
  EXPECT_EQ(lru.used_bytes(), 10u);
  EXPECT_EQ(lru.Acquire("a"), H(1));
  lru.Release("a");
}

TEST(ResidentLru, ClearReturnsUnheldEntriesOnly) {
  ResidentLru lru(100);
  Add(lru, "a", 10, false, 1);
  Add(lru, "b", 20, true, 2);
  ASSERT_EQ(lru.Acquire("b"), H(2));
  EXPECT_THAT(lru.Clear(), ElementsAre(H(1)));
  EXPECT_EQ(lru.used_bytes(), 20u);
  lru.Release("b");
  EXPECT_THAT(lru.Clear(), ElementsAre(H(2)));
  EXPECT_EQ(lru.used_bytes(), 0u);
  EXPECT_EQ(lru.entries(), 0u);
}

}  // namespace
}  // namespace reprod::kernels

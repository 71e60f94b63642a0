// ResidentRefs with host memory: what it frees when the memory's free fails.
#include "kernels/resident_refs.h"

#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace reprod::kernels {
namespace {

// Host memory that records what is live and fails the frees it is told to
// (still freeing them: a device's free that reports an error has usually
// released the memory, and the test must not leak).
struct HostMemory {
  std::set<void*> live;
  int frees = 0;
  int fail_free_number = -1;  // the n-th free (0-based) returns an error

  ResidentRefs::Memory Memory() {
    return {
        .allocate = [this](size_t bytes) {
          void* p = std::malloc(bytes);
          live.insert(p);
          return p;
        },
        .upload = [](void* dst, const void* src, size_t bytes) {
          std::memcpy(dst, src, bytes);
          return absl::OkStatus();
        },
        .free = [this](void* copy) {
          live.erase(copy);
          std::free(copy);
          return frees++ == fail_free_number ? absl::InternalError("free failed")
                                             : absl::OkStatus();
        },
    };
  }
};

DiffTask KeyedTask(const std::vector<float>& ref, const std::string& key) {
  DiffTask t;
  t.ref = TensorView{DType::kFloat32, Shape{static_cast<int64_t>(ref.size())}, ref.data()};
  t.cand = t.ref;
  t.ref_key = key;
  return t;
}

TEST(ResidentRefsTest, EveryEvictedCopyIsFreedWhenOneFreeFails) {
  const std::vector<float> data(256, 1.0f);  // 1 KiB per copy
  HostMemory memory;
  {
    ResidentRefs refs(2048, memory.Memory());  // room for two copies
    const std::string a = "a", b = "b", c = "c";
    ResidentRefs::Resolved resolved;
    std::vector<DiffTask> first = {KeyedTask(data, a), KeyedTask(data, b)};
    ASSERT_TRUE(refs.Resolve(first, &resolved).ok());
    refs.Release(resolved);
    ASSERT_EQ(memory.live.size(), 2u);

    // A 2 KiB newcomer needs both out; the first free fails.
    const std::vector<float> big(512, 2.0f);
    memory.fail_free_number = 0;
    std::vector<DiffTask> second = {KeyedTask(big, c)};
    absl::Status st = refs.Resolve(second, &resolved);
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    EXPECT_EQ(memory.frees, 2);              // both evicted copies were freed
    EXPECT_TRUE(memory.live.empty());        // and nothing new was allocated
    EXPECT_TRUE(resolved.held.empty());
  }
  EXPECT_TRUE(memory.live.empty());
}

}  // namespace
}  // namespace reprod::kernels

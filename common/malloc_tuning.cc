#include "common/malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>

namespace reprod {

void TuneMallocForStreaming() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
}

}  // namespace reprod

// File: common/malloc_tuning.h
//
// glibc malloc settings for processes that stream tensors (reprodd,
// reprodctl). Call once at the start of main, before any thread starts.
//
// Why: with glibc's defaults, buffers of about 1 MiB (chunks, RocksDB blob
// reads, serialized messages) are either fresh mmaps or carved from a heap
// that free() trims right back, so every buffer's pages fault in and are
// zeroed again: measured 0.6 -> 2.7-3.2 GB/s for RocksDB reads, and a
// quarter of `reprodctl push`'s time in page faults. Raising the mmap and
// trim thresholds keeps freed memory for reuse; two arenas bound what the
// many gRPC and RocksDB threads keep (peak RSS of a 2 x 2 GiB push +
// compare: 433-619 MiB with the default 8 x cores arenas, 336-358 MiB with
// 2). MALLOC_ARENA_MAX in the environment still wins.
//
// Thread-safety: not thread-safe; process-wide.
#ifndef REPROD_COMMON_MALLOC_TUNING_H_
#define REPROD_COMMON_MALLOC_TUNING_H_

namespace reprod {

void TuneMallocForStreaming();

}  // namespace reprod

#endif  // REPROD_COMMON_MALLOC_TUNING_H_

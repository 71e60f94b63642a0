// File: kernels/resident_lru.h
//
// ResidentLru: the bookkeeping of a device-resident reference cache
// (`reprodd --gpu-cache-bytes`, CudaBackendOptions::resident_bytes): which
// ref copies a backend keeps in device memory under a byte budget, which
// one to evict for a newcomer, and which are in use. Host-only and
// allocation-agnostic: every entry carries an opaque handle (a device
// pointer in the cuda backend) that the owner allocates before Insert and
// frees when MakeRoom hands it back, so the policy is tested without a GPU.
//
// Policy:
//   - least recently used first (Acquire counts as a use);
//   - bimodal insertion (BIP, Qureshi et al., ISCA 2007): a newcomer that
//     had to evict goes in at the least recently used end, except every
//     kMruInsertEvery-th, which goes in at the most recent end. Plain LRU
//     turns a compare larger than the cache into zero hits (every entry is
//     evicted just before the next pass needs it); with BIP what was
//     admitted first stays, a later pass hits it, and a new working set
//     still takes over the cache gradually. Newcomers that fit without
//     evicting go in at the most recent end;
//   - entries of reference runs (`reference`, storage::RunInfo::reference)
//     are evicted only to make room for another reference entry: a stream
//     of ordinary compares never pushes a published reference out;
//   - an entry with holds (a compare using it, a caller's Acquire) is never
//     evicted;
//   - when the room cannot be made (the newcomer is larger than the budget,
//     or what may be evicted is too small) nothing is evicted and the
//     newcomer is not admitted: its compare streams the ref as usual.
//
//   ResidentLru lru(size_t{8} << 30);
//   if (void* h = lru.Acquire(key)) { /* use h */ lru.Release(key); }
//   std::vector<void*> evicted;
//   if (lru.MakeRoom(bytes, reference, &evicted)) {
//     for (void* e : evicted) cudaFree(e);
//     lru.Insert(key, bytes, reference, Allocate(bytes));  // held once
//   }
//
// Thread-safety: none; the owner serialises calls.
#ifndef REPROD_KERNELS_RESIDENT_LRU_H_
#define REPROD_KERNELS_RESIDENT_LRU_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace reprod::kernels {

class ResidentLru {
 public:
  explicit ResidentLru(size_t budget_bytes) : budget_(budget_bytes) {}

  size_t budget_bytes() const { return budget_; }
  size_t used_bytes() const { return used_; }
  size_t entries() const { return lru_.size(); }
  // Entries evicted so far, and newcomers MakeRoom turned away.
  uint64_t evictions() const { return evictions_; }
  uint64_t rejections() const { return rejections_; }

  // The handle stored under `key`, marked most recently used and held once
  // more; nullptr when there is none (nothing changes then).
  void* Acquire(std::string_view key);

  // Drops one hold taken by Acquire or Insert. Unknown keys and entries
  // without holds are ignored.
  void Release(std::string_view key);

  // Makes room for an entry of `bytes` (of a reference run when
  // `reference`): evicts by the policy above and appends the evicted
  // entries' handles to *evicted, least recently used first. False, with
  // nothing evicted, when the room cannot be made.
  bool MakeRoom(size_t bytes, bool reference, std::vector<void*>* evicted);

  // Adds `key` (not present; room made by MakeRoom) as the most recently
  // used entry, held once. A key already present is left as it is.
  void Insert(std::string_view key, size_t bytes, bool reference, void* handle);

  // Removes every entry without holds and returns their handles (shutdown).
  std::vector<void*> Clear();

 private:
  struct Entry {
    std::string key;
    size_t bytes = 0;
    bool reference = false;
    void* handle = nullptr;
    int holds = 0;
  };
  using List = std::list<Entry>;  // front: most recently used

  size_t budget_;
  size_t used_ = 0;
  uint64_t evictions_ = 0;
  uint64_t rejections_ = 0;
  static constexpr uint64_t kMruInsertEvery = 32;

  List lru_;
  bool under_pressure_ = false;  // the last MakeRoom had to evict
  uint64_t pressured_inserts_ = 0;
  std::map<std::string, List::iterator, std::less<>> index_;
};

}  // namespace reprod::kernels

#endif  // REPROD_KERNELS_RESIDENT_LRU_H_

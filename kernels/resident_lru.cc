#include "kernels/resident_lru.h"

#include <string>
#include <vector>

namespace reprod::kernels {

void* ResidentLru::Acquire(std::string_view key) {
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  ++it->second->holds;
  return it->second->handle;
}

void ResidentLru::Release(std::string_view key) {
  auto it = index_.find(key);
  if (it != index_.end() && it->second->holds > 0) --it->second->holds;
}

bool ResidentLru::MakeRoom(size_t bytes, bool reference, std::vector<void*>* evicted) {
  if (bytes > budget_) {
    ++rejections_;
    return false;
  }
  under_pressure_ = used_ + bytes > budget_;
  if (!under_pressure_) return true;
  const size_t need = used_ + bytes - budget_;
  // Victims, least recently used first: ordinary entries, then (for a
  // reference newcomer only) reference entries. Chosen before anything is
  // evicted, so a refusal leaves the cache as it was.
  std::vector<List::iterator> victims;
  size_t freed = 0;
  for (bool take_references : {false, true}) {
    if (take_references && !reference) break;
    for (auto it = lru_.end(); it != lru_.begin() && freed < need;) {
      --it;
      if (it->holds == 0 && it->reference == take_references) {
        victims.push_back(it);
        freed += it->bytes;
      }
    }
  }
  if (freed < need) {
    ++rejections_;
    return false;
  }
  for (List::iterator v : victims) {
    evicted->push_back(v->handle);
    used_ -= v->bytes;
    index_.erase(v->key);
    lru_.erase(v);
    ++evictions_;
  }
  return true;
}

void ResidentLru::Insert(std::string_view key, size_t bytes, bool reference, void* handle) {
  if (index_.find(key) != index_.end()) return;
  Entry entry{std::string(key), bytes, reference, handle, 1};
  const bool cold = under_pressure_ && ++pressured_inserts_ % kMruInsertEvery != 0;
  under_pressure_ = false;
  const List::iterator it =
      cold ? lru_.insert(lru_.end(), std::move(entry)) : lru_.insert(lru_.begin(), std::move(entry));
  index_.emplace(it->key, it);
  used_ += bytes;
}

std::vector<void*> ResidentLru::Clear() {
  std::vector<void*> handles;
  for (auto it = lru_.begin(); it != lru_.end();) {
    if (it->holds == 0) {
      handles.push_back(it->handle);
      used_ -= it->bytes;
      index_.erase(it->key);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
  return handles;
}

}  // namespace reprod::kernels

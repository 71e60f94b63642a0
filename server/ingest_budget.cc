#include "server/ingest_budget.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace reprod::server {

bool IngestBudget::Acquire(uint64_t bytes, absl::AnyInvocable<void() &&> resume) {
  absl::MutexLock lock(&mu_);
  if (used_ < limit_ && parked_.empty()) {
    used_ += bytes;
    peak_ = std::max(peak_, used_);
    return true;
  }
  parked_.push_back(Parked{bytes, std::move(resume)});
  return false;
}

void IngestBudget::Charge(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  used_ += bytes;
  peak_ = std::max(peak_, used_);
}

void IngestBudget::Release(uint64_t bytes) {
  {
    absl::MutexLock lock(&mu_);
    used_ -= std::min(bytes, used_);
  }
  Poke();
}

void IngestBudget::Poke() {
  std::vector<absl::AnyInvocable<void() &&>> ready;
  {
    absl::MutexLock lock(&mu_);
    while (used_ < limit_ && !parked_.empty()) {
      used_ += parked_.front().bytes;
      ready.push_back(std::move(parked_.front().resume));
      parked_.pop_front();
    }
    peak_ = std::max(peak_, used_);
  }
  for (auto& resume : ready) std::move(resume)();
}

uint64_t IngestBudget::used() const {
  absl::MutexLock lock(&mu_);
  return used_;
}

uint64_t IngestBudget::peak() const {
  absl::MutexLock lock(&mu_);
  return peak_;
}

size_t IngestBudget::parked() const {
  absl::MutexLock lock(&mu_);
  return parked_.size();
}

}  // namespace reprod::server

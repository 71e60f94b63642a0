#include "server/run_events.h"

namespace reprod::server {

void RunEvents::Notify() {
  absl::MutexLock lock(&mu_);
  ++version_;
}

void RunEvents::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  ++version_;
}

void RunEvents::CallStarted() {
  absl::MutexLock lock(&mu_);
  ++active_calls_;
}

void RunEvents::CallFinished() {
  absl::MutexLock lock(&mu_);
  --active_calls_;
}

int RunEvents::active_calls() const {
  absl::MutexLock lock(&mu_);
  return active_calls_;
}

uint64_t RunEvents::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

bool RunEvents::shutting_down() const {
  absl::MutexLock lock(&mu_);
  return shutting_down_;
}

uint64_t RunEvents::WaitForChange(uint64_t seen,
                                  absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return version_ != seen || shutting_down_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  return version_;
}

}  // namespace reprod::server

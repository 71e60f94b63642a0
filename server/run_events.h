// File: server/run_events.h
//
// RunEvents: wakes Watch streams when something they may care about
// happened (a tensor committed, a run sealed or deleted) or the server is
// shutting down. It carries no payload: a woken watcher re-reads the store.
// A global version counter makes missed wake-ups impossible:
//
//   uint64_t seen = events.version();
//   ... read the store ...
//   events.WaitForChange(seen, absl::Milliseconds(250));  // or times out
//
// Thread-safety: all methods are thread-safe.
#ifndef REPROD_SERVER_RUN_EVENTS_H_
#define REPROD_SERVER_RUN_EVENTS_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace reprod::server {

class RunEvents {
 public:
  // Counts one call as in flight for its lifetime.
  class CallGuard {
   public:
    explicit CallGuard(RunEvents* events) : events_(events) {
      events_->CallStarted();
    }
    ~CallGuard() { events_->CallFinished(); }
    CallGuard(const CallGuard&) = delete;
    CallGuard& operator=(const CallGuard&) = delete;

   private:
    RunEvents* events_;
  };

 public:
  // Something changed: bumps the version and wakes every waiter.
  void Notify();
  // Marks shutdown and wakes every waiter; shutting_down() stays true.
  void Shutdown();

  uint64_t version() const;
  bool shutting_down() const;

  // In-flight streaming/compare calls, so that Shutdown can wait for them
  // before closing connections (see ReprodServer::Shutdown).
  void CallStarted();
  void CallFinished();
  int active_calls() const;

  // Blocks until version() != seen, shutdown, or `timeout` passes. Returns
  // the current version.
  uint64_t WaitForChange(uint64_t seen, absl::Duration timeout) const;

 private:
  mutable absl::Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  int active_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_RUN_EVENTS_H_

// File: server/ingest_budget.h
//
// IngestBudget: one byte budget for the ingest messages the server holds in
// memory or is about to receive, shared by every stream. A stream asks for
// its next message only after Acquire granted a reservation of the most
// that message can weigh (while the budget is full the stream parks, FIFO,
// holding no message and no thread); when the message arrives the stream
// trades the reservation for its real size, and releases that once the
// chunk is written. A reservation whose message has not come within a
// grace period (a stalled client) is given back by the watchdog, so stalled
// streams cannot starve the active ones: the bytes in memory stay under
// the limit plus one message per stream that kept the server waiting
// longer than the grace and then sent.
//
//   if (budget.Acquire(bound, [this] { StartNextRead(); })) StartNextRead();
//   ... message of n bytes arrives:  budget.Charge(n); budget.Release(bound);
//   ... written:                     budget.Release(n);  // may resume others
//
// Thread-safety: all methods are thread-safe; resume callbacks run on the
// thread that calls Release or Poke, outside the budget's lock.
#ifndef REPROD_SERVER_INGEST_BUDGET_H_
#define REPROD_SERVER_INGEST_BUDGET_H_

#include <cstdint>
#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace reprod::server {

class IngestBudget {
 public:
  // `limit_bytes` > 0.
  explicit IngestBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}
  IngestBudget(const IngestBudget&) = delete;
  IngestBudget& operator=(const IngestBudget&) = delete;

  // Reserves `bytes` and returns true when the budget has room now (and no
  // stream parked before the caller); otherwise queues `resume`, which runs
  // once the reservation has been made for it, and returns false.
  bool Acquire(uint64_t bytes, absl::AnyInvocable<void() &&> resume);

  // Counts `bytes` that are in memory now (this may pass the limit: the
  // message has already arrived).
  void Charge(uint64_t bytes);

  // Gives back reserved or charged bytes, then Poke()s.
  void Release(uint64_t bytes);

  // Resumes parked streams, oldest first, while the budget has room.
  void Poke();

  uint64_t limit() const { return limit_; }
  uint64_t used() const;
  // The most bytes charged at once since construction.
  uint64_t peak() const;
  // Streams parked right now.
  size_t parked() const;

 private:
  const uint64_t limit_;
  mutable absl::Mutex mu_;
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t peak_ ABSL_GUARDED_BY(mu_) = 0;
  struct Parked {
    uint64_t bytes;
    absl::AnyInvocable<void() &&> resume;
  };
  std::deque<Parked> parked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_INGEST_BUDGET_H_

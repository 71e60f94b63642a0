// File: server/quota_ledger.h
//
// QuotaLedger: the server's account of stored tensor bytes, per namespace
// (the part of a run name before '/') and in total, for reprodd's
// --quota-bytes, --namespace-quota-bytes and submitter tokens' own quotas
// (auth/token_store.h). It is built once at startup from the store's run
// list (one ListRuns) and then kept up to date by the ingest path and by
// run deletion; no tensor start rescans the store.
//
//   absl::StatusOr<QuotaLedger::Reservation> r =
//       ledger.Reserve(run, principal_or_null, header.byte_length);
//   if (!r.ok()) return r.status();            // RESOURCE_EXHAUSTED
//   ... write the tensor ...
//   absl::StatusOr<storage::CommitResult> done = writer->Commit();
//   if (done.ok()) r->Commit(*done);            // else ~Reservation frees it
//   ...
//   store.DeleteRun(run); ledger.RunDeleted(run);
//
// Admission: Reserve grants `bytes` when, for every limit that applies,
// stored + reserved + bytes stays within it; granted bytes count as
// reserved until the Reservation commits or is destroyed. Tensors in flight
// at the same time therefore never take the stored bytes past a limit
// together. A reservation counts the whole tensor even when it will replace
// a stored one (the net change is only known at commit), so a replacement
// close to a limit may be refused although it would shrink the usage.
//
// Limits (0 = none): `quota_bytes` over all runs together; per namespace
// `namespace_quota_bytes`, or instead the pushing token's own quota when
// the principal is a submitter of that namespace whose token carries one
// (Principal::quota_bytes; its 0 lifts the namespace limit for that token).
// The token's quota bounds the bytes of the whole namespace, whoever pushed
// them: two tokens of one namespace with different quotas each push until
// the namespace holds their own limit.
//
// Commit accounting (storage::CommitResult): kStored adds the tensor's
// bytes, kReplaced adds them less replaced_bytes, kAlreadyPresent adds
// nothing. RunDeleted gives back every byte the ledger holds for the run; a
// tensor of that run committed while it was being deleted adds nothing.
//
// Errors: RESOURCE_EXHAUSTED from Reserve names the limit (its flag, or the
// token's label), the namespace, the stored, in-flight and needed bytes.
// Create returns the store's ListRuns errors.
//
// Thread-safety: every method may be called from several threads at once
// (one absl::Mutex inside). A Reservation belongs to one thread at a time
// and must not outlive its ledger.
#ifndef REPROD_SERVER_QUOTA_LEDGER_H_
#define REPROD_SERVER_QUOTA_LEDGER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/auth/token_store.h"
#include "storage/store.h"

namespace reprod::server {

class QuotaLedger {
 public:
  struct Limits {
    uint64_t quota_bytes = 0;            // all runs together (--quota-bytes)
    uint64_t namespace_quota_bytes = 0;  // each namespace (--namespace-quota-bytes)
  };

  // Bytes committed and bytes reserved by tensors in flight.
  struct Usage {
    uint64_t stored = 0;
    uint64_t reserved = 0;
  };

  // Granted bytes of one tensor in flight. Move-only; destroying it without
  // Commit releases the bytes. A default-constructed one holds nothing (for
  // servers without a ledger): Commit and destruction do nothing.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& other) noexcept;
    Reservation& operator=(Reservation&& other) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation();

    // Moves the bytes from reserved to stored as `done` says (file comment)
    // once the store committed the tensor. At most once; afterwards the
    // reservation holds nothing.
    void Commit(const storage::CommitResult& done);

    uint64_t bytes() const { return bytes_; }

   private:
    friend class QuotaLedger;
    Reservation(QuotaLedger* ledger, std::string run, uint64_t bytes, uint64_t generation)
        : ledger_(ledger), run_(std::move(run)), bytes_(bytes), generation_(generation) {}
    void Release();

    QuotaLedger* ledger_ = nullptr;  // nullptr: holds nothing
    std::string run_;
    uint64_t bytes_ = 0;
    uint64_t generation_ = 0;  // of run_'s entry when reserved
  };

  // Reads every run's total_bytes once (store.ListRuns("")).
  static absl::StatusOr<std::unique_ptr<QuotaLedger>> Create(storage::Store& store,
                                                             const Limits& limits);
  // An empty ledger (nothing stored), for tests and fresh stores.
  explicit QuotaLedger(const Limits& limits) : limits_(limits) {}
  QuotaLedger(const QuotaLedger&) = delete;
  QuotaLedger& operator=(const QuotaLedger&) = delete;

  // Grants `bytes` for a tensor of `run` pushed by `who` (nullptr without
  // --auth tokens), or RESOURCE_EXHAUSTED (file comment).
  absl::StatusOr<Reservation> Reserve(std::string_view run, const auth::Principal* who,
                                      uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  // The store deleted `run`: its stored bytes are given back, and its
  // reservations in flight add nothing when they commit.
  void RunDeleted(std::string_view run) ABSL_LOCKS_EXCLUDED(mu_);

  Usage Total() const ABSL_LOCKS_EXCLUDED(mu_);
  Usage Namespace(std::string_view ns) const ABSL_LOCKS_EXCLUDED(mu_);
  // Every namespace holding stored or reserved bytes now (reprodd's
  // reprod_store_bytes metric), by name.
  std::map<std::string, Usage, std::less<>> Namespaces() const ABSL_LOCKS_EXCLUDED(mu_);

  const Limits& limits() const { return limits_; }

 private:
  // A run with stored bytes or tensors in flight.
  struct RunEntry {
    uint64_t stored = 0;
    uint64_t in_flight = 0;   // reservations not yet committed or released
    uint64_t generation = 0;  // new for each entry; a deleted run's is gone
  };

  // Reservation's end: `done` == nullptr releases, otherwise commits.
  void Finish(const Reservation& r, const storage::CommitResult* done) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops the entries that hold nothing any more.
  void Tidy(std::string_view run, std::string_view ns) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Limits limits_;
  mutable absl::Mutex mu_;
  std::map<std::string, RunEntry, std::less<>> runs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Usage, std::less<>> namespaces_ ABSL_GUARDED_BY(mu_);
  Usage total_ ABSL_GUARDED_BY(mu_);
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_QUOTA_LEDGER_H_

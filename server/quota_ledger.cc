#include "server/quota_ledger.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reprod::server {
namespace {

std::string_view NamespaceOf(std::string_view run) { return run.substr(0, run.find('/')); }

// used + need <= limit, without overflow.
bool Fits(uint64_t used, uint64_t need, uint64_t limit) {
  return used <= limit && need <= limit - used;
}

uint64_t Minus(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

}  // namespace

QuotaLedger::Reservation::Reservation(Reservation&& other) noexcept
    : ledger_(std::exchange(other.ledger_, nullptr)),
      run_(std::move(other.run_)),
      bytes_(other.bytes_),
      generation_(other.generation_) {}

QuotaLedger::Reservation& QuotaLedger::Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    ledger_ = std::exchange(other.ledger_, nullptr);
    run_ = std::move(other.run_);
    bytes_ = other.bytes_;
    generation_ = other.generation_;
  }
  return *this;
}

QuotaLedger::Reservation::~Reservation() { Release(); }

void QuotaLedger::Reservation::Release() {
  if (ledger_ == nullptr) return;
  ledger_->Finish(*this, nullptr);
  ledger_ = nullptr;
}

void QuotaLedger::Reservation::Commit(const storage::CommitResult& done) {
  if (ledger_ == nullptr) return;
  ledger_->Finish(*this, &done);
  ledger_ = nullptr;
}

absl::StatusOr<std::unique_ptr<QuotaLedger>> QuotaLedger::Create(storage::Store& store,
                                                                 const Limits& limits) {
  REPROD_ASSIGN_OR_RETURN(const std::vector<storage::RunInfo> runs, store.ListRuns(""));
  auto ledger = std::make_unique<QuotaLedger>(limits);
  absl::MutexLock lock(&ledger->mu_);
  for (const storage::RunInfo& run : runs) {
    if (run.total_bytes == 0) continue;
    RunEntry& entry = ledger->runs_[run.name];
    entry.stored = run.total_bytes;
    entry.generation = ledger->next_generation_++;
    ledger->namespaces_[std::string(NamespaceOf(run.name))].stored += run.total_bytes;
    ledger->total_.stored += run.total_bytes;
  }
  return ledger;
}

absl::StatusOr<QuotaLedger::Reservation> QuotaLedger::Reserve(std::string_view run,
                                                               const auth::Principal* who,
                                                               uint64_t bytes) {
  const std::string_view ns = NamespaceOf(run);
  // The namespace's limit: the pushing token's own quota, else the flag's.
  uint64_t ns_limit = limits_.namespace_quota_bytes;
  const bool by_token = who != nullptr && who->quota_bytes.has_value() &&
                        who->scope.has_value() && who->scope->ns() == ns;
  if (by_token) ns_limit = *who->quota_bytes;
  absl::MutexLock lock(&mu_);
  if (ns_limit > 0) {
    const auto it = namespaces_.find(ns);
    const Usage used = it == namespaces_.end() ? Usage{} : it->second;
    if (!Fits(used.stored + used.reserved, bytes, ns_limit)) {
      const std::string limit =
          by_token ? absl::StrCat("the ", ns_limit, "-byte limit of token '", who->label,
                                  "' (its --quota-bytes)")
                   : absl::StrCat("its ", ns_limit, "-byte limit (--namespace-quota-bytes)");
      return absl::ResourceExhaustedError(
          absl::StrCat("quota: namespace '", std::string(ns), "' stores ", used.stored, " bytes, ",
                       used.reserved, " more in flight; ", bytes, " more would pass ", limit));
    }
  }
  if (limits_.quota_bytes > 0 &&
      !Fits(total_.stored + total_.reserved, bytes, limits_.quota_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "quota: the server stores ", total_.stored, " bytes, ", total_.reserved,
        " more in flight; ", bytes, " more would pass its ", limits_.quota_bytes,
        "-byte limit (--quota-bytes)"));
  }
  auto [it, fresh] = runs_.try_emplace(std::string(run));
  if (fresh) it->second.generation = next_generation_++;
  ++it->second.in_flight;
  namespaces_[std::string(ns)].reserved += bytes;
  total_.reserved += bytes;
  return Reservation(this, std::string(run), bytes, it->second.generation);
}

void QuotaLedger::Finish(const Reservation& r, const storage::CommitResult* done) {
  const std::string_view ns = NamespaceOf(r.run_);
  absl::MutexLock lock(&mu_);
  auto space = namespaces_.find(ns);
  if (space != namespaces_.end()) space->second.reserved = Minus(space->second.reserved, r.bytes_);
  total_.reserved = Minus(total_.reserved, r.bytes_);
  auto it = runs_.find(r.run_);
  if (it == runs_.end() || it->second.generation != r.generation_) {
    Tidy(r.run_, ns);
    return;  // the run was deleted meanwhile: nothing of it is stored
  }
  RunEntry& entry = it->second;
  --entry.in_flight;
  if (done != nullptr && done->kind != storage::CommitKind::kAlreadyPresent) {
    const uint64_t freed =
        done->kind == storage::CommitKind::kReplaced ? done->replaced_bytes : 0;
    entry.stored = Minus(entry.stored + r.bytes_, freed);
    if (space == namespaces_.end()) space = namespaces_.try_emplace(std::string(ns)).first;
    space->second.stored = Minus(space->second.stored + r.bytes_, freed);
    total_.stored = Minus(total_.stored + r.bytes_, freed);
  }
  Tidy(r.run_, ns);
}

void QuotaLedger::RunDeleted(std::string_view run) {
  const std::string_view ns = NamespaceOf(run);
  absl::MutexLock lock(&mu_);
  auto it = runs_.find(run);
  if (it == runs_.end()) return;
  const uint64_t stored = it->second.stored;
  runs_.erase(it);  // its reservations' generation is gone with it
  auto space = namespaces_.find(ns);
  if (space != namespaces_.end()) space->second.stored = Minus(space->second.stored, stored);
  total_.stored = Minus(total_.stored, stored);
  Tidy(run, ns);
}

void QuotaLedger::Tidy(std::string_view run, std::string_view ns) {
  auto it = runs_.find(run);
  if (it != runs_.end() && it->second.stored == 0 && it->second.in_flight == 0) runs_.erase(it);
  auto space = namespaces_.find(ns);
  if (space != namespaces_.end() && space->second.stored == 0 && space->second.reserved == 0) {
    namespaces_.erase(space);
  }
}

QuotaLedger::Usage QuotaLedger::Total() const {
  absl::MutexLock lock(&mu_);
  return total_;
}

QuotaLedger::Usage QuotaLedger::Namespace(std::string_view ns) const {
  absl::MutexLock lock(&mu_);
  const auto it = namespaces_.find(ns);
  return it == namespaces_.end() ? Usage{} : it->second;
}

std::map<std::string, QuotaLedger::Usage, std::less<>> QuotaLedger::Namespaces() const {
  absl::MutexLock lock(&mu_);
  return namespaces_;
}

}  // namespace reprod::server

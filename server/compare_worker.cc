#include "server/compare_worker.h"

#include <optional>
#include <string>

#include "server/store_compare.h"
#include "spdlog/spdlog.h"

namespace reprod::server {

bool ClaimsLargestFirst(const kernels::Backend& backend) {
  // cuda, or auto sending element-wise pairs (most of a batch) to cuda.
  const std::string name(backend.name());
  return name.starts_with("cuda") || name.find("element-wise: cuda") != std::string::npos;
}

std::unique_ptr<CompareWorker> CompareWorker::Start(storage::Store& store,
                                                    kernels::Backend& backend,
                                                    absl::Duration idle_poll) {
  if (store.work_queue() == nullptr) return nullptr;
  return std::unique_ptr<CompareWorker>(new CompareWorker(store, backend, idle_poll));
}

CompareWorker::CompareWorker(storage::Store& store, kernels::Backend& backend,
                             absl::Duration idle_poll)
    : store_(store), backend_(backend), idle_poll_(idle_poll) {
  thread_ = std::thread([this] { Loop(); });
}

CompareWorker::~CompareWorker() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void CompareWorker::Loop() {
  storage::WorkQueue& queue = *store_.work_queue();
  StoreCompareOptions options;
  const bool largest_first = ClaimsLargestFirst(backend_);
  while (!stop_.HasBeenNotified()) {
    absl::StatusOr<std::optional<storage::ClaimedWork>> claimed = queue.Claim(largest_first);
    if (!claimed.ok()) {
      spdlog::warn("compare worker: cannot claim work: {}", claimed.status().ToString());
      stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
      continue;
    }
    if (!claimed->has_value()) {
      stop_.WaitForNotificationWithTimeout(idle_poll_);
      continue;
    }
    const storage::ClaimedWork& work = **claimed;
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> result = ReduceWorkBatch(store_, backend_, work.spec, options);
    if (!result.ok()) {
      spdlog::warn("compare worker: job {} batch {} failed: {}", work.job, work.batch,
                   result.status().ToString());
    } else {
      spdlog::info("compare worker: job {} batch {} reduced in {}", work.job, work.batch,
                    absl::FormatDuration(absl::Now() - start));
    }
    if (absl::Status s = queue.Finish(work.job, work.batch, result); !s.ok()) {
      spdlog::warn("compare worker: cannot record job {} batch {}: {}", work.job, work.batch,
                   s.ToString());
    }
  }
}

}  // namespace reprod::server

#include "storage/memory/memory_store.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "storage/internal/tensor_checks.h"

namespace reprod::storage {
namespace {

// Asks for transparent huge pages over the 2 MiB-aligned interior of a
// large buffer about to be filled: one fault per 2 MiB instead of per
// 4 KiB (faulting in fresh tensor pages was ~40 % of ingest into this
// store). Advisory; ignored where THP is off.
void AdviseHugePages(const char* data, size_t size) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (size < 2 * kHuge) return;
  const auto begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const auto end = (reinterpret_cast<uintptr_t>(data) + size) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}


using internal::ByteTally;

struct StoredTensor {
  TensorMeta meta;
  std::shared_ptr<const std::string> bytes;
};

struct MemoryRun {
  RunInfo info;
  uint64_t incarnation = 0;  // tells a re-created run from the deleted one
  uint64_t next_sequence = 0;
  std::map<TensorAddress, StoredTensor> tensors;
};

class MemoryStore;

class MemoryTensorReader : public TensorReader {
 public:
  MemoryTensorReader(std::string run, StoredTensor tensor)
      : run_(std::move(run)), tensor_(std::move(tensor)) {}

  const TensorMeta& meta() const override { return tensor_.meta; }

  absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) override {
    REPROD_RETURN_IF_ERROR(
        internal::CheckReadRange(run_, tensor_.meta, offset, dst.size()));
    if (!dst.empty()) {
      std::memcpy(dst.data(), tensor_.bytes->data() + offset, dst.size());
    }
    return absl::OkStatus();
  }

 private:
  std::string run_;
  StoredTensor tensor_;
};

class MemoryTensorWriter : public TensorWriter {
 public:
  // verify_only: an identical tensor is stored; count and check the bytes but
  // keep none.
  MemoryTensorWriter(MemoryStore* store, std::string run, uint64_t incarnation,
                     TensorHeader header, bool verify_only)
      : store_(store),
        incarnation_(incarnation),
        verify_only_(verify_only),
        tally_(std::move(run), std::move(header)) {
    // One allocation of the declared size (checked against the server's
    // limit before BeginTensor): growing by appends copied every byte once
    // more and faulted in twice the pages.
    if (!verify_only_) {
      bytes_.reserve(tally_.header().byte_length);
      AdviseHugePages(bytes_.data(), bytes_.capacity());
    }
  }

  absl::Status Append(absl::Span<const uint8_t> data) override {
    REPROD_RETURN_IF_ERROR(tally_.Add(data));
    if (!verify_only_) {
      bytes_.append(reinterpret_cast<const char*>(data.data()), data.size());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<CommitResult> Commit() override;

 private:
  MemoryStore* store_;
  uint64_t incarnation_;
  bool verify_only_;
  bool committed_ = false;
  ByteTally tally_;
  std::string bytes_;
};

class MemoryStore : public Store {
 public:
  absl::Status CreateRun(const RunInfo& run) override {
    absl::MutexLock lock(&mu_);
    if (runs_.contains(run.name)) {
      return absl::AlreadyExistsError(
          absl::StrCat("run ", VisibleName(run.name), " already exists"));
    }
    MemoryRun& stored = runs_[run.name];
    stored.info = run;
    if (stored.info.created == absl::UnixEpoch()) {
      stored.info.created = absl::Now();
    }
    stored.info.created = internal::TruncateToMicros(stored.info.created);
    stored.info.state = RunState::kOpen;
    stored.info.tensor_count = 0;
    stored.info.total_bytes = 0;
    stored.incarnation = ++incarnations_;
    return absl::OkStatus();
  }

  absl::StatusOr<RunInfo> GetRun(std::string_view name) override {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(name);
    if (it == runs_.end()) return internal::RunNotFoundError(name);
    return it->second.info;
  }

  absl::StatusOr<std::vector<RunInfo>> ListRuns(
      std::string_view prefix) override {
    absl::MutexLock lock(&mu_);
    std::vector<RunInfo> out;
    for (auto it = runs_.lower_bound(prefix);
         it != runs_.end() && absl::StartsWith(it->first, std::string(prefix));
         ++it) {
      out.push_back(it->second.info);
    }
    return out;
  }

  absl::StatusOr<RunInfo> SealRun(std::string_view name,
                                  RunState final_state) override {
    if (final_state == RunState::kOpen) {
      return absl::InvalidArgumentError(absl::StrCat(
          "run ", VisibleName(name), ": SealRun needs sealed or aborted"));
    }
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(name);
    if (it == runs_.end()) return internal::RunNotFoundError(name);
    RunInfo& info = it->second.info;
    if (info.state != RunState::kOpen) {
      return absl::FailedPreconditionError(
          absl::StrCat("run ", VisibleName(name), " is already ",
                       std::string(RunStateName(info.state))));
    }
    info.state = final_state;
    return info;
  }

  absl::StatusOr<uint64_t> DeleteRun(std::string_view name) override {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(name);
    if (it == runs_.end()) return internal::RunNotFoundError(name);
    const uint64_t count = it->second.tensors.size();
    runs_.erase(it);
    return count;
  }

  absl::StatusOr<RunInfo> SetRunReference(std::string_view name,
                                          bool reference) override {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(name);
    if (it == runs_.end()) return internal::RunNotFoundError(name);
    it->second.info.reference = reference;
    return it->second.info;
  }

  absl::StatusOr<std::unique_ptr<TensorWriter>> BeginTensor(
      std::string_view run, const TensorHeader& header) override {
    REPROD_RETURN_IF_ERROR(internal::CheckHeader(run, header));
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(run);
    if (it == runs_.end()) return internal::RunNotFoundError(run);
    const MemoryRun& stored = it->second;
    if (stored.info.state != RunState::kOpen) {
      return internal::RunNotOpenError(run, stored.info.state);
    }
    bool verify_only = false;
    auto existing = stored.tensors.find(header.address);
    if (existing != stored.tensors.end()) {
      const TensorHeader& old = existing->second.meta.header;
      if (internal::SameContent(old, header)) {
        verify_only = true;
      } else if (!stored.info.overwrite) {
        return internal::ConflictError(run, old, header);
      }
    }
    return std::make_unique<MemoryTensorWriter>(
        this, std::string(run), stored.incarnation, header, verify_only);
  }

  absl::StatusOr<std::vector<TensorMeta>> ListTensors(
      std::string_view run, std::string_view checkpoint) override {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(run);
    if (it == runs_.end()) return internal::RunNotFoundError(run);
    std::vector<TensorMeta> out;
    for (const auto& [address, tensor] : it->second.tensors) {
      if (checkpoint.empty() || address.checkpoint == checkpoint) {
        out.push_back(tensor.meta);
      }
    }
    std::sort(out.begin(), out.end(),
              [](const TensorMeta& a, const TensorMeta& b) {
                return a.sequence < b.sequence;
              });
    return out;
  }

  absl::StatusOr<std::unique_ptr<TensorReader>> OpenTensor(
      std::string_view run, const TensorAddress& address) override {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(run);
    if (it == runs_.end()) return internal::RunNotFoundError(run);
    auto t = it->second.tensors.find(address);
    if (t == it->second.tensors.end()) {
      return internal::TensorNotFoundError(run, address);
    }
    return std::make_unique<MemoryTensorReader>(std::string(run), t->second);
  }

  absl::Status PutReport(const StoredReport& report) override {
    absl::MutexLock lock(&mu_);
    if (reports_.contains(report.id)) {
      return absl::AlreadyExistsError(
          absl::StrCat("report ", report.id, " already exists"));
    }
    StoredReport& stored = reports_[report.id];
    stored = report;
    stored.created = internal::TruncateToMicros(stored.created);
    return absl::OkStatus();
  }

  absl::StatusOr<StoredReport> GetReport(std::string_view id) override {
    absl::MutexLock lock(&mu_);
    auto it = reports_.find(id);
    if (it == reports_.end()) {
      return absl::NotFoundError(
          absl::StrCat("report ", VisibleName(id), " not found"));
    }
    return it->second;
  }

  absl::StatusOr<std::vector<StoredReport>> ListReports(std::string_view run,
                                                        size_t limit) override {
    std::vector<StoredReport> out;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, report] : reports_) {
        if (!run.empty() && report.ref != run && report.cand != run) continue;
        StoredReport summary = report;
        summary.renderings.clear();
        out.push_back(std::move(summary));
      }
    }
    std::sort(out.begin(), out.end(),
              [](const StoredReport& a, const StoredReport& b) {
                if (a.created != b.created) return a.created > b.created;
                return a.id > b.id;
              });
    if (out.size() > limit) out.resize(limit);
    return out;
  }

  absl::Status PutAuthRecord(std::string_view key,
                             std::string_view value) override {
    REPROD_RETURN_IF_ERROR(internal::CheckAuthKey(key));
    absl::MutexLock lock(&mu_);
    auth_[std::string(key)] = std::string(value);
    return absl::OkStatus();
  }

  absl::Status InsertAuthRecord(std::string_view key,
                                std::string_view value) override {
    REPROD_RETURN_IF_ERROR(internal::CheckAuthKey(key));
    absl::MutexLock lock(&mu_);
    if (!auth_.emplace(std::string(key), std::string(value)).second) {
      return internal::AuthRecordExistsError(key);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> GetAuthRecord(std::string_view key) override {
    REPROD_RETURN_IF_ERROR(internal::CheckAuthKey(key));
    absl::MutexLock lock(&mu_);
    auto it = auth_.find(key);
    if (it == auth_.end()) return internal::AuthRecordNotFoundError(key);
    return it->second;
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
  ListAuthRecords(std::string_view prefix) override {
    absl::MutexLock lock(&mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (auto it = auth_.lower_bound(prefix);
         it != auth_.end() && it->first.starts_with(prefix); ++it) {
      out.emplace_back(it->first, it->second);
    }
    return out;
  }

  // Publishes a writer's tensor (bytes == nullptr: verify-only writer).
  absl::StatusOr<CommitResult> Publish(const std::string& run,
                                       uint64_t incarnation,
                                       const TensorHeader& header,
                                       std::shared_ptr<const std::string> bytes)
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(run);
    if (it == runs_.end() || it->second.incarnation != incarnation) {
      return internal::RunDeletedError(run, header.address);
    }
    MemoryRun& stored = it->second;
    if (stored.info.state != RunState::kOpen) {
      return internal::RunNotOpenError(run, stored.info.state);
    }
    auto existing = stored.tensors.find(header.address);
    CommitKind kind = CommitKind::kStored;
    if (existing != stored.tensors.end()) {
      const TensorMeta& old = existing->second.meta;
      if (internal::SameContent(old.header, header)) {
        return CommitResult{CommitKind::kAlreadyPresent, old.sequence};
      }
      if (!stored.info.overwrite) {
        return internal::ConflictError(run, old.header, header);
      }
      kind = CommitKind::kReplaced;
    }
    if (bytes == nullptr) {
      // Verify-only writer whose identical tensor disappeared or changed.
      return absl::AbortedError(absl::StrCat(
          internal::DescribeTensor(run, header.address),
          ": the stored tensor changed while an identical copy was resent; "
          "send it again"));
    }
    uint64_t replaced_bytes = 0;
    if (kind == CommitKind::kReplaced) {
      replaced_bytes = existing->second.meta.header.byte_length;
      stored.info.total_bytes -= replaced_bytes;
      --stored.info.tensor_count;
    }
    StoredTensor& slot = stored.tensors[header.address];
    slot.meta.header = header;
    slot.meta.sequence = stored.next_sequence++;
    slot.bytes = std::move(bytes);
    ++stored.info.tensor_count;
    stored.info.total_bytes += header.byte_length;
    return CommitResult{kind, slot.meta.sequence, replaced_bytes};
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, MemoryRun, std::less<>> runs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, StoredReport, std::less<>> reports_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string, std::less<>> auth_ ABSL_GUARDED_BY(mu_);
  uint64_t incarnations_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::StatusOr<CommitResult> MemoryTensorWriter::Commit() {
  if (committed_) {
    return internal::CommittedTwiceError(tally_.run(), tally_.header().address);
  }
  committed_ = true;
  REPROD_RETURN_IF_ERROR(tally_.Verify());
  std::shared_ptr<const std::string> bytes;
  if (!verify_only_) {
    bytes = std::make_shared<const std::string>(std::move(bytes_));
  }
  return store_->Publish(tally_.run(), incarnation_, tally_.header(),
                         std::move(bytes));
}

}  // namespace

std::unique_ptr<Store> CreateMemoryStore() {
  return std::make_unique<MemoryStore>();
}

}  // namespace reprod::storage

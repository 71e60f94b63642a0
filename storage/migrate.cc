#include "storage/migrate.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "spdlog/spdlog.h"
#include "storage/internal/tensor_checks.h"

namespace reprod::storage {
namespace {

constexpr std::string_view kAuditPrefix = "audit/";
// How a run that another run's error stopped ends (never reported).
constexpr char kStopped[] = "stopped: another run failed";

// `s` with `what` put in front of its message, same code.
absl::Status Annotate(const absl::Status& s, std::string_view what) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(std::string(what), ": ", s.message()));
}

template <typename T>
absl::StatusOr<T> Context(absl::StatusOr<T> v, std::string_view what) {
  if (!v.ok()) return Annotate(v.status(), what);
  return v;
}

std::string RunLabel(std::string_view run) { return absl::StrCat("run ", VisibleName(run)); }

// The first metadata field in which `dest` differs from `src`, or empty.
std::string DifferentField(const RunInfo& src, const RunInfo& dest) {
  if (src.framework != dest.framework) return "framework";
  if (src.framework_version != dest.framework_version) return "framework_version";
  if (src.device != dest.device) return "device";
  if (src.labels != dest.labels) return "labels";
  if (internal::TruncateToMicros(src.created) != internal::TruncateToMicros(dest.created)) {
    return "created";
  }
  if (src.owner != dest.owner) return "owner";
  if (src.overwrite != dest.overwrite) return "overwrite";
  if (src.reference != dest.reference) return "reference";
  return {};
}

bool SameReport(const StoredReport& a, const StoredReport& b) {
  return a.id == b.id && a.ref == b.ref && a.cand == b.cand && a.policy == b.policy &&
         a.backend == b.backend && a.passed == b.passed &&
         internal::TruncateToMicros(a.created) == internal::TruncateToMicros(b.created) &&
         a.tensors == b.tensors && a.passed_tensors == b.passed_tensors && a.warned == b.warned &&
         a.failed == b.failed && a.missing_in_ref == b.missing_in_ref &&
         a.missing_in_cand == b.missing_in_cand && a.first_failure == b.first_failure &&
         a.policy_hash == b.policy_hash && a.renderings == b.renderings;
}

// Where one run's migration stands (one worker thread owns it).
struct RunProgress {
  std::string name;
  uint64_t index = 0;  // 1-based
  uint64_t tensors = 0;
  uint64_t done = 0;
};

class Migrator {
 public:
  Migrator(Store& from, Store& to, const MigrateOptions& options)
      : from_(from), to_(to), options_(options) {}

  absl::StatusOr<MigrateStats> Run() {
    REPROD_ASSIGN_OR_RETURN(std::vector<RunInfo> runs,
                            Context(from_.ListRuns(""), "listing the source's runs"));
    run_count_ = runs.size();
    for (const RunInfo& run : runs) tensors_total_ += run.tensor_count;
    // Runs are independent: up to `parallel_runs` at once, each in sequence
    // order by one thread.
    REPROD_RETURN_IF_ERROR(
        ForEach(options_.parallel_runs, runs.size(), [&](size_t i, std::vector<uint8_t>& buffer) {
          REPROD_RETURN_IF_ERROR(MigrateRun(runs[i], i + 1, buffer));
          absl::MutexLock lock(&mu_);
          ++stats_.runs;
          return absl::OkStatus();
        }));
    // Then every destination tensor is read back, in any order.
    if (options_.verify) {
      REPROD_RETURN_IF_ERROR(ForEach(
          options_.verify_threads, to_verify_.size(), [&](size_t i, std::vector<uint8_t>& buffer) {
            return Verify(to_verify_[i].first, to_verify_[i].second, buffer);
          }));
    }
    REPROD_RETURN_IF_ERROR(MigrateReports());
    REPROD_RETURN_IF_ERROR(MigrateAuthRecords());
    return stats_;
  }

 private:
  // Calls fn(i, buffer) for i in [0, n) from up to `threads` threads (each
  // with a window buffer of its own). The first error stops the others
  // before their next item and is returned.
  absl::Status ForEach(int threads, size_t n,
                       const std::function<absl::Status(size_t, std::vector<uint8_t>&)>& fn) {
    std::atomic<size_t> next{0};
    auto work = [&] {
      std::vector<uint8_t> buffer(std::max<uint64_t>(options_.window_bytes, 1));
      for (size_t i; !failed_.load() && (i = next.fetch_add(1)) < n;) {
        absl::Status s = fn(i, buffer);
        if (s.ok() || (absl::IsCancelled(s) && s.message() == kStopped)) continue;
        absl::MutexLock lock(&mu_);
        if (!failed_.exchange(true)) first_error_ = s;  // the others stop because of it
      }
    };
    const size_t workers = std::min<size_t>(std::max(threads, 1), std::max<size_t>(n, 1));
    std::vector<std::thread> pool;
    for (size_t t = 1; t < workers; ++t) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    absl::MutexLock lock(&mu_);
    return failed_.load() ? first_error_ : absl::OkStatus();
  }

  // Adds to the stats and calls the progress callback (one call at a time).
  void Report(const RunProgress& run, uint64_t copied, uint64_t skipped, uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    stats_.tensors_copied += copied;
    stats_.tensors_skipped += skipped;
    stats_.bytes_copied += bytes;
    if (!options_.progress) return;
    MigrateProgress p;
    p.run = run.name;
    p.run_index = run.index;
    p.run_count = run_count_;
    p.run_tensors_done = run.done;
    p.run_tensors = run.tensors;
    p.tensors_done = stats_.tensors_copied + stats_.tensors_skipped;
    p.tensors_total = tensors_total_;
    p.tensors_copied = stats_.tensors_copied;
    p.tensors_skipped = stats_.tensors_skipped;
    p.bytes_copied = stats_.bytes_copied;
    options_.progress(p);
  }

  absl::Status MigrateRun(const RunInfo& src, uint64_t index, std::vector<uint8_t>& buffer) {
    const std::string label = RunLabel(src.name);
    REPROD_ASSIGN_OR_RETURN(std::vector<TensorMeta> src_tensors,
                            Context(from_.ListTensors(src.name), "source " + label));
    RunProgress progress;
    progress.name = src.name;
    progress.index = index;
    progress.tensors = src_tensors.size();
    {
      // The total counted what ListRuns said; the listing is what moves.
      absl::MutexLock lock(&mu_);
      tensors_total_ = tensors_total_ - std::min<uint64_t>(tensors_total_, src.tensor_count) +
                       src_tensors.size();
    }
    Report(progress, 0, 0, 0);

    absl::StatusOr<RunInfo> dest = to_.GetRun(src.name);
    std::vector<TensorMeta> dest_tensors;
    if (absl::IsNotFound(dest.status())) {
      RunInfo create = src;
      create.state = RunState::kOpen;
      create.tensor_count = 0;
      create.total_bytes = 0;
      REPROD_RETURN_IF_ERROR(Annotate(to_.CreateRun(create), "creating " + label));
      REPROD_ASSIGN_OR_RETURN(dest, to_.GetRun(src.name));
    } else if (!dest.ok()) {
      return Annotate(dest.status(), "destination " + label);
    } else {
      if (std::string field = DifferentField(src, *dest); !field.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the destination already holds ", label, " with a different ", field,
                         "; delete it there or migrate into another destination"));
      }
      if (dest->state != RunState::kOpen && dest->state != src.state) {
        return absl::InvalidArgumentError(
            absl::StrCat("the destination already holds ", label, " with a different state (",
                         std::string(RunStateName(dest->state)), ", the source's is ",
                         std::string(RunStateName(src.state)), ")"));
      }
      absl::StatusOr<std::vector<TensorMeta>> listed = to_.ListTensors(src.name);
      if (!listed.ok()) return Annotate(listed.status(), "destination " + label);
      dest_tensors = *std::move(listed);
    }

    // The destination's tensors must be the source's first ones, in order.
    if (dest_tensors.size() > src_tensors.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the destination's ", label, " holds ", dest_tensors.size(),
                       " tensors, more than the source's ", src_tensors.size()));
    }
    for (size_t i = 0; i < dest_tensors.size(); ++i) {
      const TensorHeader& s = src_tensors[i].header;
      const TensorHeader& d = dest_tensors[i].header;
      if (s.address != d.address || !internal::SameContent(s, d)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the destination's ", label, " differs from the source at tensor #", i,
            " in sequence order (source ", internal::DescribeTensor(src.name, s.address),
            ", destination ", AddressToString(d.address),
            s.address == d.address ? " with other content" : "", ")"));
      }
    }
    if (dest->state != RunState::kOpen && dest_tensors.size() != src_tensors.size()) {
      // A migration seals a run only once it holds every tensor: someone else
      // wrote this one.
      return absl::InvalidArgumentError(absl::StrCat(
          "the destination's ", label, " is ", std::string(RunStateName(dest->state)),
          " but holds ", dest_tensors.size(), " of the source's ", src_tensors.size(), " tensors"));
    }
    const bool complete = dest->state != RunState::kOpen;

    for (size_t i = 0; i < src_tensors.size(); ++i) {
      if (failed_.load()) return absl::CancelledError(kStopped);
      const TensorHeader& header = src_tensors[i].header;
      const bool skip = i < dest_tensors.size();
      if (!skip) REPROD_RETURN_IF_ERROR(CopyTensor(src.name, header, buffer));
      if (options_.verify) {
        absl::MutexLock lock(&mu_);
        to_verify_.emplace_back(src.name, header);
      }
      ++progress.done;
      Report(progress, skip ? 0 : 1, skip ? 1 : 0, skip ? 0 : header.byte_length);
    }

    if (complete) {
      absl::MutexLock lock(&mu_);
      ++stats_.runs_skipped;
    } else if (src.state != RunState::kOpen) {
      REPROD_RETURN_IF_ERROR(Annotate(to_.SealRun(src.name, src.state).status(),
                                      absl::StrCat("marking the destination's ", label, " ",
                                                   std::string(RunStateName(src.state)))));
    }
    REPROD_ASSIGN_OR_RETURN(RunInfo done, Context(to_.GetRun(src.name), "destination " + label));
    uint64_t bytes = 0;
    for (const TensorMeta& t : src_tensors) bytes += t.header.byte_length;
    if (done.tensor_count != src_tensors.size() || done.total_bytes != bytes ||
        done.state != src.state) {
      return absl::DataLossError(absl::StrCat(
          "the destination's ", label, " ended ", std::string(RunStateName(done.state)), " with ",
          done.tensor_count, " tensors (", done.total_bytes, " bytes); the source's is ",
          std::string(RunStateName(src.state)), " with ", src_tensors.size(), " (", bytes,
          " bytes)"));
    }
    return absl::OkStatus();
  }

  absl::Status CopyTensor(const std::string& run, const TensorHeader& header,
                          std::vector<uint8_t>& buffer) {
    const std::string what =
        absl::StrCat("copying ", internal::DescribeTensor(run, header.address));
    absl::StatusOr<std::unique_ptr<TensorReader>> reader = from_.OpenTensor(run, header.address);
    if (!reader.ok()) return Annotate(reader.status(), what + " (reading the source)");
    if (!internal::SameContent((*reader)->meta().header, header)) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": the source changed during the migration (is reprodd running?)"));
    }
    absl::StatusOr<std::unique_ptr<TensorWriter>> writer = to_.BeginTensor(run, header);
    if (!writer.ok()) return Annotate(writer.status(), what);
    for (uint64_t offset = 0; offset < header.byte_length;) {
      const uint64_t n = std::min<uint64_t>(buffer.size(), header.byte_length - offset);
      absl::Span<uint8_t> window(buffer.data(), n);
      REPROD_RETURN_IF_ERROR(
          Annotate((*reader)->Read(offset, window), what + " (reading the source)"));
      REPROD_RETURN_IF_ERROR(Annotate((*writer)->Append(window), what));
      offset += n;
    }
    absl::StatusOr<CommitResult> committed = (*writer)->Commit();
    if (!committed.ok()) return Annotate(committed.status(), what);
    if (committed->kind == CommitKind::kReplaced) {
      spdlog::warn("migrate: {} replaced a tensor that appeared in the destination meanwhile",
                   what);
    }
    return absl::OkStatus();
  }

  absl::Status Verify(const std::string& run, const TensorHeader& header,
                      std::vector<uint8_t>& buffer) {
    const std::string what = internal::DescribeTensor(run, header.address);
    absl::StatusOr<std::unique_ptr<TensorReader>> reader = to_.OpenTensor(run, header.address);
    if (!reader.ok()) return Annotate(reader.status(), "verifying the destination's " + what);
    const TensorHeader& stored = (*reader)->meta().header;
    if (!internal::SameContent(stored, header)) {
      return absl::DataLossError(
          absl::StrCat("the destination's ", what, " has another header than the source's"));
    }
    uint32_t crc = 0;
    for (uint64_t offset = 0; offset < header.byte_length;) {
      const uint64_t n = std::min<uint64_t>(buffer.size(), header.byte_length - offset);
      absl::Span<uint8_t> window(buffer.data(), n);
      REPROD_RETURN_IF_ERROR(
          Annotate((*reader)->Read(offset, window), "verifying the destination's " + what));
      crc = Crc32cExtend(crc, window.data(), window.size());
      offset += n;
    }
    if (crc != header.crc32c) {
      return absl::DataLossError(absl::StrCat("the destination's ", what,
                                              " reads back with crc32c ", absl::Hex(crc),
                                              ", its header says ", absl::Hex(header.crc32c)));
    }
    absl::MutexLock lock(&mu_);
    ++stats_.tensors_verified;
    stats_.bytes_verified += header.byte_length;
    if (options_.progress) {
      MigrateProgress p;
      p.run = run;
      p.run_count = run_count_;
      p.tensors_done = p.tensors_total = tensors_total_;
      p.tensors_copied = stats_.tensors_copied;
      p.tensors_skipped = stats_.tensors_skipped;
      p.bytes_copied = stats_.bytes_copied;
      p.verifying = true;
      p.tensors_verified = stats_.tensors_verified;
      p.tensors_to_verify = to_verify_.size();
      options_.progress(p);
    }
    return absl::OkStatus();
  }

  absl::Status MigrateReports() {
    REPROD_ASSIGN_OR_RETURN(
        std::vector<StoredReport> listed,
        Context(from_.ListReports("", SIZE_MAX), "listing the source's reports"));
    for (const StoredReport& summary : listed) {
      const std::string what = absl::StrCat("report ", VisibleName(summary.id));
      REPROD_ASSIGN_OR_RETURN(StoredReport report,
                              Context(from_.GetReport(summary.id), "source " + what));
      absl::StatusOr<StoredReport> existing = to_.GetReport(report.id);
      if (absl::IsNotFound(existing.status())) {
        absl::Status put = to_.PutReport(report);
        if (put.ok()) {
          ++stats_.reports;
          ++stats_.reports_copied;
          continue;
        }
        if (!absl::IsAlreadyExists(put)) return Annotate(put, "copying " + what);
        existing = to_.GetReport(report.id);
      }
      if (!existing.ok()) return Annotate(existing.status(), "destination " + what);
      if (!SameReport(report, *existing)) {
        return absl::InvalidArgumentError(
            absl::StrCat("the destination already holds ", what, " with different content"));
      }
      ++stats_.reports;
    }
    return absl::OkStatus();
  }

  absl::Status MigrateAuthRecords() {
    REPROD_ASSIGN_OR_RETURN(
        auto records, Context(from_.ListAuthRecords(""), "listing the source's auth records"));
    for (const auto& [key, value] : records) {
      // Never the key or value in a message: either may be a secret.
      const std::string what = absl::StrCat("auth record (key of ", key.size(), " bytes)");
      absl::StatusOr<std::string> existing = to_.GetAuthRecord(key);
      if (absl::IsNotFound(existing.status())) {
        const absl::Status put = std::string_view(key).starts_with(kAuditPrefix)
                                     ? to_.InsertAuthRecord(key, value)
                                     : to_.PutAuthRecord(key, value);
        if (put.ok()) {
          ++stats_.auth_records;
          ++stats_.auth_records_copied;
          continue;
        }
        if (!absl::IsAlreadyExists(put)) return Annotate(put, "copying an " + what);
        existing = to_.GetAuthRecord(key);
      }
      if (!existing.ok()) return Annotate(existing.status(), "the destination's " + what);
      if (*existing != value) {
        return absl::InvalidArgumentError(
            absl::StrCat("the destination already holds an ", what, " with a different value"));
      }
      ++stats_.auth_records;
    }
    return absl::OkStatus();
  }

  Store& from_;
  Store& to_;
  const MigrateOptions& options_;
  std::atomic<bool> failed_{false};
  absl::Mutex mu_;
  MigrateStats stats_ ABSL_GUARDED_BY(mu_);
  uint64_t run_count_ = 0;
  uint64_t tensors_total_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
  // (run, header) of every destination tensor, filled while copying.
  std::vector<std::pair<std::string, TensorHeader>> to_verify_;
};

}  // namespace

absl::StatusOr<MigrateStats> MigrateStore(Store& from, Store& to, const MigrateOptions& options) {
  Migrator migrator(from, to, options);
  absl::StatusOr<MigrateStats> stats = migrator.Run();
  if (stats.ok()) {
    spdlog::info("migrate: {} runs, {} tensors copied, {} skipped, {} bytes, {} verified",
                 stats->runs, stats->tensors_copied, stats->tensors_skipped, stats->bytes_copied,
                 stats->tensors_verified);
  }
  return stats;
}

}  // namespace reprod::storage

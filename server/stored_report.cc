#include "server/stored_report.h"

#include <cstdint>
#include <random>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"

namespace reprod::server {

std::string NewReportId() {
  static absl::Mutex mu;
  static std::mt19937_64 gen ABSL_GUARDED_BY(mu){std::random_device{}()};
  uint64_t v;
  {
    absl::MutexLock lock(&mu);
    v = gen();
  }
  return absl::StrFormat("rpt-%016x", v);
}

absl::StatusOr<storage::StoredReport> MakeStoredReport(
    const core::Report& report, absl::Time now) {
  storage::StoredReport r;
  r.id = NewReportId();
  r.ref = report.ref;
  r.cand = report.cand;
  r.policy = report.policy;
  r.backend = report.backend;
  r.passed = report.passed;
  r.created = now;
  r.tensors = static_cast<uint64_t>(report.summary.tensors);
  r.passed_tensors = static_cast<uint64_t>(report.summary.passed);
  r.warned = static_cast<uint64_t>(report.summary.warned);
  r.failed = static_cast<uint64_t>(report.summary.failed);
  r.missing_in_ref = static_cast<uint64_t>(report.summary.missing_in_ref);
  r.missing_in_cand = static_cast<uint64_t>(report.summary.missing_in_cand);
  if (report.first_failure) {
    r.first_failure = storage::TensorAddress{report.first_failure->checkpoint,
                                             report.first_failure->key,
                                             report.first_failure->step,
                                             report.first_failure->rank.value_or(0)};
  }
  core::RenderOptions options;
  options.now = now;
  for (const auto& [name, format] :
       {std::pair{"json", core::ReportFormat::kJson},
        std::pair{"text", core::ReportFormat::kText},
        std::pair{"junit", core::ReportFormat::kJunit},
        std::pair{"markdown", core::ReportFormat::kMarkdown},
        std::pair{"html", core::ReportFormat::kHtml}}) {
    absl::StatusOr<std::string> rendered =
        core::RenderReport(report, format, options);
    if (!rendered.ok()) return rendered.status();
    r.renderings[name] = *std::move(rendered);
  }
  return r;
}

}  // namespace reprod::server

// File: server/stored_report.h
//
// Turns a core::Report into the record the store keeps: a fresh id, the
// summary for listings, and the report rendered in every format (json, text,
// junit, markdown, html) so that GetReport serves any of them byte for byte
// as they were at compare time.
//
// Thread-safety: pure functions (the id comes from a thread-safe generator).
#ifndef REPROD_SERVER_STORED_REPORT_H_
#define REPROD_SERVER_STORED_REPORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/report.h"
#include "storage/store.h"

namespace reprod::server {

// "rpt-" + 16 random hex digits.
std::string NewReportId();

absl::StatusOr<storage::StoredReport> MakeStoredReport(
    const core::Report& report, absl::Time now);

}  // namespace reprod::server

#endif  // REPROD_SERVER_STORED_REPORT_H_

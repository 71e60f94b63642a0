// File: server/proto_convert.h
//
// Conversions between reprod.v1 messages and the domain types of common/,
// storage/ and core/ (STYLE: proto <-> domain lives in server/ and client/,
// never in the libraries; the DType and Status mappings both ends share are
// in proto/wire.h). Converting from the wire validates: an unknown enum
// value is InvalidArgument.
//
// Thread-safety: pure functions.
#ifndef REPROD_SERVER_PROTO_CONVERT_H_
#define REPROD_SERVER_PROTO_CONVERT_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/dtype.h"
#include "core/report.h"
#include "google/protobuf/timestamp.pb.h"
#include "reprod/v1/compare.pb.h"
#include "reprod/v1/ingest.pb.h"
#include "reprod/v1/review.pb.h"
#include "reprod/v1/runs.pb.h"
#include "reprod/v1/tensor.pb.h"
#include "server/auth/audit_log.h"
#include "server/auth/token_store.h"
#include "storage/store.h"

namespace reprod::server {

void TimeToProto(absl::Time t, google::protobuf::Timestamp* out);
absl::Time TimeFromProto(const google::protobuf::Timestamp& t);

storage::TensorAddress AddressFromProto(const v1::TensorAddress& a);
void AddressToProto(const storage::TensorAddress& a, v1::TensorAddress* out);
void AddressToProto(const core::TensorAddress& a, v1::TensorAddress* out);

// Header fields as sent; shape/length consistency is checked separately
// (ingest validation). InvalidArgument naming the address ("forward/x@3#rank
// 1: invalid placement shard ...") for an unknown dtype or placement kind, a
// rank above kMaxRank, or a placement that does not fit the shape
// (common/placement.h).
absl::StatusOr<storage::TensorHeader> HeaderFromProto(
    const v1::TensorHeader& h);
void HeaderToProto(const storage::TensorHeader& h, v1::TensorHeader* out);

v1::RunState RunStateToProto(storage::RunState s);
// The ack kind of a commit (ingest and shared-memory sessions).
v1::AckKind AckKindToProto(storage::CommitKind kind);
void RunToProto(const storage::RunInfo& run, v1::Run* out);
// Client-settable fields only (name, framework, version, device, labels,
// overwrite); created/state/counts are the store's.
storage::RunInfo RunFromProto(const v1::Run& run);

v1::TensorStatus TensorStatusToProto(core::TensorStatus s);
void VerdictToProto(const core::TensorResult& t, v1::TensorVerdict* out);

// Metadata of a stored report, and `rendered` in `format` when non-empty
// (UNSPECIFIED = JSON). InvalidArgument for an unknown format; NotFound for
// html of a report stored before that format existed; DataLoss for another
// missing rendering.
absl::Status ReportToProto(const storage::StoredReport& r,
                           v1::ReportFormat format, bool with_rendering,
                           v1::Report* out);

// "json", "text", "junit", "markdown", "html" for the storage map;
// InvalidArgument for an unknown value.
absl::StatusOr<core::ReportFormat> ReportFormatFromProto(v1::ReportFormat f);

// A "sign" audit record as a report's signature (its details as written by
// AuditLog::SignVerdict; missing ones are left empty).
void SignatureToProto(const auth::AuditRecord& record, v1::Signature* out);
void AuditEventToProto(const auth::AuditRecord& record, v1::AuditEvent* out);
// A token record without its hash (the id only).
void TokenToProto(const auth::TokenRecord& token, v1::TokenInfo* out);

}  // namespace reprod::server

#endif  // REPROD_SERVER_PROTO_CONVERT_H_

#include "server/proto_convert.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/placement.h"
#include "common/visible.h"
#include "proto/wire.h"

namespace reprod::server {

void TimeToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t us = absl::ToUnixMicros(t);
  int64_t secs = us / 1000000;
  int64_t rem = us % 1000000;
  if (rem < 0) {
    rem += 1000000;
    --secs;
  }
  out->set_seconds(secs);
  out->set_nanos(static_cast<int32_t>(rem * 1000));
}

absl::Time TimeFromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

storage::TensorAddress AddressFromProto(const v1::TensorAddress& a) {
  storage::TensorAddress out;
  out.checkpoint = a.checkpoint();
  out.key = a.key();
  if (a.has_step()) out.step = a.step();
  out.rank = a.rank();
  return out;
}

void AddressToProto(const storage::TensorAddress& a, v1::TensorAddress* out) {
  out->set_checkpoint(a.checkpoint);
  out->set_key(a.key);
  if (a.step) out->set_step(*a.step);
  out->set_rank(a.rank);
}

void AddressToProto(const core::TensorAddress& a, v1::TensorAddress* out) {
  out->set_checkpoint(a.checkpoint);
  out->set_key(a.key);
  if (a.step) out->set_step(*a.step);
  if (a.rank) out->set_rank(*a.rank);
}

absl::StatusOr<storage::TensorHeader> HeaderFromProto(
    const v1::TensorHeader& h) {
  storage::TensorHeader out;
  out.address = AddressFromProto(h.address());
  auto bad = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(VisibleName(storage::AddressToString(out.address)),
                                               ": ", std::string(s.message())));
  };
  if (absl::Status s = ValidateRank(h.address().rank()); !s.ok()) return bad(s);
  absl::StatusOr<DType> dtype = wire::DTypeFromWire(h.dtype());
  if (!dtype.ok()) return bad(dtype.status());
  out.dtype = *dtype;
  out.shape.assign(h.shape().begin(), h.shape().end());
  out.byte_length = h.byte_length();
  out.crc32c = h.crc32c();
  if (h.has_placement()) {
    absl::StatusOr<Placement> placement = wire::PlacementFromWire(h.placement());
    if (!placement.ok()) return bad(placement.status());
    out.placement = *std::move(placement);
    if (absl::Status s = ValidatePlacement(out.placement, out.shape); !s.ok()) return bad(s);
  }
  return out;
}

void HeaderToProto(const storage::TensorHeader& h, v1::TensorHeader* out) {
  AddressToProto(h.address, out->mutable_address());
  out->set_dtype(wire::DTypeToWire(h.dtype));
  for (int64_t d : h.shape) out->add_shape(d);
  out->set_byte_length(h.byte_length);
  out->set_crc32c(h.crc32c);
  if (h.placement.kind != PlacementKind::kNone) {
    wire::PlacementToWire(h.placement, out->mutable_placement());
  }
}

v1::AckKind AckKindToProto(storage::CommitKind kind) {
  switch (kind) {
    case storage::CommitKind::kStored:
      return v1::ACK_KIND_STORED;
    case storage::CommitKind::kAlreadyPresent:
      return v1::ACK_KIND_ALREADY_PRESENT;
    case storage::CommitKind::kReplaced:
      return v1::ACK_KIND_REPLACED;
  }
  return v1::ACK_KIND_UNSPECIFIED;
}

v1::RunState RunStateToProto(storage::RunState s) {
  switch (s) {
    case storage::RunState::kOpen:
      return v1::RUN_STATE_OPEN;
    case storage::RunState::kSealed:
      return v1::RUN_STATE_SEALED;
    case storage::RunState::kAborted:
      return v1::RUN_STATE_ABORTED;
  }
  return v1::RUN_STATE_UNSPECIFIED;
}

void RunToProto(const storage::RunInfo& run, v1::Run* out) {
  out->set_name(run.name);
  out->set_framework(run.framework);
  out->set_framework_version(run.framework_version);
  out->set_device(run.device);
  for (const auto& [k, v] : run.labels) (*out->mutable_labels())[k] = v;
  TimeToProto(run.created, out->mutable_created());
  out->set_owner(run.owner);
  out->set_state(RunStateToProto(run.state));
  out->set_overwrite(run.overwrite);
  out->set_tensor_count(run.tensor_count);
  out->set_total_bytes(run.total_bytes);
  out->set_reference(run.reference);
}

storage::RunInfo RunFromProto(const v1::Run& run) {
  storage::RunInfo out;
  out.name = run.name();
  out.framework = run.framework();
  out.framework_version = run.framework_version();
  out.device = run.device();
  for (const auto& [k, v] : run.labels()) out.labels[k] = v;
  out.overwrite = run.overwrite();
  return out;
}

v1::TensorStatus TensorStatusToProto(core::TensorStatus s) {
  switch (s) {
    case core::TensorStatus::kPass:
      return v1::TENSOR_STATUS_PASS;
    case core::TensorStatus::kWarn:
      return v1::TENSOR_STATUS_WARN;
    case core::TensorStatus::kFail:
      return v1::TENSOR_STATUS_FAIL;
    case core::TensorStatus::kMissingInRef:
      return v1::TENSOR_STATUS_MISSING_IN_REF;
    case core::TensorStatus::kMissingInCand:
      return v1::TENSOR_STATUS_MISSING_IN_CAND;
    case core::TensorStatus::kShapeMismatch:
      return v1::TENSOR_STATUS_SHAPE_MISMATCH;
  }
  return v1::TENSOR_STATUS_UNSPECIFIED;
}

void VerdictToProto(const core::TensorResult& t, v1::TensorVerdict* out) {
  AddressToProto(core::TensorAddress{t.checkpoint, t.key, t.step, t.rank},
                 out->mutable_address());
  out->set_status(TensorStatusToProto(t.status));
  out->set_reason(t.reason);
  if (t.stats) {
    const kernels::DiffStats& s = *t.stats;
    out->set_count(s.count);
    out->set_mean_abs(s.mean_abs());
    out->set_max_abs(s.max_abs_value());
    out->set_mean_rel(s.mean_rel());
    out->set_max_rel(s.max_rel_value());
    out->set_rmse(s.rmse());
    out->set_cosine(s.cosine());
    out->set_mismatches(s.mismatches);
    for (int64_t i : t.max_abs_index) out->add_max_abs_index(i);
    out->set_ref_at_max(s.ref_at_max);
    out->set_cand_at_max(s.cand_at_max);
  }
}

absl::StatusOr<core::ReportFormat> ReportFormatFromProto(v1::ReportFormat f) {
  switch (f) {
    case v1::REPORT_FORMAT_UNSPECIFIED:
    case v1::REPORT_FORMAT_JSON:
      return core::ReportFormat::kJson;
    case v1::REPORT_FORMAT_TEXT:
      return core::ReportFormat::kText;
    case v1::REPORT_FORMAT_JUNIT:
      return core::ReportFormat::kJunit;
    case v1::REPORT_FORMAT_MARKDOWN:
      return core::ReportFormat::kMarkdown;
    case v1::REPORT_FORMAT_HTML:
      return core::ReportFormat::kHtml;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown report format ", static_cast<int>(f)));
  }
}

namespace {
const char* FormatKey(core::ReportFormat f) {
  switch (f) {
    case core::ReportFormat::kText:
      return "text";
    case core::ReportFormat::kJson:
      return "json";
    case core::ReportFormat::kJunit:
      return "junit";
    case core::ReportFormat::kMarkdown:
      return "markdown";
    case core::ReportFormat::kHtml:
      return "html";
  }
  return "json";
}
}  // namespace

absl::Status ReportToProto(const storage::StoredReport& r,
                           v1::ReportFormat format, bool with_rendering,
                           v1::Report* out) {
  out->set_id(r.id);
  out->set_ref(r.ref);
  out->set_cand(r.cand);
  out->set_policy(r.policy);
  out->set_passed(r.passed);
  v1::ReportSummary* s = out->mutable_summary();
  s->set_tensors(r.tensors);
  s->set_passed(r.passed_tensors);
  s->set_warned(r.warned);
  s->set_failed(r.failed);
  s->set_missing_in_ref(r.missing_in_ref);
  s->set_missing_in_cand(r.missing_in_cand);
  if (r.first_failure) {
    AddressToProto(*r.first_failure, out->mutable_first_failure());
  }
  TimeToProto(r.created, out->mutable_created());
  out->set_backend(r.backend);
  if (!with_rendering) return absl::OkStatus();
  absl::StatusOr<core::ReportFormat> f = ReportFormatFromProto(format);
  if (!f.ok()) return f.status();
  const auto it = r.renderings.find(FormatKey(*f));
  if (it == r.renderings.end()) {
    // Reports stored before the html format existed have only the others.
    if (*f == core::ReportFormat::kHtml) {
      return absl::NotFoundError(absl::StrCat(
          "report ", r.id,
          " has no html rendering: it was stored before HTML reports "
          "existed; compare the runs again to store one with html"));
    }
    return absl::DataLossError(absl::StrCat("report ", r.id, " has no ",
                                            FormatKey(*f), " rendering"));
  }
  out->set_format(format == v1::REPORT_FORMAT_UNSPECIFIED
                      ? v1::REPORT_FORMAT_JSON
                      : format);
  out->set_rendered(it->second);
  return absl::OkStatus();
}

namespace {

std::string DetailOr(const auth::AuditRecord& r, const char* key) {
  auto it = r.details.find(key);
  return it == r.details.end() ? std::string() : it->second;
}

}  // namespace

void SignatureToProto(const auth::AuditRecord& r, v1::Signature* out) {
  out->set_signer_label(r.actor.label);
  out->set_signer_role(std::string(auth::RoleName(r.actor.role)));
  TimeToProto(r.time, out->mutable_time());
  out->set_ref_run(DetailOr(r, "ref_run"));
  out->set_cand_run(DetailOr(r, "cand_run"));
  out->set_ref_run_digest(DetailOr(r, "ref_run_digest"));
  out->set_cand_run_digest(DetailOr(r, "cand_run_digest"));
  out->set_policy_hash(DetailOr(r, "policy_hash"));
  out->set_policy_hash_of(DetailOr(r, "policy_hash_of"));
  out->set_server_version(DetailOr(r, "server_version"));
  out->set_sequence(r.sequence);
  out->set_chain_head(r.prev_hash);
  out->set_hash(r.hash);
}

void AuditEventToProto(const auth::AuditRecord& r, v1::AuditEvent* out) {
  out->set_sequence(r.sequence);
  TimeToProto(r.time, out->mutable_time());
  out->set_label(r.actor.label);
  out->set_role(std::string(auth::RoleName(r.actor.role)));
  out->set_verb(r.verb);
  out->set_object(r.object);
  out->set_result(r.result);
  for (const auto& [k, v] : r.details) (*out->mutable_details())[k] = v;
  out->set_prev_hash(r.prev_hash);
  out->set_hash(r.hash);
}

void TokenToProto(const auth::TokenRecord& t, v1::TokenInfo* out) {
  out->set_id(t.id());
  out->set_role(std::string(auth::RoleName(t.role)));
  out->set_scope(t.scope);
  out->set_label(t.label);
  TimeToProto(t.created, out->mutable_created());
  if (t.expires) TimeToProto(*t.expires, out->mutable_expires());
  out->set_revoked(t.revoked);
  if (t.quota_bytes) out->set_quota_bytes(*t.quota_bytes);
}

}  // namespace reprod::server

#include "server/review_ops.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "absl/time/clock.h"
#include "common/crc32c.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "server/auth/token.h"
#include "spdlog/spdlog.h"

#ifndef REPROD_VERSION_STRING
#define REPROD_VERSION_STRING "dev"
#endif

namespace reprod::server {
namespace {

constexpr std::string_view kVerbSign = "sign";

absl::Status NoAudit() {
  return absl::FailedPreconditionError("the server has no audit log (ServiceEnv::audit unset)");
}

absl::Status NoTokens() {
  return absl::FailedPreconditionError("the server has no token store (ServiceEnv::tokens unset)");
}

// The work's status when it failed (an audit failure is only logged then),
// else the audit's.
absl::Status Combine(const absl::Status& work, absl::Status audit, std::string_view verb,
                     std::string_view object) {
  if (audit.ok()) return work;
  spdlog::error("audit record of {} {} not written: {}", verb, std::string(object),
                std::string(audit.message()));
  if (!work.ok()) return work;
  return absl::Status(audit.code(), absl::StrCat(std::string(verb), " ", std::string(object),
                                                 " was done but not recorded in the audit log: ",
                                                 std::string(audit.message())));
}

// Re-reads one tensor and checks its crc32c; DataLoss naming it otherwise.
absl::Status CheckTensorBytes(storage::Store& store, std::string_view run,
                              const storage::TensorMeta& t) {
  const storage::TensorHeader& h = t.header;
  REPROD_ASSIGN_OR_RETURN(std::unique_ptr<storage::TensorReader> reader,
                          store.OpenTensor(run, h.address));
  constexpr uint64_t kChunk = uint64_t{1} << 20;
  std::string buffer;
  uint32_t crc = 0;
  for (uint64_t offset = 0; offset < h.byte_length; offset += kChunk) {
    const uint64_t n = std::min(kChunk, h.byte_length - offset);
    buffer.resize(n);
    REPROD_RETURN_IF_ERROR(reader->Read(
        offset, absl::MakeSpan(reinterpret_cast<uint8_t*>(buffer.data()), n)));
    crc = Crc32cExtend(crc, buffer);
  }
  if (crc != h.crc32c) {
    return absl::DataLossError(absl::StrFormat("bytes have crc32c %08x, the index says %08x",
                                               crc, h.crc32c));
  }
  return absl::OkStatus();
}

// The audit log stores printable ASCII only (its canonical encoding is
// byte-exact); client-given strings (a framework "PyTörch", a label) are
// recorded with every other byte as "\xHH" rather than refused, so the
// mutation they belong to is still recorded.
std::string AuditAscii(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7f) {
      out += c;
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", b);
    }
  }
  return out;
}

}  // namespace

std::string_view ServerVersion() { return "reprodd " REPROD_VERSION_STRING; }

auth::Principal LocalPrincipal() {
  auth::Principal p;
  p.id = "local";
  p.label = "local";
  p.role = auth::Role::kAdmin;
  return p;
}

auth::Principal ActorOf(const std::optional<auth::Principal>& who) {
  return who.has_value() ? *who : LocalPrincipal();
}

absl::Status Audited(const ServiceEnv& env, const auth::Principal& who, std::string_view verb,
                     std::string_view object, const absl::Status& work,
                     std::map<std::string, std::string> details) {
  absl::Status audit = RecordAudit(env, who, verb, object, work, std::move(details));
  return Combine(work, std::move(audit), verb, object);
}

absl::Status RecordAudit(const ServiceEnv& env, const auth::Principal& who,
                         std::string_view verb, std::string_view object,
                         const absl::Status& result,
                         std::map<std::string, std::string> details) {
  if (env.audit == nullptr) return NoAudit();
  auth::AuditEntry entry;
  entry.actor = auth::AuditActor{AuditAscii(who.label), who.role};
  entry.verb = std::string(verb);
  entry.object = AuditAscii(object);
  entry.result = result;
  for (auto& [key, value] : details) entry.details[AuditAscii(key)] = AuditAscii(value);
  return env.audit->Append(entry, absl::Now()).status();
}

absl::StatusOr<storage::RunInfo> SetReference(const ServiceEnv& env, const auth::Principal& who,
                                              std::string_view run, bool reference) {
  const std::string_view verb = reference ? "publish" : "unpublish";
  absl::StatusOr<storage::RunInfo> info = absl::InvalidArgumentError("unset");
  if (absl::Status valid = ValidateRunName(run); !valid.ok()) {
    info = valid;
  } else {
    info = env.store->SetRunReference(run, reference);
  }
  if (info.ok()) {
    spdlog::info("run {} {} by {}", std::string(run),
                 reference ? "published as reference" : "no longer a reference", who.label);
  }
  // A bad name is recorded as given only when printable (the audit log
  // refuses the rest; Combine logs that).
  absl::Status audit = RecordAudit(env, who, verb, run, info.status());
  absl::Status s = Combine(info.status(), std::move(audit), verb, run);
  if (!s.ok()) return s;
  return info;
}

std::string PolicyNameHash(std::string_view policy_name) {
  return auth::ToHex(auth::HashToken(absl::StrCat("policy-name:", std::string(policy_name))));
}

std::string PolicySpecHash(const v1::PolicySpec& spec) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.SetSerializationDeterministic(true);
    spec.SerializeToCodedStream(&out);
  }
  return auth::ToHex(auth::HashToken(absl::StrCat("policy-spec:", bytes)));
}

namespace {

absl::StatusOr<auth::SignedVerdict> VerdictOf(storage::Store& store, std::string_view report_id) {
  REPROD_ASSIGN_OR_RETURN(storage::StoredReport report, store.GetReport(report_id));
  auth::SignedVerdict v;
  v.report_id = report.id;
  v.ref_run = report.ref;
  v.cand_run = report.cand;
  for (auto [run, digest] : {std::pair{&v.ref_run, &v.ref_run_digest},
                             std::pair{&v.cand_run, &v.cand_run_digest}}) {
    absl::StatusOr<std::string> d = auth::RunDigest(store, *run);
    if (!d.ok()) {
      return absl::Status(d.status().code(),
                          absl::StrCat("cannot sign report ", report.id, ": run ", *run, ": ",
                                       d.status().message()));
    }
    *digest = *std::move(d);
  }
  if (report.policy_hash.empty()) {
    v.policy_hash = PolicyNameHash(report.policy);
    v.policy_hash_of = "name";  // stored before policy hashes: only the name is known
  } else {
    v.policy_hash = report.policy_hash;
    v.policy_hash_of = "spec";
  }
  v.server_version = std::string(ServerVersion());
  return v;
}

}  // namespace

absl::StatusOr<auth::AuditRecord> SignReport(const ServiceEnv& env, const auth::Principal& who,
                                             std::string_view report_id) {
  if (env.audit == nullptr) return NoAudit();
  absl::StatusOr<auth::SignedVerdict> verdict = VerdictOf(*env.store, report_id);
  if (!verdict.ok()) {
    absl::Status audit = RecordAudit(env, who, kVerbSign, report_id, verdict.status());
    return Combine(verdict.status(), std::move(audit), kVerbSign, report_id);
  }
  absl::StatusOr<auth::AuditRecord> record =
      env.audit->SignVerdict(*verdict, auth::AuditActor{who.label, who.role}, absl::Now());
  if (record.ok()) {
    spdlog::info("report {} ({} vs {}) signed by {} ({})", verdict->report_id, verdict->ref_run,
                 verdict->cand_run, who.label, auth::RoleName(who.role));
  }
  return record;
}

absl::StatusOr<std::vector<auth::AuditRecord>> ReportSignatures(const ServiceEnv& env,
                                                                std::string_view report_id) {
  if (env.audit == nullptr) return NoAudit();
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::AuditRecord> records,
                          env.audit->List(report_id, 0));
  std::vector<auth::AuditRecord> out;
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    if (it->verb == kVerbSign && it->object == report_id && it->result == "ok") {
      out.push_back(std::move(*it));
    }
  }
  return out;
}

absl::StatusOr<auth::IssuedToken> CreateToken(const ServiceEnv& env, const auth::Principal& who,
                                              const auth::TokenSpec& spec) {
  if (env.tokens == nullptr) return NoTokens();
  absl::StatusOr<auth::IssuedToken> issued = env.tokens->Create(spec, absl::Now());
  std::map<std::string, std::string> details = {{"role", std::string(auth::RoleName(spec.role))}};
  if (!spec.scope.empty()) details["scope"] = spec.scope;
  if (issued.ok()) {
    details["id"] = issued->record.id();
    if (issued->record.expires) {
      details["expires"] = absl::FormatTime(absl::RFC3339_sec, *issued->record.expires,
                                            absl::UTCTimeZone());
    }
    spdlog::info("token {} ({}, {}) created by {}", issued->record.id(), spec.label,
                 auth::RoleName(spec.role), who.label);
  }
  absl::Status audit =
      RecordAudit(env, who, "token-create", spec.label, issued.status(), std::move(details));
  absl::Status s = Combine(issued.status(), std::move(audit), "token-create", spec.label);
  if (!s.ok()) return s;
  return issued;
}

absl::StatusOr<std::vector<auth::TokenRecord>> ListTokens(const ServiceEnv& env) {
  if (env.tokens == nullptr) return NoTokens();
  return env.tokens->List();
}

absl::StatusOr<auth::TokenRecord> RevokeToken(const ServiceEnv& env, const auth::Principal& who,
                                              std::string_view id_prefix) {
  if (env.tokens == nullptr) return NoTokens();
  absl::StatusOr<auth::TokenRecord> revoked = env.tokens->Revoke(id_prefix);
  std::string object(id_prefix);
  std::map<std::string, std::string> details;
  if (revoked.ok()) {
    object = revoked->label;
    details["id"] = revoked->id();
    spdlog::info("token {} ({}) revoked by {}", revoked->id(), revoked->label, who.label);
  }
  absl::Status audit =
      RecordAudit(env, who, "token-revoke", object, revoked.status(), std::move(details));
  absl::Status s = Combine(revoked.status(), std::move(audit), "token-revoke", object);
  if (!s.ok()) return s;
  return revoked;
}

absl::Status VerifySignedRunData(const ServiceEnv& env) {
  if (env.audit == nullptr) return NoAudit();
  REPROD_ASSIGN_OR_RETURN(std::vector<auth::AuditRecord> records, env.audit->List("", 0));
  std::set<std::string> checked;  // runs whose bytes were read already
  for (auto it = records.rbegin(); it != records.rend(); ++it) {  // oldest first
    const auth::AuditRecord& r = *it;
    if (r.verb != kVerbSign || r.result != "ok") continue;
    for (const char* side : {"ref_run", "cand_run"}) {
      auto run = r.details.find(side);
      if (run == r.details.end() || !checked.insert(run->second).second) continue;
      absl::StatusOr<std::vector<storage::TensorMeta>> tensors =
          env.store->ListTensors(run->second);
      if (absl::IsNotFound(tensors.status())) continue;  // VerifySignatures names it
      if (!tensors.ok()) return tensors.status();
      for (const storage::TensorMeta& t : *tensors) {
        absl::Status s = CheckTensorBytes(*env.store, run->second, t);
        if (s.ok()) continue;
        return absl::DataLossError(absl::StrCat(
            "audit record ", r.sequence, " (", auth::AuditKey(r.sequence), "): report ", r.object,
            ": run ", run->second, " changed after signing: tensor ",
            storage::AddressToString(t.header.address), ": ", s.message()));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status VerifyAudit(const ServiceEnv& env) {
  if (env.audit == nullptr) return NoAudit();
  REPROD_RETURN_IF_ERROR(env.audit->Verify());
  REPROD_RETURN_IF_ERROR(env.audit->VerifySignatures());
  return VerifySignedRunData(env);
}

}  // namespace reprod::server

// File: server/review_ops.h
//
// The review server's operations, shared by the gRPC services and the web
// UI: each runs AFTER the caller was authorized (auth_gate.h for gRPC, the
// HTTP layer for the web UI), does the work and appends one audit record
// (server/auth/audit_log.h) with its result, also when the work failed. With
// `--auth none` the actor is LocalPrincipal().
//
//   auth::Principal who = ...;            // from the gate
//   absl::StatusOr<storage::RunInfo> run = SetReference(env, who, "ref/bert", true);
//   absl::StatusOr<auth::AuditRecord> sig = SignReport(env, who, "rpt-0123456789abcdef");
//   RecordAudit(env, who, "push", "team42/bert", status, {{"tensors", "12"}});
//
// Audit failures: when the work succeeded but its audit record could not be
// written, the operation returns the audit error (the caller must not report
// success for an unrecorded mutation). When the work failed, the work's
// error is returned and an audit failure is only logged.
//
// Thread-safety: every function may be called from several threads at once
// (TokenStore, AuditLog and the Store are thread-safe).
#ifndef REPROD_SERVER_REVIEW_OPS_H_
#define REPROD_SERVER_REVIEW_OPS_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "reprod/v1/compare.pb.h"
#include "server/auth/audit_log.h"
#include "server/auth/token_store.h"
#include "server/service_env.h"
#include "storage/store.h"

namespace reprod::server {

// The version string signed into verdicts (SignedVerdict::server_version).
std::string_view ServerVersion();

// The actor of every call with `--auth none`: label "local", role admin.
auth::Principal LocalPrincipal();

// The audit actor of a call: the gate's principal, or LocalPrincipal()
// with `--auth none` (std::nullopt).
auth::Principal ActorOf(const std::optional<auth::Principal>& who);

// Appends one audit record: `who` did `verb` to `object` with `result`.
// Returns the AuditLog's error (InvalidArgument for a non-printable field,
// FailedPrecondition when another writer appended, the store's errors).
// Never put a token in `object` or `details`.
absl::Status RecordAudit(const ServiceEnv& env, const auth::Principal& who,
                         std::string_view verb, std::string_view object,
                         const absl::Status& result,
                         std::map<std::string, std::string> details = {});

// RecordAudit for work that already ran with status `work`, then what the
// caller returns (see the file comment): `work` when it failed (an audit
// failure is logged), the audit's error when the work succeeded but was not
// recorded, else OK.
absl::Status Audited(const ServiceEnv& env, const auth::Principal& who, std::string_view verb,
                     std::string_view object, const absl::Status& work,
                     std::map<std::string, std::string> details = {});

// Sets (`reference` true, verb "publish") or clears (verb "unpublish") the
// run's reference flag and returns the run. NotFound for an unknown run,
// InvalidArgument for a bad run name.
absl::StatusOr<storage::RunInfo> SetReference(const ServiceEnv& env, const auth::Principal& who,
                                              std::string_view run, bool reference);

// StoredReport::policy_hash of a report computed under `spec`: the hex
// SHA-256 of "policy-spec:" + the spec's deterministic serialization.
std::string PolicySpecHash(const v1::PolicySpec& spec);

// The hex SHA-256 a StoredReport carries as policy_hash when the report has
// none (stored before policy hashes existed): the hash of "policy-name:" +
// the policy's name. Signatures of such reports say so (detail
// policy_hash_of = "name").
std::string PolicyNameHash(std::string_view policy_name);

// Signs report `report_id` (verb "sign", AuditLog::SignVerdict): both runs'
// RunDigest, the report's policy hash, ServerVersion(), the chain head.
// NotFound for an unknown report or a run of it that is gone; the signing
// is recorded also when it fails (verb "sign", the error's code).
absl::StatusOr<auth::AuditRecord> SignReport(const ServiceEnv& env, const auth::Principal& who,
                                             std::string_view report_id);

// The sign records of `report_id`, oldest first (empty when unsigned).
absl::StatusOr<std::vector<auth::AuditRecord>> ReportSignatures(const ServiceEnv& env,
                                                                std::string_view report_id);

// TokenStore::Create, recorded as "token-create" with the token's label as
// object and id/role/scope as details (never the token). The returned
// IssuedToken holds the secret: show it once.
absl::StatusOr<auth::IssuedToken> CreateToken(const ServiceEnv& env, const auth::Principal& who,
                                              const auth::TokenSpec& spec);

// TokenStore::List (not audited: it changes nothing).
absl::StatusOr<std::vector<auth::TokenRecord>> ListTokens(const ServiceEnv& env);

// TokenStore::Revoke, recorded as "token-revoke" with the token's label (or
// the id prefix when none matched) as object. Effective at once.
absl::StatusOr<auth::TokenRecord> RevokeToken(const ServiceEnv& env, const auth::Principal& who,
                                              std::string_view id_prefix);

// AuditLog::Verify, then VerifySignatures, then VerifySignedRunData: OK or
// the first problem (DataLoss naming the record's sequence and what is
// wrong: a record, or a run/tensor/report for signatures).
absl::Status VerifyAudit(const ServiceEnv& env);

// Every signed run's tensors re-read and checked against their crc32c
// (RunDigest covers only the index). OK, or DataLoss naming the sign
// record's sequence, the report, the run and the tensor whose bytes differ.
absl::Status VerifySignedRunData(const ServiceEnv& env);

}  // namespace reprod::server

#endif  // REPROD_SERVER_REVIEW_OPS_H_

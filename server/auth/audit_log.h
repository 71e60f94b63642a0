// File: server/auth/audit_log.h
//
// The audit trail of the shared review server: an append-only, hash-chained
// log of who did what to which object, kept in the Store as auth records
// (Store::PutAuthRecord), plus signed verdicts that bind a report to the
// content digests of its two runs. A library only: no RPC writes it yet.
//
//   REPROD_ASSIGN_OR_RETURN(std::unique_ptr<AuditLog> log, AuditLog::Open(store));
//   log->Append({.actor = {"team42 CI", Role::kSubmitter}, .verb = "push",
//                .object = "team42/bert-paddle"}, absl::Now());
//   log->Verify();                        // OK or DataLoss naming a sequence
//   REPROD_ASSIGN_OR_RETURN(std::string d, RunDigest(store, "team42/bert-paddle"));
//   log->SignVerdict(verdict, judge, absl::Now());
//   log->VerifySignatures();              // DataLoss naming a changed run
//
// Records: key "audit/" + the sequence as 20 zero-padded decimal digits (so
// ListAuthRecords returns them in order), value a JSON object with every
// field below. Sequences start at 0 and have no gaps. `hash` is the lowercase
// hex SHA-256 (HashToken of token.h) of a canonical encoding of every other
// field: each field as "<byte length>:<bytes>;" in the order version tag
// "reprod-audit-v1", sequence, time (unix ns), label, role, verb, object,
// result, prev_hash, number of details, then each detail key and value in
// key order. `prev_hash` is the previous record's hash (64 '0' for record
// 0), so changing, removing or reordering any record but the newest breaks
// the chain after it. Truncating the newest records is not detectable from
// the log alone; a sign record's prev_hash pins the chain head it saw.
//
// Records are never updated in place: Append claims the next sequence with
// Store::InsertAuthRecord, which refuses a sequence that is already stored;
// when another writer (a replica on a shared postgres+s3 store) took it
// first, Append reads that writer's records and chains after them. The chain is tamper-evident, not tamper-proof:
// whoever can write the store can rewrite the whole chain (there is no
// private-key signature yet).
//
// Thread-safety: Append and SignVerdict are serialized by a mutex; the
// other methods may run concurrently with them. Any number of processes may
// append to one shared store: they form one chain.
#ifndef REPROD_SERVER_AUTH_AUDIT_LOG_H_
#define REPROD_SERVER_AUTH_AUDIT_LOG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth/token.h"
#include "storage/store.h"

namespace reprod::server::auth {

inline constexpr std::string_view kAuditKeyPrefix = "audit/";

// "audit/" + 20 zero-padded decimal digits of `sequence`.
std::string AuditKey(uint64_t sequence);

// Who acted: a token's label and role.
struct AuditActor {
  std::string label;
  Role role = Role::kSubmitter;
};

// What Append is asked to record. Every string is printable ASCII.
struct AuditEntry {
  AuditActor actor;
  std::string verb;     // create, push, seal, abort, delete, token, publish, sign...
  std::string object;   // a run name, a report id or a token label
  absl::Status result;  // stored as "ok" or the code's name ("NOT_FOUND")
  std::map<std::string, std::string> details;  // extra bound fields
};

// One stored record.
struct AuditRecord {
  uint64_t sequence = 0;
  absl::Time time = absl::UnixEpoch();
  AuditActor actor;
  std::string verb;
  std::string object;
  std::string result;  // "ok" or an absl::StatusCode name
  std::map<std::string, std::string> details;
  std::string prev_hash;  // 64 lowercase hex digits
  std::string hash;       // 64 lowercase hex digits, over all other fields
};

// The canonical bytes `hash` covers (see the file comment).
std::string CanonicalAuditEncoding(const AuditRecord& record);
// Lowercase hex SHA-256 of CanonicalAuditEncoding(record).
std::string ComputeAuditHash(const AuditRecord& record);
// JSON value of a record, and back. Decode checks the shape only (DataLoss
// naming the key and the reason), not the hash.
std::string EncodeAuditRecord(const AuditRecord& record);
absl::StatusOr<AuditRecord> DecodeAuditRecord(std::string_view key, std::string_view value);

// A run's content digest: lowercase hex SHA-256 over its visible tensors'
// (checkpoint, key, step, dtype, shape, crc32c, then "rank=N" for rank != 0
// and "placement=..." when one is declared), sorted by address, from the
// Store's tensor index (no tensor bytes are read). NotFound for an unknown run.
absl::StatusOr<std::string> RunDigest(storage::Store& store, std::string_view run);

// What a judge signs: a report and the content of both runs it compared.
struct SignedVerdict {
  std::string report_id;
  std::string ref_run;
  std::string ref_run_digest;  // RunDigest at signing
  std::string cand_run;
  std::string cand_run_digest;
  std::string policy_hash;
  // What policy_hash hashes ("spec", "name" for reports stored before
  // policy hashes existed); recorded as detail policy_hash_of when set.
  std::string policy_hash_of;
  std::string server_version;
};

class AuditLog {
 public:
  // Reads the chain head (the newest record). DataLoss when that record does
  // not decode; errors of the store as they are.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(storage::Store& store);

  // Appends the next record (sequence head + 1, prev_hash = the head's hash)
  // and returns it. InvalidArgument for an empty verb or a non-printable
  // field; FailedPrecondition, writing nothing, when the next sequence is
  // stored already (another writer; records are never replaced).
  absl::StatusOr<AuditRecord> Append(const AuditEntry& entry, absl::Time now);

  // Appends a "sign" record: object = report id, details = the verdict's
  // fields (keys ref_run, ref_run_digest, cand_run, cand_run_digest,
  // policy_hash, policy_hash_of when set, server_version); its prev_hash is
  // the chain head at signing.
  absl::StatusOr<AuditRecord> SignVerdict(const SignedVerdict& verdict, const AuditActor& signer,
                                          absl::Time now);

  // Records whose object is `object` or, for sign records, whose ref_run or
  // cand_run is `object` (empty = all), newest first, at most `limit`
  // (0 = no limit). DataLoss for an undecodable record.
  absl::StatusOr<std::vector<AuditRecord>> List(std::string_view object, size_t limit) const;

  // Walks the whole chain. OK, or DataLoss naming the first bad record's
  // sequence and what is wrong: undecodable, key and sequence disagree,
  // missing sequence (a gap), hash mismatch, broken link.
  absl::Status Verify() const;

  // For every successful sign record (result "ok"; refused sign-offs are
  // recorded too, as "sign" with their error), recomputes RunDigest of both
  // runs. OK, or
  // DataLoss naming the record, the report and the run whose content
  // changed (or that is gone) since signing.
  absl::Status VerifySignatures() const;

 private:
  explicit AuditLog(storage::Store& store) : store_(store) {}

  // Appends give up after this many sequences taken by other writers.
  static constexpr int kMaxAppendAttempts = 64;
  // Moves head_ to the newest stored record (other writers' appends).
  absl::Status CatchUp() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  storage::Store& store_;
  mutable absl::Mutex mu_;
  std::optional<AuditRecord> head_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reprod::server::auth

#endif  // REPROD_SERVER_AUTH_AUDIT_LOG_H_

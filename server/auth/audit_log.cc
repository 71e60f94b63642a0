#include "server/auth/audit_log.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/dtype.h"
#include "common/placement.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace reprod::server::auth {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kVersionTag = "reprod-audit-v1";
constexpr std::string_view kVerbSign = "sign";
const std::string kZeroHash(64, '0');

// "<length>:<bytes>;" so that no two field lists encode alike.
void AppendField(std::string& out, std::string_view field) {
  absl::StrAppend(&out, field.size(), ":", std::string(field), ";");
}

bool Printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

absl::Status CheckEntry(const AuditEntry& e) {
  if (e.verb.empty()) return absl::InvalidArgumentError("audit entry has an empty verb");
  auto check = [](std::string_view name, std::string_view value) -> absl::Status {
    if (Printable(value)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("audit entry field ", std::string(name),
                                                   " is not printable ASCII (", value.size(),
                                                   " bytes)"));
  };
  REPROD_RETURN_IF_ERROR(check("label", e.actor.label));
  REPROD_RETURN_IF_ERROR(check("verb", e.verb));
  REPROD_RETURN_IF_ERROR(check("object", e.object));
  for (const auto& [k, v] : e.details) {
    REPROD_RETURN_IF_ERROR(check(absl::StrCat("details key ", k.size(), " bytes"), k));
    REPROD_RETURN_IF_ERROR(check(absl::StrCat("details[", Printable(k) ? k : "?", "]"), v));
  }
  return absl::OkStatus();
}

std::string ResultName(const absl::Status& s) {
  return s.ok() ? "ok" : absl::StatusCodeToString(s.code());
}

// The sequence a key names, or nullopt when it is not "audit/" + 20 digits.
std::optional<uint64_t> SequenceOfKey(std::string_view key) {
  if (key.size() != kAuditKeyPrefix.size() + 20 ||
      key.substr(0, kAuditKeyPrefix.size()) != kAuditKeyPrefix) {
    return std::nullopt;
  }
  uint64_t seq = 0;
  for (char c : key.substr(kAuditKeyPrefix.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (seq > (UINT64_MAX - digit) / 10) return std::nullopt;
    seq = seq * 10 + digit;
  }
  return seq;
}

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

absl::Status Bad(uint64_t sequence, std::string_view why) {
  return absl::DataLossError(absl::StrCat("audit record ", sequence, " (key ", AuditKey(sequence),
                                          "): ", std::string(why)));
}

bool MentionsObject(const AuditRecord& r, std::string_view object) {
  if (object.empty() || r.object == object) return true;
  if (r.verb != kVerbSign) return false;
  auto is = [&](const char* k) {
    auto it = r.details.find(k);
    return it != r.details.end() && it->second == object;
  };
  return is("ref_run") || is("cand_run");
}

}  // namespace

std::string AuditKey(uint64_t sequence) {
  return absl::StrFormat("%s%020u", std::string(kAuditKeyPrefix), sequence);
}

std::string CanonicalAuditEncoding(const AuditRecord& r) {
  std::string out;
  AppendField(out, kVersionTag);
  AppendField(out, absl::StrCat(r.sequence));
  AppendField(out, absl::StrCat(absl::ToUnixNanos(r.time)));
  AppendField(out, r.actor.label);
  AppendField(out, RoleName(r.actor.role));
  AppendField(out, r.verb);
  AppendField(out, r.object);
  AppendField(out, r.result);
  AppendField(out, r.prev_hash);
  AppendField(out, absl::StrCat(r.details.size()));
  for (const auto& [k, v] : r.details) {
    AppendField(out, k);
    AppendField(out, v);
  }
  return out;
}

std::string ComputeAuditHash(const AuditRecord& r) {
  return ToHex(HashToken(CanonicalAuditEncoding(r)));
}

std::string EncodeAuditRecord(const AuditRecord& r) {
  Json details = Json::object();
  for (const auto& [k, v] : r.details) details[k] = v;
  const Json j = {{"v", 1},
                  {"seq", r.sequence},
                  {"time_ns", absl::ToUnixNanos(r.time)},
                  {"label", r.actor.label},
                  {"role", std::string(RoleName(r.actor.role))},
                  {"verb", r.verb},
                  {"object", r.object},
                  {"result", r.result},
                  {"details", details},
                  {"prev_hash", r.prev_hash},
                  {"hash", r.hash}};
  // Every string was checked printable ASCII; replace never triggers.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

absl::StatusOr<AuditRecord> DecodeAuditRecord(std::string_view key, std::string_view value) {
  auto corrupt = [&](std::string_view why) {
    return absl::DataLossError(
        absl::StrCat("audit record ", std::string(key), " is undecodable: ", std::string(why)));
  };
  const Json j = Json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return corrupt("not a JSON object");
  AuditRecord r;
  try {
    if (j.at("v").get<int>() != 1) return corrupt("unknown version");
    r.sequence = j.at("seq").get<uint64_t>();
    r.time = absl::FromUnixNanos(j.at("time_ns").get<int64_t>());
    r.actor.label = j.at("label").get<std::string>();
    absl::StatusOr<Role> role = ParseRole(j.at("role").get<std::string>());
    if (!role.ok()) return corrupt(std::string(role.status().message()));
    r.actor.role = *role;
    r.verb = j.at("verb").get<std::string>();
    r.object = j.at("object").get<std::string>();
    r.result = j.at("result").get<std::string>();
    const Json& details = j.at("details");
    if (!details.is_object()) return corrupt("details is not an object");
    for (const auto& [k, v] : details.items()) r.details[k] = v.get<std::string>();
    r.prev_hash = j.at("prev_hash").get<std::string>();
    r.hash = j.at("hash").get<std::string>();
  } catch (const Json::exception& e) {
    return corrupt(e.what());
  }
  if (!IsHex64(r.prev_hash)) return corrupt("prev_hash is not 64 lowercase hex digits");
  if (!IsHex64(r.hash)) return corrupt("hash is not 64 lowercase hex digits");
  return r;
}

absl::StatusOr<std::string> RunDigest(storage::Store& store, std::string_view run) {
  REPROD_RETURN_IF_ERROR(store.GetRun(run).status());
  REPROD_ASSIGN_OR_RETURN(std::vector<storage::TensorMeta> tensors, store.ListTensors(run));
  std::sort(tensors.begin(), tensors.end(),
            [](const storage::TensorMeta& a, const storage::TensorMeta& b) {
              return a.header.address < b.header.address;
            });
  std::string out;
  AppendField(out, "reprod-run-digest-v1");
  AppendField(out, absl::StrCat(tensors.size()));
  for (const storage::TensorMeta& t : tensors) {
    const storage::TensorHeader& h = t.header;
    AppendField(out, h.address.checkpoint);
    AppendField(out, h.address.key);
    AppendField(out, h.address.step.has_value() ? absl::StrCat(*h.address.step) : "-");
    AppendField(out, DTypeName(h.dtype));
    AppendField(out, absl::StrJoin(h.shape, ","));
    AppendField(out, absl::StrFormat("%08x", h.crc32c));
    // Only when set, so digests of single-process runs (signed before ranks
    // existed) are unchanged; '=' is in no checkpoint name, so these fields
    // cannot be taken for the next tensor's.
    if (h.address.rank != 0) AppendField(out, absl::StrCat("rank=", h.address.rank));
    if (h.placement.kind != PlacementKind::kNone) {
      AppendField(out, absl::StrCat("placement=", PlacementToString(h.placement)));
    }
  }
  return ToHex(HashToken(out));
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(storage::Store& store) {
  REPROD_ASSIGN_OR_RETURN(auto records, store.ListAuthRecords(kAuditKeyPrefix));
  std::unique_ptr<AuditLog> log(new AuditLog(store));
  if (!records.empty()) {
    REPROD_ASSIGN_OR_RETURN(AuditRecord head,
                            DecodeAuditRecord(records.back().first, records.back().second));
    absl::MutexLock lock(&log->mu_);
    log->head_ = std::move(head);
  }
  return log;
}

absl::StatusOr<AuditRecord> AuditLog::Append(const AuditEntry& entry, absl::Time now) {
  REPROD_RETURN_IF_ERROR(CheckEntry(entry));
  absl::MutexLock lock(&mu_);
  AuditRecord r;
  r.time = now;
  r.actor = entry.actor;
  r.verb = entry.verb;
  r.object = entry.object;
  r.result = ResultName(entry.result);
  r.details = entry.details;
  // Other replicas on a shared store (postgres+s3) append to the same
  // chain: the insert claims the next sequence atomically, and a sequence
  // someone else took first moves this record past their records.
  for (int attempt = 0; attempt < kMaxAppendAttempts; ++attempt) {
    r.sequence = head_.has_value() ? head_->sequence + 1 : 0;
    r.prev_hash = head_.has_value() ? head_->hash : kZeroHash;
    r.hash = ComputeAuditHash(r);
    const std::string key = AuditKey(r.sequence);
    absl::Status inserted = store_.InsertAuthRecord(key, EncodeAuditRecord(r));
    if (inserted.ok()) {
      head_ = r;
      return r;
    }
    if (!absl::IsAlreadyExists(inserted)) return inserted;
    REPROD_RETURN_IF_ERROR(CatchUp());
  }
  return absl::AbortedError(absl::StrCat("audit log: ", kMaxAppendAttempts,
                                         " appends in a row lost the race for the next "
                                         "sequence to other writers; try again"));
}

absl::Status AuditLog::CatchUp() {
  uint64_t next = head_.has_value() ? head_->sequence + 1 : 0;
  while (true) {
    const std::string key = AuditKey(next);
    absl::StatusOr<std::string> value = store_.GetAuthRecord(key);
    if (absl::IsNotFound(value.status())) return absl::OkStatus();
    if (!value.ok()) return value.status();
    REPROD_ASSIGN_OR_RETURN(AuditRecord record, DecodeAuditRecord(key, *value));
    head_ = std::move(record);
    ++next;
  }
}

absl::StatusOr<AuditRecord> AuditLog::SignVerdict(const SignedVerdict& v, const AuditActor& signer,
                                                  absl::Time now) {
  if (v.report_id.empty() || v.ref_run.empty() || v.cand_run.empty()) {
    return absl::InvalidArgumentError("a signed verdict names a report and both runs");
  }
  if (!IsHex64(v.ref_run_digest) || !IsHex64(v.cand_run_digest)) {
    return absl::InvalidArgumentError(absl::StrCat("run digests of report ", v.report_id,
                                                   " must be 64 lowercase hex digits (RunDigest)"));
  }
  AuditEntry e;
  e.actor = signer;
  e.verb = std::string(kVerbSign);
  e.object = v.report_id;
  e.details = {{"ref_run", v.ref_run},         {"ref_run_digest", v.ref_run_digest},
               {"cand_run", v.cand_run},       {"cand_run_digest", v.cand_run_digest},
               {"policy_hash", v.policy_hash}, {"server_version", v.server_version}};
  if (!v.policy_hash_of.empty()) e.details["policy_hash_of"] = v.policy_hash_of;
  return Append(e, now);
}

absl::StatusOr<std::vector<AuditRecord>> AuditLog::List(std::string_view object,
                                                        size_t limit) const {
  REPROD_ASSIGN_OR_RETURN(auto records, store_.ListAuthRecords(kAuditKeyPrefix));
  std::vector<AuditRecord> out;
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    if (limit != 0 && out.size() >= limit) break;
    REPROD_ASSIGN_OR_RETURN(AuditRecord r, DecodeAuditRecord(it->first, it->second));
    if (MentionsObject(r, object)) out.push_back(std::move(r));
  }
  return out;
}

absl::Status AuditLog::Verify() const {
  REPROD_ASSIGN_OR_RETURN(auto records, store_.ListAuthRecords(kAuditKeyPrefix));
  uint64_t expected = 0;
  std::string prev_hash = kZeroHash;
  for (const auto& [key, value] : records) {
    const std::optional<uint64_t> key_seq = SequenceOfKey(key);
    if (!key_seq.has_value()) {
      return absl::DataLossError(
          absl::StrCat("audit key of ", key.size(), " bytes is not audit/ + 20 digits"));
    }
    if (*key_seq != expected) {
      return Bad(*key_seq, absl::StrCat("missing sequence: follows ",
                                        expected == 0 ? "nothing" : absl::StrCat(expected - 1),
                                        ", record ", expected, " is missing"));
    }
    absl::StatusOr<AuditRecord> r = DecodeAuditRecord(key, value);
    if (!r.ok()) return Bad(expected, std::string(r.status().message()));
    if (r->sequence != expected) {
      return Bad(expected,
                 absl::StrCat("its key and its sequence field (", r->sequence, ") disagree"));
    }
    if (ComputeAuditHash(*r) != r->hash) {
      return Bad(expected, "hash mismatch: its fields do not hash to its stored hash");
    }
    if (r->prev_hash != prev_hash) {
      return Bad(expected, absl::StrCat("broken link: prev_hash ", r->prev_hash.substr(0, 12),
                                        "... is not the hash of record ",
                                        expected == 0 ? "(none)" : absl::StrCat(expected - 1)));
    }
    prev_hash = r->hash;
    ++expected;
  }
  return absl::OkStatus();
}

absl::Status AuditLog::VerifySignatures() const {
  REPROD_ASSIGN_OR_RETURN(auto records, store_.ListAuthRecords(kAuditKeyPrefix));
  for (const auto& [key, value] : records) {
    REPROD_ASSIGN_OR_RETURN(AuditRecord r, DecodeAuditRecord(key, value));
    // Refused or failed sign-offs ("sign" with an error result) bind nothing.
    if (r.verb != kVerbSign || r.result != "ok") continue;
    for (const char* side : {"ref_run", "cand_run"}) {
      auto run = r.details.find(side);
      auto digest = r.details.find(absl::StrCat(side, "_digest"));
      if (run == r.details.end() || digest == r.details.end()) {
        return Bad(r.sequence, absl::StrCat("sign record lacks ", side, " or its digest"));
      }
      absl::StatusOr<std::string> now = RunDigest(store_, run->second);
      if (absl::IsNotFound(now.status())) {
        return Bad(r.sequence, absl::StrCat("report ", r.object, ": run ", run->second,
                                            " was deleted after signing"));
      }
      if (!now.ok()) return now.status();
      if (*now != digest->second) {
        return Bad(r.sequence,
                   absl::StrCat("report ", r.object, ": run ", run->second,
                                " changed after signing (digest ", digest->second.substr(0, 12),
                                "... then, ", now->substr(0, 12), "... now)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace reprod::server::auth

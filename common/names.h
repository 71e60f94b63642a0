// File: common/names.h
//
// The grammar of run names, checkpoint names and tensor keys, checked where
// names enter the system (the server's edge, reprodctl push) so that storage
// keys, reports and logs never see control bytes or ambiguous paths:
//
//   run:        "namespace/name", each part 1-128 bytes of [A-Za-z0-9_.-]
//                                                      e.g. "team42/bert-paddle"
//   checkpoint: 1-128 bytes of [A-Za-z0-9_.+-]        e.g. "bp_align"
//   key:        1-1024 bytes; "/"-separated segments, none empty, each of
//               [A-Za-z0-9_.:+-[]]                     e.g. "encoder/layer.0/w"
//   policy name: a label, 1-256 bytes of printable UTF-8 (no control
//               character, bidi override or C1 control)  e.g. "reprod_log(mean, 0.01)"
//   key fragment (a policy's rename from/to): 0-1024 bytes of the key's
//               alphabet and "/"
//
// No segment of a run, checkpoint or key is "." or ".." (nor a segment of a
// fragment that lies between two "/"), so names never read as relative paths.
// These rules are the one table in names.cc; every way in (files pushed,
// wire ingest, run and review calls, policies) checks with these functions.
//
// Each validator returns InvalidArgument "invalid <kind> '<name>': <why>",
// the name shown through VisibleName (common/visible.h: escaped, abbreviated
// past 200 bytes), naming the offending byte or segment and its offset.
// Callers add the source (file, policy, run).
//
// Thread-safety: pure functions.
#ifndef REPROD_COMMON_NAMES_H_
#define REPROD_COMMON_NAMES_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"

namespace reprod {

absl::Status ValidateRunName(std::string_view name);
absl::Status ValidateCheckpointName(std::string_view name);
absl::Status ValidateTensorKey(std::string_view key);
inline constexpr size_t kMaxPolicyNameBytes = 256;
absl::Status ValidatePolicyName(std::string_view name);
// A substring that a policy's rename replaces or inserts; may be empty.
absl::Status ValidateKeyFragment(std::string_view fragment);

}  // namespace reprod

#endif  // REPROD_COMMON_NAMES_H_

// File: common/names.h
//
// The grammar of run names, checkpoint names and tensor keys, checked where
// names enter the system (the server's edge, reprodctl push) so that storage
// keys, reports and logs never see control bytes or ambiguous paths:
//
//   run:        "namespace/name", each part 1-128 bytes of [A-Za-z0-9_.-],
//               not "." or ".."                       e.g. "team42/bert-paddle"
//   checkpoint: 1-128 bytes of [A-Za-z0-9_.+-]        e.g. "bp_align"
//   key:        1-1024 bytes; "/"-separated segments, none empty, each of
//               [A-Za-z0-9_.:+-[]]                     e.g. "encoder/layer.0/w"
//
// Each validator returns InvalidArgument naming the kind, the (escaped) value
// and the offending byte and offset.
//
// Thread-safety: pure functions.
#ifndef REPROD_COMMON_NAMES_H_
#define REPROD_COMMON_NAMES_H_

#include <string_view>

#include "absl/status/status.h"

namespace reprod {

absl::Status ValidateRunName(std::string_view name);
absl::Status ValidateCheckpointName(std::string_view name);
absl::Status ValidateTensorKey(std::string_view key);

}  // namespace reprod

#endif  // REPROD_COMMON_NAMES_H_

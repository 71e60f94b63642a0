// File: client/cpp/reprodctl/policy_spec.h
//
// The policy flags (policy_flags.h) as the server takes them: a
// reprod.v1.PolicySpec. The flags are resolved locally first, so a bad
// preset, an unreadable or invalid policy file, or a bad threshold is an
// error before any round trip:
//   --preset NAME (or the default preset)  -> PolicySpec.preset
//   --policy FILE                          -> the file's text as PolicySpec.document
//   --threshold X [--method M], --atol/--rtol
//                                          -> an equivalent JSON document
//
// Thread-safety: reentrant.
#ifndef REPROD_CLIENT_CPP_REPRODCTL_POLICY_SPEC_H_
#define REPROD_CLIENT_CPP_REPRODCTL_POLICY_SPEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cpp/reprodctl/policy_flags.h"
#include "core/policy.h"
#include "reprod/v1/compare.pb.h"

namespace reprod::reprodctl {

// `checkpoints` limits the comparison (PolicySpec.checkpoints); each must be
// a valid checkpoint name (InvalidArgument otherwise).
absl::StatusOr<v1::PolicySpec> PolicySpecFromFlags(const PolicyFlags& flags,
                                                   const std::vector<std::string>& checkpoints);

// A policy that consists of `defaults` checks only (what the reprod_log and
// allclose shortcuts build) as a JSON policy document that ParsePolicy reads
// back to the same checks: {"name": ..., "defaults": [{"metric": ..., "max":
// ...}, ...]}. InvalidArgument for a policy with more than defaults.
absl::StatusOr<std::string> DefaultsPolicyDocument(const core::Policy& policy);

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_POLICY_SPEC_H_

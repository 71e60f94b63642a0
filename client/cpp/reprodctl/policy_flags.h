// File: client/cpp/reprodctl/policy_flags.h
//
// The policy-choosing flags shared by compare and review: --policy FILE,
// --preset NAME, --threshold X --method M (reprod_log), --atol X --rtol Y.
// They are mutually exclusive groups; Resolve() turns them into a Policy.
#ifndef REPROD_CLIENT_CPP_REPRODCTL_POLICY_FLAGS_H_
#define REPROD_CLIENT_CPP_REPRODCTL_POLICY_FLAGS_H_

#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "core/policy.h"

namespace reprod::reprodctl {

struct PolicyFlags {
  std::string policy_file;
  std::string preset;
  std::string default_preset;
  std::optional<double> threshold;
  std::string method = "mean";
  std::optional<double> atol;
  std::optional<double> rtol;
  // Added to whichever policy the flags above choose.
  std::vector<std::string> as_bf16;  // --as-bf16 GLOB (repeatable)
  std::string shapes;                // --shapes size1|strict ("" = policy's)

  // Adds the flags to `cmd`; `default_preset` applies when none is given.
  void Register(CLI::App& cmd, const std::string& default_preset);

  // The policy the flags describe, with --as-bf16 and --shapes applied.
  // InvalidArgument for unknown presets, methods, shapes modes or bad
  // numbers; errors of LoadPolicyFile for --policy.
  absl::StatusOr<core::Policy> Resolve() const;

 private:
  // The policy chosen by --policy/--preset/--threshold/--atol/--rtol.
  absl::StatusOr<core::Policy> ResolveBase() const;
};

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_POLICY_FLAGS_H_

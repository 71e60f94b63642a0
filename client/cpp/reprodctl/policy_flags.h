// File: client/cpp/reprodctl/policy_flags.h
//
// The policy-choosing flags shared by compare and review: --policy FILE,
// --preset NAME, --threshold X --method M (reprod_log), --atol X --rtol Y.
// They are mutually exclusive groups; Resolve() turns them into a Policy.
#ifndef REPROD_CLIENT_CPP_REPRODCTL_POLICY_FLAGS_H_
#define REPROD_CLIENT_CPP_REPRODCTL_POLICY_FLAGS_H_

#include <optional>
#include <string>

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

  // Adds the flags to `cmd`; `default_preset` applies when none is given.
  void Register(CLI::App& cmd, const std::string& default_preset);

  // The policy the flags describe. InvalidArgument for unknown presets,
  // methods or bad numbers; errors of LoadPolicyFile for --policy.
  absl::StatusOr<core::Policy> Resolve() const;
};

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_POLICY_FLAGS_H_

// File: client/cpp/reprodctl/compare_remote.h
//
// `reprodctl compare RUN_REF RUN_CAND`: the server-side comparison of two
// stored runs, chosen by `compare` when its arguments name runs rather than
// files (see CompareTargetsAreRuns).
//
// Thread-safety: reentrant.
#ifndef REPROD_CLIENT_CPP_REPRODCTL_COMPARE_REMOTE_H_
#define REPROD_CLIENT_CPP_REPRODCTL_COMPARE_REMOTE_H_

#include <string>
#include <vector>

#include "client/cpp/reprodctl/commands.h"
#include "client/cpp/reprodctl/policy_flags.h"

namespace reprod::reprodctl {

// True when `compare REF CAND` should go to the server: with --remote
// always; otherwise when neither argument exists as a path and both are
// valid run names ("namespace/name") without a tensor-file extension
// (formats::IsTensorFileName). Anything else
// stays an offline file comparison (which reports a missing file).
bool CompareTargetsAreRuns(const std::string& ref, const std::string& cand, bool remote_flag);

struct RemoteCompareArgs {
  std::string ref;
  std::string cand;
  PolicyFlags policy;
  std::vector<std::string> checkpoints;  // empty = all
  std::string format = "text";
  std::string out;  // "" = stdout
};

// Compares on the server, writes the rendered report to args.out (or
// stdout) and the report id and summary line to stderr. Returns kExitPass /
// kExitFail by the verdict, kExitBadInput for bad flags, names or unknown
// runs, kExitUnreachable when the server cannot be reached.
int RunRemoteCompare(const RemoteCompareArgs& args, const GlobalOptions& global);

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_COMPARE_REMOTE_H_

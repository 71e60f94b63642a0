// File: client/cpp/reprodctl/watch_line.h
//
// The one-line form of a verdict that `reprodctl watch` prints as it arrives:
//
//   PASS  forward/logits  mean_abs 1.3e-07  max_abs 2.1e-06
//   FAIL  bp_align/loss@3  mean_abs 0.0012  max_abs 0.0031  mean_abs = 0.0012 > max 1e-06; ...
//   MISSING_IN_CAND  forward/aux
//
// Numbers are printed as Python's repr(float) (shortest round trip).
//
// Thread-safety: pure function.
#ifndef REPROD_CLIENT_CPP_REPRODCTL_WATCH_LINE_H_
#define REPROD_CLIENT_CPP_REPRODCTL_WATCH_LINE_H_

#include <string>

#include "reprod/v1/compare.pb.h"

namespace reprod::reprodctl {

// Status in capitals, the address, mean_abs and max_abs when the pair was
// compared (count > 0 or status pass/warn/fail), and the reason when there
// is one; the whole line through VisibleText (common/visible.h).
std::string VerdictLine(const v1::TensorVerdict& verdict);

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_WATCH_LINE_H_

// kText: reprod_log's log format.
//
// reprod_log (utils.py check_print_diff + ReprodDiffHelper.report) logs
//   '{indent}{key}: '                      (note the trailing space)
//   '{indent}\t{method} diff: check passed: {bool}, value: {value}'
//   'diff check passed' | 'diff check failed'
// through logging.Formatter('[%(asctime)s] %(name)s %(levelname)s:
// %(message)s', datefmt='%Y/%m/%d %H:%M:%S') with logger name 'root'.
//
// Deliberate deviations from reprod_log:
//  - each line's "check passed" reflects that check alone (reprod_log's flag
//    is cumulative within a key: after one failing method every later line
//    of that key says False);
//  - a NaN value fails (reprod_log passes it because `nan > threshold` is
//    false);
//  - keys that could not be compared get one extra line stating why
//    ("\tshape mismatch: ref (4, 1) vs cand (4,)", "\tmissing in cand"), and
//    checkpoint-level failures (min_steps, required) get a line before the
//    verdict; reprod_log asserts instead;
//  - nested dicts are flattened to "a/b/c" keys rather than printed as an
//    indented tree; a step is appended as "key@step"; with several
//    checkpoints keys are printed as "checkpoint/key".
//  - keys, reasons and names go through VisibleText (common/visible.h): a
//    control character or bidi override shows as "\\n", "\\x1b", "\\u202e",
//    so one key cannot split or forge a line.
// Notes (dtype differences, transposition) are not printed in this format.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/visible.h"
#include "core/internal/localize.h"
#include "core/internal/render.h"
#include "core/report.h"

namespace reprod::core::internal {
namespace {

class LogWriter {
 public:
  explicit LogWriter(absl::Time now)
      : prefix_(absl::StrCat(
            "[",
            absl::FormatTime("%Y/%m/%d %H:%M:%S", now, absl::LocalTimeZone()),
            "] root INFO: ")) {}

  void Line(std::string_view message) {
    absl::StrAppend(&out_, prefix_, std::string(message), "\n");
  }

  void Tensor(const TensorResult& t, bool bare) {
    const std::string key =
        VisibleText(bare ? t.DisplayKey()
                          : absl::StrCat(t.checkpoint, "/", t.DisplayKey()));
    Line(absl::StrCat(key, ": "));
    switch (t.status) {
      case TensorStatus::kMissingInRef:
      case TensorStatus::kMissingInCand:
      case TensorStatus::kShapeMismatch:
        Line(absl::StrCat("\t", VisibleText(t.reason)));
        return;
      default:
        break;
    }
    for (const CheckResult& c : t.checks) {
      Line(absl::StrCat("\t", std::string(ReprodLogMethod(c.check.metric)),
                        " diff: check passed: ",
                        c.status == TensorStatus::kFail ? "False" : "True",
                        ", value: ", CheckValueText(c)));
    }
  }

  std::string Finish(bool passed) {
    Line(passed ? "diff check passed" : "diff check failed");
    return std::move(out_);
  }

 private:
  std::string prefix_;
  std::string out_;
};

}  // namespace

std::string RenderText(const Report& report, absl::Time now) {
  LogWriter w(now);
  const bool bare = report.checkpoints.size() == 1;
  for (const TensorResult& t : report.tensors) w.Tensor(t, bare);
  for (const CheckpointResult& c : report.checkpoints) {
    for (const std::string& r : c.reasons) w.Line(VisibleText(r));
  }
  for (const std::string& r : report.reasons) w.Line(VisibleText(r));
  if (report.first_divergence) {
    w.Line(VisibleText(absl::StrCat("first divergence in ", report.first_divergence->checkpoint,
                                    ": ", DescribeDivergence(*report.first_divergence))));
  }
  for (const RankSummary& k : report.ranks) {
    w.Line(VisibleText(absl::StrCat(
        "rank ", k.rank, ": ", k.passed, " of ", k.tensors, " tensors pass",
        k.first_failure ? absl::StrCat("; first failure ", k.first_failure->checkpoint, "/",
                                       k.first_failure->key,
                                       k.first_failure->step
                                           ? absl::StrCat("@", *k.first_failure->step)
                                           : "")
                        : std::string())));
  }
  for (const TensorResult& g : report.global_tensors) {
    w.Line(VisibleText(absl::StrCat("global ", g.checkpoint, "/", g.DisplayKey(),
                                    " merged from ranks ", absl::StrJoin(g.merged_ranks, ", "),
                                    ": ", std::string(TensorStatusName(g.status)),
                                    g.reason.empty() ? "" : absl::StrCat(": ", g.reason))));
  }
  return w.Finish(report.passed);
}

std::string RenderTextCheckpoint(const Report& report,
                                 const CheckpointResult& checkpoint,
                                 absl::Time now) {
  LogWriter w(now);
  for (const TensorResult& t : report.tensors) {
    if (t.checkpoint == checkpoint.name) w.Tensor(t, /*bare=*/true);
  }
  for (const std::string& r : checkpoint.reasons) w.Line(VisibleText(r));
  return w.Finish(checkpoint.passed);
}

}  // namespace reprod::core::internal

#include "client/cpp/reprodctl/watch_line.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/cpp/wire_convert.h"
#include "common/visible.h"
#include "core/py_float.h"

namespace reprod::reprodctl {

std::string VerdictLine(const v1::TensorVerdict& verdict) {
  std::string line =
      absl::StrCat(absl::AsciiStrToUpper(std::string(client::TensorStatusName(verdict.status()))),
                   "  ", client::AddressToString(verdict.address()));
  const bool compared = verdict.status() == v1::TENSOR_STATUS_PASS ||
                        verdict.status() == v1::TENSOR_STATUS_WARN ||
                        verdict.status() == v1::TENSOR_STATUS_FAIL;
  if (compared) {
    absl::StrAppend(&line, "  mean_abs ", core::PyFloatRepr(verdict.mean_abs()), "  max_abs ",
                    core::PyFloatRepr(verdict.max_abs()));
  }
  if (!verdict.reason().empty()) absl::StrAppend(&line, "  ", verdict.reason());
  return VisibleText(line);
}

}  // namespace reprod::reprodctl

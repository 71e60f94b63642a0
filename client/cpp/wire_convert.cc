#include "client/cpp/wire_convert.h"

#include "absl/strings/str_cat.h"
#include "common/placement.h"
#include "proto/wire.h"

namespace reprod::client {

std::string WireDTypeName(v1::DType dtype) {
  absl::StatusOr<DType> d = wire::DTypeFromWire(dtype);
  if (!d.ok()) return absl::StrCat("dtype(", static_cast<int>(dtype), ")");
  return std::string(DTypeName(*d));
}

std::string AddressToString(const v1::TensorAddress& address) {
  std::string s = absl::StrCat(address.checkpoint(), "/", address.key());
  if (address.has_step()) absl::StrAppend(&s, "@", address.step());
  if (address.rank() != 0) absl::StrAppend(&s, "#rank ", address.rank());
  return s;
}

std::string WirePlacementString(const v1::Placement& placement) {
  absl::StatusOr<Placement> p = wire::PlacementFromWire(placement);
  if (!p.ok()) return absl::StrCat("kind(", static_cast<int>(placement.kind()), ")");
  return PlacementToString(*p);
}

std::string_view RunStateName(v1::RunState state) {
  switch (state) {
    case v1::RUN_STATE_OPEN:
      return "open";
    case v1::RUN_STATE_SEALED:
      return "sealed";
    case v1::RUN_STATE_ABORTED:
      return "aborted";
    default:
      return "unspecified";
  }
}

std::string_view TensorStatusName(v1::TensorStatus status) {
  switch (status) {
    case v1::TENSOR_STATUS_PASS:
      return "pass";
    case v1::TENSOR_STATUS_WARN:
      return "warn";
    case v1::TENSOR_STATUS_FAIL:
      return "fail";
    case v1::TENSOR_STATUS_MISSING_IN_REF:
      return "missing_in_ref";
    case v1::TENSOR_STATUS_MISSING_IN_CAND:
      return "missing_in_cand";
    case v1::TENSOR_STATUS_SHAPE_MISMATCH:
      return "shape_mismatch";
    default:
      return "unspecified";
  }
}

bool IsPassingStatus(v1::TensorStatus status) {
  return status == v1::TENSOR_STATUS_PASS || status == v1::TENSOR_STATUS_WARN;
}

absl::StatusOr<v1::ReportFormat> ReportFormatFromName(std::string_view name) {
  if (name == "text") return v1::REPORT_FORMAT_TEXT;
  if (name == "json") return v1::REPORT_FORMAT_JSON;
  if (name == "junit") return v1::REPORT_FORMAT_JUNIT;
  if (name == "markdown" || name == "md") return v1::REPORT_FORMAT_MARKDOWN;
  if (name == "html") return v1::REPORT_FORMAT_HTML;
  return absl::InvalidArgumentError(absl::StrCat("unknown report format '", std::string(name),
                                                 "' (expected text, json, junit, markdown or html)"));
}

}  // namespace reprod::client

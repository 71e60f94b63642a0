// File: client/cpp/wire_convert.h
//
// Conversions between reprod.v1 wire values and the client's domain types,
// and the short names reprodctl prints for wire enums (DType and Status
// conversions shared with the server are in proto/wire.h). Converting from the
// wire validates: an unknown enum value is InvalidArgument.
//
//   std::string where = AddressToString(ack.address());  // "forward/logits@3"
//                                                         // "forward/logits@3#rank 1"
//
// Thread-safety: pure functions.
#ifndef REPROD_CLIENT_CPP_WIRE_CONVERT_H_
#define REPROD_CLIENT_CPP_WIRE_CONVERT_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "reprod/v1/compare.pb.h"
#include "reprod/v1/runs.pb.h"
#include "reprod/v1/tensor.pb.h"

namespace reprod::client {

// "float32", ...; "dtype(<number>)" for values this client does not know.
std::string WireDTypeName(v1::DType dtype);

// "checkpoint/key", or "checkpoint/key@step" when the step is set, then
// "#rank N" when the rank is not 0 (as the server's storage::AddressToString).
std::string AddressToString(const v1::TensorAddress& address);

// "shard(0) of (8, 4) at (4, 0)", "replicate", "partial" (common/placement.h
// PlacementToString); "" when unspecified; "kind(<number>)" for a kind this
// client does not know.
std::string WirePlacementString(const v1::Placement& placement);

// "open", "sealed", "aborted", "unspecified".
std::string_view RunStateName(v1::RunState state);

// "pass", "warn", "fail", "missing_in_ref", "missing_in_cand",
// "shape_mismatch" (the report JSON names), "unspecified".
std::string_view TensorStatusName(v1::TensorStatus status);

// True for pass and warn.
bool IsPassingStatus(v1::TensorStatus status);

// "text", "json", "junit", "markdown" (also "md"), "html" -> the wire format;
// InvalidArgument naming the accepted names otherwise.
absl::StatusOr<v1::ReportFormat> ReportFormatFromName(std::string_view name);

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_WIRE_CONVERT_H_

// File: proto/wire.h
//
// The conversions both ends of the reprod.v1 wire need, in one place, so the
// server and the client cannot drift apart:
//  - DType <-> reprod.v1.DType (wire value = common/dtype.h value + 1; 0 is
//    DTYPE_UNSPECIFIED);
//  - Placement <-> reprod.v1.Placement (kinds shifted by nothing: KIND_SHARD
//    = PlacementKind::kShard; KIND_UNSPECIFIED is kNone);
//  - absl::Status <-> grpc::Status (absl codes mirror google.rpc.Code, so the
//    mapping is 1:1 and messages are kept; Triton's GrpcStatusUtil idea).
//
//   header->set_dtype(wire::DTypeToWire(tensor.dtype()));
//   return wire::ToGrpcStatus(store.CreateRun(run));        // server edge
//   absl::Status s = wire::FromGrpcStatus(stub_status);       // client edge
//
// Richer, side-specific conversions (runs, reports, verdicts) stay in
// server/proto_convert.h and client/cpp/wire_convert.h.
//
// Thread-safety: pure functions.
#ifndef REPROD_PROTO_WIRE_H_
#define REPROD_PROTO_WIRE_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/placement.h"
#include "reprod/v1/tensor.pb.h"

namespace reprod::wire {

v1::DType DTypeToWire(DType dtype);

// InvalidArgument ("unknown dtype N (expected 1..13, see reprod.v1.DType)")
// for DTYPE_UNSPECIFIED and values outside the enum.
absl::StatusOr<DType> DTypeFromWire(v1::DType dtype);

// Leaves `out` untouched for kNone (the field stays absent on the wire).
void PlacementToWire(const Placement& placement, v1::Placement* out);

// The placement as sent; InvalidArgument ("unknown placement kind N") for a
// kind outside the enum. Not checked against a shape (ValidatePlacement).
absl::StatusOr<Placement> PlacementFromWire(const v1::Placement& placement);

grpc::Status ToGrpcStatus(const absl::Status& status);

// Codes outside google.rpc.Code's 0..16 become UNKNOWN; the message is kept.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace reprod::wire

#endif  // REPROD_PROTO_WIRE_H_

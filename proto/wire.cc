#include "proto/wire.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace reprod::wire {

// The wire enum is common/dtype.h's, shifted by one for DTYPE_UNSPECIFIED.
static_assert(v1::DType_MAX == kNumDTypes, "reprod.v1.DType and reprod::DType differ");
static_assert(v1::DTYPE_UINT64 == static_cast<int>(DType::kUInt64) + 1);

v1::DType DTypeToWire(DType dtype) {
  return static_cast<v1::DType>(static_cast<int>(dtype) + 1);
}

absl::StatusOr<DType> DTypeFromWire(v1::DType dtype) {
  const int v = static_cast<int>(dtype);
  if (v < 1 || v > kNumDTypes) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dtype ", v, " (expected 1..", kNumDTypes,
                     ", see reprod.v1.DType)"));
  }
  return static_cast<DType>(v - 1);
}

static_assert(v1::Placement::KIND_SHARD == static_cast<int>(PlacementKind::kShard));
static_assert(v1::Placement::KIND_REPLICATE == static_cast<int>(PlacementKind::kReplicate));
static_assert(v1::Placement::KIND_PARTIAL == static_cast<int>(PlacementKind::kPartial));
static_assert(v1::Placement::Kind_MAX == static_cast<int>(PlacementKind::kPartial));

void PlacementToWire(const Placement& placement, v1::Placement* out) {
  if (placement.kind == PlacementKind::kNone) return;
  out->set_kind(static_cast<v1::Placement::Kind>(placement.kind));
  out->set_dim(placement.dim);
  for (int64_t g : placement.global_shape) out->add_global_shape(g);
  for (int64_t o : placement.offset) out->add_offset(o);
}

absl::StatusOr<Placement> PlacementFromWire(const v1::Placement& placement) {
  const int kind = static_cast<int>(placement.kind());
  if (kind < 0 || kind > v1::Placement::Kind_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown placement kind ", kind, " (expected 0..", v1::Placement::Kind_MAX,
        ", see reprod.v1.Placement.Kind)"));
  }
  Placement out;
  out.kind = static_cast<PlacementKind>(kind);
  out.dim = placement.dim();
  out.global_shape.assign(placement.global_shape().begin(), placement.global_shape().end());
  out.offset.assign(placement.offset().begin(), placement.offset().end());
  return out;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  // Both enums follow google.rpc.Code: 1 CANCELLED ... 16 UNAUTHENTICATED.
  const absl::StatusCode absl_code = code >= 1 && code <= 16
                                         ? static_cast<absl::StatusCode>(code)
                                         : absl::StatusCode::kUnknown;
  return absl::Status(absl_code, status.error_message());
}

}  // namespace reprod::wire

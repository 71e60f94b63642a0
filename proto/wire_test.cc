#include "proto/wire.h"

#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::wire {
namespace {

using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

TEST(WireDType, RoundTripsEveryDTypeWithTheDocumentedValues) {
  for (int i = 0; i < kNumDTypes; ++i) {
    const DType d = static_cast<DType>(i);
    const v1::DType w = DTypeToWire(d);
    EXPECT_EQ(static_cast<int>(w), i + 1);
    ASSERT_TRUE(DTypeFromWire(w).ok());
    EXPECT_EQ(*DTypeFromWire(w), d);
  }
  EXPECT_EQ(DTypeToWire(DType::kFloat32), v1::DTYPE_FLOAT32);
  EXPECT_EQ(DTypeToWire(DType::kBFloat16), v1::DTYPE_BFLOAT16);
  EXPECT_EQ(DTypeToWire(DType::kBool), v1::DTYPE_BOOL);
  EXPECT_EQ(DTypeToWire(DType::kUInt16), v1::DTYPE_UINT16);
  EXPECT_EQ(DTypeToWire(DType::kUInt32), v1::DTYPE_UINT32);
  EXPECT_EQ(DTypeToWire(DType::kUInt64), v1::DTYPE_UINT64);
  EXPECT_EQ(static_cast<int>(v1::DTYPE_UINT64), 13);  // persisted by clients: never renumbered
}

TEST(WireDType, UnknownValuesAreRefused) {
  EXPECT_THAT(DTypeFromWire(v1::DTYPE_UNSPECIFIED),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dtype 0")));
  EXPECT_THAT(DTypeFromWire(static_cast<v1::DType>(99)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("99")));
  EXPECT_THAT(DTypeFromWire(static_cast<v1::DType>(kNumDTypes + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 1..13")));
}

TEST(WirePlacement, RoundTripsEveryKindWithTheDocumentedValues) {
  const Placement shard = Placement::Shard(1, {8, 6}, {0, 3});
  v1::Placement w;
  PlacementToWire(shard, &w);
  EXPECT_EQ(w.kind(), v1::Placement::KIND_SHARD);
  EXPECT_EQ(static_cast<int>(w.kind()), 1);  // persisted by clients: never renumbered
  EXPECT_EQ(w.dim(), 1);
  EXPECT_THAT(w.global_shape(), ::testing::ElementsAre(8, 6));
  EXPECT_THAT(w.offset(), ::testing::ElementsAre(0, 3));
  // Field numbers: kind 1, dim 2, global_shape 3 (packed), offset 4 (packed).
  EXPECT_EQ(w.SerializeAsString(),
            std::string("\x08\x01\x10\x01\x1a\x02\x08\x06\x22\x02\x00\x03", 12));
  ASSERT_OK_AND_ASSIGN(Placement back, PlacementFromWire(w));
  EXPECT_EQ(back, shard);
  for (const Placement& p : {Placement::Replicate(), Placement::Partial()}) {
    v1::Placement pw;
    PlacementToWire(p, &pw);
    EXPECT_EQ(pw.kind(), p.kind == PlacementKind::kReplicate ? v1::Placement::KIND_REPLICATE
                                                             : v1::Placement::KIND_PARTIAL);
    EXPECT_THAT(PlacementFromWire(pw), ::reprod::testing::IsOkAndHolds(p));
  }
  // kNone stays off the wire; an absent placement reads as kNone.
  v1::TensorHeader header;
  PlacementToWire(Placement{}, header.mutable_placement());
  EXPECT_EQ(header.placement().ByteSizeLong(), 0u);
  EXPECT_THAT(PlacementFromWire(v1::Placement()), ::reprod::testing::IsOkAndHolds(Placement{}));
  EXPECT_EQ(v1::Placement::KIND_REPLICATE, 2);
  EXPECT_EQ(v1::Placement::KIND_PARTIAL, 3);
}

TEST(WirePlacement, UnknownKindIsRefused) {
  v1::Placement w;
  w.set_kind(static_cast<v1::Placement::Kind>(7));
  EXPECT_THAT(PlacementFromWire(w),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown placement kind 7")));
}

TEST(WireAddress, RankIsFieldFour) {
  v1::TensorAddress a;
  a.set_rank(300);
  EXPECT_EQ(a.SerializeAsString(), std::string("\x20\xac\x02", 3));
}

TEST(ToGrpcStatus, OkAndCodesAndMessagesPass) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  const grpc::Status s = ToGrpcStatus(absl::NotFoundError("run 'a/b' not found"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "run 'a/b' not found");
}

TEST(FromGrpcStatus, OkIsOk) { EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok()); }

TEST(FromGrpcStatus, EveryCanonicalCodeMapsOneToOneAndKeepsTheMessage) {
  const std::pair<grpc::StatusCode, absl::StatusCode> pairs[] = {
      {grpc::StatusCode::CANCELLED, absl::StatusCode::kCancelled},
      {grpc::StatusCode::UNKNOWN, absl::StatusCode::kUnknown},
      {grpc::StatusCode::INVALID_ARGUMENT, absl::StatusCode::kInvalidArgument},
      {grpc::StatusCode::DEADLINE_EXCEEDED, absl::StatusCode::kDeadlineExceeded},
      {grpc::StatusCode::NOT_FOUND, absl::StatusCode::kNotFound},
      {grpc::StatusCode::ALREADY_EXISTS, absl::StatusCode::kAlreadyExists},
      {grpc::StatusCode::PERMISSION_DENIED, absl::StatusCode::kPermissionDenied},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, absl::StatusCode::kResourceExhausted},
      {grpc::StatusCode::FAILED_PRECONDITION, absl::StatusCode::kFailedPrecondition},
      {grpc::StatusCode::ABORTED, absl::StatusCode::kAborted},
      {grpc::StatusCode::OUT_OF_RANGE, absl::StatusCode::kOutOfRange},
      {grpc::StatusCode::UNIMPLEMENTED, absl::StatusCode::kUnimplemented},
      {grpc::StatusCode::INTERNAL, absl::StatusCode::kInternal},
      {grpc::StatusCode::UNAVAILABLE, absl::StatusCode::kUnavailable},
      {grpc::StatusCode::DATA_LOSS, absl::StatusCode::kDataLoss},
      {grpc::StatusCode::UNAUTHENTICATED, absl::StatusCode::kUnauthenticated},
  };
  for (const auto& [grpc_code, absl_code] : pairs) {
    const absl::Status s = FromGrpcStatus(grpc::Status(grpc_code, "run 'a/b' not found"));
    EXPECT_EQ(s.code(), absl_code) << static_cast<int>(grpc_code);
    EXPECT_EQ(s.message(), "run 'a/b' not found");
  }
}

TEST(FromGrpcStatus, OutOfRangeCodeIsUnknown) {
  const absl::Status s = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(42), "odd"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "odd");
}

}  // namespace
}  // namespace reprod::wire

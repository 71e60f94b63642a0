#include "client/cpp/wire_convert.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::client {
namespace {

using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

TEST(WireDTypeName, NamesEveryDTypeAndMarksUnknownValues) {
  for (int i = 0; i < kNumDTypes; ++i) {
    const DType d = static_cast<DType>(i);
    EXPECT_EQ(WireDTypeName(static_cast<v1::DType>(i + 1)), std::string(DTypeName(d)));
  }
  EXPECT_EQ(WireDTypeName(static_cast<v1::DType>(99)), "dtype(99)");
}

TEST(AddressToString, StepOnlyWhenSet) {
  v1::TensorAddress a;
  a.set_checkpoint("forward");
  a.set_key("enc/w");
  EXPECT_EQ(AddressToString(a), "forward/enc/w");
  a.set_step(0);
  EXPECT_EQ(AddressToString(a), "forward/enc/w@0");
  a.set_rank(3);
  EXPECT_EQ(AddressToString(a), "forward/enc/w@0#rank 3");
  a.clear_step();
  EXPECT_EQ(AddressToString(a), "forward/enc/w#rank 3");
}

TEST(WirePlacementString, AsPlacementToString) {
  v1::Placement p;
  EXPECT_EQ(WirePlacementString(p), "");
  p.set_kind(v1::Placement::KIND_SHARD);
  p.set_dim(1);
  for (int64_t g : {8, 6}) p.add_global_shape(g);
  for (int64_t o : {0, 3}) p.add_offset(o);
  EXPECT_EQ(WirePlacementString(p), "shard(1) of (8, 6) at (0, 3)");
  v1::Placement r;
  r.set_kind(v1::Placement::KIND_REPLICATE);
  EXPECT_EQ(WirePlacementString(r), "replicate");
  r.set_kind(v1::Placement::KIND_PARTIAL);
  EXPECT_EQ(WirePlacementString(r), "partial");
  r.set_kind(static_cast<v1::Placement::Kind>(12));
  EXPECT_EQ(WirePlacementString(r), "kind(12)");
}

TEST(ReportFormatFromName, AcceptsTheCliNames) {
  EXPECT_EQ(*ReportFormatFromName("text"), v1::REPORT_FORMAT_TEXT);
  EXPECT_EQ(*ReportFormatFromName("json"), v1::REPORT_FORMAT_JSON);
  EXPECT_EQ(*ReportFormatFromName("junit"), v1::REPORT_FORMAT_JUNIT);
  EXPECT_EQ(*ReportFormatFromName("markdown"), v1::REPORT_FORMAT_MARKDOWN);
  EXPECT_EQ(*ReportFormatFromName("md"), v1::REPORT_FORMAT_MARKDOWN);
  EXPECT_THAT(ReportFormatFromName("pdf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'pdf'")));
}

TEST(StatusNames, MatchTheReportJsonNames) {
  EXPECT_EQ(RunStateName(v1::RUN_STATE_SEALED), "sealed");
  EXPECT_EQ(TensorStatusName(v1::TENSOR_STATUS_MISSING_IN_CAND), "missing_in_cand");
  EXPECT_TRUE(IsPassingStatus(v1::TENSOR_STATUS_WARN));
  EXPECT_FALSE(IsPassingStatus(v1::TENSOR_STATUS_SHAPE_MISMATCH));
}

}  // namespace
}  // namespace reprod::client

// ReportToProto / MakeStoredReport and the html format: a new report stores
// an html rendering equal to core's; one stored before html existed answers
// NotFound saying so, while another missing rendering is DataLoss. Ranks and
// placements round-trip between the wire and storage headers; bad ones are
// InvalidArgument naming the address.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/placement.h"
#include "core/report.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/proto_convert.h"
#include "server/stored_report.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

core::Report FailingReport() {
  core::Report r;
  r.ref = "a/torch";
  r.cand = "a/paddle";
  r.policy = "reprod";
  r.backend = "cpu";
  core::TensorResult t;
  t.checkpoint = "forward";
  t.key = "<b>x</b>";
  t.status = core::TensorStatus::kMissingInCand;
  t.reason = "missing in cand";
  r.tensors.push_back(t);
  core::CheckpointResult c;
  c.name = "forward";
  c.passed = false;
  c.tensors = c.failed_tensors = 1;
  r.checkpoints.push_back(c);
  r.summary.tensors = r.summary.missing_in_cand = 1;
  return r;
}

TEST(ProtoConvertTest, HtmlFormatMapsBothWays) {
  EXPECT_EQ(*ReportFormatFromProto(v1::REPORT_FORMAT_HTML), core::ReportFormat::kHtml);
}

TEST(ProtoConvertTest, StoredReportCarriesHtmlServedVerbatim) {
  const core::Report report = FailingReport();
  absl::StatusOr<storage::StoredReport> stored =
      MakeStoredReport(report, absl::FromUnixSeconds(1700000000));
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->renderings.count("html"), 1u);
  EXPECT_EQ(stored->renderings.at("html"),
            *core::RenderReport(report, core::ReportFormat::kHtml));
  EXPECT_THAT(stored->renderings.at("html"), HasSubstr("&lt;b&gt;x&lt;/b&gt;"));
  v1::Report out;
  ASSERT_TRUE(ReportToProto(*stored, v1::REPORT_FORMAT_HTML, true, &out).ok());
  EXPECT_EQ(out.format(), v1::REPORT_FORMAT_HTML);
  EXPECT_EQ(out.rendered(), stored->renderings.at("html"));
}

TEST(ProtoConvertTest, ReportStoredBeforeHtmlSaysSo) {
  storage::StoredReport old;
  old.id = "rpt-00000000000000aa";
  old.renderings = {{"json", "{}"}, {"text", "t"}, {"junit", "j"}, {"markdown", "m"}};
  v1::Report out;
  EXPECT_THAT(ReportToProto(old, v1::REPORT_FORMAT_HTML, true, &out),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("rpt-00000000000000aa"),
                             HasSubstr("stored before HTML reports existed"))));
  old.renderings.erase("markdown");
  EXPECT_THAT(ReportToProto(old, v1::REPORT_FORMAT_MARKDOWN, true, &out),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no markdown rendering")));
  EXPECT_TRUE(ReportToProto(old, v1::REPORT_FORMAT_TEXT, true, &out).ok());
  EXPECT_EQ(out.rendered(), "t");
}

v1::TensorHeader WireHeader(uint32_t rank, std::vector<int64_t> shape) {
  v1::TensorHeader h;
  h.mutable_address()->set_checkpoint("forward");
  h.mutable_address()->set_key("logits");
  h.mutable_address()->set_step(3);
  h.mutable_address()->set_rank(rank);
  h.set_dtype(v1::DTYPE_FLOAT32);
  int64_t n = 1;
  for (int64_t d : shape) {
    h.add_shape(d);
    n *= d;
  }
  h.set_byte_length(static_cast<uint64_t>(n) * 4);
  h.set_crc32c(0x1234abcd);
  return h;
}

TEST(ProtoConvertTest, RankAndPlacementRoundTrip) {
  // Rows 4..7 of an 8 x 3 tensor on rank 1.
  v1::TensorHeader wire = WireHeader(1, {4, 3});
  wire.mutable_placement()->set_kind(v1::Placement::KIND_SHARD);
  wire.mutable_placement()->set_dim(0);
  for (int64_t g : {8, 3}) wire.mutable_placement()->add_global_shape(g);
  for (int64_t o : {4, 0}) wire.mutable_placement()->add_offset(o);
  absl::StatusOr<storage::TensorHeader> h = HeaderFromProto(wire);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->address, (storage::TensorAddress{"forward", "logits", 3, 1}));
  EXPECT_EQ(h->placement, Placement::Shard(0, {8, 3}, {4, 0}));
  EXPECT_EQ(h->crc32c, 0x1234abcdu);
  v1::TensorHeader back;
  HeaderToProto(*h, &back);
  EXPECT_EQ(back.SerializeAsString(), wire.SerializeAsString());

  // Replicate and partial carry only their kind; rank 0 and no placement
  // stay off the wire, as before ranks existed.
  for (v1::Placement::Kind kind : {v1::Placement::KIND_REPLICATE, v1::Placement::KIND_PARTIAL}) {
    v1::TensorHeader w = WireHeader(7, {2});
    w.mutable_placement()->set_kind(kind);
    absl::StatusOr<storage::TensorHeader> r = HeaderFromProto(w);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->address.rank, 7u);
    EXPECT_EQ(r->placement.kind, kind == v1::Placement::KIND_REPLICATE ? PlacementKind::kReplicate
                                                                      : PlacementKind::kPartial);
    v1::TensorHeader out;
    HeaderToProto(*r, &out);
    EXPECT_EQ(out.SerializeAsString(), w.SerializeAsString());
  }
  v1::TensorHeader plain = WireHeader(0, {2});
  absl::StatusOr<storage::TensorHeader> p = HeaderFromProto(plain);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->address.rank, 0u);
  EXPECT_EQ(p->placement, Placement{});
  v1::TensorHeader out;
  HeaderToProto(*p, &out);
  EXPECT_FALSE(out.has_placement());
  EXPECT_EQ(out.address().rank(), 0u);
  EXPECT_EQ(out.SerializeAsString(), plain.SerializeAsString());

  // A report's first failure and a verdict keep their rank.
  v1::TensorAddress a;
  AddressToProto(core::TensorAddress{"forward", "logits", 3, 2}, &a);
  EXPECT_EQ(a.rank(), 2u);
  v1::TensorAddress no_step;
  AddressToProto(storage::TensorAddress{"forward", "logits", std::nullopt, 5}, &no_step);
  EXPECT_EQ(no_step.rank(), 5u);
  EXPECT_FALSE(no_step.has_step());
  EXPECT_EQ(AddressFromProto(no_step),
            (storage::TensorAddress{"forward", "logits", std::nullopt, 5}));
  core::TensorResult t;
  t.checkpoint = "forward";
  t.key = "logits";
  t.rank = 1;
  v1::TensorVerdict verdict;
  VerdictToProto(t, &verdict);
  EXPECT_EQ(verdict.address().rank(), 1u);
}

TEST(ProtoConvertTest, BadRanksAndPlacementsAreInvalidArgumentNamingTheAddress) {
  EXPECT_THAT(HeaderFromProto(WireHeader(kMaxRank, {2})).status(), ::reprod::testing::IsOk());
  EXPECT_THAT(HeaderFromProto(WireHeader(kMaxRank + 1, {2})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("forward/logits@3#rank 1048576: invalid rank 1048576"),
                             HasSubstr("ranks are 0 to 1048575"))));
  // Rows 6..9 of an 8-row tensor.
  v1::TensorHeader past = WireHeader(1, {4, 3});
  past.mutable_placement()->set_kind(v1::Placement::KIND_SHARD);
  for (int64_t g : {8, 3}) past.mutable_placement()->add_global_shape(g);
  for (int64_t o : {6, 0}) past.mutable_placement()->add_offset(o);
  EXPECT_THAT(HeaderFromProto(past).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("forward/logits@3#rank 1: invalid placement shard"),
                             HasSubstr("dimension 0: offset 6 + size 4 exceeds the global size 8"))));
  // A shard whose offset has the wrong number of dimensions.
  past.mutable_placement()->mutable_offset()->RemoveLast();
  EXPECT_THAT(HeaderFromProto(past).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("need 2 dimensions each")));
  v1::TensorHeader replicate = WireHeader(0, {2});
  replicate.mutable_placement()->set_kind(v1::Placement::KIND_REPLICATE);
  replicate.mutable_placement()->set_dim(1);
  EXPECT_THAT(HeaderFromProto(replicate).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("forward/logits@3: invalid placement replicate"),
                             HasSubstr("only a shard has a dim"))));
  v1::TensorHeader unknown = WireHeader(0, {2});
  unknown.mutable_placement()->set_kind(static_cast<v1::Placement::Kind>(9));
  EXPECT_THAT(HeaderFromProto(unknown).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("forward/logits@3: unknown placement kind 9")));
  v1::TensorHeader dtype = WireHeader(2, {2});
  dtype.set_dtype(static_cast<v1::DType>(42));
  EXPECT_THAT(HeaderFromProto(dtype).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("forward/logits@3#rank 2: unknown dtype 42")));
}

}  // namespace
}  // namespace reprod::server

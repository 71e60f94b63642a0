// ReportToProto / MakeStoredReport and the html format: a new report stores
// an html rendering equal to core's; one stored before html existed answers
// NotFound saying so, while another missing rendering is DataLoss.
#include <string>

#include "absl/time/time.h"
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

}  // namespace
}  // namespace reprod::server

// The text exposition writer against hand-written expected output (format
// 0.0.4), escaping, histogram buckets, and counters under concurrent
// increments.
#include "server/metrics/metrics.h"

#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/server_metrics.h"

namespace reprod::server::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricsText, CounterGaugeExactOutput) {
  Registry r;
  Family<Counter>& c = r.AddCounter("x_total", "Things.", {"kind", "zone"});
  c.With({"b", "z1"}).Inc(2);
  c.With({"a", "z2"}).Inc();
  r.AddGauge("y", "A gauge.").With({}).Set(-3);
  EXPECT_EQ(r.Render(),
            "# HELP x_total Things.\n"
            "# TYPE x_total counter\n"
            "x_total{kind=\"a\",zone=\"z2\"} 1\n"
            "x_total{kind=\"b\",zone=\"z1\"} 2\n"
            "# HELP y A gauge.\n"
            "# TYPE y gauge\n"
            "y -3\n");
}

TEST(MetricsText, EscapesLabelValuesAndHelp) {
  Registry r;
  r.AddCounter("e_total", "Back\\slash and\nnewline \"kept\".", {"v"}).With({"a\\b\"c\nd"}).Inc();
  EXPECT_EQ(r.Render(),
            "# HELP e_total Back\\\\slash and\\nnewline \"kept\".\n"
            "# TYPE e_total counter\n"
            "e_total{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(MetricsText, HistogramCumulativeBuckets) {
  Registry r;
  Family<Histogram>& h = r.AddHistogram("lat_seconds", "Latency.", {"backend"}, {0.5, 1, 2.5});
  Histogram& cpu = h.With({"cpu"});
  // 0.5 falls in le="0.5" (bounds are inclusive); 3 only in +Inf.
  for (double v : {0.25, 0.5, 0.75, 3.0}) cpu.Observe(v);
  EXPECT_EQ(r.Render(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{backend=\"cpu\",le=\"0.5\"} 2\n"
            "lat_seconds_bucket{backend=\"cpu\",le=\"1\"} 3\n"
            "lat_seconds_bucket{backend=\"cpu\",le=\"2.5\"} 3\n"
            "lat_seconds_bucket{backend=\"cpu\",le=\"+Inf\"} 4\n"
            "lat_seconds_sum{backend=\"cpu\"} 4.5\n"
            "lat_seconds_count{backend=\"cpu\"} 4\n");
}

TEST(MetricsText, HistogramWithoutLabels) {
  Registry r;
  r.AddHistogram("h", "H.", {}, {1}).With({}).Observe(0.125);
  EXPECT_EQ(r.Render(),
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.125\nh_count 1\n");
}

TEST(MetricsText, CallbackGaugeSortedAndFormatted) {
  Registry r;
  r.AddCallbackGauge("s_bytes", "Stored.", {"namespace"}, [] {
    return std::vector<std::pair<LabelValues, double>>{{{"team9"}, 1e20}, {{"team1"}, 7}};
  });
  EXPECT_EQ(r.Render(),
            "# HELP s_bytes Stored.\n# TYPE s_bytes gauge\n"
            "s_bytes{namespace=\"team1\"} 7\n"
            "s_bytes{namespace=\"team9\"} 1e+20\n");
}

TEST(MetricsText, FormatValue) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(MetricsText, WrongLabelCountStillRenders) {
  Registry r;
  Family<Counter>& c = r.AddCounter("w_total", "W.", {"a", "b"});
  c.With({"x"}).Inc();
  c.With({"x", "", "extra"}).Inc();  // same series as {"x", ""}
  EXPECT_EQ(r.Render(), "# HELP w_total W.\n# TYPE w_total counter\nw_total{a=\"x\",b=\"\"} 2\n");
}

TEST(Metrics, ConcurrentIncrementsAllCounted) {
  Registry r;
  Family<Counter>& c = r.AddCounter("n_total", "N.", {"t"});
  Histogram& h = r.AddHistogram("d", "D.", {}, {1}).With({});
  constexpr int kThreads = 8, kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&c, &h, t] {
      for (int i = 0; i < kEach; ++i) {
        c.With({t % 2 == 0 ? "even" : "odd"}).Inc();
        h.Observe(0.5);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(c.With({"even"}).Value() + c.With({"odd"}).Value(), uint64_t{kThreads} * kEach);
  const Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count, uint64_t{kThreads} * kEach);
  EXPECT_EQ(s.sum, 0.5 * kThreads * kEach);  // exact: halves sum exactly below 2^53
}

TEST(ServerMetrics, NamesAndInitialSeries) {
  ServerMetrics m("1.2.3");
  m.TensorAcked("stored", 100, 0.002);
  m.TensorAcked("already_present", 50, 0.5);
  m.Compared("cpu", 0.2, 4096);
  m.AuthFailed(absl::UnauthenticatedError("no token"));
  m.AuthFailed(absl::NotFoundError("not an auth failure"));
  m.StreamOpened();
  m.StreamOpened();
  m.StreamClosed();
  const std::string text = m.registry().Render();
  EXPECT_THAT(text, HasSubstr("\nreprod_ingest_bytes_total 150\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_ingest_tensors_total{kind=\"stored\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_ingest_tensors_total{kind=\"already_present\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_ingest_tensors_total{kind=\"replaced\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_ingest_streams_open 1\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_ingest_ack_seconds_bucket{le=\"0.0025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_ingest_ack_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_compare_total{backend=\"cpu\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_compare_bytes_total{backend=\"cpu\"} 4096\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_compare_seconds_count{backend=\"cpu\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_auth_failures_total{reason=\"unauthenticated\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\nreprod_auth_failures_total{reason=\"permission_denied\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE reprod_build_info gauge\n"
                              "reprod_build_info{version=\"1.2.3\"} 1\n"));
}

}  // namespace
}  // namespace reprod::server::metrics

#include "core/internal/svg_charts.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/internal/render.h"
#include "core/py_float.h"

namespace reprod::core::internal {
namespace {

// A coordinate with one decimal: small files, no locale dependence.
std::string Num(double v) { return absl::StrFormat("%.1f", v); }

std::string SvgOpen(std::string_view css_class, double w, double h,
                    std::string_view label) {
  return absl::StrCat("<svg class=\"", std::string(css_class),
                      "\" width=\"",
                      Num(w), "\" height=\"", Num(h), "\" viewBox=\"0 0 ",
                      Num(w), " ", Num(h), "\" role=\"img\" aria-label=\"",
                      HtmlEscape(label), "\">");
}

std::string Text(double x, double y, std::string_view css_class,
                 std::string_view text, std::string_view extra = "") {
  return absl::StrCat("<text class=\"", std::string(css_class), "\" x=\"", Num(x),
                      "\" y=\"", Num(y), "\"", std::string(extra), ">",
                      HtmlEscape(text),
                      "</text>");
}

std::string Line(double x1, double y1, double x2, double y2,
                 std::string_view css_class) {
  return absl::StrCat("<line class=\"", std::string(css_class), "\" x1=\"", Num(x1),
                      "\" y1=\"", Num(y1), "\" x2=\"", Num(x2), "\" y2=\"",
                      Num(y2), "\"/>");
}

// The decades [lo, hi] (lo < hi) covering every positive finite value.
struct LogRange {
  int lo = -12;
  int hi = 0;
};

LogRange RangeOf(const std::vector<DriftPoint>& points, double bound) {
  double mn = INFINITY, mx = 0;
  auto take = [&](double v) {
    if (v > 0 && std::isfinite(v)) {
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
  };
  bool zero = false;
  for (const DriftPoint& p : points) {
    take(p.error);
    zero = zero || p.error <= 0;
  }
  take(bound);
  if (mx == 0) return {};
  LogRange r{static_cast<int>(std::floor(std::log10(mn))),
             static_cast<int>(std::ceil(std::log10(mx)))};
  if (r.hi <= r.lo) r.hi = r.lo + 1;
  // Zero errors sit on the bottom edge: keep that edge a decade below the
  // smallest value so that they do not read as lying on the bound.
  if (zero) --r.lo;
  return r;
}

// Geometry of the drift chart's plot area.
struct DriftFrame {
  static constexpr double kW = 520, kH = 220, kL = 64, kR = 14, kT = 24,
                          kB = 40;
  LogRange range;
  bool has_zero = false;  // some error is 0: drawn on the bottom edge
  int64_t step_min = 0, step_max = 0;

  double X(int64_t step) const {
    if (step_max == step_min) return (kL + kW - kR) / 2;
    return kL + (kW - kL - kR) * static_cast<double>(step - step_min) /
                    static_cast<double>(step_max - step_min);
  }
  // NaN and +inf sit on the top edge, 0 on the bottom edge.
  double Y(double v) const {
    if (std::isnan(v) || std::isinf(v)) return kT;
    if (v <= 0) return kH - kB;
    const double f = (range.hi - std::log10(v)) / (range.hi - range.lo);
    return kT + std::clamp(f, 0.0, 1.0) * (kH - kT - kB);
  }
};

std::string DriftAxes(const DriftFrame& f, std::string_view y_label) {
  std::string out;
  const int stride = std::max(1, (f.range.hi - f.range.lo + 5) / 6);
  for (int d = f.range.lo; d <= f.range.hi; d += stride) {
    const double y = f.Y(std::pow(10.0, d));
    const bool zero_edge = d == f.range.lo && f.has_zero;
    absl::StrAppend(&out, Line(f.kL, y, f.kW - f.kR, y, "grid"),
                    Text(f.kL - 4, y + 4, "tick y",
                         absl::StrCat(zero_edge ? "0, " : "", "1e", d)));
  }
  const double bottom = f.kH - f.kB;
  absl::StrAppend(&out, Line(f.kL, f.kT, f.kL, bottom, "axis"),
                  Line(f.kL, bottom, f.kW - f.kR, bottom, "axis"));
  std::vector<int64_t> ticks = {f.step_min, f.step_max};
  if (f.step_max - f.step_min > 1) {
    ticks.push_back(f.step_min + (f.step_max - f.step_min) / 2);
  }
  for (int64_t s : ticks) {
    absl::StrAppend(&out, Text(f.X(s), bottom + 14, "tick x", absl::StrCat(s)));
  }
  absl::StrAppend(&out, Text((f.kL + f.kW) / 2, f.kH - 6, "label", "step"),
                  Text(f.kL, 12, "label", y_label));
  return out;
}

std::string DriftMarks(const DriftFrame& f, std::vector<DriftPoint> points,
                       double bound) {
  std::sort(points.begin(), points.end(),
            [](const DriftPoint& a, const DriftPoint& b) {
              return a.step < b.step;
            });
  std::string poly;
  for (const DriftPoint& p : points) {
    absl::StrAppend(&poly, poly.empty() ? "" : " ", Num(f.X(p.step)), ",",
                    Num(f.Y(p.error)));
  }
  std::string out =
      absl::StrCat("<polyline class=\"series\" points=\"", poly, "\"/>");
  if (std::isfinite(bound) && bound > 0) {
    const double y = f.Y(bound);
    absl::StrAppend(&out, Line(f.kL, y, f.kW - f.kR, y, "bound"),
                    Text(f.kW - f.kR - 2, y - 3, "bound-label",
                         absl::StrCat("bound ", PyFloatRepr(bound)),
                         " text-anchor=\"end\""));
  }
  for (const DriftPoint& p : points) {
    absl::StrAppend(&out, "<circle class=\"point ", p.fail ? "fail" : "pass",
                    "\" cx=\"", Num(f.X(p.step)), "\" cy=\"",
                    Num(f.Y(p.error)), "\" r=\"", p.fail ? "4" : "3",
                    "\"><title>",
                    HtmlEscape(absl::StrCat("step ", p.step, ": ",
                                            PyFloatRepr(p.error),
                                            p.fail ? " (fail)" : "")),
                    "</title></circle>");
  }
  return out;
}

std::string HistogramLabel(int bin) {
  if (bin == 0) return "0";
  if (bin == 1) return "<1e-12";
  if (bin == kernels::kHistogramBins - 1) return ">=1e4";
  return absl::StrCat("1e", bin - 14);
}

std::string HistogramRange(int bin) {
  if (bin == 0) return "|d| = 0";
  if (bin == 1) return "0 < |d| < 1e-12";
  if (bin == kernels::kHistogramBins - 1) return "|d| >= 1e4";
  return absl::StrCat("1e", bin - 14, " <= |d| < 1e", bin - 13);
}

// Hue from green (0) through yellow to red (>= 1); darker red further past
// the bound; grey for missing tensors.
std::string HeatFill(const HeatCell& c) {
  if (c.css_class == "missing") return "#9e9e9e";
  if (c.severity >= 1) {
    const double past = std::isfinite(c.severity)
                            ? std::min(1.0, std::log10(c.severity) / 3)
                            : 1.0;
    return absl::StrFormat("hsl(0,80%%,%.0f%%)", 55 - 25 * past);
  }
  const double s = std::max(0.0, c.severity);
  return absl::StrFormat("hsl(%.0f,70%%,50%%)", 120 * (1 - s));
}

}  // namespace

std::string DriftChart(const std::vector<DriftPoint>& points, double bound,
                       std::string_view y_label) {
  DriftFrame f;
  f.range = RangeOf(points, bound);
  f.has_zero = std::any_of(points.begin(), points.end(),
                           [](const DriftPoint& p) { return p.error <= 0; });
  if (!points.empty()) {
    const auto [mn, mx] = std::minmax_element(
        points.begin(), points.end(),
        [](const DriftPoint& a, const DriftPoint& b) {
          return a.step < b.step;
        });
    f.step_min = mn->step;
    f.step_max = mx->step;
  }
  return absl::StrCat(
      SvgOpen("drift", f.kW, f.kH, absl::StrCat(std::string(y_label), " against step")),
      DriftAxes(f, y_label), DriftMarks(f, points, bound), "</svg>");
}

std::string HistogramChart(const kernels::HistogramCounts& counts) {
  constexpr double kBar = 22, kL = 8, kT = 8, kPlot = 90, kB = 34;
  constexpr int kBins = kernels::kHistogramBins;
  const double w = kL * 2 + kBar * kBins, h = kT + kPlot + kB;
  uint64_t max_count = 0;
  for (uint64_t c : counts) max_count = std::max(max_count, c);
  const double scale = std::log10(1.0 + static_cast<double>(max_count));
  std::string out = SvgOpen("histogram", w, h, "histogram of |d| by decade");
  for (int i = 0; i < kBins; ++i) {
    const double c = static_cast<double>(counts[i]);
    const double bh = scale > 0 ? kPlot * std::log10(1.0 + c) / scale : 0;
    const double x = kL + kBar * i;
    // Every fourth decade is labelled; all labels would overlap.
    const bool labelled = i == 0 || i == kBins - 1 || (i - 2) % 4 == 0;
    absl::StrAppend(&out, "<rect class=\"bar", counts[i] ? "" : " empty",
                    "\" x=\"", Num(x + 1), "\" y=\"", Num(kT + kPlot - bh),
                    "\" width=\"", Num(kBar - 2), "\" height=\"", Num(bh),
                    "\"><title>",
                    HtmlEscape(absl::StrCat(HistogramRange(i), ": ", counts[i])),
                    "</title></rect>",
                    labelled ? Text(x + kBar / 2, kT + kPlot + 12, "tick x",
                                    HistogramLabel(i))
                             : std::string());
  }
  absl::StrAppend(&out, Line(kL, kT + kPlot, w - kL, kT + kPlot, "axis"),
                  Text(w / 2, h - 4, "label", "|d| (decade lower edge)"),
                  "</svg>");
  return out;
}

std::string HeatMap(const std::vector<std::string>& rows,
                    const std::vector<int64_t>& cols,
                    const std::vector<HeatCell>& cells) {
  constexpr double kCell = 14, kLabelW = 260, kTop = 40;
  const double w = kLabelW + kCell * static_cast<double>(cols.size()) + 8;
  const double h = kTop + kCell * static_cast<double>(rows.size()) + 8;
  std::string out = SvgOpen("heatmap", w, h, "severity by key and step");
  for (size_t r = 0; r < rows.size(); ++r) {
    absl::StrAppend(&out, Text(kLabelW - 6, kTop + kCell * (r + 0.75),
                               "row-label", rows[r], " text-anchor=\"end\""));
  }
  const size_t stride = std::max<size_t>(1, (cols.size() + 9) / 10);
  for (size_t c = 0; c < cols.size(); c += stride) {
    absl::StrAppend(&out, Text(kLabelW + kCell * (c + 0.5), kTop - 6,
                               "tick x", absl::StrCat(cols[c])));
  }
  for (const HeatCell& c : cells) {
    absl::StrAppend(&out, "<rect class=\"cell ", HtmlEscape(c.css_class),
                    "\" x=\"", Num(kLabelW + kCell * c.col), "\" y=\"",
                    Num(kTop + kCell * c.row), "\" width=\"", Num(kCell - 1),
                    "\" height=\"", Num(kCell - 1), "\" fill=\"", HeatFill(c),
                    "\"><title>", HtmlEscape(c.title), "</title></rect>");
  }
  absl::StrAppend(&out, "</svg>");
  return out;
}

}  // namespace reprod::core::internal

// File: core/internal/svg_charts.h
//
// Internal: the inline SVG charts of the HTML report (render_html.cc). Each
// function returns one self-contained <svg> element whose marks carry stable
// class names, so tests can count them:
//   <svg class="drift">      <circle class="point pass|fail"> per step,
//                            <line class="bound"> for the bound;
//   <svg class="histogram">  one <rect class="bar"> per DiffStats bin (19);
//   <svg class="heatmap">    one <rect class="cell pass|warn|fail|missing">
//                            per (key, step) present.
// Text passed in is escaped here; no element refers to anything outside the
// document.
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_INTERNAL_SVG_CHARTS_H_
#define REPROD_CORE_INTERNAL_SVG_CHARTS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/diff_stats.h"

namespace reprod::core::internal {

// One step of a key: the plotted error (>= 0 is drawn on the log axis;
// 0 sits on the bottom edge, NaN and +inf on the top edge) and whether that
// step's check failed.
struct DriftPoint {
  int64_t step = 0;
  double error = 0;
  bool fail = false;
};

// Error against step on a log-scale y axis, the bound as a horizontal line.
// `y_label` names the plotted quantity ("mean_abs", "1 - cosine").
std::string DriftChart(const std::vector<DriftPoint>& points, double bound,
                       std::string_view y_label);

// The |d| histogram as 19 bars (bin 0: d == 0, bin 1: (0, 1e-12), bins
// 2..17: decades [1e-12, 1e-11) ... [1e3, 1e4), bin 18: >= 1e4). Bar heights
// are log-scaled counts so that a bin of 1 next to one of 1e6 stays visible;
// each bar's <title> gives its range and exact count; every fourth decade is
// labelled under the axis.
std::string HistogramChart(const kernels::HistogramCounts& counts);

// One cell of the layer x step heat map.
struct HeatCell {
  int row = 0;
  int col = 0;
  // Severity (see internal::Severity): >= 1 is past the bound; +inf for
  // NaN, missing and shape mismatch.
  double severity = 0;
  std::string css_class;  // "pass", "warn", "fail" or "missing"
  std::string title;      // tooltip text (escaped here)
};

// A grid of rows (keys) by columns (steps), cells colored by severity.
std::string HeatMap(const std::vector<std::string>& rows,
                    const std::vector<int64_t>& cols,
                    const std::vector<HeatCell>& cells);

}  // namespace reprod::core::internal

#endif  // REPROD_CORE_INTERNAL_SVG_CHARTS_H_

// File: core/internal/render.h
//
// Internal: the per-format renderers behind RenderReport, and the escaping
// helpers they share. Not part of core's API.
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_INTERNAL_RENDER_H_
#define REPROD_CORE_INTERNAL_RENDER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "core/report.h"

namespace reprod::core::internal {

// kText for the whole report (bare keys when it has one checkpoint).
std::string RenderText(const Report& report, absl::Time now);

// reprod_log's per-checkpoint log; `checkpoint` must exist in `report`.
std::string RenderTextCheckpoint(const Report& report,
                                 const CheckpointResult& checkpoint,
                                 absl::Time now);

std::string RenderJson(const Report& report);
std::string RenderJunit(const Report& report);
std::string RenderMarkdown(const Report& report);
std::string RenderHtml(const Report& report);

// `raw` (sanitized to UTF-8) safe as HTML text and as a double- or
// single-quoted attribute value: & < > " ' become entities, tab and newline
// &#9; and &#10;, other C0 controls and DEL '?', bidi overrides and C1
// controls their VisibleText escape ("\\u202e", common/visible.h).
std::string HtmlEscape(std::string_view raw);

// `s` with every invalid UTF-8 sequence replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view s);

// Text of a check's value: the mismatch count for allclose, else
// PyFloatRepr(value).
std::string CheckValueText(const CheckResult& c);

// reprod_log's method name of a metric: mean/max/min for
// mean_abs/max_abs/min_abs, the metric name otherwise.
std::string_view ReprodLogMethod(Metric m);

}  // namespace reprod::core::internal

#endif  // REPROD_CORE_INTERNAL_RENDER_H_

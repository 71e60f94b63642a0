#include "core/report.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/visible.h"
#include "core/internal/render.h"
#include "core/py_float.h"

namespace reprod::core {

std::string_view TensorStatusName(TensorStatus s) {
  switch (s) {
    case TensorStatus::kPass:
      return "pass";
    case TensorStatus::kWarn:
      return "warn";
    case TensorStatus::kFail:
      return "fail";
    case TensorStatus::kMissingInRef:
      return "missing_in_ref";
    case TensorStatus::kMissingInCand:
      return "missing_in_cand";
    case TensorStatus::kShapeMismatch:
      return "shape_mismatch";
  }
  return "unknown";
}

std::string_view DivergenceInputsName(DivergenceInputs i) {
  switch (i) {
    case DivergenceInputs::kPass:
      return "pass";
    case DivergenceInputs::kFail:
      return "fail";
    case DivergenceInputs::kNotCaptured:
      return "not_captured";
  }
  return "unknown";
}

std::string TensorResult::DisplayKey() const {
  std::string out = step ? absl::StrCat(key, "@", *step) : key;
  if (rank) absl::StrAppend(&out, " (rank ", *rank, ")");
  return out;
}

const CheckpointResult* Report::FindCheckpoint(std::string_view name) const {
  for (const CheckpointResult& c : checkpoints) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string DescribeTensor(const TensorResult& t) {
  if (!t.reason.empty()) return t.reason;
  return std::string(TensorStatusName(t.status));
}

absl::StatusOr<ReportFormat> ParseReportFormat(std::string_view name) {
  if (name == "text") return ReportFormat::kText;
  if (name == "json") return ReportFormat::kJson;
  if (name == "junit") return ReportFormat::kJunit;
  if (name == "markdown" || name == "md") return ReportFormat::kMarkdown;
  if (name == "html") return ReportFormat::kHtml;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown report format '", std::string(name),
                   "' (expected text, json, junit, markdown or html)"));
}

absl::StatusOr<std::string> RenderReport(const Report& report,
                                         ReportFormat format,
                                         const RenderOptions& options) {
  switch (format) {
    case ReportFormat::kText:
      return internal::RenderText(report, options.now.value_or(absl::Now()));
    case ReportFormat::kJson:
      return internal::RenderJson(report);
    case ReportFormat::kJunit:
      return internal::RenderJunit(report);
    case ReportFormat::kMarkdown:
      return internal::RenderMarkdown(report);
    case ReportFormat::kHtml:
      return internal::RenderHtml(report);
  }
  return absl::InvalidArgumentError("unknown report format");
}

absl::StatusOr<std::string> RenderReprodLogText(const Report& report,
                                                std::string_view checkpoint,
                                                const RenderOptions& options) {
  const CheckpointResult* c = report.FindCheckpoint(checkpoint);
  if (c == nullptr) {
    return absl::NotFoundError(absl::StrCat("report has no checkpoint '",
                                            VisibleName(checkpoint), "'"));
  }
  return internal::RenderTextCheckpoint(report, *c,
                                        options.now.value_or(absl::Now()));
}

namespace internal {

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len != 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) {
        ok = false;
      } else {
        cp = (cp << 6) | (cc & 0x3F);
      }
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid.
    if (ok) {
      const uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
      ok = cp >= min_cp && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string CheckValueText(const CheckResult& c) {
  if (c.check.metric == Metric::kAllclose && std::isfinite(c.value)) {
    return absl::StrCat(static_cast<uint64_t>(c.value));
  }
  return PyFloatRepr(c.value);
}

std::string_view ReprodLogMethod(Metric m) {
  switch (m) {
    case Metric::kMeanAbs:
      return "mean";
    case Metric::kMaxAbs:
      return "max";
    case Metric::kMinAbs:
      return "min";
    default:
      return MetricName(m);
  }
}

}  // namespace internal
}  // namespace reprod::core

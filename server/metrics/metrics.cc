#include "server/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace reprod::server::metrics {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && !(value <= bounds_[i])) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Shortest round-trip form; integers up to 2^53 come out without exponent.
  if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  if (ec != std::errc()) return absl::StrCat(value);
  return std::string(buf, end);
}

void FamilyBase::Render(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  absl::StrAppend(out, "# TYPE ", name_, " ", type_, "\n");
  RenderSamples(out);
}

std::string FamilyBase::LabelText(const LabelValues& values, std::string_view extra) const {
  if (label_names_.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < label_names_.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, label_names_[i], "=\"",
                    EscapeLabelValue(i < values.size() ? values[i] : ""), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, label_names_.empty() ? "" : ",", std::string(extra));
  out += '}';
  return out;
}

LabelValues FamilyBase::Fit(LabelValues values) const {
  values.resize(label_names_.size());
  return values;
}

template <>
void Family<Counter>::RenderSamples(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [labels, c] : series_) {
    absl::StrAppend(out, name_, LabelText(labels), " ", c->Value(), "\n");
  }
}

template <>
void Family<Gauge>::RenderSamples(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [labels, g] : series_) {
    absl::StrAppend(out, name_, LabelText(labels), " ", g->Value(), "\n");
  }
}

template <>
void Family<Histogram>::RenderSamples(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [labels, h] : series_) {
    const Histogram::Snapshot s = h->Read();
    for (size_t i = 0; i < s.cumulative.size(); ++i) {
      const std::string le = i < h->bounds().size() ? FormatValue(h->bounds()[i]) : "+Inf";
      absl::StrAppend(out, name_, "_bucket", LabelText(labels, absl::StrCat("le=\"", le, "\"")),
                      " ", s.cumulative[i], "\n");
    }
    absl::StrAppend(out, name_, "_sum", LabelText(labels), " ", FormatValue(s.sum), "\n");
    absl::StrAppend(out, name_, "_count", LabelText(labels), " ", s.count, "\n");
  }
}

void CallbackGauge::RenderSamples(std::string* out) const {
  std::vector<std::pair<LabelValues, double>> series = read_();
  std::sort(series.begin(), series.end());
  for (auto& [labels, value] : series) {
    absl::StrAppend(out, name_, LabelText(Fit(std::move(labels))), " ", FormatValue(value), "\n");
  }
}

template <typename F>
F& Registry::Keep(std::unique_ptr<F> family) {
  F& ref = *family;
  absl::MutexLock lock(&mu_);
  families_.push_back(std::move(family));
  return ref;
}

Family<Counter>& Registry::AddCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
  return Keep(std::make_unique<Family<Counter>>(std::move(name), std::move(help), "counter",
                                                std::move(label_names),
                                                [] { return std::make_unique<Counter>(); }));
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names) {
  return Keep(std::make_unique<Family<Gauge>>(std::move(name), std::move(help), "gauge",
                                              std::move(label_names),
                                              [] { return std::make_unique<Gauge>(); }));
}

Family<Histogram>& Registry::AddHistogram(std::string name, std::string help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> bounds) {
  return Keep(std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), "histogram", std::move(label_names),
      [bounds = std::move(bounds)] { return std::make_unique<Histogram>(bounds); }));
}

void Registry::AddCallbackGauge(std::string name, std::string help,
                                std::vector<std::string> label_names, CallbackGauge::Reader read) {
  Keep(std::make_unique<CallbackGauge>(std::move(name), std::move(help), std::move(label_names),
                                       std::move(read)));
}

std::string Registry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& family : families_) family->Render(&out);
  return out;
}

}  // namespace reprod::server::metrics

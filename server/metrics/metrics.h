// File: server/metrics/metrics.h
//
// A small Prometheus metrics registry and its text exposition writer
// (format 0.0.4, what a Prometheus server scrapes from /metrics). Debian 12
// has no prometheus-cpp package, and reprodd needs only counters, gauges and
// fixed-bucket histograms, so this is a few hundred lines instead.
//
//   Registry registry;
//   Family<Counter>& tensors =
//       registry.AddCounter("reprod_ingest_tensors_total", "Tensors acked.", {"kind"});
//   tensors.With({"stored"}).Inc();
//   Histogram& ack = registry.AddHistogram("reprod_ingest_ack_seconds", "...", {},
//                                          {0.01, 0.1, 1}).With({});
//   ack.Observe(0.02);
//   std::string body = registry.Render();  // "# HELP ...\n# TYPE ...\n..."
//
// Output: families in registration order, each with "# HELP" and "# TYPE"
// lines, then its series sorted by label values. Label values are escaped
// (backslash, double quote, newline), HELP text too (backslash, newline).
// Values: integers as integers, other numbers in the shortest form that
// reads back exactly, +Inf / -Inf / NaN as the format spells them. A
// histogram writes cumulative `_bucket{le="..."}` lines ending with
// le="+Inf", then `_sum` and `_count` (which equals the +Inf bucket).
//
// Names are the caller's: metric and label names must match
// [a-zA-Z_:][a-zA-Z0-9_:]* (not checked; they are constants in code).
// With() given more or fewer values than the family has label names uses the
// first ones and "" for the missing (a caller bug that still renders).
//
// Thread-safety: Counter, Gauge and Histogram updates are lock-free atomics.
// With() and Render() may be called from any thread at once (one mutex per
// family guards its series map; a series, once made, lives as long as the
// registry, so references from With() stay valid). Add*() may also run
// concurrently with Render() (the registry's mutex).
#ifndef REPROD_SERVER_METRICS_METRICS_H_
#define REPROD_SERVER_METRICS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace reprod::server::metrics {

// Label values of one series, in the order of the family's label names.
using LabelValues = std::vector<std::string>;

// A monotonically increasing count.
class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Add(int64_t delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Set(int64_t value) { value_.store(value, std::memory_order_relaxed); }
  int64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Observations counted in fixed buckets (upper bounds, inclusive: a value v
// falls in the first bucket with v <= bound; +Inf is implied).
class Histogram {
 public:
  // `bounds` must be ascending and finite (not checked).
  explicit Histogram(std::vector<double> bounds);

  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // bounds().size() + 1 entries, last = +Inf
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back()
  };
  Snapshot Read() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Writing helpers, public for tests and callers that render by hand.
// `\` -> `\\`, `"` -> `\"`, newline -> `\n`.
std::string EscapeLabelValue(std::string_view value);
// `\` -> `\\`, newline -> `\n`.
std::string EscapeHelp(std::string_view help);
// 3 -> "3", 0.25 -> "0.25", +Inf / -Inf / NaN.
std::string FormatValue(double value);

class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, std::string type,
             std::vector<std::string> label_names)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(std::move(type)),
        label_names_(std::move(label_names)) {}
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  // Appends this family's HELP, TYPE and sample lines to `out`.
  void Render(std::string* out) const;

 protected:
  // Appends the sample lines only.
  virtual void RenderSamples(std::string* out) const = 0;
  // `{a="x",b="y"}` (with `extra` = `le="0.5"` appended), "" for no labels.
  std::string LabelText(const LabelValues& values, std::string_view extra = {}) const;
  LabelValues Fit(LabelValues values) const;

  const std::string name_;
  const std::string help_;
  const std::string type_;
  const std::vector<std::string> label_names_;
};

// The series of one metric, by label values.
template <typename M>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, std::string type, std::vector<std::string> label_names,
         std::function<std::unique_ptr<M>()> make)
      : FamilyBase(std::move(name), std::move(help), std::move(type), std::move(label_names)),
        make_(std::move(make)) {}

  // The series with these label values, made (zero) on first use.
  M& With(LabelValues values) ABSL_LOCKS_EXCLUDED(mu_) {
    values = Fit(std::move(values));
    absl::MutexLock lock(&mu_);
    std::unique_ptr<M>& slot = series_[values];
    if (slot == nullptr) slot = make_();
    return *slot;
  }

 private:
  void RenderSamples(std::string* out) const override ABSL_LOCKS_EXCLUDED(mu_);

  const std::function<std::unique_ptr<M>()> make_;
  mutable absl::Mutex mu_;
  std::map<LabelValues, std::unique_ptr<M>> series_ ABSL_GUARDED_BY(mu_);
};

template <>
void Family<Counter>::RenderSamples(std::string* out) const;
template <>
void Family<Gauge>::RenderSamples(std::string* out) const;
template <>
void Family<Histogram>::RenderSamples(std::string* out) const;

// A gauge whose series are read when rendered: `read` returns them (label
// values, value), e.g. from a ledger the server keeps anyway.
class CallbackGauge final : public FamilyBase {
 public:
  using Reader = std::function<std::vector<std::pair<LabelValues, double>>()>;
  CallbackGauge(std::string name, std::string help, std::vector<std::string> label_names,
                Reader read)
      : FamilyBase(std::move(name), std::move(help), "gauge", std::move(label_names)),
        read_(std::move(read)) {}

 private:
  void RenderSamples(std::string* out) const override;
  const Reader read_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names, std::vector<double> bounds);
  void AddCallbackGauge(std::string name, std::string help, std::vector<std::string> label_names,
                        CallbackGauge::Reader read);

  // Every family in the text exposition format 0.0.4 (file comment).
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

  // The Content-Type of Render()'s text.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  template <typename F>
  F& Keep(std::unique_ptr<F> family) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reprod::server::metrics

#endif  // REPROD_SERVER_METRICS_METRICS_H_

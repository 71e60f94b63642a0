// kJson: schema reprod.report.v1 (docs/design.md §Report JSON contract).
//
// Written by hand rather than through nlohmann::json so that every double is
// printed exactly as Python's json.dumps prints it (float.__repr__: shortest
// round-trip digits, so json.load gives back the same double), and
// non-finite numbers become the strings "NaN", "Infinity", "-Infinity".
// Fields beyond the contract (extras): top level `backend`; checkpoints
// `passed_tensors`, `warned_tensors`, `failed_tensors`, `steps`, `min_steps`,
// `present_in_ref`, `present_in_cand`, `reasons`, `worst`; top level
// `reasons`, summary `compared`; tensors
// `cand_key`, `policy_source`, `reason`, `notes`; stats `nan_diff`,
// `inf_diff`, `atol`, `rtol` (the tolerance `mismatches` was counted with);
// checks `atol`, `rtol` (allclose / mismatch_ratio).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/visible.h"
#include "core/internal/render.h"
#include "core/py_float.h"
#include "core/report.h"

namespace reprod::core::internal {
namespace {

// Minimal pretty-printing JSON writer. Containers opened "inline" print on
// one line (used for arrays of numbers).
class JsonWriter {
 public:
  void BeginObject(bool inline_ = false) { Open('{', inline_); }
  void EndObject() { Close('}'); }
  void BeginArray(bool inline_ = true) { Open('[', inline_); }
  void EndArray() { Close(']'); }

  void Key(std::string_view key) {
    Separator();
    Quoted(key);
    out_ += ": ";
    after_key_ = true;
  }

  void String(std::string_view s) {
    Value();
    Quoted(s);
  }
  void Double(double v) {
    if (std::isnan(v)) return String("NaN");
    if (std::isinf(v)) return String(v > 0 ? "Infinity" : "-Infinity");
    Value();
    out_ += PyFloatRepr(v);
  }
  void Int(int64_t v) {
    Value();
    absl::StrAppend(&out_, v);
  }
  void UInt(uint64_t v) {
    Value();
    absl::StrAppend(&out_, v);
  }
  void Bool(bool v) {
    Value();
    out_ += v ? "true" : "false";
  }
  void Null() {
    Value();
    out_ += "null";
  }

  std::string Finish() {
    out_ += '\n';
    return std::move(out_);
  }

 private:
  struct Frame {
    bool inline_;
    bool empty;
  };

  void Open(char c, bool inline_) {
    Value();
    out_ += c;
    stack_.push_back({inline_ || InlineContext(), true});
  }
  void Close(char c) {
    const Frame f = stack_.back();
    stack_.pop_back();
    if (!f.empty && !f.inline_) Newline();
    out_ += c;
  }
  bool InlineContext() const {
    return !stack_.empty() && stack_.back().inline_;
  }
  void Newline() {
    out_ += '\n';
    out_.append(2 * stack_.size(), ' ');
  }
  // Before a key, or a value in an array.
  void Separator() {
    if (stack_.empty()) return;
    Frame& f = stack_.back();
    if (!f.empty) out_ += f.inline_ ? ", " : ",";
    if (!f.inline_) Newline();
    f.empty = false;
  }
  void Value() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    Separator();
  }
  void Quoted(std::string_view raw) {
    const std::string s = SanitizeUtf8(raw);
    out_ += '"';
    for (size_t i = 0; i < s.size(); ++i) {
      const char ch = s[i];
      const auto c = static_cast<unsigned char>(ch);
      // Bidi overrides and C1 controls as JSON escapes: lossless, and inert
      // to whoever reads the JSON.
      if (char32_t cp = 0; const size_t n = InvisibleCodePointAt(s, i, &cp)) {
        static constexpr char kHex[] = "0123456789abcdef";
        out_ += "\\u";
        for (int d = 3; d >= 0; --d) out_ += kHex[(cp >> (4 * d)) & 0xF];
        i += n - 1;
        continue;
      }
      switch (c) {
        case '"':
          out_ += "\\\"";
          break;
        case '\\':
          out_ += "\\\\";
          break;
        case '\n':
          out_ += "\\n";
          break;
        case '\r':
          out_ += "\\r";
          break;
        case '\t':
          out_ += "\\t";
          break;
        case '\b':
          out_ += "\\b";
          break;
        case '\f':
          out_ += "\\f";
          break;
        default:
          if (c < 0x20 || c == 0x7F) {
            static constexpr char kHex[] = "0123456789abcdef";
            out_ += "\\u00";
            out_ += kHex[c >> 4];
            out_ += kHex[c & 0xF];
          } else {
            out_ += ch;
          }
      }
    }
    out_ += '"';
  }

  std::string out_;
  std::vector<Frame> stack_;
  bool after_key_ = false;
};

void Step(JsonWriter& w, const std::optional<int64_t>& step) {
  if (step) {
    w.Int(*step);
  } else {
    w.Null();
  }
}

void ShapeOrNull(JsonWriter& w, const std::optional<Shape>& shape) {
  if (!shape) return w.Null();
  w.BeginArray();
  for (int64_t d : *shape) w.Int(d);
  w.EndArray();
}

void DTypeOrNull(JsonWriter& w, const std::optional<DType>& dtype) {
  if (!dtype) return w.Null();
  w.String(DTypeName(*dtype));
}

// A check's value: the mismatch count (an integer) for allclose.
void CheckValue(JsonWriter& w, Metric metric, double value) {
  if (metric == Metric::kAllclose && std::isfinite(value) && value >= 0) {
    w.UInt(static_cast<uint64_t>(value));
  } else {
    w.Double(value);
  }
}

void BoundFields(JsonWriter& w, BoundKind kind, double bound) {
  w.Key(kind == BoundKind::kMax ? "max" : "min");
  w.Double(bound);
}

void StatsJson(JsonWriter& w, const TensorResult& t) {
  if (!t.stats) return w.Null();
  const kernels::DiffStats& s = *t.stats;
  w.BeginObject();
  w.Key("count");
  w.UInt(s.count);
  w.Key("mean_abs");
  w.Double(s.mean_abs());
  w.Key("max_abs");
  w.Double(s.max_abs_value());
  w.Key("min_abs");
  w.Double(s.min_abs_value());
  w.Key("mean_rel");
  w.Double(s.mean_rel());
  w.Key("max_rel");
  w.Double(s.max_rel_value());
  w.Key("rmse");
  w.Double(s.rmse());
  w.Key("cosine");
  w.Double(s.cosine());
  w.Key("mismatches");
  w.UInt(s.mismatches);
  w.Key("nan_ref");
  w.UInt(s.nan_ref);
  w.Key("nan_cand");
  w.UInt(s.nan_cand);
  w.Key("inf_ref");
  w.UInt(s.inf_ref);
  w.Key("inf_cand");
  w.UInt(s.inf_cand);
  w.Key("max_abs_index");
  w.BeginArray();
  for (int64_t i : t.max_abs_index) w.Int(i);
  w.EndArray();
  w.Key("ref_at_max");
  if (s.count > 0) {
    w.Double(s.ref_at_max);
  } else {
    w.Null();
  }
  w.Key("cand_at_max");
  if (s.count > 0) {
    w.Double(s.cand_at_max);
  } else {
    w.Null();
  }
  w.Key("histogram");
  w.BeginArray();
  for (uint64_t h : s.histogram) w.UInt(h);
  w.EndArray();
  w.Key("nan_diff");
  w.UInt(s.nan_diff);
  w.Key("inf_diff");
  w.UInt(s.inf_diff);
  if (t.stats_tolerance) {
    w.Key("atol");
    w.Double(t.stats_tolerance->atol);
    w.Key("rtol");
    w.Double(t.stats_tolerance->rtol);
  }
  w.EndObject();
}

void CheckJson(JsonWriter& w, const CheckResult& c) {
  w.BeginObject();
  w.Key("metric");
  w.String(std::string(MetricName(c.check.metric)));
  w.Key("value");
  CheckValue(w, c.check.metric, c.value);
  BoundFields(w, c.check.kind, c.check.bound);
  w.Key("warn");
  if (c.check.warn) {
    w.Double(*c.check.warn);
  } else {
    w.Null();
  }
  w.Key("status");
  w.String(std::string(TensorStatusName(c.status)));
  if (c.tolerance) {
    w.Key("atol");
    w.Double(c.tolerance->atol);
    w.Key("rtol");
    w.Double(c.tolerance->rtol);
  }
  w.EndObject();
}

void TensorJson(JsonWriter& w, const TensorResult& t) {
  w.BeginObject();
  w.Key("checkpoint");
  w.String(t.checkpoint);
  w.Key("key");
  w.String(t.key);
  w.Key("step");
  Step(w, t.step);
  if (t.rank) {  // multi-rank reports only
    w.Key("rank");
    w.Int(*t.rank);
  }
  if (!t.merged_ranks.empty()) {  // global tensors only
    w.Key("ranks");
    w.BeginArray(/*inline_=*/true);
    for (uint32_t r : t.merged_ranks) w.Int(r);
    w.EndArray();
  }
  w.Key("status");
  w.String(std::string(TensorStatusName(t.status)));
  w.Key("dtype_ref");
  DTypeOrNull(w, t.dtype_ref);
  w.Key("dtype_cand");
  DTypeOrNull(w, t.dtype_cand);
  w.Key("shape_ref");
  ShapeOrNull(w, t.shape_ref);
  w.Key("shape_cand");
  ShapeOrNull(w, t.shape_cand);
  w.Key("transposed");
  w.Bool(t.transposed);
  w.Key("backend");
  if (t.reduced_by.empty()) {
    w.Null();
  } else {
    w.String(t.reduced_by);
  }
  w.Key("stats");
  StatsJson(w, t);
  w.Key("checks");
  w.BeginArray(/*inline_=*/false);
  for (const CheckResult& c : t.checks) CheckJson(w, c);
  w.EndArray();
  if (!t.cand_key.empty() && t.cand_key != t.key) {
    w.Key("cand_key");
    w.String(t.cand_key);
  }
  w.Key("policy_source");
  w.String(t.policy_source);
  w.Key("reason");
  w.String(t.reason);
  w.Key("notes");
  w.BeginArray(/*inline_=*/false);
  for (const std::string& n : t.notes) w.String(n);
  w.EndArray();
  w.EndObject();
}

void CheckpointEntry(JsonWriter& w, const CheckpointResult& c) {
  w.BeginObject();
  w.Key("name");
  w.String(c.name);
  w.Key("passed");
  w.Bool(c.passed);
  w.Key("tensors");
  w.Int(c.tensors);
  w.Key("passed_tensors");
  w.Int(c.passed_tensors);
  w.Key("warned_tensors");
  w.Int(c.warned_tensors);
  w.Key("failed_tensors");
  w.Int(c.failed_tensors);
  w.Key("steps");
  w.Int(c.steps);
  w.Key("min_steps");
  w.Int(c.min_steps);
  w.Key("present_in_ref");
  w.Bool(c.present_in_ref);
  w.Key("present_in_cand");
  w.Bool(c.present_in_cand);
  w.Key("reasons");
  w.BeginArray(/*inline_=*/false);
  for (const std::string& r : c.reasons) w.String(r);
  w.EndArray();
  w.Key("worst");
  if (c.worst) {
    w.BeginObject(/*inline_=*/true);
    w.Key("key");
    w.String(c.worst->key);
    w.Key("step");
    Step(w, c.worst->step);
    w.Key("metric");
    w.String(std::string(MetricName(c.worst->metric)));
    w.Key("value");
    CheckValue(w, c.worst->metric, c.worst->value);
    BoundFields(w, c.worst->kind, c.worst->bound);
    w.EndObject();
  } else {
    w.Null();
  }
  w.EndObject();
}

void StringArray(JsonWriter& w, const std::vector<std::string>& items) {
  w.BeginArray(/*inline_=*/false);
  for (const std::string& item : items) w.String(item);
  w.EndArray();
}

void FirstDivergenceJson(JsonWriter& w, const FirstDivergence& d) {
  w.BeginObject();
  if (d.rank) {
    w.Key("rank");
    w.Int(*d.rank);
  }
  w.Key("checkpoint");
  w.String(d.checkpoint);
  w.Key("module");
  w.String(d.module);
  w.Key("direction");
  w.String(d.direction);
  w.Key("step");
  Step(w, d.step);
  w.Key("key");
  w.String(d.key);
  w.Key("reason");
  w.String(d.reason);
  w.Key("inputs");
  w.String(std::string(DivergenceInputsName(d.inputs)));
  w.Key("passed_before");
  StringArray(w, d.passed_before);
  w.Key("unmatched");
  StringArray(w, d.unmatched);
  w.EndObject();
}

void AddressOrNull(JsonWriter& w, const std::optional<TensorAddress>& a) {
  if (!a) {
    w.Null();
    return;
  }
  w.BeginObject(/*inline_=*/true);
  w.Key("checkpoint");
  w.String(a->checkpoint);
  w.Key("key");
  w.String(a->key);
  w.Key("step");
  Step(w, a->step);
  if (a->rank) {
    w.Key("rank");
    w.Int(*a->rank);
  }
  w.EndObject();
}

void RankJson(JsonWriter& w, const RankSummary& r) {
  w.BeginObject();
  w.Key("rank");
  w.Int(r.rank);
  w.Key("tensors");
  w.Int(r.tensors);
  w.Key("passed");
  w.Int(r.passed);
  w.Key("failed");
  w.Int(r.failed);
  w.Key("first_failure");
  AddressOrNull(w, r.first_failure);
  w.Key("first_divergence");
  if (r.first_divergence) {
    FirstDivergenceJson(w, *r.first_divergence);
  } else {
    w.Null();
  }
  w.EndObject();
}

void ReplicaMismatchJson(JsonWriter& w, const ReplicaMismatch& m) {
  w.BeginObject(/*inline_=*/true);
  w.Key("run");
  w.String(m.side);
  w.Key("checkpoint");
  w.String(m.checkpoint);
  w.Key("key");
  w.String(m.key);
  w.Key("step");
  Step(w, m.step);
  w.Key("rank");
  w.Int(m.rank);
  w.Key("against_rank");
  w.Int(m.against_rank);
  w.Key("reason");
  w.String(m.reason);
  w.EndObject();
}

}  // namespace

std::string RenderJson(const Report& report) {
  JsonWriter w;
  w.BeginObject();
  w.Key("schema");
  w.String(kReportSchema);
  w.Key("passed");
  w.Bool(report.passed);
  w.Key("ref");
  w.String(report.ref);
  w.Key("cand");
  w.String(report.cand);
  w.Key("policy");
  w.String(report.policy);
  w.Key("backend");
  w.String(report.backend);
  w.Key("summary");
  w.BeginObject(/*inline_=*/true);
  w.Key("tensors");
  w.Int(report.summary.tensors);
  w.Key("passed");
  w.Int(report.summary.passed);
  w.Key("warned");
  w.Int(report.summary.warned);
  w.Key("failed");
  w.Int(report.summary.failed);
  w.Key("missing_in_ref");
  w.Int(report.summary.missing_in_ref);
  w.Key("missing_in_cand");
  w.Int(report.summary.missing_in_cand);
  w.Key("compared");
  w.Int(report.summary.compared);
  w.EndObject();
  w.Key("reasons");
  w.BeginArray(/*inline_=*/false);
  for (const std::string& r : report.reasons) w.String(r);
  w.EndArray();
  w.Key("first_failure");
  AddressOrNull(w, report.first_failure);
  w.Key("first_divergence");
  if (report.first_divergence) {
    FirstDivergenceJson(w, *report.first_divergence);
  } else {
    w.Null();
  }
  w.Key("checkpoints");
  w.BeginArray(/*inline_=*/false);
  for (const CheckpointResult& c : report.checkpoints) CheckpointEntry(w, c);
  w.EndArray();
  w.Key("tensors");
  w.BeginArray(/*inline_=*/false);
  for (const TensorResult& t : report.tensors) TensorJson(w, t);
  w.EndArray();
  if (!report.ranks.empty()) {  // multi-rank reports only
    w.Key("ranks");
    w.BeginArray(/*inline_=*/false);
    for (const RankSummary& r : report.ranks) RankJson(w, r);
    w.EndArray();
    w.Key("global_tensors");
    w.BeginArray(/*inline_=*/false);
    for (const TensorResult& t : report.global_tensors) TensorJson(w, t);
    w.EndArray();
    w.Key("replica_mismatches");
    w.BeginArray(/*inline_=*/false);
    for (const ReplicaMismatch& m : report.replica_mismatches) ReplicaMismatchJson(w, m);
    w.EndArray();
  }
  w.EndObject();
  return w.Finish();
}

}  // namespace reprod::core::internal

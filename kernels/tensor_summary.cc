#include "kernels/tensor_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/element.h"
#include "common/tensor.h"
#include "kernels/cpu/thread_pool.h"

namespace reprod::kernels {
namespace {

constexpr int64_t kChunk = int64_t{1} << 18;
constexpr int64_t kBlock = 1024;

struct Partial {
  uint64_t finite = 0, nan = 0, pos_inf = 0, neg_inf = 0;
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  void Merge(const Partial& o) {
    finite += o.finite;
    nan += o.nan;
    pos_inf += o.pos_inf;
    neg_inf += o.neg_inf;
    sum += o.sum;
    min = std::min(min, o.min);
    max = std::max(max, o.max);
  }
};

template <DType D>
void SummarizeRange(const unsigned char* p, int64_t begin, int64_t end, Partial* out) {
  Partial s;
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t e = std::min(end, b + kBlock);
    double block_sum = 0;  // per-block sums keep the total well conditioned
    for (int64_t i = b; i < e; ++i) {
      const double v = LoadElement<D>(p, i);
      if (v - v == 0) {  // finite
        ++s.finite;
        block_sum += v;
        s.min = v < s.min ? v : s.min;
        s.max = v > s.max ? v : s.max;
      } else if (v != v) {
        ++s.nan;
      } else if (v > 0) {
        ++s.pos_inf;
      } else {
        ++s.neg_inf;
      }
    }
    s.sum += block_sum;
  }
  *out = s;
}

using RangeFn = void (*)(const unsigned char*, int64_t, int64_t, Partial*);

RangeFn RangeFor(DType d) {
  return VisitDType(d, [](auto tag) -> RangeFn { return &SummarizeRange<decltype(tag)::value>; });
}

}  // namespace

absl::StatusOr<TensorSummary> Summarize(const TensorView& tensor, ThreadPool* pool) {
  const RangeFn fn = RangeFor(tensor.dtype);
  if (fn == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid dtype (", static_cast<int>(tensor.dtype), ")"));
  }
  absl::StatusOr<int64_t> n = CheckedNumElements(tensor.shape, tensor.dtype);
  if (!n.ok()) return n.status();
  if (*n > 0 && tensor.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(DTypeName(tensor.dtype)), " ", ShapeToString(tensor.shape), " has ", *n,
        " elements but no data"));
  }
  const auto* p = static_cast<const unsigned char*>(tensor.data);
  const int64_t chunks = std::max<int64_t>(1, (*n + kChunk - 1) / kChunk);
  std::vector<Partial> parts(static_cast<size_t>(chunks));
  auto run = [&](int64_t c) {
    fn(p, c * kChunk, std::min(*n, (c + 1) * kChunk), &parts[c]);
  };
  if (chunks == 1) {
    run(0);
  } else {
    (pool != nullptr ? *pool : DefaultThreadPool()).ParallelFor(chunks, run);
  }
  // Fixed pairwise tree, as the diff backend does.
  for (int64_t w = 1; w < chunks; w *= 2) {
    for (int64_t i = 0; i + w < chunks; i += 2 * w) parts[i].Merge(parts[i + w]);
  }
  const Partial& total = parts[0];
  TensorSummary s;
  s.count = static_cast<uint64_t>(*n);
  s.finite = total.finite;
  s.nan_count = total.nan;
  s.inf_count = total.pos_inf + total.neg_inf;
  s.neg_inf_count = total.neg_inf;
  if (total.finite > 0) {
    s.min = total.min;
    s.max = total.max;
    s.mean = total.sum / static_cast<double>(total.finite);
  }
  return s;
}

}  // namespace reprod::kernels

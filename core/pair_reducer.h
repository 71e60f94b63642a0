// File: core/pair_reducer.h
//
// PairReducer: how the compare engine gets the statistics of the pairs it
// planned. CompareIndexed (compare.h) matches two RunIndex values, decides
// for every matched pair whether it is compared, transposed or not, and
// under which allclose tolerances, then hands all planned pairs to one
// Reduce call and judges what comes back. Where the bytes live is the
// reducer's business: CompareRuns uses an in-memory reducer (one
// Backend::CompareBatch over the RunData tensors); the server's
// CompareStoredRuns (server/store_compare.h) streams pairs from a store in
// bounded memory.
//
//   class MyReducer : public PairReducer {
//     absl::Status Reduce(absl::Span<const PlannedPair> pairs,
//                         absl::Span<kernels::DiffStats> out,
//                         absl::Span<std::string> reduced_by) override {
//       for (size_t i = 0; i < pairs.size(); ++i) {
//         const PlannedPair& p = pairs[i];
//         for (size_t k = 0; k < p.options.size(); ++k)
//           out[p.stats_offset + k] = ...;  // stats of p under p.options[k]
//         reduced_by[i] = "cpu";  // the backend that reduced pair i
//       }
//       return absl::OkStatus();
//     }
//   };
//
// Thread-safety: CompareIndexed calls Reduce once, from its own thread; a
// reducer may use threads inside Reduce.
#ifndef REPROD_CORE_PAIR_REDUCER_H_
#define REPROD_CORE_PAIR_REDUCER_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/diff_stats.h"

namespace reprod::core {

// Where a tensor sits in a RunIndex (run_index.h): checkpoints[checkpoint]
// .tensors[tensor].
struct TensorPosition {
  size_t checkpoint = 0;
  size_t tensor = 0;

  friend bool operator==(const TensorPosition&,
                         const TensorPosition&) = default;
};

// One pair the engine wants reduced. The two tensors have been matched and
// their shapes checked: the same number of elements (element i of ref pairs
// with element i of cand in flat C order: equal shapes, or shapes that differ
// only in size-1 dimensions), or, when transpose_cand, ref (m, n) against
// cand (n, m) (ref[i, j] pairs with cand[j, i]); dtypes may differ.
struct PlannedPair {
  TensorPosition ref;   // in the ref RunIndex
  TensorPosition cand;  // in the cand RunIndex
  bool transpose_cand = false;
  // The dtype each side's bytes are read as. Equal to the stored dtype except
  // for a uint16 tensor the policy's as_bf16 names (read as bfloat16, same
  // element size, so chunk offsets are unchanged).
  DType ref_dtype = DType::kFloat32;
  DType cand_dtype = DType::kFloat32;
  // One entry per distinct allclose tolerance the key's checks need (never
  // empty; equal_nan as the policy resolves it). options[0] gives the
  // statistics shown in the report.
  std::vector<kernels::DiffOptions> options;
  // The pair's results go to out[stats_offset + k] for options[k]. Pairs
  // are passed in report order with contiguous, increasing offsets.
  size_t stats_offset = 0;
};

class PairReducer {
 public:
  virtual ~PairReducer() = default;

  // Reduces every pair under each of its options: out.size() is the sum of
  // the pairs' options.size(), and out[p.stats_offset + k] must receive the
  // DiffStats of the whole pair p under p.options[k], flat indices in ref's
  // layout (kernels/backend.h DiffTask semantics with index_base 0).
  // reduced_by has one slot per pair: the name of the backend that reduced
  // pairs[i] (kernels::Backend::ReducerName, e.g. "cpu"; the report shows
  // it per tensor), left empty where unknown.
  // Any error aborts the comparison; CompareIndexed returns it unchanged.
  virtual absl::Status Reduce(absl::Span<const PlannedPair> pairs,
                              absl::Span<kernels::DiffStats> out,
                              absl::Span<std::string> reduced_by) = 0;
};

}  // namespace reprod::core

#endif  // REPROD_CORE_PAIR_REDUCER_H_

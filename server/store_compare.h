// File: server/store_compare.h
//
// CompareStoredRuns: the compare engine (core/compare.h) over two runs held
// in a storage::Store, in bounded memory. Matching, planning and judging run
// on the tensors' metadata (core::CompareIndexed); the planned pairs are
// fetched from the store and reduced on a kernels::Backend without ever
// holding a whole run:
//
//   - small pairs (ref + cand bytes <= small_pair_bytes) are read whole and
//     reduced many at a time, one Backend::CompareBatch per batch_bytes of
//     tensor bytes;
//   - larger element-wise pairs stream in windows of the same elements on
//     both sides (at most window_bytes per side; ref and cand may have
//     different dtypes, so the byte ranges differ), each window reduced with
//     index_base set to its first element;
//   - larger transposed pairs (ref (m, n) vs cand (n, m)) stream in tiles
//     of ref rows (or row x column blocks when one row exceeds the window);
//     the matching cand block is read with one Read per cand row. No size
//     limit: memory stays bounded for any shape.
//   Window sizes come from the backend (Backend::PlanFlatWindows /
//   PlanTransposedWindows, kernels/chunk_grid.h), which cuts them on its own
//   chunk grid, and each pair's window partials are merged with
//   Backend::MergeWindows in the backend's own order.
// Resident refs: when the backend keeps refs on its device
// (Backend::resident_stats().budget_bytes > 0, `reprodd --gpu-cache-bytes`),
// every ref read is keyed (DiffTask::ref_key: run name and creation time,
// tensor address, sequence, CRC, dtype, byte range); refs the backend
// holds are not read from the store at all, the others are and the backend
// may keep them for the next compare.
// Reading the next batch/window overlaps reducing the current one (two
// buffers, the read on a second thread), so peak memory is about
// 2 * max(batch_bytes, 2 * window_bytes) plus the backend's own scratch.
//
//   StoreCompareOptions options;                    // defaults are fine
//   absl::StatusOr<core::Report> report = CompareStoredRuns(
//       *store, "team42/bert-torch", "team42/bert-paddle", policy, *backend);
//
// Result: the same core::Report that core::CompareRuns gives for the same
// tensors in memory (report.ref / cand are the run names, report.backend
// the backend's name). It is bit-for-bit the same whenever the backend's
// window plan for every windowed pair says `exact`: on the cpu backend
// whenever window_bytes holds at least one backend chunk
// (kernels::CpuBackend::kChunkElements elements; a transposed pair's row
// chunk likewise) and no transposed row is wider than a window; on the cuda
// backend when a window holds one of its pieces (kernels/cuda/
// cuda_backend.h). Otherwise (tiny window_bytes, column-split transposed
// tiles, the cuda backend's default pieces being larger than the default
// window) only the rounding of the sums differs (docs/design.md §Diff
// semantics: 1e-12 relative); counts, extrema and indices are always exact.
//
// Run listing: a run's tensors are those ListTensors returns when the call
// starts; checkpoints in order of their first tensor, tensors in sequence
// (arrival) order. A tensor committed meanwhile is not seen; a tensor
// replaced meanwhile (overwrite runs) is read as the store serves it.
//
// Errors: NotFound naming the run ("ref run 'a/b' not found: ...") for an
// unknown run; DataLoss when a stored header is inconsistent (byte_length
// not itemsize * elements) or a read fails that way; the store's errors on
// OpenTensor/Read, prefixed with the run and tensor address
// ("ref run 'a/b' tensor forward/x@3: ..."); InvalidArgument when
// window_bytes or batch_bytes is 0; otherwise as core::CompareIndexed
// (duplicate addresses after rename, backend errors).
//
// Thread-safety: reentrant. `store` and `backend` must allow concurrent use
// (every Store and Backend does); each call opens its own readers.
#ifndef REPROD_SERVER_STORE_COMPARE_H_
#define REPROD_SERVER_STORE_COMPARE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/compare.h"
#include "core/policy.h"
#include "core/report.h"
#include "kernels/backend.h"
#include "storage/store.h"

namespace reprod::server {

struct StoreCompareOptions {
  // Checkpoint selection and pair filter, as for core::CompareRuns.
  core::CompareOptions compare;
  // Pairs whose ref + cand bytes are at most this are read whole and
  // batched with other small pairs.
  size_t small_pair_bytes = size_t{4} << 20;
  // Tensor bytes (ref + cand) per CompareBatch of small pairs (a batch holds
  // at least one pair).
  size_t batch_bytes = size_t{64} << 20;
  // Largest read, per side, of one window of a large pair (at least one
  // element).
  size_t window_bytes = size_t{16} << 20;
  // When set, the ref + cand bytes of every pair planned for reduction are
  // added to it (reprodd's reprod_compare_bytes_total).
  std::atomic<uint64_t>* compared_bytes = nullptr;

  // Distributed compare, for replicas sharing a store (postgres+s3): when
  // set and both runs are finished (sealed or aborted: their listings no
  // longer change), the planned pairs are cut, in report order, into
  // batches of about distributed_batch_bytes (ref + cand) and put on this
  // queue, where every replica's worker (ReduceWorkBatch) takes them; this
  // call takes batches too until none is left, then gathers the results.
  // Each pair is still reduced whole by one process, as here, so the report
  // is the one a single process computes (bit for bit on the cpu backend).
  // A batch that fails elsewhere (another reprodd version, a crash after
  // two claims) is reduced here. Runs still open, or fewer than two
  // batches: everything here.
  storage::WorkQueue* work_queue = nullptr;
  size_t distributed_batch_bytes = size_t{256} << 20;
  // Claims the largest batches first (GPU backends, fastest on big pairs)
  // instead of the smallest.
  bool claim_largest_first = false;
};

// Compares run `cand_run` against run `ref_run` of `store` under `policy` on
// `backend`. See the file comment for how, what it returns and errors.
absl::StatusOr<core::Report> CompareStoredRuns(
    storage::Store& store, std::string_view ref_run, std::string_view cand_run,
    const core::Policy& policy, kernels::Backend& backend,
    const StoreCompareOptions& options = {});

// Reduces one batch a distributed CompareStoredRuns put on a work queue
// (`spec`, opaque) and returns its statistics, encoded for the submitter.
// What every replica's compare worker runs. FailedPrecondition when either
// run changed since the batch was made (its listing digest differs) or the
// batch was made by a build with another statistics layout; the store's
// and backend's errors as CompareStoredRuns.
absl::StatusOr<std::string> ReduceWorkBatch(storage::Store& store, kernels::Backend& backend,
                                            std::string_view spec,
                                            const StoreCompareOptions& options = {});

}  // namespace reprod::server

#endif  // REPROD_SERVER_STORE_COMPARE_H_

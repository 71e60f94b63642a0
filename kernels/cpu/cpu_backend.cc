#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "kernels/chunk_grid.h"
#include "kernels/cpu/internal/diff_kernel.h"
#include "kernels/cpu/thread_pool.h"

namespace reprod::kernels {
namespace {

constexpr int64_t kChunk = CpuBackend::kChunkElements;

// Rows per chunk of a transposed pair with `cols` columns: whole row tiles
// of about kChunk elements, rounded up to the kernel's row tile.
int64_t RowsPerChunk(int64_t cols) {
  const int64_t align = internal::kTransposedRowAlign;
  const int64_t rows = std::max<int64_t>(1, kChunk / std::max<int64_t>(cols, 1));
  return (rows + align - 1) / align * align;
}

// How one task is cut into chunks (shape-only, never thread-count
// dependent).
struct TaskPlan {
  int64_t elements = 0;
  int64_t chunks = 1;
  // Transposed pairs: ref is (rows, cols); chunks are row ranges.
  int64_t rows = 0, cols = 0, rows_per_chunk = 0;
};

TaskPlan MakePlan(const DiffTask& task) {
  TaskPlan p;
  p.elements = task.ref.num_elements();
  if (task.transpose_cand) {
    p.rows = task.ref.shape[0];
    p.cols = task.ref.shape[1];
    p.rows_per_chunk = RowsPerChunk(p.cols);
    p.chunks = std::max<int64_t>(1, (p.rows + p.rows_per_chunk - 1) / p.rows_per_chunk);
  } else {
    p.chunks = std::max<int64_t>(1, (p.elements + kChunk - 1) / kChunk);
  }
  return p;
}

// Reduces chunk `c` of `task` into *out.
void RunChunk(const DiffTask& task, const TaskPlan& p, int64_t c, DiffStats* out) {
  if (task.transpose_cand) {
    const int64_t r0 = c * p.rows_per_chunk;
    const int64_t r1 = std::min(p.rows, r0 + p.rows_per_chunk);
    internal::ReduceTransposedRows(task.ref.dtype, task.ref.data, task.cand.dtype,
                                   task.cand.data, p.rows, p.cols, r0, r1, task.index_base,
                                   task.options, out);
  } else {
    const int64_t b = c * kChunk;
    const int64_t e = std::min(p.elements, b + kChunk);
    internal::ReduceFlatRange(task.ref.dtype, task.ref.data, task.cand.dtype, task.cand.data,
                              b, e, task.index_base, task.options, out);
  }
}

// Merges parts[0 .. n) into parts[0] in a fixed pairwise tree (well
// conditioned, and independent of which thread computed what). The same
// tree MergeWindows uses.
void TreeMerge(DiffStats* parts, int64_t n) {
  PairwiseTreeMerge(absl::MakeSpan(parts, static_cast<size_t>(n)));
}

// A unit of parallel work: either the single chunk of each task in
// [task_begin, task_end), or chunk `chunk` of task `task_begin` (a task with
// several chunks).
struct WorkItem {
  int64_t task_begin;
  int64_t task_end;
  int64_t chunk;  // -1 for a group of single-chunk tasks
};

// Per-task cost used to group small tasks: elements plus a fixed overhead,
// so a batch of tiny pairs still splits into several items.
constexpr int64_t kTaskOverheadElements = 256;

}  // namespace

CpuBackend::CpuBackend(int threads) {
  if (threads == 0) {
    pool_ = &DefaultThreadPool();
  } else {
    owned_pool_ = std::make_unique<ThreadPool>(threads);
    pool_ = owned_pool_.get();
  }
}

absl::StatusOr<DiffStats> CpuBackend::Compare(const DiffTask& task) {
  if (absl::Status s = ValidateDiffTask(task); !s.ok()) return s;
  const TaskPlan plan = MakePlan(task);
  if (plan.chunks == 1) {
    DiffStats stats;
    RunChunk(task, plan, 0, &stats);
    return stats;
  }
  std::vector<DiffStats> parts(static_cast<size_t>(plan.chunks));
  pool_->ParallelFor(plan.chunks, [&](int64_t c) { RunChunk(task, plan, c, &parts[c]); });
  TreeMerge(parts.data(), plan.chunks);
  return parts[0];
}

absl::Status CpuBackend::CompareBatch(absl::Span<const DiffTask> tasks,
                                      absl::Span<DiffStats> out) {
  if (absl::Status s = ValidateDiffBatch(tasks, out.size()); !s.ok()) return s;
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  std::vector<TaskPlan> plans(tasks.size());
  for (int64_t i = 0; i < num_tasks; ++i) plans[i] = MakePlan(tasks[i]);

  // Work items, and partial slots for tasks with several chunks.
  std::vector<WorkItem> items;
  std::vector<int64_t> part_offset(tasks.size(), -1);
  int64_t num_parts = 0;
  int64_t group_begin = 0, group_cost = 0;
  auto close_group = [&](int64_t end) {
    if (end > group_begin) items.push_back({group_begin, end, -1});
    group_begin = end;
    group_cost = 0;
  };
  for (int64_t i = 0; i < num_tasks; ++i) {
    out[i] = DiffStats();
    if (plans[i].chunks > 1) {
      close_group(i);
      part_offset[i] = num_parts;
      for (int64_t c = 0; c < plans[i].chunks; ++c) items.push_back({i, i + 1, c});
      num_parts += plans[i].chunks;
      group_begin = i + 1;
      continue;
    }
    group_cost += plans[i].elements + kTaskOverheadElements;
    if (group_cost >= kChunk) close_group(i + 1);
  }
  close_group(num_tasks);

  std::vector<DiffStats> parts(static_cast<size_t>(num_parts));
  auto run_item = [&](int64_t k) {
    const WorkItem& item = items[k];
    if (item.chunk < 0) {
      for (int64_t t = item.task_begin; t < item.task_end; ++t) {
        RunChunk(tasks[t], plans[t], 0, &out[t]);
      }
    } else {
      const int64_t t = item.task_begin;
      RunChunk(tasks[t], plans[t], item.chunk, &parts[part_offset[t] + item.chunk]);
    }
  };
  pool_->ParallelFor(static_cast<int64_t>(items.size()), run_item);

  for (int64_t i = 0; i < num_tasks; ++i) {
    if (part_offset[i] < 0) continue;
    DiffStats* p = parts.data() + part_offset[i];
    TreeMerge(p, plans[i].chunks);
    out[i] = p[0];
  }
  return absl::OkStatus();
}

// Windows on the chunk grid: element-wise, kChunk * 2^k elements starting at
// multiples of that, so every window is a whole subtree of the chunks' merge
// tree (its own Compare merges the lower levels, MergeWindows's
// PairwiseTreeMerge the upper ones); transposed, likewise in units of
// RowsPerChunk(n) whole rows.
FlatWindowPlan CpuBackend::PlanFlatWindows(DType /*ref_dtype*/, DType /*cand_dtype*/,
                                           int64_t elements, int64_t max_window_elements) const {
  return PlanFlatOnGrid(elements, max_window_elements, WindowGrid{kChunk, true});
}

TransposedWindowPlan CpuBackend::PlanTransposedWindows(DType /*ref_dtype*/, DType /*cand_dtype*/,
                                                       int64_t m, int64_t n,
                                                       int64_t max_window_elements) const {
  return PlanTransposedOnGrid(m, n, max_window_elements,
                              WindowGrid{RowsPerChunk(n), true});
}

DiffStats CpuBackend::MergeWindows(absl::Span<const DiffStats> windows) const {
  if (windows.empty()) return DiffStats();
  std::vector<DiffStats> parts(windows.begin(), windows.end());
  TreeMerge(parts.data(), static_cast<int64_t>(parts.size()));
  return parts[0];
}

}  // namespace reprod::kernels

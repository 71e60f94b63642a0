#include "server/store_compare.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <array>
#include <future>
#include <thread>
#include <type_traits>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/crc32c.h"
#include "common/dtype.h"
#include "common/status_macros.h"
#include "common/tensor.h"
#include "core/pair_reducer.h"
#include "core/run_index.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/diff_stats.h"
#include "spdlog/spdlog.h"

namespace reprod::server {
namespace {

using core::PlannedPair;
using core::TensorPosition;
using kernels::DiffStats;

// Buffer regions start on cache lines.
constexpr size_t kRegionAlign = 64;

size_t AlignUp(size_t x) {
  return (x + kRegionAlign - 1) / kRegionAlign * kRegionAlign;
}

absl::Status Prefixed(const absl::Status& s, const std::string& prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// A run as listed from the store: its index, and every tensor's address
// (parallel to the index).
struct StoredRun {
  std::string name;
  std::string side;  // "ref" / "cand", for messages
  core::RunIndex index;
  std::vector<std::vector<storage::TensorAddress>> addresses;
  std::vector<std::vector<uint64_t>> sequences;  // parallel to addresses
  bool reference = false;                        // RunInfo::reference
  // Run name and creation time: with a tensor's address, sequence and CRC
  // it names the tensor's bytes for a backend's resident-ref cache, also
  // across a run deleted and created again under the same name.
  std::string key_prefix;

  const core::TensorInfo& Info(const TensorPosition& p) const {
    return index.checkpoints[p.checkpoint].tensors[p.tensor];
  }
  const storage::TensorAddress& Address(const TensorPosition& p) const {
    return addresses[p.checkpoint][p.tensor];
  }
  std::string Describe(const TensorPosition& p) const {
    return absl::StrCat(side, " run '", name, "' tensor ",
                        storage::AddressToString(Address(p)), ": ");
  }
};

absl::StatusOr<StoredRun> ListRun(storage::Store& store, std::string_view name,
                                  const std::string& side) {
  StoredRun run;
  run.name = std::string(name);
  run.side = side;
  run.index.name = run.name;
  auto fail = [&](const absl::Status& s) {
    if (s.code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(
          absl::StrCat(side, " run '", run.name, "' not found: ", s.message()));
    }
    return Prefixed(s, absl::StrCat(side, " run '", run.name, "': "));
  };
  absl::StatusOr<storage::RunInfo> info = store.GetRun(name);
  if (!info.ok()) return fail(info.status());
  run.reference = info->reference;
  run.key_prefix = absl::StrCat(run.name, "\x1f", absl::ToUnixNanos(info->created));
  absl::StatusOr<std::vector<storage::TensorMeta>> metas =
      store.ListTensors(name);
  if (!metas.ok()) return fail(metas.status());

  std::map<std::string, size_t> checkpoints;
  for (const storage::TensorMeta& meta : *metas) {
    const storage::TensorHeader& h = meta.header;
    const absl::StatusOr<int64_t> n = CheckedNumElements(h.shape, h.dtype);
    if (DTypeSize(h.dtype) == 0 || !n.ok() ||
        h.byte_length != static_cast<uint64_t>(*n) * DTypeSize(h.dtype)) {
      return absl::DataLossError(absl::StrCat(
          side, " run '", run.name, "' tensor ",
          storage::AddressToString(h.address),
          ": stored header is inconsistent (dtype ", static_cast<int>(h.dtype),
          ", shape ", ShapeToString(h.shape), ", byte_length ", h.byte_length,
          ")"));
    }
    auto [it, inserted] =
        checkpoints.emplace(h.address.checkpoint, run.index.checkpoints.size());
    if (inserted) {
      run.index.checkpoints.push_back({h.address.checkpoint, {}});
      run.addresses.emplace_back();
      run.sequences.emplace_back();
    }
    run.index.checkpoints[it->second].tensors.push_back(core::TensorInfo{
        .key = h.address.key,
        .step = h.address.step,
        .dtype = h.dtype,
        .shape = h.shape,
        .rank = h.address.rank,
        .placement = h.placement,
        .crc32c = h.crc32c,  // verified at commit: the bytes' CRC
    });
    run.addresses[it->second].push_back(h.address);
    run.sequences[it->second].push_back(meta.sequence);
  }
  return run;
}

// ---------------------------------------------------------------------------
// Plan: the planned pairs cut into jobs. A job is what one buffer holds:
// reads that fill it, then one CompareBatch over its tasks.

enum Side { kRef = 0, kCand = 1 };

// Reads `pieces` ranges of `length` bytes, `stride` bytes apart, starting at
// byte `offset` of one tensor, into the job buffer at `dst` (packed).
struct ReadOp {
  Side side = kRef;
  TensorPosition pos;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t stride = 0;
  uint64_t pieces = 1;
  size_t dst = 0;
  bool last_use = false;  // the tensor's reader can be closed after it
};

// One pair (or window of a pair) to reduce under each of its options.
struct JobTask {
  size_t pair = 0;       // index into the planned pairs
  size_t part = 0;       // window index within the pair
  TensorView ref, cand;  // data unset: ref_dst / cand_dst in the buffer
  size_t ref_dst = 0, cand_dst = 0;
  bool transpose = false;
  uint64_t index_base = 0;
  // Column-split transposed tiles (tile_cols > 0): the backend reports flat
  // indices of the (rows, tile_cols) tile; they are mapped to the whole
  // tensor's (row0 + i) * tensor_cols + col0 + j before merging.
  int64_t tile_cols = 0;
  int64_t tensor_cols = 0, row0 = 0, col0 = 0;
  // Names the ref bytes this task reads (DiffTask::ref_key) when the
  // backend keeps resident refs; empty otherwise.
  std::string ref_key;
};

struct Job {
  std::vector<ReadOp> reads;
  std::vector<JobTask> tasks;
  size_t bytes = 0;

  size_t Reserve(size_t n) {
    const size_t at = bytes;
    bytes += AlignUp(n);
    return at;
  }
};

class Planner {
 public:
  // Windows of large pairs are cut on `backend`'s grid (Backend::
  // PlanFlatWindows / PlanTransposedWindows); the caller merges their
  // partials with Backend::MergeWindows in part order.
  Planner(const StoredRun& ref, const StoredRun& cand, const kernels::Backend& backend,
          const StoreCompareOptions& options)
      : ref_(ref),
        cand_(cand),
        backend_(backend),
        options_(options),
        keyed_(backend.resident_stats().budget_bytes > 0) {}

  // Cuts `pairs` into jobs; parts()[i] is how many windows pair i has.
  void Plan(absl::Span<const PlannedPair> pairs) {
    parts_.assign(pairs.size(), 1);
    for (size_t i = 0; i < pairs.size(); ++i) {
      const PlannedPair& p = pairs[i];
      const core::TensorInfo& r = ref_.Info(p.ref);
      const core::TensorInfo& c = cand_.Info(p.cand);
      const auto n = static_cast<uint64_t>(NumElements(r.shape));
      const uint64_t bytes = n * DTypeSize(r.dtype) + n * DTypeSize(c.dtype);
      if (options_.compared_bytes != nullptr) *options_.compared_bytes += bytes;
      if (bytes <= options_.small_pair_bytes) {
        AddSmall(i, p, r, c);
      } else if (p.transpose_cand) {
        AddTransposedTiles(i, p, r, c);
      } else {
        AddFlatWindows(i, p, r, c);
      }
    }
    if (!small_.tasks.empty()) jobs_.push_back(std::move(small_));
    MarkLastUses();
  }

  std::vector<Job>& jobs() { return jobs_; }
  const std::vector<size_t>& parts() const { return parts_; }

 private:
  // The key of the ref bytes `op` reads (as a DiffTask::ref_key): the
  // tensor's identity and the read's geometry.
  std::string RefKey(const ReadOp& op, DType view_dtype) const {
    if (!keyed_) return {};
    return absl::StrCat(ref_.key_prefix, "\x1f", storage::AddressToString(ref_.Address(op.pos)),
                        "\x1f", ref_.sequences[op.pos.checkpoint][op.pos.tensor], "\x1f",
                        ref_.Info(op.pos).crc32c.value_or(0), "\x1f",
                        static_cast<int>(view_dtype), "\x1f", op.offset, "\x1f", op.length,
                        "\x1f", op.stride, "\x1f", op.pieces);
  }

  // Keys task `t` by its ref read, the job's reads from `first` on (none
  // for an empty tensor).
  void KeyRef(Job& job, size_t first, JobTask& t) const {
    if (job.reads.size() > first) t.ref_key = RefKey(job.reads[first], t.ref.dtype);
  }

  static void AddRead(Job& job, Side side, const TensorPosition& pos,
                      uint64_t offset, uint64_t length, uint64_t stride,
                      uint64_t pieces, size_t dst) {
    if (length == 0 || pieces == 0) return;
    job.reads.push_back(
        ReadOp{side, pos, offset, length, stride, pieces, dst, false});
  }

  void AddSmall(size_t i, const PlannedPair& p, const core::TensorInfo& r,
                const core::TensorInfo& c) {
    const uint64_t n = static_cast<uint64_t>(NumElements(r.shape));
    const uint64_t rb = n * DTypeSize(r.dtype), cb = n * DTypeSize(c.dtype);
    if (!small_.tasks.empty() &&
        small_.bytes + AlignUp(rb) + AlignUp(cb) > options_.batch_bytes) {
      jobs_.push_back(std::move(small_));
      small_ = Job();
    }
    JobTask t;
    t.pair = i;
    t.ref = TensorView{p.ref_dtype, r.shape, nullptr};
    t.cand = TensorView{p.cand_dtype, c.shape, nullptr};
    t.ref_dst = small_.Reserve(rb);
    t.cand_dst = small_.Reserve(cb);
    t.transpose = p.transpose_cand;
    const size_t first = small_.reads.size();
    AddRead(small_, kRef, p.ref, 0, rb, 0, 1, t.ref_dst);
    KeyRef(small_, first, t);
    AddRead(small_, kCand, p.cand, 0, cb, 0, 1, t.cand_dst);
    small_.tasks.push_back(std::move(t));
  }

  // Element budget per window: window_bytes on the wider side.
  int64_t WindowElements(size_t rs, size_t cs) const {
    const auto e = static_cast<int64_t>(std::min<size_t>(
        options_.window_bytes / std::max(rs, cs), size_t{1} << 62));
    return std::max<int64_t>(1, e);
  }

  void AddFlatWindows(size_t i, const PlannedPair& p, const core::TensorInfo& r,
                      const core::TensorInfo& c) {
    const size_t rs = DTypeSize(r.dtype), cs = DTypeSize(c.dtype);
    const int64_t n = NumElements(r.shape);
    const int64_t w =
        backend_.PlanFlatWindows(p.ref_dtype, p.cand_dtype, n, WindowElements(rs, cs)).elements;
    parts_[i] = static_cast<size_t>((n + w - 1) / w);
    size_t part = 0;
    for (int64_t e0 = 0; e0 < n; e0 += w, ++part) {
      const int64_t len = std::min(w, n - e0);
      Job job;
      JobTask t;
      t.pair = i;
      t.part = part;
      t.ref = TensorView{p.ref_dtype, Shape{len}, nullptr};
      t.cand = TensorView{p.cand_dtype, Shape{len}, nullptr};
      t.ref_dst = job.Reserve(static_cast<size_t>(len) * rs);
      t.cand_dst = job.Reserve(static_cast<size_t>(len) * cs);
      t.index_base = static_cast<uint64_t>(e0);
      AddRead(job, kRef, p.ref, static_cast<uint64_t>(e0) * rs,
              static_cast<uint64_t>(len) * rs, 0, 1, t.ref_dst);
      KeyRef(job, 0, t);
      AddRead(job, kCand, p.cand, static_cast<uint64_t>(e0) * cs,
              static_cast<uint64_t>(len) * cs, 0, 1, t.cand_dst);
      job.tasks.push_back(std::move(t));
      jobs_.push_back(std::move(job));
    }
  }

  // ref (m, n) against cand (n, m): tiles of ref rows [r0, r0 + tr) and
  // columns [c0, c0 + tc) as the backend plans them (whole rows unless a
  // row exceeds the window); cand's matching block is its rows
  // [c0, c0 + tc), columns [r0, r0 + tr), i.e. the tile pair is itself a
  // transposed pair.
  void AddTransposedTiles(size_t i, const PlannedPair& p,
                          const core::TensorInfo& r,
                          const core::TensorInfo& c) {
    const size_t rs = DTypeSize(r.dtype), cs = DTypeSize(c.dtype);
    const int64_t m = r.shape[0], n = r.shape[1];
    const kernels::TransposedWindowPlan plan =
        backend_.PlanTransposedWindows(p.ref_dtype, p.cand_dtype, m, n, WindowElements(rs, cs));
    const int64_t wr = plan.rows, wc = plan.cols;
    parts_[i] = static_cast<size_t>(((m + wr - 1) / wr) * ((n + wc - 1) / wc));
    size_t part = 0;
    for (int64_t r0 = 0; r0 < m; r0 += wr) {
      const int64_t tr = std::min(wr, m - r0);
      for (int64_t c0 = 0; c0 < n; c0 += wc, ++part) {
        const int64_t tc = std::min(wc, n - c0);
        Job job;
        JobTask t;
        t.pair = i;
        t.part = part;
        t.transpose = true;
        t.ref = TensorView{p.ref_dtype, Shape{tr, tc}, nullptr};
        t.cand = TensorView{p.cand_dtype, Shape{tc, tr}, nullptr};
        t.ref_dst = job.Reserve(static_cast<size_t>(tr * tc) * rs);
        t.cand_dst = job.Reserve(static_cast<size_t>(tr * tc) * cs);
        if (tc == n) {
          t.index_base = static_cast<uint64_t>(r0 * n);
          AddRead(job, kRef, p.ref, static_cast<uint64_t>(r0 * n) * rs,
                  static_cast<uint64_t>(tr * n) * rs, 0, 1, t.ref_dst);
        } else {
          t.tile_cols = tc;
          t.tensor_cols = n;
          t.row0 = r0;
          t.col0 = c0;
          AddRead(job, kRef, p.ref, static_cast<uint64_t>(r0 * n + c0) * rs,
                  static_cast<uint64_t>(tc) * rs, static_cast<uint64_t>(n) * rs,
                  static_cast<uint64_t>(tr), t.ref_dst);
        }
        KeyRef(job, 0, t);
        if (tr == m) {
          AddRead(job, kCand, p.cand, static_cast<uint64_t>(c0 * m) * cs,
                  static_cast<uint64_t>(tc * m) * cs, 0, 1, t.cand_dst);
        } else {
          AddRead(job, kCand, p.cand, static_cast<uint64_t>(c0 * m + r0) * cs,
                  static_cast<uint64_t>(tr) * cs, static_cast<uint64_t>(m) * cs,
                  static_cast<uint64_t>(tc), t.cand_dst);
        }
        job.tasks.push_back(std::move(t));
        jobs_.push_back(std::move(job));
      }
    }
  }

  void MarkLastUses() {
    std::map<std::tuple<int, size_t, size_t>, ReadOp*> last;
    for (Job& job : jobs_) {
      for (ReadOp& op : job.reads) {
        last[{op.side, op.pos.checkpoint, op.pos.tensor}] = &op;
      }
    }
    for (auto& [key, op] : last) op->last_use = true;
  }

  const StoredRun& ref_;
  const StoredRun& cand_;
  const kernels::Backend& backend_;
  const StoreCompareOptions& options_;
  const bool keyed_;  // the backend keeps resident refs: key the ref reads
  std::vector<Job> jobs_;
  std::vector<size_t> parts_;
  Job small_;
};

// ---------------------------------------------------------------------------
// Execution.

// Fills one side's part of job buffers from the store, keeping a tensor's
// reader open across the jobs that read it. A contiguous range of a tensor
// the store can map (storage::TensorReader::Map: segment files) is mapped
// instead of copied; the job's tasks then read it in place (Data), and the
// mapping is kept until the buffer `slot` is filled again, i.e. until the
// job was reduced. Used by one thread at a time (Data: once Fill is done).
class JobReader {
 public:
  // `resident` (ref side only; may be null): the backend whose resident
  // refs need not be read (Backend::HoldResidentRef).
  JobReader(storage::Store& store, const StoredRun& ref, const StoredRun& cand, Side side,
            kernels::Backend* resident = nullptr)
      : store_(store), runs_{&ref, &cand}, side_(side), resident_(resident) {}

  // Where the job in buffer `slot` finds the bytes placed at `dst`: a
  // mapping, the buffer itself, or nowhere (null: a ref the backend holds
  // resident under the task's ref_key, so it was not read).
  const uint8_t* Data(size_t slot, const uint8_t* buffer, size_t dst) const {
    if (skipped_[slot].count(dst) > 0) return nullptr;
    auto it = views_[slot].find(dst);
    return it == views_[slot].end() ? buffer + dst : it->second->bytes().data();
  }

  absl::Status Fill(const Job& job, uint8_t* buffer, size_t slot) {
    views_[slot].clear();
    // The previous job in this slot is reduced: its holds can go.
    holds_[slot].clear();
    skipped_[slot].clear();
    if (resident_ != nullptr) {
      for (const JobTask& t : job.tasks) {
        if (t.ref_key.empty()) continue;
        if (std::shared_ptr<const void> hold = resident_->HoldResidentRef(t.ref_key)) {
          holds_[slot].push_back(std::move(hold));
          skipped_[slot].insert(t.ref_dst);
        }
      }
    }
    if (store_.read_parallelism() > 1) return FillInParallel(job, buffer, slot);
    for (const ReadOp& op : job.reads) {
      if (op.side != side_) continue;
      if (Skipped(op, slot)) continue;
      const StoredRun& run = *runs_[op.side];
      const Key key{op.side, op.pos.checkpoint, op.pos.tensor};
      auto it = readers_.find(key);
      if (it == readers_.end()) {
        absl::StatusOr<std::unique_ptr<storage::TensorReader>> reader =
            store_.OpenTensor(run.name, run.Address(op.pos));
        if (!reader.ok()) {
          return Prefixed(reader.status(), run.Describe(op.pos));
        }
        it = readers_.emplace(key, *std::move(reader)).first;
      }
      if (op.pieces == 1 && map_) {
        absl::StatusOr<std::unique_ptr<storage::MappedBytes>> mapped =
            it->second->Map(op.offset, op.length);
        if (mapped.ok()) {
          views_[slot][op.dst] = *std::move(mapped);
          if (op.last_use) readers_.erase(it);
          continue;
        }
        if (!absl::IsUnimplemented(mapped.status())) {
          return Prefixed(mapped.status(), run.Describe(op.pos));
        }
        map_ = false;  // this store copies; stop asking
      }
      for (uint64_t k = 0; k < op.pieces; ++k) {
        absl::Status s = it->second->Read(
            op.offset + k * op.stride,
            absl::MakeSpan(buffer + op.dst + k * op.length, op.length));
        if (!s.ok()) return Prefixed(s, run.Describe(op.pos));
      }
      if (op.last_use) readers_.erase(it);
    }
    return absl::OkStatus();
  }

 private:
  using Key = std::tuple<int, size_t, size_t>;

  // For a store whose reads are round trips (Store::read_parallelism > 1,
  // which maps nothing): the job's reads grouped by tensor, groups spread
  // over up to that many threads, each reader used by one thread.
  absl::Status FillInParallel(const Job& job, uint8_t* buffer, size_t slot) {
    std::map<Key, std::vector<const ReadOp*>> groups;
    for (const ReadOp& op : job.reads) {
      if (op.side != side_) continue;
      if (Skipped(op, slot)) continue;
      groups[Key{op.side, op.pos.checkpoint, op.pos.tensor}].push_back(&op);
    }
    std::vector<std::pair<storage::TensorReader*, const std::vector<const ReadOp*>*>> work;
    for (const auto& [key, ops] : groups) {
      const ReadOp& first = *ops.front();
      const StoredRun& run = *runs_[first.side];
      auto it = readers_.find(key);
      if (it == readers_.end()) {
        absl::StatusOr<std::unique_ptr<storage::TensorReader>> reader =
            store_.OpenTensor(run.name, run.Address(first.pos));
        if (!reader.ok()) return Prefixed(reader.status(), run.Describe(first.pos));
        it = readers_.emplace(key, *std::move(reader)).first;
      }
      work.emplace_back(it->second.get(), &ops);
    }
    const size_t threads =
        std::min<size_t>(work.size(), static_cast<size_t>(store_.read_parallelism()));
    std::atomic<size_t> next{0};
    auto drain = [&]() -> absl::Status {
      for (size_t g = next++; g < work.size(); g = next++) {
        for (const ReadOp* op : *work[g].second) {
          for (uint64_t k = 0; k < op->pieces; ++k) {
            absl::Status s = work[g].first->Read(
                op->offset + k * op->stride,
                absl::MakeSpan(buffer + op->dst + k * op->length, op->length));
            if (!s.ok()) return Prefixed(s, runs_[op->side]->Describe(op->pos));
          }
        }
      }
      return absl::OkStatus();
    };
    std::vector<std::future<absl::Status>> helpers;
    for (size_t t = 1; t < threads; ++t) {
      // async | deferred: where no thread starts, the drain runs at get().
      helpers.push_back(std::async(std::launch::async | std::launch::deferred, drain));
    }
    absl::Status status = drain();
    for (std::future<absl::Status>& h : helpers) {
      absl::Status s = h.get();
      if (status.ok()) status = s;
    }
    REPROD_RETURN_IF_ERROR(status);
    for (const auto& [key, ops] : groups) {
      if (ops.back()->last_use) readers_.erase(key);
    }
    return absl::OkStatus();
  }

  // True when `op` reads a ref held resident for this slot's job: nothing
  // to read (a reader kept open for it is closed at its last use).
  bool Skipped(const ReadOp& op, size_t slot) {
    if (skipped_[slot].count(op.dst) == 0) return false;
    if (op.last_use) readers_.erase(Key{op.side, op.pos.checkpoint, op.pos.tensor});
    return true;
  }

  storage::Store& store_;
  const StoredRun* runs_[2];
  const Side side_;
  kernels::Backend* const resident_;
  // Per buffer slot: the holds on its job's resident refs (kept until the
  // slot is filled again, i.e. until the job was reduced) and the buffer
  // offsets of the ref reads they made unnecessary.
  std::vector<std::shared_ptr<const void>> holds_[2];
  std::set<size_t> skipped_[2];
  std::map<Key, std::unique_ptr<storage::TensorReader>> readers_;
  bool map_ = true;  // the store has mapped (or may map) ranges
  // Per buffer slot: dst -> the mapping placed there instead of bytes.
  std::map<size_t, std::unique_ptr<storage::MappedBytes>> views_[2];
};

// Reduces one filled job; partials[pair][part * options + k]. `ref_at` and
// `cand_at` give where a side's bytes placed at a buffer offset are.
template <typename RefAt, typename CandAt>
absl::Status ReduceJob(const Job& job, const RefAt& ref_at, const CandAt& cand_at,
                       bool ref_is_reference, absl::Span<const PlannedPair> pairs,
                       kernels::Backend& backend,
                       std::vector<std::vector<DiffStats>>& partials,
                       std::vector<std::string>& reducers) {
  std::vector<kernels::DiffTask> tasks;
  for (const JobTask& t : job.tasks) {
    for (const kernels::DiffOptions& o : pairs[t.pair].options) {
      kernels::DiffTask d;
      d.ref = t.ref;
      d.ref.data = ref_at(t.ref_dst);
      d.ref_key = t.ref_key;
      d.ref_is_reference = ref_is_reference;
      d.cand = t.cand;
      d.cand.data = cand_at(t.cand_dst);
      d.transpose_cand = t.transpose;
      d.index_base = t.index_base;
      d.options = o;
      // Who reduces it: windows of one pair may differ (a resident ref
      // window on cuda, the others where auto routes them): "cpu+cuda".
      const std::string_view name = backend.ReducerName(d);
      std::string& r = reducers[t.pair];
      if (r.empty()) {
        r = std::string(name);
      } else if (r != name && !absl::StrContains(absl::StrCat("+", r, "+"),
                                                 absl::StrCat("+", std::string(name), "+"))) {
        absl::StrAppend(&r, "+", std::string(name));
      }
      tasks.push_back(std::move(d));
    }
  }
  std::vector<DiffStats> stats(tasks.size());
  REPROD_RETURN_IF_ERROR(backend.CompareBatch(tasks, absl::MakeSpan(stats)));
  size_t k = 0;
  for (const JobTask& t : job.tasks) {
    const size_t num_options = pairs[t.pair].options.size();
    for (size_t o = 0; o < num_options; ++o, ++k) {
      DiffStats& s = stats[k];
      if (t.tile_cols > 0 && s.count > 0) {
        const auto cols = static_cast<uint64_t>(t.tile_cols);
        const uint64_t row = s.max_index / cols, col = s.max_index % cols;
        s.max_index = (static_cast<uint64_t>(t.row0) + row) *
                          static_cast<uint64_t>(t.tensor_cols) +
                      static_cast<uint64_t>(t.col0) + col;
      }
      partials[t.pair][t.part * num_options + o] = s;
    }
  }
  return absl::OkStatus();
}

class StoreReducer final : public core::PairReducer {
 public:
  StoreReducer(storage::Store& store, const StoredRun& ref,
               const StoredRun& cand, kernels::Backend& backend,
               const StoreCompareOptions& options)
      : store_(store),
        ref_(ref),
        cand_(cand),
        backend_(backend),
        options_(options) {}

  absl::Status Reduce(absl::Span<const PlannedPair> pairs, absl::Span<DiffStats> out,
                      absl::Span<std::string> reduced_by) override {
    Planner planner(ref_, cand_, backend_, options_);
    planner.Plan(pairs);
    std::vector<Job>& jobs = planner.jobs();
    std::vector<std::vector<DiffStats>> partials(pairs.size());
    std::vector<std::string> reducers(pairs.size());  // filled by ReduceJob
    for (size_t i = 0; i < pairs.size(); ++i) {
      partials[i].resize(planner.parts()[i] * pairs[i].options.size());
    }

    size_t buffer_bytes = 0;
    for (const Job& job : jobs) {
      buffer_bytes = std::max(buffer_bytes, job.bytes);
    }
    std::unique_ptr<uint8_t[]> buffers[2];
    for (size_t b = 0; b < std::min<size_t>(2, jobs.size()); ++b) {
      if (buffer_bytes > 0) {
        buffers[b] = std::make_unique_for_overwrite<uint8_t[]>(buffer_bytes);
      }
    }

    // Double buffering: job j + 1 is read while job j is reduced, the ref
    // and the cand side each on a thread of its own (reading, not reducing,
    // is most of a stored compare: copies out of the store and checksums).
    // Each reader is only touched by one read at a time.
    kernels::Backend* resident =
        backend_.resident_stats().budget_bytes > 0 ? &backend_ : nullptr;
    JobReader readers[2] = {JobReader(store_, ref_, cand_, kRef, resident),
                            JobReader(store_, ref_, cand_, kCand)};
    using Reads = std::array<std::future<absl::Status>, 2>;
    auto read = [&](size_t j) {
      Reads reads;
      for (JobReader& side : readers) {
        // async | deferred: libstdc++ falls back to reading on this thread
        // when no thread can be started.
        reads[&side - readers] =
            std::async(std::launch::async | std::launch::deferred, [&side, &jobs, &buffers, j] {
              return side.Fill(jobs[j], buffers[j % 2].get(), j % 2);
            });
      }
      return reads;
    };
    // Both sides' statuses, the first error first; waits for both.
    auto finish = [](Reads& reads) {
      absl::Status status = reads[0].valid() ? reads[0].get() : absl::OkStatus();
      absl::Status cand = reads[1].valid() ? reads[1].get() : absl::OkStatus();
      return status.ok() ? cand : status;
    };
    Reads next;
    if (!jobs.empty()) next = read(0);
    for (size_t j = 0; j < jobs.size(); ++j) {
      REPROD_RETURN_IF_ERROR(finish(next));
      if (j + 1 < jobs.size()) next = read(j + 1);
      const uint8_t* buffer = buffers[j % 2].get();
      auto ref_at = [&](size_t dst) { return readers[kRef].Data(j % 2, buffer, dst); };
      auto cand_at = [&](size_t dst) { return readers[kCand].Data(j % 2, buffer, dst); };
      absl::Status s =
          ReduceJob(jobs[j], ref_at, cand_at, ref_.reference, pairs, backend_, partials, reducers);
      if (!s.ok()) {
        finish(next).IgnoreError();
        return s;
      }
    }

    for (size_t i = 0; i < pairs.size(); ++i) {
      const size_t num_options = pairs[i].options.size();
      for (size_t o = 0; o < num_options; ++o) {
        std::vector<DiffStats> windows;
        windows.reserve(planner.parts()[i]);
        for (size_t w = 0; w < planner.parts()[i]; ++w) {
          windows.push_back(partials[i][w * num_options + o]);
        }
        out[pairs[i].stats_offset + o] = backend_.MergeWindows(windows);
      }
      // Every window of a pair has the pair's layout and dtypes, which
      // alone decide the reducer.
      kernels::DiffTask probe;
      probe.ref.dtype = pairs[i].ref_dtype;
      probe.cand.dtype = pairs[i].cand_dtype;
      probe.transpose_cand = pairs[i].transpose_cand;
      reduced_by[i] =
          reducers[i].empty() ? std::string(backend_.ReducerName(probe)) : reducers[i];
    }
    return absl::OkStatus();
  }

 private:
  storage::Store& store_;
  const StoredRun& ref_;
  const StoredRun& cand_;
  kernels::Backend& backend_;
  const StoreCompareOptions& options_;
};

// --- distributed compare ------------------------------------------------------
//
// A batch spec: "rpdb2", sizeof(DiffStats) (u32), the two run names
// (u32 length + bytes) and their listing digests (u64 each), then the pairs:
// u32 count; per pair the ref and cand positions (4 x u32), transpose (u8),
// ref and cand dtype (u8 each), u32 option count and per option atol, rtol
// (f64) and equal_nan (u8). A result: u32 count, then that many DiffStats as
// they lie in memory (replicas run one build; the size in the spec checks
// it), then per pair the name of the backend that reduced it (u32 length +
// bytes). Little-endian hosts only, as every platform reprodd builds on.

constexpr char kBatchMagic[] = "rpdb2";
static_assert(std::is_trivially_copyable_v<DiffStats>);

class Encoder {
 public:
  template <typename T>
  void Put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&value), sizeof(value));
  }
  void PutString(std::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void PutRaw(const void* data, size_t n) { out_.append(static_cast<const char*>(data), n); }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* value) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(value, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetString(std::string* s) {
    uint32_t n = 0;
    if (!Get(&n) || in_.size() < n) return false;
    s->assign(in_.substr(0, n));
    in_.remove_prefix(n);
    return true;
  }
  bool GetRaw(void* data, size_t n) {
    if (in_.size() < n) return false;
    std::memcpy(data, in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

// What a run's listing looks like to the planner: every tensor's address,
// dtype, shape and CRC in order. A worker checks it to be sure its
// positions name the tensors the submitter planned.
uint64_t ListingDigest(const StoredRun& run) {
  Encoder e;
  for (size_t c = 0; c < run.index.checkpoints.size(); ++c) {
    const core::CheckpointIndex& cp = run.index.checkpoints[c];
    e.PutString(cp.name);
    for (const core::TensorInfo& t : cp.tensors) {
      e.PutString(t.key);
      e.Put<int64_t>(t.step.value_or(INT64_MIN));
      e.Put<uint32_t>(t.rank);
      e.Put<uint8_t>(static_cast<uint8_t>(t.dtype));
      for (int64_t d : t.shape) e.Put<int64_t>(d);
      e.Put<int64_t>(-1);
      e.Put<uint32_t>(t.crc32c.value_or(0));
    }
  }
  const std::string bytes = e.Take();
  return (uint64_t{Crc32c(bytes)} << 32) | (bytes.size() & 0xffffffffu);
}

uint64_t PairBytes(const StoredRun& ref, const StoredRun& cand, const PlannedPair& p) {
  auto bytes = [](const core::TensorInfo& t) {
    uint64_t n = DTypeSize(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    return n;
  };
  return bytes(ref.Info(p.ref)) + bytes(cand.Info(p.cand));
}

std::string EncodeBatch(const StoredRun& ref, const StoredRun& cand,
                        absl::Span<const PlannedPair> pairs) {
  Encoder e;
  e.PutRaw(kBatchMagic, sizeof(kBatchMagic) - 1);
  e.Put<uint32_t>(sizeof(DiffStats));
  e.PutString(ref.name);
  e.PutString(cand.name);
  e.Put<uint64_t>(ListingDigest(ref));
  e.Put<uint64_t>(ListingDigest(cand));
  e.Put<uint32_t>(static_cast<uint32_t>(pairs.size()));
  for (const PlannedPair& p : pairs) {
    e.Put<uint32_t>(static_cast<uint32_t>(p.ref.checkpoint));
    e.Put<uint32_t>(static_cast<uint32_t>(p.ref.tensor));
    e.Put<uint32_t>(static_cast<uint32_t>(p.cand.checkpoint));
    e.Put<uint32_t>(static_cast<uint32_t>(p.cand.tensor));
    e.Put<uint8_t>(p.transpose_cand ? 1 : 0);
    e.Put<uint8_t>(static_cast<uint8_t>(p.ref_dtype));
    e.Put<uint8_t>(static_cast<uint8_t>(p.cand_dtype));
    e.Put<uint32_t>(static_cast<uint32_t>(p.options.size()));
    for (const kernels::DiffOptions& o : p.options) {
      e.Put<double>(o.atol);
      e.Put<double>(o.rtol);
      e.Put<uint8_t>(o.equal_nan ? 1 : 0);
    }
  }
  return e.Take();
}

std::string EncodeStats(absl::Span<const DiffStats> stats,
                        absl::Span<const std::string> reduced_by) {
  Encoder e;
  e.Put<uint32_t>(static_cast<uint32_t>(stats.size()));
  e.PutRaw(stats.data(), stats.size() * sizeof(DiffStats));
  for (const std::string& name : reduced_by) e.PutString(name);
  return e.Take();
}

// out: the statistics of the batch's pairs; reduced_by: one name per pair.
absl::Status DecodeStats(std::string_view bytes, absl::Span<DiffStats> out,
                         absl::Span<std::string> reduced_by) {
  Decoder d(bytes);
  uint32_t n = 0;
  bool ok = d.Get(&n) && n == out.size() && d.GetRaw(out.data(), n * sizeof(DiffStats));
  for (size_t i = 0; ok && i < reduced_by.size(); ++i) {
    ok = d.GetString(&reduced_by[i]) && reduced_by[i].size() <= 256;
  }
  if (!ok || !d.done()) {
    return absl::DataLossError(absl::StrCat("a distributed compare batch result holds ", n,
                                            " statistics, or is cut short; expected ",
                                            out.size(), " and ", reduced_by.size(),
                                            " backend names"));
  }
  return absl::OkStatus();
}

// Hands the pairs to the replicas through options.work_queue (see
// StoreCompareOptions) and takes batches itself while any is pending.
class DistributedReducer final : public core::PairReducer {
 public:
  DistributedReducer(storage::Store& store, const StoredRun& ref, const StoredRun& cand,
                     kernels::Backend& backend, const StoreCompareOptions& options)
      : store_(store), ref_(ref), cand_(cand), backend_(backend), options_(options) {}

  absl::Status Reduce(absl::Span<const PlannedPair> pairs, absl::Span<DiffStats> out,
                      absl::Span<std::string> reduced_by) override {
    // Cut in report order: batch b holds pairs [starts[b], starts[b + 1]).
    std::vector<size_t> starts = {0};
    uint64_t bytes = 0;
    std::vector<storage::WorkItem> items;
    for (size_t i = 0; i < pairs.size(); ++i) {
      bytes += PairBytes(ref_, cand_, pairs[i]);
      if (bytes >= options_.distributed_batch_bytes || i + 1 == pairs.size()) {
        items.push_back({EncodeBatch(ref_, cand_, pairs.subspan(starts.back(), i + 1 - starts.back())),
                         bytes});
        starts.push_back(i + 1);
        bytes = 0;
      }
    }
    if (items.size() < 2) return Local(pairs, out, reduced_by);
    REPROD_ASSIGN_OR_RETURN(uint64_t job, options_.work_queue->Submit(items));
    spdlog::info("distributed compare {} vs {}: {} pairs in {} batches (job {})", ref_.name,
                 cand_.name, pairs.size(), items.size(), job);
    absl::Status status = Gather(job, pairs, starts, items, out, reduced_by);
    if (absl::Status dropped = options_.work_queue->Drop(job); !dropped.ok()) {
      spdlog::warn("distributed compare job {}: {}", job, dropped.ToString());
    }
    return status;
  }

 private:
  absl::Status Local(absl::Span<const PlannedPair> pairs, absl::Span<DiffStats> out,
                     absl::Span<std::string> reduced_by) {
    StoreReducer local(store_, ref_, cand_, backend_, options_);
    return local.Reduce(pairs, out, reduced_by);
  }

  absl::Status Gather(uint64_t job, absl::Span<const PlannedPair> pairs,
                      const std::vector<size_t>& starts,
                      const std::vector<storage::WorkItem>& items, absl::Span<DiffStats> out,
                      absl::Span<std::string> reduced_by) {
    storage::WorkQueue& queue = *options_.work_queue;
    while (true) {
      // Work while there is work (ours or another compare's).
      REPROD_ASSIGN_OR_RETURN(std::optional<storage::ClaimedWork> claimed,
                              queue.Claim(options_.claim_largest_first));
      if (claimed.has_value()) {
        absl::StatusOr<std::string> result =
            ReduceWorkBatch(store_, backend_, claimed->spec, options_);
        REPROD_RETURN_IF_ERROR(queue.Finish(claimed->job, claimed->batch, result));
        continue;
      }
      REPROD_ASSIGN_OR_RETURN(std::vector<storage::WorkResult> results, queue.Results(job));
      if (results.size() != items.size()) {
        return absl::InternalError(absl::StrCat("distributed compare job ", job, " lost ",
                                                items.size() - results.size(), " batches"));
      }
      bool all_done = true;
      for (size_t b = 0; b < results.size(); ++b) {
        const storage::WorkResult& r = results[b];
        if (r.state == storage::WorkResult::State::kPending ||
            r.state == storage::WorkResult::State::kClaimed) {
          all_done = false;
        }
      }
      if (!all_done) {
        absl::SleepFor(absl::Milliseconds(20));
        continue;
      }
      for (size_t b = 0; b < results.size(); ++b) {
        const absl::Span<const PlannedPair> part =
            pairs.subspan(starts[b], starts[b + 1] - starts[b]);
        const size_t first = part.front().stats_offset;
        const size_t count =
            part.back().stats_offset + part.back().options.size() - first;
        absl::Span<DiffStats> dst = out.subspan(first, count);
        absl::Span<std::string> names = reduced_by.subspan(starts[b], part.size());
        if (results[b].state == storage::WorkResult::State::kDone) {
          REPROD_RETURN_IF_ERROR(DecodeStats(results[b].result, dst, names));
          continue;
        }
        spdlog::warn("distributed compare job {} batch {} failed elsewhere ({}); reducing it here",
                     job, b, results[b].error);
        // Offsets of the part relative to its own output.
        std::vector<PlannedPair> local(part.begin(), part.end());
        for (PlannedPair& p : local) p.stats_offset -= first;
        REPROD_RETURN_IF_ERROR(Local(local, dst, names));
      }
      return absl::OkStatus();
    }
  }

  storage::Store& store_;
  const StoredRun& ref_;
  const StoredRun& cand_;
  kernels::Backend& backend_;
  const StoreCompareOptions& options_;
};

bool Finished(storage::Store& store, std::string_view run) {
  absl::StatusOr<storage::RunInfo> info = store.GetRun(run);
  return info.ok() && info->state != storage::RunState::kOpen;
}

}  // namespace

absl::StatusOr<std::string> ReduceWorkBatch(storage::Store& store, kernels::Backend& backend,
                                            std::string_view spec,
                                            const StoreCompareOptions& options) {
  Decoder d(spec);
  char magic[sizeof(kBatchMagic) - 1] = {};
  uint32_t stats_size = 0;
  std::string ref_name, cand_name;
  uint64_t ref_digest = 0, cand_digest = 0;
  uint32_t count = 0;
  if (!d.GetRaw(magic, sizeof(magic)) ||
      std::memcmp(magic, kBatchMagic, sizeof(magic)) != 0 || !d.Get(&stats_size) ||
      !d.GetString(&ref_name) || !d.GetString(&cand_name) || !d.Get(&ref_digest) ||
      !d.Get(&cand_digest) || !d.Get(&count)) {
    return absl::InvalidArgumentError("not a distributed compare batch");
  }
  if (stats_size != sizeof(DiffStats)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "distributed compare batch made by a reprodd whose statistics are ", stats_size,
        " bytes (here ", sizeof(DiffStats), "): replicas must run the same build"));
  }
  REPROD_ASSIGN_OR_RETURN(StoredRun ref, ListRun(store, ref_name, "ref"));
  REPROD_ASSIGN_OR_RETURN(StoredRun cand, ListRun(store, cand_name, "cand"));
  if (ListingDigest(ref) != ref_digest || ListingDigest(cand) != cand_digest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "runs '", ref_name, "' and '", cand_name,
        "' changed since the distributed compare was planned"));
  }
  auto in_range = [](const StoredRun& run, uint32_t c, uint32_t t) {
    return c < run.index.checkpoints.size() && t < run.index.checkpoints[c].tensors.size();
  };
  std::vector<PlannedPair> pairs(count);
  size_t offset = 0;
  for (PlannedPair& p : pairs) {
    uint32_t rc = 0, rt = 0, cc = 0, ct = 0, options_count = 0;
    uint8_t transpose = 0, ref_dtype = 0, cand_dtype = 0;
    if (!d.Get(&rc) || !d.Get(&rt) || !d.Get(&cc) || !d.Get(&ct) || !d.Get(&transpose) ||
        !d.Get(&ref_dtype) || !d.Get(&cand_dtype) || !d.Get(&options_count) ||
        !in_range(ref, rc, rt) || !in_range(cand, cc, ct) || ref_dtype >= kNumDTypes ||
        cand_dtype >= kNumDTypes || options_count == 0 || options_count > 64) {
      return absl::InvalidArgumentError("distributed compare batch: a malformed pair");
    }
    p.ref = {rc, rt};
    p.cand = {cc, ct};
    p.transpose_cand = transpose != 0;
    p.ref_dtype = static_cast<DType>(ref_dtype);
    p.cand_dtype = static_cast<DType>(cand_dtype);
    p.options.resize(options_count);
    for (kernels::DiffOptions& o : p.options) {
      uint8_t equal_nan = 0;
      if (!d.Get(&o.atol) || !d.Get(&o.rtol) || !d.Get(&equal_nan)) {
        return absl::InvalidArgumentError("distributed compare batch: a malformed option");
      }
      o.equal_nan = equal_nan != 0;
    }
    p.stats_offset = offset;
    offset += options_count;
  }
  if (!d.done()) return absl::InvalidArgumentError("distributed compare batch: trailing bytes");
  std::vector<DiffStats> out(offset);
  std::vector<std::string> reduced_by(pairs.size());
  StoreReducer reducer(store, ref, cand, backend, options);
  REPROD_RETURN_IF_ERROR(reducer.Reduce(pairs, absl::MakeSpan(out), absl::MakeSpan(reduced_by)));
  return EncodeStats(out, reduced_by);
}

absl::StatusOr<core::Report> CompareStoredRuns(
    storage::Store& store, std::string_view ref_run, std::string_view cand_run,
    const core::Policy& policy, kernels::Backend& backend,
    const StoreCompareOptions& options) {
  if (options.window_bytes == 0 || options.batch_bytes == 0) {
    return absl::InvalidArgumentError(
        "CompareStoredRuns: window_bytes and batch_bytes must be positive");
  }
  REPROD_ASSIGN_OR_RETURN(StoredRun ref, ListRun(store, ref_run, "ref"));
  REPROD_ASSIGN_OR_RETURN(StoredRun cand, ListRun(store, cand_run, "cand"));
  if (options.work_queue != nullptr && Finished(store, ref_run) && Finished(store, cand_run)) {
    DistributedReducer reducer(store, ref, cand, backend, options);
    return core::CompareIndexed(ref.index, cand.index, policy, reducer,
                                std::string(backend.name()), options.compare);
  }
  StoreReducer reducer(store, ref, cand, backend, options);
  return core::CompareIndexed(ref.index, cand.index, policy, reducer,
                              std::string(backend.name()), options.compare);
}

}  // namespace reprod::server

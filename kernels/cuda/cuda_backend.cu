// File: kernels/cuda/cuda_backend.cu
//
// See cuda_backend.h for the design. Layout of one pipeline slot (pinned host
// buffer and device buffer alike):
//   [0, kDescBytes)          SegmentDesc table of the round (one per piece)
//   [kDescBytes, ...)        piece data, each side at a 256-byte boundary
// Only the used prefix of each region is copied.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <cub/block/block_reduce.cuh>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/element.h"
#include "common/status_macros.h"
#include "kernels/backend.h"
#include "kernels/chunk_grid.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/internal/cuda_status.h"
#include "kernels/cuda/internal/device_resident_timing.h"
#include "kernels/cuda/internal/fused_launch.h"
#include "kernels/diff_stats.h"
#include "kernels/resident_refs.h"

namespace reprod::kernels {
namespace {

// ---------------------------------------------------------------------------
// Tuning constants. kBlockThreads / kItemsPerThread / kMaxBlocksPerSegment
// decide how a piece is split into blocks, so they are part of the
// determinism contract (sum rounding).
constexpr int kBlockThreads = 256;
constexpr int kItemsPerThread = 16;  // min elements per thread before adding blocks
constexpr uint32_t kMaxBlocksPerSegment = 1024;
constexpr uint32_t kMaxBlocksPerRound = 16384;
constexpr int kMaxSegmentsPerRound = 4096;
constexpr size_t kAlign = 256;
// Largest round (one slot's data): small enough that the copy of one round
// overlaps the reduction of the previous one at a fine grain, large enough
// to amortise the per-round launch and sync cost.
constexpr size_t kMaxRoundBytes = size_t{64} << 20;
constexpr int kMergeThreads = 128;
// Host staging: copies into the pinned slot are cut into parts of at most
// this many bytes and spread over the staging pool. One thread's memcpy from
// pageable memory (~5-6 GB/s) would otherwise bound the whole pipeline.
constexpr size_t kStagingPartBytes = size_t{2} << 20;
constexpr int kMaxStagingThreads = 16;

// One piece of one pair, as the kernel sees it. Element e (0 <= e < count)
// of the piece pairs ref[e] with cand[e], or, when transposed (the piece is
// `rows` x `cols` of ref and cand holds the matching cols x rows block),
// with cand[(e % cols) * rows + e / cols]. Its flat index is index_base + e.
// The fused kernel's descriptor, field for field: here first_block /
// num_blocks count the blocks of the segmented reduce grid working on it.
using SegmentDesc = internal::FusedSegment;

constexpr size_t kDescBytes =
    (kMaxSegmentsPerRound * sizeof(SegmentDesc) + kAlign - 1) / kAlign * kAlign;

constexpr size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// ---------------------------------------------------------------------------
// Device code.

// Element i of an array of `dtype` at `p` (aligned: the slot places every
// side at a 256-byte boundary) as a double, converted as everywhere else
// (common/element.h).
__device__ __forceinline__ double LoadAsDouble(uint8_t dtype, const unsigned char* p, uint64_t i) {
  return VisitDType(static_cast<DType>(dtype), [p, i](auto tag) {
    constexpr DType kD = decltype(tag)::value;
    return ToDouble<kD>(reinterpret_cast<const StorageT<kD>*>(p)[i]);
  });
}

struct MergeOp {
  __device__ __forceinline__ DiffMoments operator()(const DiffMoments& a,
                                                    const DiffMoments& b) const {
    DiffMoments r = a;
    r.MergeMoments(b);
    return r;
  }
};

// Elements a thread loads before it processes them (memory-level
// parallelism: at ~128 registers per thread only 16 warps fit an SM, so
// each must keep several loads in flight). The thread still adds its
// elements in the same order (e, e + stride, e + 2 stride, ...), so results
// do not depend on it.
constexpr int kLoadsInFlight = 4;

// One block per (piece, block-of-piece). Writes one partial per block.
__global__ void __launch_bounds__(kBlockThreads)
    ReduceSegmentsKernel(const SegmentDesc* __restrict__ descs, int num_segments,
                         DiffStats* __restrict__ partials) {
  __shared__ int segment;
  if (threadIdx.x == 0) {
    // Last segment whose first_block <= blockIdx.x (descs sorted by it).
    int lo = 0, hi = num_segments - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (descs[mid].first_block <= blockIdx.x) lo = mid; else hi = mid - 1;
    }
    segment = lo;
  }
  // Histogram counters per (bin, thread), 32-bit: a thread adds at most
  // ceil(piece / (blocks * kBlockThreads)) <= 2^25 / 2^18 elements (pieces
  // fit a 64 MiB round). Layout bin * kBlockThreads + tid: a warp's
  // increments hit 32 distinct banks whatever bins they pick, no atomics.
  __shared__ uint32_t hist[kHistogramBins * kBlockThreads];
  for (int b = 0; b < kHistogramBins; ++b) hist[b * kBlockThreads + threadIdx.x] = 0;
  __syncthreads();
  const SegmentDesc desc = descs[segment];

  DiffMoments acc;
  const uint64_t local_block = blockIdx.x - desc.first_block;
  const uint64_t stride = static_cast<uint64_t>(desc.num_blocks) * kBlockThreads;
  for (uint64_t e0 = local_block * kBlockThreads + threadIdx.x; e0 < desc.count;
       e0 += kLoadsInFlight * stride) {
    double r[kLoadsInFlight], c[kLoadsInFlight];
#pragma unroll
    for (int k = 0; k < kLoadsInFlight; ++k) {
      const uint64_t e = e0 + k * stride;
      if (e >= desc.count) break;
      uint64_t ci = e;
      if (desc.transpose) {
        const uint64_t i = e / desc.cols;
        const uint64_t j = e - i * desc.cols;
        ci = j * desc.rows + i;
      }
      r[k] = LoadAsDouble(desc.ref_dtype, desc.ref, e);
      c[k] = LoadAsDouble(desc.cand_dtype, desc.cand, ci);
    }
#pragma unroll
    for (int k = 0; k < kLoadsInFlight; ++k) {
      const uint64_t e = e0 + k * stride;
      if (e >= desc.count) break;
      const int bin = acc.AddUnbinned(r[k], c[k], desc.index_base + e, desc.options);
      if (bin >= 0) ++hist[bin * kBlockThreads + threadIdx.x];
    }
  }

  using BlockReduce = cub::BlockReduce<DiffMoments, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  __shared__ uint64_t bins[kHistogramBins];
  __syncthreads();  // every thread's counters are final
  if (threadIdx.x < kHistogramBins) {
    uint64_t sum = 0;
    for (int t = 0; t < kBlockThreads; ++t) sum += hist[threadIdx.x * kBlockThreads + t];
    bins[threadIdx.x] = sum;
  }
  const DiffMoments moments = BlockReduce(temp).Reduce(acc, MergeOp{});
  __syncthreads();  // bins written
  if (threadIdx.x == 0) {
    DiffStats total;
    static_cast<DiffMoments&>(total) = moments;
    for (int b = 0; b < kHistogramBins; ++b) total.histogram[b] = bins[b];
    partials[blockIdx.x] = total;
  }
}

// One thread per piece: merges its partials in block order (deterministic).
__global__ void MergePartialsKernel(const SegmentDesc* __restrict__ descs, int num_segments,
                                    const DiffStats* __restrict__ partials,
                                    DiffStats* __restrict__ out) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= num_segments) return;
  const uint32_t first = descs[s].first_block;
  const uint32_t n = descs[s].num_blocks;
  DiffStats acc;
  for (uint32_t b = 0; b < n; ++b) acc.Merge(partials[first + b]);
  out[s] = acc;
}

// ---------------------------------------------------------------------------
// Host side.

uint32_t BlocksFor(uint64_t count) {
  const uint64_t per_block = static_cast<uint64_t>(kBlockThreads) * kItemsPerThread;
  const uint64_t blocks = (count + per_block - 1) / per_block;
  return static_cast<uint32_t>(std::clamp<uint64_t>(blocks, 1, kMaxBlocksPerSegment));
}

// A contiguous range of one task reduced as one segment.
struct Piece {
  size_t task;
  uint64_t begin;  // first element (flat, ref layout)
  uint64_t count;
  uint64_t rows;   // transposed: rows of ref in this piece; cols = n
  uint64_t cols;
  size_t ref_bytes;
  size_t cand_bytes;
  uint32_t blocks;
  // The task's ref is resident: this piece's ref bytes on the device. When
  // they are not 16-byte aligned (the fused kernel's loads need that) they
  // are copied device to device into the slot (ref_in_slot); else the
  // kernel reads them where they are and the slot holds only cand.
  const unsigned char* ref_device = nullptr;
  bool ref_in_slot = true;
};

// One memcpy of the host staging step.
struct CopyJob {
  unsigned char* dst;
  const unsigned char* src;
  size_t bytes;
};

struct Round {
  size_t first_piece;
  size_t num_pieces;
  size_t data_bytes;  // bytes after kDescBytes
  uint32_t blocks;
};

}  // namespace

struct CudaBackend::Impl {
  struct Slot {
    cudaStream_t stream = nullptr;
    unsigned char* host = nullptr;    // pinned, kDescBytes + capacity
    unsigned char* device = nullptr;  // kDescBytes + capacity
    size_t capacity = 0;              // data bytes
    DiffStats* partials = nullptr;    // device, kMaxBlocksPerRound
    DiffStats* out = nullptr;         // device, kMaxSegmentsPerRound
    DiffStats* host_out = nullptr;    // pinned, kMaxSegmentsPerRound
    // Fused kernel (options.kernel == kFused) only: its segment table
    // (grouped by dtype pair and layout), one partial per logical block,
    // tickets, and where each piece of the round landed in the table.
    internal::FusedSegment* fused_host = nullptr;    // pinned, kMaxSegmentsPerRound
    internal::FusedSegment* fused_device = nullptr;  // kMaxSegmentsPerRound
    unsigned int* fused_tickets = nullptr;           // kMaxSegmentsPerRound
    DiffStats* fused_partials = nullptr;
    size_t fused_partials_capacity = 0;
    std::vector<size_t> fused_position;  // piece k of the round -> table row
  };

  CudaBackendOptions options;
  // Parallel memcpy into the pinned slots (used under mu only).
  std::unique_ptr<ThreadPool> staging_pool;
  absl::Mutex mu;
  Slot slots[2] ABSL_GUARDED_BY(mu);
  // Resident refs (options.resident_bytes > 0): copies in device memory,
  // held by Run from before its rounds until they finished.
  std::unique_ptr<ResidentRefs> resident_refs;

  ~Impl() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    cudaSetDevice(options.device);
    resident_refs.reset();
    for (Slot& s : slots) {
      if (s.stream != nullptr) cudaStreamSynchronize(s.stream);
      cudaFreeHost(s.host);
      cudaFree(s.device);
      cudaFree(s.partials);
      cudaFree(s.out);
      cudaFreeHost(s.host_out);
      cudaFreeHost(s.fused_host);
      cudaFree(s.fused_device);
      cudaFree(s.fused_tickets);
      cudaFree(s.fused_partials);
      if (s.stream != nullptr) cudaStreamDestroy(s.stream);
    }
  }

  // Data bytes available to one slot.
  size_t SlotCapacityLimit() const {
    return std::min(options.device_budget_bytes / 2, kMaxRoundBytes) - kDescBytes;
  }

  absl::Status Init() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    const int hw = static_cast<int>(std::thread::hardware_concurrency());
    staging_pool = std::make_unique<ThreadPool>(std::clamp(hw, 1, kMaxStagingThreads));
    for (Slot& s : slots) {
      REPROD_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
      REPROD_CUDA_RETURN_IF_ERROR(
          cudaMalloc(&s.partials, kMaxBlocksPerRound * sizeof(DiffStats)));
      REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.out, kMaxSegmentsPerRound * sizeof(DiffStats)));
      REPROD_CUDA_RETURN_IF_ERROR(
          cudaMallocHost(&s.host_out, kMaxSegmentsPerRound * sizeof(DiffStats)));
      if (options.kernel == CudaKernel::kFused) {
        REPROD_CUDA_RETURN_IF_ERROR(cudaMallocHost(
            &s.fused_host, kMaxSegmentsPerRound * sizeof(internal::FusedSegment)));
        REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(
            &s.fused_device, kMaxSegmentsPerRound * sizeof(internal::FusedSegment)));
        REPROD_CUDA_RETURN_IF_ERROR(
            cudaMalloc(&s.fused_tickets, kMaxSegmentsPerRound * sizeof(unsigned int)));
      }
    }
    return absl::OkStatus();
  }

  // Fused kernel: enqueues the reduction of the round's pieces (descs, data
  // already on their way to s.device) as one launch per (dtype pair,
  // layout) group; results land in s.out at s.fused_position[k].
  absl::Status LaunchFusedRound(Slot& s, const SegmentDesc* descs, int num_segments) {
    struct Group {
      DType ref, cand;
      bool transposed;
      std::vector<int> pieces;
    };
    std::vector<Group> groups;
    for (int k = 0; k < num_segments; ++k) {
      const DType r = static_cast<DType>(descs[k].ref_dtype);
      const DType c = static_cast<DType>(descs[k].cand_dtype);
      const bool t = descs[k].transpose != 0;
      auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) {
        return x.ref == r && x.cand == c && x.transposed == t;
      });
      if (g == groups.end()) g = groups.insert(groups.end(), Group{r, c, t, {}});
      g->pieces.push_back(k);
    }
    s.fused_position.assign(static_cast<size_t>(num_segments), 0);
    uint64_t total_blocks = 0;
    size_t row = 0;
    std::vector<uint64_t> group_blocks;
    for (const Group& g : groups) {
      uint32_t first = 0;
      for (int k : g.pieces) {
        const SegmentDesc& d = descs[k];
        // The same piece, on the fused kernel's logical blocks.
        internal::FusedSegment& f = s.fused_host[row];
        f = d;
        f.first_block = first;
        f.num_blocks = static_cast<uint32_t>(
            internal::FusedNumBlocks(d.count, d.transpose != 0, d.rows, d.cols));
        first += f.num_blocks;
        s.fused_position[static_cast<size_t>(k)] = row++;
      }
      group_blocks.push_back(first);
      total_blocks += first;
    }
    if (s.fused_partials_capacity < total_blocks) {
      REPROD_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
      REPROD_CUDA_RETURN_IF_ERROR(cudaFree(s.fused_partials));
      s.fused_partials = nullptr;
      s.fused_partials_capacity = 0;
      REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.fused_partials, total_blocks * sizeof(DiffStats)));
      s.fused_partials_capacity = total_blocks;
    }
    REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.fused_device, s.fused_host,
                                                row * sizeof(internal::FusedSegment),
                                                cudaMemcpyHostToDevice, s.stream));
    size_t row0 = 0;
    uint64_t block0 = 0;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      internal::FusedLaunch launch;
      launch.segments = s.fused_device + row0;
      launch.num_segments = static_cast<int>(groups[gi].pieces.size());
      launch.total_blocks = static_cast<uint32_t>(group_blocks[gi]);
      launch.ref_dtype = groups[gi].ref;
      launch.cand_dtype = groups[gi].cand;
      launch.transposed = groups[gi].transposed;
      launch.partials = s.fused_partials + block0;
      launch.tickets = s.fused_tickets + row0;
      launch.out = s.out + row0;
      launch.grid = options.fused_grid;
      REPROD_RETURN_IF_ERROR(internal::LaunchFused(launch, s.stream));
      row0 += groups[gi].pieces.size();
      block0 += group_blocks[gi];
    }
    return absl::OkStatus();
  }

  // Grows both slots' data buffers to at least `bytes` (streams idle).
  absl::Status EnsureCapacity(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (Slot& s : slots) {
      if (s.capacity >= bytes) continue;
      REPROD_CUDA_RETURN_IF_ERROR(cudaFreeHost(s.host));
      REPROD_CUDA_RETURN_IF_ERROR(cudaFree(s.device));
      s.host = nullptr;
      s.device = nullptr;
      s.capacity = 0;
      REPROD_CUDA_RETURN_IF_ERROR(cudaMallocHost(&s.host, kDescBytes + bytes));
      REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.device, kDescBytes + bytes));
      s.capacity = bytes;
    }
    return absl::OkStatus();
  }

  // Elements of a pair (of these element sizes) that fit one slot.
  uint64_t FitElements(size_t rsz, size_t csz) const {
    return (SlotCapacityLimit() - 2 * kAlign) / (rsz + csz);
  }

  // Elements per piece of an element-wise pair of these element sizes
  // (transposed pairs: max(1, this / n) rows per piece).
  uint64_t PieceElements(size_t rsz, size_t csz) const {
    return std::min<uint64_t>(static_cast<uint64_t>(options.chunk_elements), FitElements(rsz, csz));
  }

  // Cuts every non-empty task into pieces that fit one slot.
  absl::Status MakePieces(absl::Span<const DiffTask> tasks, std::vector<Piece>* pieces) const {
    for (size_t t = 0; t < tasks.size(); ++t) {
      const DiffTask& task = tasks[t];
      const uint64_t n_elem = static_cast<uint64_t>(task.ref.num_elements());
      if (n_elem == 0) continue;
      const size_t rsz = DTypeSize(task.ref.dtype), csz = DTypeSize(task.cand.dtype);
      const uint64_t fit = FitElements(rsz, csz);
      const uint64_t chunk = PieceElements(rsz, csz);
      if (!task.transpose_cand) {
        for (uint64_t b = 0; b < n_elem; b += chunk) {
          const uint64_t c = std::min(chunk, n_elem - b);
          pieces->push_back(Piece{t, b, c, 0, 0, c * rsz, c * csz, BlocksFor(c)});
        }
      } else {
        const uint64_t m = static_cast<uint64_t>(task.ref.shape[0]);
        const uint64_t n = static_cast<uint64_t>(task.ref.shape[1]);
        if (n > fit) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "cuda backend: one row of a transposed pair (", n,
              " elements) does not fit the device budget of ", options.device_budget_bytes,
              " bytes"));
        }
        const uint64_t rows_per_piece = std::max<uint64_t>(1, chunk / n);
        for (uint64_t r0 = 0; r0 < m; r0 += rows_per_piece) {
          const uint64_t rows = std::min(rows_per_piece, m - r0);
          const uint64_t c = rows * n;
          pieces->push_back(Piece{t, r0 * n, c, rows, n, c * rsz, c * csz, BlocksFor(c)});
        }
      }
    }
    return absl::OkStatus();
  }

  // Groups consecutive pieces into rounds that fit one slot.
  std::vector<Round> MakeRounds(const std::vector<Piece>& pieces) const {
    std::vector<Round> rounds;
    const size_t limit = SlotCapacityLimit();
    for (size_t p = 0; p < pieces.size(); ++p) {
      const size_t bytes = (pieces[p].ref_in_slot ? AlignUp(pieces[p].ref_bytes) : 0) +
                           AlignUp(pieces[p].cand_bytes);
      if (rounds.empty() || rounds.back().num_pieces == kMaxSegmentsPerRound ||
          rounds.back().data_bytes + bytes > limit ||
          rounds.back().blocks + pieces[p].blocks > kMaxBlocksPerRound) {
        rounds.push_back(Round{p, 0, 0, 0});
      }
      Round& r = rounds.back();
      ++r.num_pieces;
      r.data_bytes += bytes;
      r.blocks += pieces[p].blocks;
    }
    return rounds;
  }

  // Queues dst <- src, cut into staging parts.
  static void AddCopy(unsigned char* dst, const unsigned char* src, size_t bytes,
                      std::vector<CopyJob>* copies) {
    for (size_t o = 0; o < bytes; o += kStagingPartBytes) {
      copies->push_back(CopyJob{dst + o, src + o, std::min(kStagingPartBytes, bytes - o)});
    }
  }

  // Packs a round into slot `s` on the host (memcpy spread over the staging
  // pool) and enqueues copy, reduce, merge and the copy back on the slot's
  // stream.
  absl::Status Launch(Slot& s, const Round& round, const std::vector<Piece>& pieces,
                      absl::Span<const DiffTask> tasks) {
    auto* descs = reinterpret_cast<SegmentDesc*>(s.host);
    std::vector<CopyJob> copies;
    std::vector<CopyJob> device_copies;  // resident ref bytes into the slot
    size_t offset = 0;
    uint32_t first_block = 0;
    for (size_t k = 0; k < round.num_pieces; ++k) {
      const Piece& p = pieces[round.first_piece + k];
      const DiffTask& task = tasks[p.task];
      const size_t rsz = DTypeSize(task.ref.dtype), csz = DTypeSize(task.cand.dtype);
      const size_t ref_slot_bytes = p.ref_in_slot ? AlignUp(p.ref_bytes) : 0;
      unsigned char* ref_dst = s.host + kDescBytes + offset;
      unsigned char* cand_dst = ref_dst + ref_slot_bytes;
      const auto* ref_src = static_cast<const unsigned char*>(task.ref.data);
      const auto* cand_src = static_cast<const unsigned char*>(task.cand.data);
      if (p.ref_device == nullptr) {
        AddCopy(ref_dst, ref_src + p.begin * rsz, p.ref_bytes, &copies);
      } else if (p.ref_in_slot) {
        device_copies.push_back(
            CopyJob{s.device + kDescBytes + offset, p.ref_device, p.ref_bytes});
      }
      if (!task.transpose_cand) {
        AddCopy(cand_dst, cand_src + p.begin * csz, p.cand_bytes, &copies);
      } else {
        // cand is (n, m); gather its columns [r0, r0 + rows) as (n, rows).
        const uint64_t m = static_cast<uint64_t>(task.ref.shape[0]);
        const uint64_t r0 = p.begin / p.cols;
        for (uint64_t j = 0; j < p.cols; ++j) {
          AddCopy(cand_dst + j * p.rows * csz, cand_src + (j * m + r0) * csz, p.rows * csz,
                  &copies);
        }
      }
      SegmentDesc& d = descs[k];
      d.ref = p.ref_in_slot ? s.device + kDescBytes + offset : p.ref_device;
      d.cand = s.device + kDescBytes + offset + ref_slot_bytes;
      d.count = p.count;
      d.rows = p.rows;
      d.cols = p.cols;
      d.index_base = task.index_base + p.begin;
      d.options = task.options;
      d.first_block = first_block;
      d.num_blocks = p.blocks;
      d.ref_dtype = static_cast<uint8_t>(task.ref.dtype);
      d.cand_dtype = static_cast<uint8_t>(task.cand.dtype);
      d.transpose = task.transpose_cand ? 1 : 0;
      offset += ref_slot_bytes + AlignUp(p.cand_bytes);
      first_block += p.blocks;
    }
    staging_pool->ParallelFor(static_cast<int64_t>(copies.size()), [&](int64_t i) {
      std::memcpy(copies[i].dst, copies[i].src, copies[i].bytes);
    });
    const int num_segments = static_cast<int>(round.num_pieces);
    REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.device, s.host,
                                                num_segments * sizeof(SegmentDesc),
                                                cudaMemcpyHostToDevice, s.stream));
    if (offset > 0) {
      REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.device + kDescBytes, s.host + kDescBytes,
                                                  offset, cudaMemcpyHostToDevice, s.stream));
    }
    // After the upload, which also wrote (unused) host bytes over these.
    for (const CopyJob& c : device_copies) {
      REPROD_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(c.dst, c.src, c.bytes, cudaMemcpyDeviceToDevice, s.stream));
    }
    if (options.kernel == CudaKernel::kFused) {
      REPROD_RETURN_IF_ERROR(LaunchFusedRound(s, descs, num_segments));
    } else {
      const auto* d_descs = reinterpret_cast<const SegmentDesc*>(s.device);
      ReduceSegmentsKernel<<<first_block, kBlockThreads, 0, s.stream>>>(d_descs, num_segments,
                                                                         s.partials);
      REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());
      MergePartialsKernel<<<(num_segments + kMergeThreads - 1) / kMergeThreads, kMergeThreads, 0,
                            s.stream>>>(d_descs, num_segments, s.partials, s.out);
      REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());
    }
    REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.host_out, s.out,
                                                num_segments * sizeof(DiffStats),
                                                cudaMemcpyDeviceToHost, s.stream));
    return absl::OkStatus();
  }

  // Waits for slot `s` and merges its round's piece results, in order.
  absl::Status Finish(Slot& s, const Round& round, const std::vector<Piece>& pieces,
                      absl::Span<DiffStats> out) {
    REPROD_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
    const bool fused = options.kernel == CudaKernel::kFused;
    for (size_t k = 0; k < round.num_pieces; ++k) {
      out[pieces[round.first_piece + k].task].Merge(
          s.host_out[fused ? s.fused_position[k] : k]);
    }
    return absl::OkStatus();
  }

  absl::Status Run(absl::Span<const DiffTask> tasks, absl::Span<DiffStats> out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (DiffStats& o : out) o = DiffStats();
    REPROD_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
    ResidentRefs::Resolved resident;
    REPROD_RETURN_IF_ERROR(resident_refs->Resolve(tasks, &resident));
    absl::Status status = RunWithResidentRefs(tasks, out, resident.copies);
    resident_refs->Release(resident);
    return status;
  }

  absl::Status RunWithResidentRefs(absl::Span<const DiffTask> tasks, absl::Span<DiffStats> out,
                                   const std::vector<const unsigned char*>& resident)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<Piece> pieces;
    REPROD_RETURN_IF_ERROR(MakePieces(tasks, &pieces));
    if (pieces.empty()) return absl::OkStatus();
    for (Piece& p : pieces) {
      const unsigned char* base = resident[p.task];
      if (base == nullptr) continue;
      p.ref_device = base + p.begin * DTypeSize(tasks[p.task].ref.dtype);
      p.ref_in_slot = reinterpret_cast<uintptr_t>(p.ref_device) % 16 != 0;
    }
    const std::vector<Round> rounds = MakeRounds(pieces);
    size_t max_bytes = 0;
    for (const Round& r : rounds) max_bytes = std::max(max_bytes, r.data_bytes);
    REPROD_RETURN_IF_ERROR(EnsureCapacity(std::max<size_t>(max_bytes, kAlign)));

    absl::Status status = RunRounds(tasks, out, pieces, rounds);
    if (!status.ok()) {
      // Leave both slots idle before the buffers can be reused or freed.
      for (Slot& s : slots) cudaStreamSynchronize(s.stream);
    }
    return status;
  }

  absl::Status RunRounds(absl::Span<const DiffTask> tasks, absl::Span<DiffStats> out,
                         const std::vector<Piece>& pieces, const std::vector<Round>& rounds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // Round k uses slot k % 2; before packing round k into a slot, the round
    // k - 2 that used it must be finished (merged in round order).
    for (size_t k = 0; k < rounds.size(); ++k) {
      Slot& s = slots[k % 2];
      if (k >= 2) REPROD_RETURN_IF_ERROR(Finish(s, rounds[k - 2], pieces, out));
      REPROD_RETURN_IF_ERROR(Launch(s, rounds[k], pieces, tasks));
    }
    const size_t first_left = rounds.size() >= 2 ? rounds.size() - 2 : 0;
    for (size_t k = first_left; k < rounds.size(); ++k) {
      REPROD_RETURN_IF_ERROR(Finish(slots[k % 2], rounds[k], pieces, out));
    }
    return absl::OkStatus();
  }
};

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

const CudaBackendOptions& CudaBackend::options() const { return impl_->options; }

// Windows of exactly one piece are exact: a window task of one piece's
// elements is one piece with the same count, blocks and packed data, so its
// partial is the piece's partial, and the whole pair's result is
// DiffStats() merged with its pieces in order (Finish), as SequentialMerge
// does. Windows of several pieces are not: their pieces would be merged
// inside the window first.
FlatWindowPlan CudaBackend::PlanFlatWindows(DType ref_dtype, DType cand_dtype, int64_t elements,
                                            int64_t max_window_elements) const {
  const auto piece =
      static_cast<int64_t>(impl_->PieceElements(DTypeSize(ref_dtype), DTypeSize(cand_dtype)));
  return PlanFlatOnGrid(elements, max_window_elements, WindowGrid{piece, false});
}

TransposedWindowPlan CudaBackend::PlanTransposedWindows(DType ref_dtype, DType cand_dtype,
                                                        int64_t m, int64_t n,
                                                        int64_t max_window_elements) const {
  const auto piece =
      static_cast<int64_t>(impl_->PieceElements(DTypeSize(ref_dtype), DTypeSize(cand_dtype)));
  const int64_t piece_rows = std::max<int64_t>(1, piece / std::max<int64_t>(1, n));
  return PlanTransposedOnGrid(m, n, max_window_elements, WindowGrid{piece_rows, false});
}

DiffStats CudaBackend::MergeWindows(absl::Span<const DiffStats> windows) const {
  return SequentialMerge(windows);
}

absl::StatusOr<DiffStats> CudaBackend::Compare(const DiffTask& task) {
  DiffStats out;
  REPROD_RETURN_IF_ERROR(CompareBatch(absl::MakeConstSpan(&task, 1), absl::MakeSpan(&out, 1)));
  return out;
}

absl::Status CudaBackend::CompareBatch(absl::Span<const DiffTask> tasks,
                                       absl::Span<DiffStats> out) {
  if (absl::Status s = ValidateDiffBatch(tasks, out.size(), /*allow_resident_ref=*/true);
      !s.ok()) {
    return s;
  }
  absl::MutexLock lock(&impl_->mu);
  return impl_->Run(tasks, out);
}

std::shared_ptr<const void> CudaBackend::HoldResidentRef(std::string_view key) {
  return impl_->resident_refs->Hold(key);
}

ResidentStats CudaBackend::resident_stats() const { return impl_->resident_refs->Stats(); }

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const CudaBackendOptions& requested) {
  CudaBackendOptions options = requested;
  if (const char* kernel = std::getenv("REPROD_CUDA_KERNEL");
      kernel != nullptr && *kernel != '\0') {
    if (std::strcmp(kernel, "fused") == 0) {
      options.kernel = CudaKernel::kFused;
    } else if (std::strcmp(kernel, "segmented") != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "REPROD_CUDA_KERNEL must be 'fused' or 'segmented', not '", kernel, "'"));
    }
  }
  if (options.fused_grid < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda backend: fused_grid must be >= 0 (got ", options.fused_grid, ")"));
  }
  if (options.device_budget_bytes < (size_t{4} << 20) || options.chunk_elements < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda backend: device_budget_bytes must be >= 4 MiB and chunk_elements >= 1 (got ",
        options.device_budget_bytes, ", ", options.chunk_elements, ")"));
  }
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable CUDA driver or device: ", cudaGetErrorName(err), ": ",
        cudaGetErrorString(err)));
  }
  if (count == 0) return absl::FailedPreconditionError("no CUDA device");
  if (options.device < 0 || options.device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", options.device, " does not exist (", count, " devices)"));
  }
  err = cudaSetDevice(options.device);
  if (err == cudaSuccess) err = cudaFree(nullptr);  // creates the context
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat("CUDA device ", options.device,
                                               " cannot be used: ", cudaGetErrorName(err),
                                               ": ", cudaGetErrorString(err)));
  }
  auto impl = std::make_unique<CudaBackend::Impl>();
  impl->options = options;
  impl->resident_refs = std::make_unique<ResidentRefs>(
      options.resident_bytes,
      ResidentRefs::Memory{
          .allocate = [](size_t bytes) -> void* {
            void* copy = nullptr;
            if (cudaMalloc(&copy, bytes) == cudaSuccess) return copy;
            cudaGetLastError();  // out of device memory: not sticky
            return nullptr;
          },
          .upload = [](void* dst, const void* src, size_t bytes) -> absl::Status {
            REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
            return absl::OkStatus();
          },
          .free = [](void* copy) -> absl::Status {
            REPROD_CUDA_RETURN_IF_ERROR(cudaFree(copy));
            return absl::OkStatus();
          }});
  if (absl::Status s = impl->Init(); !s.ok()) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat("cuda backend start-up: ", s.message()));
  }
  return std::unique_ptr<Backend>(new CudaBackend(std::move(impl)));
}

namespace internal {
namespace {

__global__ void FillPairKernel(float* ref, float* cand, uint64_t n) {
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    ref[i] = static_cast<float>(i & 0xffff) * 0.25f;
    cand[i] = ref[i] + ((i % 7) == 0 ? 0.5f : 0.0f);
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

absl::StatusOr<DeviceResidentTiming> TimeDeviceResidentPair(uint64_t elements,
                                                            int64_t chunk_elements,
                                                            int repeats) {
  if (elements == 0 || chunk_elements < 1 || repeats < 1) {
    return absl::InvalidArgumentError("TimeDeviceResidentPair: empty pair or bad options");
  }
  REPROD_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  const size_t side = elements * sizeof(float);
  float* ref = nullptr;
  float* cand = nullptr;
  float* copy = nullptr;
  void* pinned = nullptr;  // host staging of both sides, for the H2D timing
  SegmentDesc* d_descs = nullptr;
  DiffStats* partials = nullptr;
  DiffStats* out = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  // Frees everything on every return path.
  struct Cleanup {
    std::vector<void*> ptrs;
    cudaEvent_t* events[2];
    void** pinned;
    ~Cleanup() {
      for (void* p : ptrs) cudaFree(p);
      for (cudaEvent_t* e : events) if (*e != nullptr) cudaEventDestroy(*e);
      if (*pinned != nullptr) cudaFreeHost(*pinned);
    }
  } cleanup{{}, {&start, &stop}, &pinned};
  REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&ref, side));
  cleanup.ptrs.push_back(ref);
  REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&cand, side));
  cleanup.ptrs.push_back(cand);
  REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&copy, 2 * side));
  cleanup.ptrs.push_back(copy);
  REPROD_CUDA_RETURN_IF_ERROR(cudaMallocHost(&pinned, 2 * side));
  std::memset(pinned, 0, 2 * side);  // touched, so the timing sees no page faults
  FillPairKernel<<<1024, 256>>>(ref, cand, elements);
  REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());

  // Pieces of chunk_elements, as MakePieces cuts a non-transposed pair when
  // the round size does not cap them first (for float32 with the default
  // 1 GiB budget MakePieces caps at ~8M elements; this times 2^24).
  std::vector<SegmentDesc> descs;
  uint32_t first_block = 0;
  for (uint64_t b = 0; b < elements; b += static_cast<uint64_t>(chunk_elements)) {
    const uint64_t c = std::min<uint64_t>(chunk_elements, elements - b);
    SegmentDesc d{};
    d.ref = reinterpret_cast<const unsigned char*>(ref + b);
    d.cand = reinterpret_cast<const unsigned char*>(cand + b);
    d.count = c;
    d.index_base = b;
    d.options = DiffOptions();
    d.first_block = first_block;
    d.num_blocks = BlocksFor(c);
    d.ref_dtype = d.cand_dtype = static_cast<uint8_t>(DType::kFloat32);
    first_block += d.num_blocks;
    descs.push_back(d);
  }
  const int num_segments = static_cast<int>(descs.size());
  REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&d_descs, descs.size() * sizeof(SegmentDesc)));
  cleanup.ptrs.push_back(d_descs);
  REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&partials, first_block * sizeof(DiffStats)));
  cleanup.ptrs.push_back(partials);
  REPROD_CUDA_RETURN_IF_ERROR(cudaMalloc(&out, descs.size() * sizeof(DiffStats)));
  cleanup.ptrs.push_back(out);
  REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(d_descs, descs.data(),
                                         descs.size() * sizeof(SegmentDesc),
                                         cudaMemcpyHostToDevice));
  REPROD_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  REPROD_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));

  auto time_ms = [&](auto&& work) -> absl::StatusOr<double> {
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventRecord(start));
    work();
    REPROD_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop));
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float ms = 0;
    REPROD_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms);
  };
  auto reduce = [&] {
    ReduceSegmentsKernel<<<first_block, kBlockThreads>>>(d_descs, num_segments, partials);
    MergePartialsKernel<<<(num_segments + kMergeThreads - 1) / kMergeThreads, kMergeThreads>>>(
        d_descs, num_segments, partials, out);
  };
  auto d2d = [&] {
    cudaMemcpyAsync(copy, ref, side, cudaMemcpyDeviceToDevice);
    cudaMemcpyAsync(copy + elements, cand, side, cudaMemcpyDeviceToDevice);
  };
  auto h2d = [&] { cudaMemcpyAsync(copy, pinned, 2 * side, cudaMemcpyHostToDevice); };
  std::vector<double> kernel_ms, copy_ms, upload_ms;
  for (int i = 0; i <= repeats; ++i) {  // i == 0: warm-up
    absl::StatusOr<double> k = time_ms(reduce);
    if (!k.ok()) return k.status();
    absl::StatusOr<double> c = time_ms(d2d);
    if (!c.ok()) return c.status();
    absl::StatusOr<double> u = time_ms(h2d);
    if (!u.ok()) return u.status();
    if (i > 0) {
      kernel_ms.push_back(*k);
      copy_ms.push_back(*c);
      upload_ms.push_back(*u);
    }
  }
  std::vector<DiffStats> host(descs.size());
  REPROD_CUDA_RETURN_IF_ERROR(cudaMemcpy(host.data(), out, host.size() * sizeof(DiffStats),
                                         cudaMemcpyDeviceToHost));
  DiffStats total;
  for (const DiffStats& h : host) total.Merge(h);
  DeviceResidentTiming t;
  t.kernel_ms = Median(kernel_ms);
  t.d2d_ms = Median(copy_ms);
  t.h2d_ms = Median(upload_ms);
  t.bytes = 2.0 * static_cast<double>(side);
  t.count = total.count;
  return t;
}

}  // namespace internal

}  // namespace reprod::kernels

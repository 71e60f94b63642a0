// File: storage/store.h
//
// Store: keyed storage of runs, their tensors and reports. The server is its
// only user; the engine behind it is hidden (rocksdb/ is the embedded
// default, memory/ backs fast tests). Both implementations pass one
// conformance suite (storage/store_conformance_test.cc).
//
//   absl::StatusOr<std::unique_ptr<Store>> store = OpenRocksDbStore(dir, {});
//   REPROD_RETURN_IF_ERROR((*store)->CreateRun(run));
//   auto writer = (*store)->BeginTensor("team42/bert-paddle", header);
//   REPROD_RETURN_IF_ERROR((*writer)->Append(bytes));   // any number of times
//   absl::StatusOr<CommitResult> done = (*writer)->Commit();  // durable now
//
// Visibility: a tensor is invisible (ListTensors, OpenTensor) until Commit
// returns OK; Commit checks the byte count and crc32c and publishes the
// tensor's index entry in one atomic write. A writer destroyed without a
// successful Commit leaves nothing visible; bytes it wrote are reclaimed (at
// the latest when the store is next opened, after a crash).
//
// Durability: when Commit returns OK the tensor survives a process crash or
// SIGKILL (RocksDB: the commit batch is written with sync = true).
//
// Addresses: (run, checkpoint, key, step, rank). Names are validated by the server
// (common/names.h); the store assumes they hold no NUL byte.
//
// Errors: NotFound (unknown run/tensor/report), AlreadyExists (CreateRun on
// an existing run; Commit of different bytes at an occupied address of a
// run without overwrite; the message names the address), FailedPrecondition
// (tensor into a run that is not OPEN; sealing a run that is not OPEN),
// InvalidArgument (Append past the declared length; Commit with a length or
// crc32c mismatch), DataLoss (a stored record fails to decode or its bytes
// fail their checksum), Internal/Unavailable (engine faults).
//
// Thread-safety: every method may be called from several threads at once. A
// TensorWriter or TensorReader is used by one thread at a time.
#ifndef REPROD_STORAGE_STORE_H_
#define REPROD_STORAGE_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/placement.h"
#include "common/tensor.h"
#include "storage/work_queue.h"

namespace reprod::storage {

enum class RunState { kOpen, kSealed, kAborted };

// "open", "sealed", "aborted".
std::string_view RunStateName(RunState state);

// A run's metadata. The store keeps tensor_count/total_bytes up to date.
struct RunInfo {
  std::string name;  // "namespace/name"
  std::string framework;
  std::string framework_version;
  std::string device;
  std::map<std::string, std::string> labels;
  absl::Time created = absl::UnixEpoch();  // set by CreateRun when zero
  std::string owner;
  RunState state = RunState::kOpen;
  bool overwrite = false;  // allow replacing a tensor with different bytes
  // A reference run (e.g. the upstream PyTorch output of a paper) that
  // submitters may compare their own runs against (server/auth/acl.h).
  // Stored as given by CreateRun; changed with SetRunReference.
  bool reference = false;
  uint64_t tensor_count = 0;
  uint64_t total_bytes = 0;
};

// Where a tensor lives inside a run.
struct TensorAddress {
  std::string checkpoint;
  std::string key;
  std::optional<int64_t> step;
  // The process of a distributed job that logged it (common/placement.h);
  // 0 for single-process runs. Ordered after step.
  uint32_t rank = 0;

  friend bool operator==(const TensorAddress&, const TensorAddress&) = default;
  friend auto operator<=>(const TensorAddress&,
                          const TensorAddress&) = default;
};

// "checkpoint/key" or "checkpoint/key@step", followed by "#rank N" when the
// rank is not 0 ("forward/logits@3#rank 1"), for messages.
std::string AddressToString(const TensorAddress& address);

// Everything about a tensor except its bytes, as the producer declared it.
struct TensorHeader {
  TensorAddress address;
  DType dtype = DType::kFloat32;
  Shape shape;
  uint64_t byte_length = 0;  // itemsize(dtype) * prod(shape)
  uint32_t crc32c = 0;       // of all byte_length bytes
  // How this rank's piece relates to the global tensor (common/placement.h);
  // kNone unless the producer declared it.
  Placement placement = {};
};

// A stored tensor: its header plus what the store assigned.
struct TensorMeta {
  TensorHeader header;
  uint64_t sequence = 0;  // arrival order within the run, from 0
};

// What Commit did.
enum class CommitKind {
  kStored,          // new tensor
  kAlreadyPresent,  // identical header (dtype, shape, length, crc32c,
                    // placement) was stored already; nothing changed
                    // (idempotent resend)
  kReplaced,        // run allows overwrite; the old tensor was replaced
};

struct CommitResult {
  CommitKind kind = CommitKind::kStored;
  uint64_t sequence = 0;  // of the visible tensor (the old one if present)
  // kReplaced: byte_length of the tensor that was replaced (its bytes are
  // freed); 0 otherwise. Lets callers keep byte counts (server/quota_ledger.h).
  uint64_t replaced_bytes = 0;
};

// Receives one tensor's bytes in order. Not thread-safe.
class TensorWriter {
 public:
  virtual ~TensorWriter() = default;

  // Appends the next bytes. InvalidArgument (naming the address, the
  // declared length and the offset) when they would run past byte_length.
  virtual absl::Status Append(absl::Span<const uint8_t> data) = 0;

  // Verifies that exactly byte_length bytes arrived and that their crc32c
  // equals the header's (InvalidArgument naming both values otherwise), then
  // publishes the tensor atomically and durably. Checks the address again at
  // commit time (AlreadyExists / FailedPrecondition / NotFound if the run was
  // sealed or deleted meanwhile). May be called once.
  virtual absl::StatusOr<CommitResult> Commit() = 0;
};

// Stored bytes mapped in place (TensorReader::Map); the mapping lives as
// long as this object, independently of the reader that made it.
class MappedBytes {
 public:
  virtual ~MappedBytes() = default;
  virtual absl::Span<const uint8_t> bytes() const = 0;
};

// Reads one stored tensor. Not thread-safe; open one per thread.
class TensorReader {
 public:
  virtual ~TensorReader() = default;

  virtual const TensorMeta& meta() const = 0;

  // Copies bytes [offset, offset + dst.size()) of the tensor into dst.
  // OutOfRange when the range passes byte_length; DataLoss when a stored
  // chunk is missing or has the wrong size.
  virtual absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) = 0;

  // Zero-copy alternative to Read, for stores that keep a tensor's bytes
  // in a file (RocksDB segment files): bytes [offset, offset + size),
  // verified as Read verifies them, mapped in place. Unimplemented where
  // the store cannot (callers then Read); OutOfRange and DataLoss as Read.
  virtual absl::StatusOr<std::unique_ptr<MappedBytes>> Map(uint64_t /*offset*/,
                                                           uint64_t /*size*/) {
    return absl::UnimplementedError("this store reads tensors by copy only");
  }
};

// "stored", "already_present", "replaced": how logs, metrics labels and
// audit details name a commit's outcome.
std::string_view CommitKindName(CommitKind kind);

// A stored comparison report.
struct StoredReport {
  std::string id;  // "rpt-" + 16 hex digits, assigned by the server
  std::string ref;
  std::string cand;
  std::string policy;
  std::string backend;
  bool passed = false;
  absl::Time created = absl::UnixEpoch();
  // Summary counts and the first failure, for listings.
  uint64_t tensors = 0, passed_tensors = 0, warned = 0, failed = 0,
           missing_in_ref = 0, missing_in_cand = 0;
  std::optional<TensorAddress> first_failure;
  // Lowercase hex SHA-256 of the policy the report was computed under
  // (server/review_ops.h PolicySpecHash); empty for reports stored before
  // policy hashes existed.
  std::string policy_hash;
  // Renderings by format name ("json", "text", "junit", "markdown", "html";
  // reports stored before the html format existed lack "html").
  std::map<std::string, std::string> renderings;
};

// What Store::Backup wrote.
struct BackupInfo {
  std::string dir;        // the backup's directory, as given
  uint64_t files = 0;     // files in it
  uint64_t bytes = 0;     // their total size (hard-linked files count too)
  uint64_t sequence = 0;  // the engine's sequence number the copy holds
};

// What Store::Compact did: bytes of the store's files before and after.
struct CompactInfo {
  uint64_t bytes_before = 0;
  uint64_t bytes_after = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // --- runs ---------------------------------------------------------------
  // AlreadyExists when the name is taken. Sets created (when zero), state
  // OPEN and zero counts.
  virtual absl::Status CreateRun(const RunInfo& run) = 0;
  virtual absl::StatusOr<RunInfo> GetRun(std::string_view name) = 0;
  // Runs whose name starts with prefix, sorted by name.
  virtual absl::StatusOr<std::vector<RunInfo>> ListRuns(
      std::string_view prefix) = 0;
  // OPEN -> kSealed or kAborted; FailedPrecondition when not OPEN.
  virtual absl::StatusOr<RunInfo> SealRun(std::string_view name,
                                          RunState final_state) = 0;
  // Removes the run and every tensor under it; returns the tensor count.
  virtual absl::StatusOr<uint64_t> DeleteRun(std::string_view name) = 0;
  // Sets or clears the run's reference flag in any state; returns the run.
  virtual absl::StatusOr<RunInfo> SetRunReference(std::string_view name,
                                                  bool reference) = 0;

  // --- tensors ------------------------------------------------------------
  // Starts receiving a tensor into an OPEN run. Fails early (before any byte
  // is sent) with NotFound / FailedPrecondition, and with AlreadyExists when
  // the run has no overwrite and a tensor with a different header is stored
  // at the address. The header must be self-consistent (the server checks
  // it; the store re-checks byte_length against dtype and shape, the rank
  // against kMaxRank and the placement against the shape: InvalidArgument).
  virtual absl::StatusOr<std::unique_ptr<TensorWriter>> BeginTensor(
      std::string_view run, const TensorHeader& header) = 0;
  // Visible tensors of a run in sequence order; `checkpoint` empty = all.
  virtual absl::StatusOr<std::vector<TensorMeta>> ListTensors(
      std::string_view run, std::string_view checkpoint = {}) = 0;
  virtual absl::StatusOr<std::unique_ptr<TensorReader>> OpenTensor(
      std::string_view run, const TensorAddress& address) = 0;

  // --- reports ------------------------------------------------------------
  // AlreadyExists when the id is taken.
  virtual absl::Status PutReport(const StoredReport& report) = 0;
  virtual absl::StatusOr<StoredReport> GetReport(std::string_view id) = 0;
  // Newest first, at most `limit`; `run` non-empty keeps reports whose ref
  // or cand is that run. Renderings are left empty.
  virtual absl::StatusOr<std::vector<StoredReport>> ListReports(
      std::string_view run, size_t limit) = 0;

  // --- auth records -------------------------------------------------------
  // Small opaque values of the authentication layer (server/auth: token
  // records keyed by their hash), apart from runs and reports. Keys are
  // non-empty and hold no NUL byte (InvalidArgument otherwise). Put creates
  // or replaces, durably (RocksDB: synced) when it returns OK.
  virtual absl::Status PutAuthRecord(std::string_view key,
                                     std::string_view value) = 0;
  // Creates the record only if the key is free, atomically: AlreadyExists
  // when it is taken (by this or any other process sharing the store). The
  // audit log appends its hash chain with it, so that replicas on one
  // store never fork the chain.
  virtual absl::Status InsertAuthRecord(std::string_view key,
                                        std::string_view value) = 0;
  // NotFound (naming the key's length, never the key) when absent.
  virtual absl::StatusOr<std::string> GetAuthRecord(std::string_view key) = 0;
  // (key, value) pairs whose key starts with prefix, sorted by key.
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
  ListAuthRecords(std::string_view prefix) = 0;

  // --- maintenance --------------------------------------------------------
  // Writes a copy of the whole store (runs, tensors, reports, auth records)
  // as it stood at one instant into `dir`, while the store keeps serving.
  // `dir` must not exist; its parent must. Every tensor whose Commit
  // returned before the call is in the copy; one still being written is not
  // (its partial bytes are reclaimed when the copy is opened). Immutable
  // files are hard-linked when `dir` is on the store's filesystem (no extra
  // space), copied otherwise. The copy opens as a store of its own
  // (OpenRocksDbStore). AlreadyExists when `dir` exists; Unimplemented for
  // a store without files (memory).
  virtual absl::StatusOr<BackupInfo> Backup(const std::string& dir) {
    return absl::UnimplementedError(
        "this store keeps nothing on disk; no backup of it can be written to " + dir);
  }
  // Rewrites the store's files so that space held by deleted runs and
  // replaced tensors is given back to the filesystem. Runs while the store
  // serves (slower meanwhile); blocks until done. Unimplemented for memory.
  virtual absl::StatusOr<CompactInfo> Compact() {
    return absl::UnimplementedError("this store keeps nothing on disk; there is nothing to compact");
  }

  // How many reads of different tensors are worth running at once: 1 for a
  // store on local files or memory; more for one whose every read is a
  // network round trip (postgres+s3's ranged GETs), so that readers hide
  // the latency (server/store_compare.h reads a batch's tensors so).
  virtual int read_parallelism() const { return 1; }

  // --- work sharing -------------------------------------------------------
  // The queue through which processes sharing this store split work
  // (storage/work_queue.h); nullptr for a store only one process uses
  // (memory, RocksDB). Owned by the store.
  virtual WorkQueue* work_queue() { return nullptr; }
};

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_STORE_H_

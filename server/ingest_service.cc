#include "server/ingest_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "common/tensor.h"
#include "common/visible.h"
#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/ingest_budget.h"
#include "server/metrics/server_metrics.h"
#include "server/proto_convert.h"
#include "server/quota_ledger.h"
#include "server/review_ops.h"
#include "server/task_queue.h"
#include "spdlog/spdlog.h"

namespace reprod::server {

// One thread for all Ingest streams. Each tick it ends the streams the
// server has waited on for longer than the idle timeout (a read or an ack
// write outstanding, nothing moving, no commit of theirs running), ends the
// streams that sit between tensors once the server is shutting down, and
// pokes the ingest budget (a resumed stream whose client stalled must not
// leave others parked).
class IdleWatchdog {
 public:
  // Why a stream's on_end is called.
  enum class Reason { kIdle, kShutdown };
  struct Watch {
    // Since when the read outstanding waits (0: none).
    std::atomic<int64_t> waiting_since_ns{0};
    // Since when the ack write outstanding waits (0: none).
    std::atomic<int64_t> write_waiting_since_ns{0};
    std::atomic<bool> between_tensors{true};
    // Budget bytes reserved for the read outstanding; given back by the
    // watchdog when the client keeps the server waiting past the grace.
    std::atomic<uint64_t> reserved{0};
    // Called on the watchdog's thread with its lock held until it claims
    // the end (returns true): it must not block, nor Add or Remove watches.
    // A stream that declines (it is busy) is looked at again next tick.
    absl::AnyInvocable<bool(Reason)> on_end;
    bool ended = false;  // guarded by the watchdog's lock
  };

  // `timeout` zero: streams never idle out.
  IdleWatchdog(absl::Duration timeout, IngestBudget* budget, const RunEvents* events)
      : timeout_(timeout), budget_(budget), events_(events) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~IdleWatchdog() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  IdleWatchdog(const IdleWatchdog&) = delete;
  IdleWatchdog& operator=(const IdleWatchdog&) = delete;

  void Add(Watch* w) {
    absl::MutexLock lock(&mu_);
    watches_.insert(w);
  }
  void Remove(Watch* w) {
    absl::MutexLock lock(&mu_);
    watches_.erase(w);
  }
  absl::Duration timeout() const { return timeout_; }

 private:
  void Loop() {
    const absl::Duration tick =
        timeout_ > absl::ZeroDuration()
            ? std::clamp(timeout_ / 4, absl::Milliseconds(20), absl::Milliseconds(200))
            : absl::Milliseconds(200);
    const int64_t limit_ns = absl::ToInt64Nanoseconds(timeout_);
    const int64_t grace_ns = absl::ToInt64Nanoseconds(kReservationGrace);
    for (;;) {
      uint64_t expired = 0;
      {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithTimeout(absl::Condition(&stop_), tick)) return;
        const int64_t now = absl::GetCurrentTimeNanos();
        const bool shutting_down = events_->shutting_down();
        for (Watch* w : watches_) {
          const int64_t read_since = w->waiting_since_ns.load();
          const int64_t write_since = w->write_waiting_since_ns.load();
          if (w->ended || (read_since == 0 && write_since == 0)) continue;
          if (read_since != 0 && now - read_since >= grace_ns) {
            expired += w->reserved.exchange(0);
          }
          // The older of the two waits.
          const int64_t since = read_since == 0    ? write_since
                                : write_since == 0 ? read_since
                                                   : std::min(read_since, write_since);
          if (limit_ns > 0 && now - since >= limit_ns) {
            w->ended = w->on_end(Reason::kIdle);
          } else if (shutting_down && w->between_tensors) {
            w->ended = w->on_end(Reason::kShutdown);
          }
        }
      }
      budget_->Release(expired);  // pokes parked streams too
    }
  }

  // How long a reservation waits for its message (see IngestBudget).
  static constexpr absl::Duration kReservationGrace = absl::Seconds(1);

  const absl::Duration timeout_;
  IngestBudget* const budget_;
  const RunEvents* const events_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::set<Watch*> watches_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

namespace {

absl::Status WithContext(const absl::Status& s, std::string_view run,
                         const storage::TensorAddress& address) {
  return absl::Status(
      s.code(), absl::StrCat("run '", std::string(run), "' tensor ",
                             storage::AddressToString(address), ": ",
                             std::string(s.message())));
}

// --quota-bytes, --namespace-quota-bytes and the token's own quota: reserves
// `header`'s bytes in the ledger until the tensor commits or is dropped
// (RESOURCE_EXHAUSTED when they would pass a limit); an empty reservation
// when the server keeps no ledger.
absl::StatusOr<QuotaLedger::Reservation> CheckQuotas(const ServiceEnv& env,
                                                     const auth::Principal* who,
                                                     std::string_view run,
                                                     const storage::TensorHeader& header) {
  if (env.quota == nullptr) return QuotaLedger::Reservation();
  return env.quota->Reserve(run, who, header.byte_length);
}

// The tensor being received on a stream.
struct InFlight {
  std::string run;
  uint64_t tensor_id = 0;
  storage::TensorHeader header;
  uint64_t received = 0;
  std::unique_ptr<storage::TensorWriter> writer;
  // Its bytes in the quota ledger: committed with the tensor, released when
  // the tensor is dropped.
  QuotaLedger::Reservation quota;
  // When its BeginTensor arrived (reprod_ingest_ack_seconds).
  std::chrono::steady_clock::time_point begun;
};



// What one stream did to one run, for its "push" audit record.
struct PushTally {
  uint64_t stored = 0, already_present = 0, replaced = 0, bytes = 0;

  void Count(storage::CommitKind kind, uint64_t n) {
    if (kind == storage::CommitKind::kStored) ++stored;
    if (kind == storage::CommitKind::kAlreadyPresent) ++already_present;
    if (kind == storage::CommitKind::kReplaced) ++replaced;
    bytes += n;
  }
  std::map<std::string, std::string> Details() const {
    return {{"tensors", absl::StrCat(stored + already_present + replaced)},
            {"stored", absl::StrCat(stored)},
            {"already_present", absl::StrCat(already_present)},
            {"replaced", absl::StrCat(replaced)},
            {"bytes", absl::StrCat(bytes)}};
  }
};

// One Ingest call's state between requests: at most one tensor being
// received. Each request goes through one job: open a tensor from its header
// (BeginTensor), check a chunk against it (CheckChunk), write the chunk
// (WriteChunk); once its last byte is written the tensor is handed over
// (TakeCompleted) and committed with Commit, which may run on another thread
// while the next tensor is received. Every error ends the stream.
//
// Thread-safety: Handle, TakeCompleted, Discard, Finish and last_run are
// used by one thread at a time (the reactor's handling); Commit may run
// concurrently with them; acked, tallies and Where may be called from any
// thread.
class StreamHandler {
 public:
  // `who`: the caller once authenticated with --auth tokens (its quota
  // applies to the tensors it begins); read at each BeginTensor, so it may
  // be filled in after construction; must outlive the handler.
  explicit StreamHandler(const ServiceEnv& env,
                         const std::optional<auth::Principal>* who = nullptr)
      : env_(env), who_(who) {}

  absl::Status Handle(const v1::IngestRequest& request) {
    if (request.has_begin()) return BeginTensor(request.begin());
    if (request.has_chunk()) {
      REPROD_RETURN_IF_ERROR(CheckChunk(request.chunk()));
      return WriteChunk(request.chunk());
    }
    return absl::InvalidArgumentError("IngestRequest with neither begin nor chunk");
  }

  bool between_tensors() const { return current_ == nullptr; }
  // True when `request` is a chunk of the tensor in flight that leaves it
  // incomplete: handling it writes bytes and completes nothing, so the
  // stream may read its next message meanwhile.
  bool KeepsTensorOpen(const v1::IngestRequest& request) const {
    return current_ != nullptr && request.has_chunk() &&
           current_->received + request.chunk().data().size() < current_->header.byte_length;
  }
  // The tensor the last request completed (every byte written), to be
  // committed with Commit; null when it completed none.
  std::unique_ptr<InFlight> TakeCompleted() { return std::move(completed_); }

  // Commits a completed tensor (durable, crc32c verified), counts it, wakes
  // watchers; returns its ack, or the error naming the tensor.
  absl::StatusOr<v1::IngestResponse> Commit(InFlight& tensor) {
    absl::StatusOr<storage::CommitResult> done = tensor.writer->Commit();
    if (!done.ok()) return WithContext(done.status(), tensor.run, tensor.header.address);
    tensor.quota.Commit(*done);
    env_.events->Notify();
    v1::IngestResponse ack;
    ack.set_tensor_id(tensor.tensor_id);
    AddressToProto(tensor.header.address, ack.mutable_address());
    ack.set_kind(AckKindToProto(done->kind));
    ack.set_sequence(done->sequence);
    {
      absl::MutexLock lock(&tally_mu_);
      tallies_[tensor.run].Count(done->kind, tensor.header.byte_length);
      ++acked_;
    }
    if (env_.metrics != nullptr) {
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - tensor.begun;
      env_.metrics->TensorAcked(storage::CommitKindName(done->kind), tensor.header.byte_length,
                                took.count());
    }
    return ack;
  }
  // What to reserve in the ingest budget for the next request. Once the
  // client has sent a chunk of the tensor in flight, the next chunk's
  // bound; before that (a new stream, between tensors, right after a
  // BeginTensor) a little: thousands of clients that connect and stall
  // must not fill the budget with reservations and park the active ones.
  // Whatever arrives is charged at its real size.
  uint64_t NextRequestReservation() const {
    constexpr uint64_t kUnprovenBytes = 4 << 10;
    constexpr uint64_t kEnvelopeBytes = 64;
    if (!current_ || current_->received == 0) return kUnprovenBytes;
    return std::min<uint64_t>(env_.limits.max_chunk_bytes,
                              current_->header.byte_length - current_->received) +
           kEnvelopeBytes;
  }
  // Drops the tensor in flight and a completed one not taken (their
  // uploads are abandoned).
  void Discard() {
    current_.reset();
    completed_.reset();
  }
  uint64_t acked() const {
    absl::MutexLock lock(&tally_mu_);
    return acked_;
  }
  // Per run: the tensors acked on this stream (runs a BeginTensor named).
  std::map<std::string, PushTally> tallies() const {
    absl::MutexLock lock(&tally_mu_);
    return tallies_;
  }
  // The run of the latest BeginTensor (empty before the first).
  const std::string& last_run() const { return last_run_; }
  // Where the stream stands, for messages: the tensor in flight with its
  // progress, or the last run between tensors.
  std::string Where() const {
    if (current_) {
      return absl::StrCat("run '", current_->run, "' tensor ",
                          storage::AddressToString(current_->header.address), " after ",
                          current_->received, " of ", current_->header.byte_length, " bytes");
    }
    if (last_run_.empty()) return "before its first tensor";
    return absl::StrCat("run '", last_run_, "' between tensors (", acked(), " acked)");
  }

  // The status of a stream whose client closed it (or went away): OK between
  // tensors; otherwise the tensor in flight is discarded.
  grpc::Status Finish(bool cancelled) const {
    if (!current_) return grpc::Status::OK;
    if (cancelled) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
    }
    return wire::ToGrpcStatus(InCurrent(absl::InvalidArgumentError(absl::StrCat(
        "stream closed after ", current_->received, " of ", current_->header.byte_length,
        " bytes; the tensor was discarded"))));
  }

 private:
  // Validates the header and opens a writer for it; commits at once when the
  // tensor is empty.
  absl::Status BeginTensor(const v1::BeginTensor& begin) {
    if (current_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BeginTensor for ",
          VisibleName(storage::AddressToString(AddressFromProto(begin.header().address()))),
          " while tensor ", storage::AddressToString(current_->header.address), " of run '",
          current_->run, "' is incomplete (", current_->received, " of ",
          current_->header.byte_length, " bytes received)"));
    }
    last_run_ = begin.run();
    const auto begun = std::chrono::steady_clock::now();
    {
      absl::MutexLock lock(&tally_mu_);
      tallies_[begin.run()];  // recorded even when nothing is acked
    }
    absl::StatusOr<storage::TensorHeader> header = ValidateHeader(begin, env_.limits);
    if (!header.ok()) return header.status();
    absl::StatusOr<QuotaLedger::Reservation> quota = CheckQuotas(
        env_, who_ != nullptr && who_->has_value() ? &**who_ : nullptr, begin.run(), *header);
    if (!quota.ok()) return WithContext(quota.status(), begin.run(), header->address);
    absl::StatusOr<std::unique_ptr<storage::TensorWriter>> writer =
        env_.store->BeginTensor(begin.run(), *header);
    if (writer.status().code() == absl::StatusCode::kNotFound) {
      // An address naming no run is a bad header, like a bad key.
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown run '", begin.run(), "' in the header of ",
          storage::AddressToString(header->address),
          "; create the run first (RunService.CreateRun; reprodctl push creates it)"));
    }
    if (!writer.ok()) return WithContext(writer.status(), begin.run(), header->address);
    current_ = std::make_unique<InFlight>();
    current_->run = begin.run();
    current_->tensor_id = begin.tensor_id();
    current_->header = *std::move(header);
    current_->writer = *std::move(writer);
    current_->quota = *std::move(quota);
    current_->begun = begun;
    if (current_->header.byte_length == 0) completed_ = std::move(current_);
    return absl::OkStatus();
  }

  // A chunk must follow a BeginTensor, continue at the next offset, stay
  // under --max-chunk-bytes and not run past the declared size.
  absl::Status CheckChunk(const v1::TensorChunk& chunk) const {
    if (!current_) {
      return absl::InvalidArgumentError("TensorChunk without a BeginTensor before it");
    }
    if (chunk.offset() != current_->received) {
      return InCurrent(absl::InvalidArgumentError(
          absl::StrCat("chunk at offset ", chunk.offset(), ", expected offset ",
                       current_->received, " (chunks must arrive in order)")));
    }
    if (chunk.data().size() > env_.limits.max_chunk_bytes) {
      return InCurrent(absl::InvalidArgumentError(
          absl::StrCat("chunk of ", chunk.data().size(), " bytes is over the limit ",
                       env_.limits.max_chunk_bytes, " (--max-chunk-bytes)")));
    }
    if (chunk.data().size() > current_->header.byte_length - current_->received) {
      return InCurrent(absl::InvalidArgumentError(
          absl::StrCat("chunk [", chunk.offset(), ", ", chunk.offset() + chunk.data().size(),
                       ") runs past the declared size ", current_->header.byte_length)));
    }
    return absl::OkStatus();
  }

  // Appends a checked chunk; commits after the last byte.
  absl::Status WriteChunk(const v1::TensorChunk& chunk) {
    const std::string& data = chunk.data();
    if (absl::Status s = current_->writer->Append(absl::MakeConstSpan(
            reinterpret_cast<const uint8_t*>(data.data()), data.size()));
        !s.ok()) {
      return InCurrent(s);
    }
    current_->received += data.size();
    if (current_->received == current_->header.byte_length) completed_ = std::move(current_);
    return absl::OkStatus();
  }

  // `s` with the run and address of the tensor in flight.
  absl::Status InCurrent(const absl::Status& s) const {
    return WithContext(s, current_->run, current_->header.address);
  }

  const ServiceEnv& env_;
  const std::optional<auth::Principal>* who_;
  std::unique_ptr<InFlight> current_;    // being received
  std::unique_ptr<InFlight> completed_;  // every byte written, not taken yet
  mutable absl::Mutex tally_mu_;
  uint64_t acked_ ABSL_GUARDED_BY(tally_mu_) = 0;
  std::map<std::string, PushTally> tallies_ ABSL_GUARDED_BY(tally_mu_);
  std::string last_run_;
};

// One "push" record per run the stream named: OK, or `end` for the run the
// stream failed on (a refusal by the gate is recorded by the gate instead).
absl::Status RecordPushes(const ServiceEnv& env, const auth::Principal& who,
                          const std::map<std::string, PushTally>& tallies,
                          std::string_view last_run, const absl::Status& end,
                          bool refused_by_gate) {
  absl::Status first_error = absl::OkStatus();
  for (const auto& [run, tally] : tallies) {
    const bool failed_here = !end.ok() && run == last_run;
    if (failed_here && refused_by_gate) continue;
    absl::Status result = failed_here ? end : absl::OkStatus();
    if (!failed_here && tally.stored + tally.already_present + tally.replaced == 0) continue;
    absl::Status s = Audited(env, who, "push", run, result, tally.Details());
    // Only an audit failure of a successful push is the stream's error.
    if (!failed_here && !s.ok() && first_error.ok()) first_error = s;
  }
  return first_error;
}

}  // namespace

absl::StatusOr<storage::TensorHeader> ValidateHeader(
    const v1::BeginTensor& begin, const ServerLimits& limits) {
  if (absl::Status s = ValidateRunName(begin.run()); !s.ok()) return s;
  if (!begin.has_header()) {
    return absl::InvalidArgumentError(
        absl::StrCat("run '", begin.run(), "': BeginTensor without header"));
  }
  const v1::TensorHeader& h = begin.header();
  storage::TensorAddress address = AddressFromProto(h.address());
  auto bad = [&](const absl::Status& s) {
    return WithContext(s, begin.run(), address);
  };
  // A refused name is shown by the names.h message itself (escaped and
  // abbreviated), never raw in a prefix.
  auto bad_name = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("run '", begin.run(), "': ", s.message()));
  };
  if (absl::Status s = ValidateCheckpointName(address.checkpoint); !s.ok()) {
    return bad_name(s);
  }
  if (absl::Status s = ValidateTensorKey(address.key); !s.ok()) return bad_name(s);
  absl::StatusOr<storage::TensorHeader> header = HeaderFromProto(h);
  if (!header.ok()) {
    // HeaderFromProto's message starts with the tensor's address.
    return absl::Status(header.status().code(),
                        absl::StrCat("run '", begin.run(), "' tensor ",
                                     std::string(header.status().message())));
  }
  for (size_t i = 0; i < header->shape.size(); ++i) {
    if (header->shape[i] < 0) {
      return bad(absl::InvalidArgumentError(
          absl::StrCat("dimension ", i, " is negative (", header->shape[i],
                       ") in shape ", ShapeToString(header->shape))));
    }
  }
  absl::StatusOr<int64_t> count =
      CheckedNumElements(header->shape, header->dtype);
  if (!count.ok()) return bad(count.status());
  const uint64_t expected =
      static_cast<uint64_t>(*count) * DTypeSize(header->dtype);
  if (expected != header->byte_length) {
    return bad(absl::InvalidArgumentError(absl::StrCat(
        "byte_length ", header->byte_length, " does not match dtype ",
        std::string(DTypeName(header->dtype)), " x shape ",
        ShapeToString(header->shape), " = ", expected, " bytes")));
  }
  if (header->byte_length > limits.max_tensor_bytes) {
    return bad(absl::ResourceExhaustedError(
        absl::StrCat(header->byte_length, " bytes is over the server's limit ",
                     limits.max_tensor_bytes, " (--max-tensor-bytes)")));
  }
  return header;
}

// What every Ingest stream shares: limits, the byte budget, the workers
// that do the blocking part and the watchdog.
struct IngestShared {
  IngestShared(const ServiceEnv& e, uint64_t budget_bytes, int workers_n)
      : env(e),
        budget(budget_bytes),
        workers(workers_n),
        committers(workers_n),
        closers(2),
        watchdog(e.limits.stream_idle_timeout, &budget, e.events) {}

  ServiceEnv env;
  IngestBudget budget;
  TaskQueue workers;     // the data path: store writes
  TaskQueue committers;  // commits (one per stream at a time)
  TaskQueue closers;  // ends of streams: audit records, Finish
  IdleWatchdog watchdog;
  std::atomic<int> open_streams{0};
  absl::Mutex token_mu;
  // Open streams per token id (--auth tokens), entries removed at zero.
  std::map<std::string, int> token_streams ABSL_GUARDED_BY(token_mu);
};

namespace {

// One Ingest call, driven by gRPC's callback API: no thread is held while
// the stream waits on its client. Reads are asked for one at a time, and
// only while the ingest budget has room (otherwise the stream parks,
// holding no message); each message received is handled on a worker
// (StreamHandler: store writes), and then the next read is asked for. A
// chunk that leaves its tensor incomplete is handled while the next message
// is read (read-ahead of one message: the wire is not idle while the store
// copies), and whatever completes meanwhile (that read, an end) waits until
// the handling is done.
//
// A tensor whose last byte was written is committed on a committer thread
// (CommitOne: the store's commit, e.g. the last parts going up to S3 and a
// PostgreSQL transaction, or RocksDB's fsync) while the stream goes on
// receiving the next tensor; its ack is written when the commit is done
// (QueueAck: one write outstanding, the others queued, in commit order).
// A stream has at most one commit running: a tensor completed while the one
// before is still committing waits for it (so commits, and acks, keep the
// stream's order, and a stream holds at most two tensors' store buffers).
//
// The stream ends once, by End: the client's half-close or error, the
// watchdog (idle / shutdown), an error of the handler or a failed commit.
// A client's half-close or a shutdown between tensors ends it only once
// every commit is done and its ack written (EndAfterAcks); every end waits
// for the commit running, if any (Conclude is posted by whoever sees both
// the end and no commit). Phases move under mu_, so the watchdog and a
// completing read cannot both act on the stream.
class IngestReactor final
    : public grpc::ServerBidiReactor<v1::IngestRequest, v1::IngestResponse> {
 public:
  IngestReactor(IngestShared* shared, grpc::CallbackServerContext* context)
      : shared_(shared),
        context_(context),
        guard_(shared->env.events),
        handler_(shared->env, &who_) {
    ++shared_->open_streams;
    if (shared_->env.metrics != nullptr) shared_->env.metrics->StreamOpened();
    if (grpc::Status refused = Admit(); !refused.ok()) {
      {
        absl::MutexLock lock(&mu_);
        ended_ = true;
      }
      Finish(refused);
      return;
    }
    watch_.on_end = [this](IdleWatchdog::Reason why) { return OnWatchdog(why); };
    shared_->watchdog.Add(&watch_);
    ReadNext();
  }

  void OnReadDone(bool ok) override {
    watch_.waiting_since_ns = 0;
    // The message's real size replaces the reservation (if the watchdog
    // has not given that back already).
    const uint64_t reserved = watch_.reserved.exchange(0);
    bool ended;
    {
      absl::MutexLock lock(&mu_);
      ended = ended_ || ending_;  // the watchdog or a failed chunk ended it
      if (!ended) phase_ = Phase::kWorking;
    }
    if (ok && !ended) {
      charged_ = request_->ByteSizeLong();
      shared_->budget.Charge(charged_);
    }
    shared_->budget.Release(reserved);
    if (ended) return;
    {
      absl::MutexLock lock(&mu_);
      if (handling_) {  // the message before it is still being handled
        deferred_read_ = ok;
        return;
      }
    }
    shared_->workers.Post([this, ok] { Work(ok); });
  }

  // An ack is written: the next queued one goes out, or a stream waiting
  // for its acks ends.
  void OnWriteDone(bool ok) override {
    watch_.write_waiting_since_ns = 0;
    const v1::IngestResponse* next = nullptr;
    std::optional<grpc::Status> drained;
    {
      absl::MutexLock lock(&mu_);
      acks_.pop_front();
      if (ended_ || !ok) {
        writing_ = false;
        if (ended_) return;  // the watchdog or an error ended it meanwhile
      } else if (!acks_.empty()) {
        next = &acks_.front();
        ++starting_ops_;
      } else {
        writing_ = false;
        drained = TakeDrainedEnd();
      }
    }
    if (!ok) {
      End(wire::ToGrpcStatus(absl::CancelledError("client went away before the ack")));
      return;
    }
    // The client read an ack: a read it keeps waiting starts its idle clock
    // afresh (it may have been waiting for that ack).
    RestartReadClock();
    if (next != nullptr) {
      watch_.write_waiting_since_ns = absl::GetCurrentTimeNanos();
      StartWrite(next);
      OpStarted();  // last: the stream may end from here on
      return;
    }
    if (drained.has_value()) ConcludeWhenCommitted(*std::move(drained));
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;  // a parked stream sees it when resumed
  }

  void OnDone() override {
    shared_->watchdog.Remove(&watch_);
    if (!token_id_.empty()) {
      absl::MutexLock lock(&shared_->token_mu);
      if (--shared_->token_streams[token_id_] == 0) shared_->token_streams.erase(token_id_);
    }
    --shared_->open_streams;
    if (shared_->env.metrics != nullptr) shared_->env.metrics->StreamClosed();
    IngestBudget& budget = shared_->budget;
    delete this;
    budget.Poke();
  }

 private:
  enum class Phase { kParked, kReading, kWorking };

  // The caps and the caller's token; a refusal is the stream's status.
  grpc::Status Admit() {
    const ServiceEnv& env = shared_->env;
    if (env.events->shutting_down()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server shutting down; retry after the restart");
    }
    const int open = shared_->open_streams.load();
    if (env.limits.max_streams > 0 && open > env.limits.max_streams) {
      spdlog::warn("refused an ingest stream from {}: {} open, limit {} (--max-streams)",
                   context_->peer(), open - 1, env.limits.max_streams);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the server has ", open - 1, " ingest streams open, its "
                                       "limit (--max-streams ", env.limits.max_streams,
                                       "); retry when others have finished"));
    }
    // --auth tokens: the caller is authenticated once, and each
    // BeginTensor's run is authorized on its own (the table's per-message
    // entry).
    if (env.auth == nullptr) return grpc::Status::OK;
    absl::StatusOr<auth::Principal> principal = env.auth->Authenticate(*context_);
    if (!principal.ok()) {
      spdlog::warn("refused {}: {}", kRouteIngest, std::string(principal.status().message()));
      return wire::ToGrpcStatus(principal.status());
    }
    who_ = *std::move(principal);
    const int per_token = env.limits.max_streams_per_token;
    if (per_token <= 0) return grpc::Status::OK;
    absl::MutexLock lock(&shared_->token_mu);
    int& n = shared_->token_streams[who_->id];
    if (n >= per_token) {
      spdlog::warn("refused an ingest stream of token '{}': {} open, limit {} "
                   "(--max-streams-per-token)", who_->label, n, per_token);
      const grpc::Status refused(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("token '", who_->label, "' has ", n,
                       " ingest streams open, its limit (--max-streams-per-token ", per_token,
                       "); retry when they have finished"));
      if (n == 0) shared_->token_streams.erase(who_->id);
      return refused;
    }
    ++n;
    token_id_ = who_->id;
    return grpc::Status::OK;
  }

  // Asks for the next message once the budget has room for it; between
  // tensors of a server shutting down, ends the stream instead, so the
  // client resends the rest elsewhere or after the restart.
  void ReadNext() {
    if (handler_.between_tensors() && shared_->env.events->shutting_down()) {
      EndAfterAcks(ShuttingDown());
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      phase_ = Phase::kParked;
    }
    watch_.between_tensors = handler_.between_tensors();
    const uint64_t bound = handler_.NextRequestReservation();
    if (shared_->budget.Acquire(bound, [this, bound] { StartReading(bound); })) {
      StartReading(bound);
    }
  }

  // Reads with `reserved` bytes of the budget reserved for the message.
  void StartReading(uint64_t reserved) {
    std::optional<grpc::Status> cancelled_end;
    {
      absl::MutexLock lock(&mu_);
      if (ended_ || ending_ || cancelled_) {
        // Give the reservation back on a worker: Release may resume other
        // parked streams, which must not run nested inside this resume,
        // nor under this lock.
        shared_->workers.Post([budget = &shared_->budget, reserved] { budget->Release(reserved); });
      }
      if (ended_ || ending_) return;
      if (cancelled_ && handling_) {
        // Cancelled while parked behind a chunk being handled: WorkAhead
        // takes it up as a failed read once the handler is free.
        phase_ = Phase::kWorking;
        deferred_read_ = false;
        return;
      }
      if (cancelled_) {
        // Cancelled while parked: no read will complete to end it.
        phase_ = Phase::kWorking;
        ended_ = true;
        cancelled_end = Finished(/*cancelled=*/true);
      } else {
        phase_ = Phase::kReading;
        ++starting_ops_;
      }
    }
    if (cancelled_end.has_value()) {
      ConcludeWhenCommitted(*std::move(cancelled_end));
      return;
    }
    request_ = std::make_unique<v1::IngestRequest>();
    watch_.reserved = reserved;
    watch_.waiting_since_ns = absl::GetCurrentTimeNanos();
    StartRead(request_.get());
    OpStarted();  // last: the stream may end from here on
  }

  // A read or write decided on under mu_ (++starting_ops_) has been started:
  // Conclude, which waits for that, may Finish now.
  void OpStarted() {
    absl::MutexLock lock(&mu_);
    --starting_ops_;
  }

  // On a worker: handles the message read (or the end of the client's
  // side), starts the commit of a tensor it completed, then reads on or
  // ends the stream. Marked as handling, so an end arriving meanwhile (a
  // failed commit) waits for it.
  void Work(bool ok) {
    if (!ok) {
      const grpc::Status end = Finished(context_->IsCancelled());
      if (end.ok()) {
        EndAfterAcks(end);
      } else {
        End(end);
      }
      return;
    }
    if (handler_.KeepsTensorOpen(*request_)) {
      WorkAhead();
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      handling_ = true;
    }
    const ServiceEnv& env = shared_->env;
    absl::Status status = who_ && request_->has_begin()
                              ? env.auth->CheckMessage(*who_, kRouteIngest, *request_)
                              : absl::OkStatus();
    refused_by_gate_ = !status.ok();
    if (status.ok()) status = handler_.Handle(*request_);
    request_.reset();  // parked streams hold no message
    shared_->budget.Release(std::exchange(charged_, 0));
    if (status.ok()) {
      if (std::unique_ptr<InFlight> done = handler_.TakeCompleted()) StartCommit(std::move(done));
    }
    std::optional<grpc::Status> end;
    {
      absl::MutexLock lock(&mu_);
      handling_ = false;
      end = std::exchange(deferred_end_, std::nullopt);
    }
    if (!status.ok()) {
      if (status.code() != absl::StatusCode::kCancelled) {
        spdlog::warn("ingest from {}: {}", context_->peer(), status.ToString());
      }
      End(wire::ToGrpcStatus(status));
      return;
    }
    if (end.has_value()) {
      End(*std::move(end));
      return;
    }
    ReadNext();
  }

  // On a worker, while handling: commits `tensor` on a committer thread
  // once the stream's commit before it is done. A stream ending meanwhile
  // drops it (its upload is abandoned; the client resends it).
  void StartCommit(std::unique_ptr<InFlight> tensor) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&commit_idle_));
      if (ended_ || deferred_end_.has_value()) return;
      commit_idle_ = false;
    }
    shared_->committers.Post(
        [this, tensor = std::move(tensor)]() mutable { CommitOne(std::move(tensor)); });
  }

  // On a committer thread: commits `tensor`, queues its ack or ends the
  // stream with the error, and then marks the stream's commit done; an end
  // that waited for it is concluded (after that `this` is not touched: the
  // end may delete it).
  void CommitOne(std::unique_ptr<InFlight> tensor) {
    absl::StatusOr<v1::IngestResponse> ack = handler_.Commit(*tensor);
    tensor.reset();  // a failed tensor's upload is abandoned before the error goes out
    if (ack.ok()) {
      QueueAck(*std::move(ack));
    } else {
      if (ack.status().code() != absl::StatusCode::kCancelled) {
        spdlog::warn("ingest from {}: {}", context_->peer(), ack.status().ToString());
      }
      End(wire::ToGrpcStatus(ack.status()));
    }
    RestartReadClock();  // the client may have been waiting for this ack
    std::optional<grpc::Status> conclude;
    TaskQueue* closers = &shared_->closers;
    {
      absl::MutexLock lock(&mu_);
      commit_idle_ = true;
      conclude = std::exchange(pending_conclude_, std::nullopt);
      if (!conclude.has_value()) conclude = TakeDrainedEnd();
    }
    if (conclude.has_value()) {
      closers->Post([this, status = *std::move(conclude)] { Conclude(status); });
    }
  }

  // The end EndAfterAcks left, claimed (ended_ set) once the commit is done
  // and every ack written; while handling, it is left to the handling.
  std::optional<grpc::Status> TakeDrainedEnd() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ended_ || !commit_idle_ || writing_ || !drain_end_.has_value()) return std::nullopt;
    if (handling_) {
      if (!deferred_end_.has_value()) deferred_end_ = std::exchange(drain_end_, std::nullopt);
      return std::nullopt;
    }
    ended_ = true;
    return std::exchange(drain_end_, std::nullopt);
  }

  // Writes `ack` now, or after the acks queued before it.
  void QueueAck(v1::IngestResponse ack) {
    const v1::IngestResponse* write = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return;  // ended meanwhile: the client resends it
      acks_.push_back(std::move(ack));
      if (!writing_) {
        writing_ = true;
        write = &acks_.back();
        ++starting_ops_;
      }
    }
    if (write != nullptr) {
      watch_.write_waiting_since_ns = absl::GetCurrentTimeNanos();
      StartWrite(write);
      OpStarted();
    }
  }

  // A read outstanding starts its idle clock afresh.
  void RestartReadClock() {
    int64_t since = watch_.waiting_since_ns.load();
    if (since != 0) {
      watch_.waiting_since_ns.compare_exchange_strong(since, absl::GetCurrentTimeNanos());
    }
  }

  // Ends the stream with `status` once its commit is done and every ack is
  // written (a client's half-close, a shutdown between tensors).
  void EndAfterAcks(grpc::Status status) {
    std::optional<grpc::Status> drained;
    {
      absl::MutexLock lock(&mu_);
      if (!drain_end_.has_value()) drain_end_ = std::move(status);
      drained = TakeDrainedEnd();  // now, when nothing is left to wait for
    }
    if (drained.has_value()) ConcludeWhenCommitted(*std::move(drained));
  }

  // Work on a chunk that leaves its tensor open: asks for the next message
  // first, then writes this one. A read completing or an end arriving
  // meanwhile is deferred (OnReadDone, End, OnWatchdog see handling_) and
  // taken up here afterwards, so the handler is only ever used by one
  // thread and never discarded while in use.
  void WorkAhead() {
    std::unique_ptr<v1::IngestRequest> chunk = std::move(request_);
    const uint64_t charge = std::exchange(charged_, 0);
    {
      absl::MutexLock lock(&mu_);
      handling_ = true;
    }
    ReadNext();
    absl::Status status = handler_.Handle(*chunk);
    chunk.reset();
    shared_->budget.Release(charge);
    std::optional<bool> read;
    std::optional<grpc::Status> end;
    {
      absl::MutexLock lock(&mu_);
      handling_ = false;
      read = std::exchange(deferred_read_, std::nullopt);
      end = std::exchange(deferred_end_, std::nullopt);
      // Ending: a read still outstanding must not start Work (OnReadDone
      // sees ending_); Finish cancels it.
      if (!status.ok() || end.has_value()) ending_ = true;
    }
    if (!status.ok() || end.has_value()) {
      if (read.has_value()) {  // the message read meanwhile is dropped
        request_.reset();
        shared_->budget.Release(std::exchange(charged_, 0));
      }
      if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
        spdlog::warn("ingest from {}: {}", context_->peer(), status.ToString());
      }
      End(status.ok() ? *std::move(end) : wire::ToGrpcStatus(status));
      return;
    }
    if (read.has_value()) shared_->workers.Post([this, ok = *read] { Work(ok); });
    // Otherwise the read is outstanding (or parked): OnReadDone goes on.
  }

  // The status of a stream ended between tensors by the shutdown.
  static grpc::Status ShuttingDown() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "server shutting down; resend unacked tensors");
  }

  // The status of a stream whose client closed its side (or went away).
  grpc::Status Finished(bool cancelled) const {
    const grpc::Status end = handler_.Finish(cancelled);
    if (end.ok()) {
      spdlog::debug("ingest from {}: {} tensors acked", context_->peer(), handler_.acked());
    }
    return end;
  }

  // On the watchdog's thread, with its lock held: claims the end if the
  // stream still waits on its client, and leaves the rest to a closer.
  bool OnWatchdog(IdleWatchdog::Reason why) {
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return true;
      // While a chunk is handled (WorkAhead) a read may be outstanding, and
      // while a commit runs the client waits on the server: the stream is
      // not idle; the next round looks again.
      if (handling_ || !commit_idle_ || (phase_ != Phase::kReading && !writing_)) return false;
      ended_ = true;
    }
    grpc::Status status;
    if (why == IdleWatchdog::Reason::kShutdown) {
      status = ShuttingDown();
    } else {
      const std::string message = absl::StrCat(
          "ingest stream idle for ", absl::FormatDuration(shared_->watchdog.timeout()),
          " (--stream-idle-timeout) at ", handler_.Where(), "; cancelled",
          handler_.between_tensors() ? "" : ", the tensor discarded");
      spdlog::warn("ingest from {}: {}", context_->peer(), message);
      status = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, message);
    }
    ConcludeWhenCommitted(std::move(status));
    return true;
  }

  // Ends the stream with `status` unless something else ended it first;
  // while a message is handled, once the handling is done with the
  // handler. Claims the end at once (so nothing else concludes it) and
  // leaves the audit records and Finish to a closer thread
  // (ConcludeWhenCommitted): they must not hold up the workers of other
  // streams' data. Never called with mu_ held.
  void End(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return;
      if (handling_) {
        if (!deferred_end_.has_value()) deferred_end_ = std::move(status);
        return;
      }
      ended_ = true;
    }
    ConcludeWhenCommitted(std::move(status));
  }

  // Once ended_ is set: Conclude on a closer now, or, while a commit runs,
  // when it is done (CommitOne posts it).
  void ConcludeWhenCommitted(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (!commit_idle_) {
        pending_conclude_ = std::move(status);
        return;
      }
    }
    shared_->closers.Post([this, status = std::move(status)] { Conclude(status); });
  }

  // Once per stream, on a closer thread: the audit records, then Finish.
  // After Finish the reactor may be deleted at any moment (OnDone).
  void Conclude(grpc::Status status) {
    {
      // No read or write may start after Finish: wait for those decided on.
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int* starting) { return *starting == 0; }, &starting_ops_));
    }
    handler_.Discard();
    if (status.ok()) {
      // An audit failure of a successful push is the stream's error.
      const absl::Status audited =
          RecordPushes(shared_->env, ActorOf(who_), handler_.tallies(), handler_.last_run(),
                       absl::OkStatus(), refused_by_gate_);
      Finish(audited.ok() ? status : wire::ToGrpcStatus(audited));
      return;
    }
    // A failed stream learns why at once; its records follow (the acks of
    // its tensors went out long before either).
    shared_->closers.Post([env = &shared_->env, who = ActorOf(who_), tallies = handler_.tallies(),
                           last_run = handler_.last_run(), end = wire::FromGrpcStatus(status),
                           refused = refused_by_gate_] {
      RecordPushes(*env, who, tallies, last_run, end, refused).IgnoreError();
    });
    Finish(status);
  }

  IngestShared* const shared_;
  grpc::CallbackServerContext* const context_;
  RunEvents::CallGuard guard_;
  StreamHandler handler_;
  std::optional<auth::Principal> who_;
  std::string token_id_;  // counted in token_streams (empty: not counted)
  IdleWatchdog::Watch watch_;
  std::unique_ptr<v1::IngestRequest> request_;  // the read outstanding or being handled
  uint64_t charged_ = 0;                        // its bytes in the budget
  bool refused_by_gate_ = false;
  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kParked;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // WorkAhead is handling a chunk; what completed meanwhile waits for it.
  bool handling_ ABSL_GUARDED_BY(mu_) = false;
  // WorkAhead failed (or met a deferred end) while the next read was still
  // outstanding: the stream is ending (End is posted), so that read's
  // completion must not start Work on a handler End discards, nor a
  // parked stream start another read.
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<bool> deferred_read_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> deferred_end_ ABSL_GUARDED_BY(mu_);
  // Reads and writes decided on under mu_ and not yet started (OpStarted).
  int starting_ops_ ABSL_GUARDED_BY(mu_) = 0;
  // No commit of this stream's runs (StartCommit waits for it).
  bool commit_idle_ ABSL_GUARDED_BY(mu_) = true;
  // Acks to write, the front one being written while writing_.
  std::deque<v1::IngestResponse> acks_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // An end waiting for the commit and the acks (EndAfterAcks).
  std::optional<grpc::Status> drain_end_ ABSL_GUARDED_BY(mu_);
  // The end's Conclude, waiting for the commit running (ended_ is set).
  std::optional<grpc::Status> pending_conclude_ ABSL_GUARDED_BY(mu_);
};

// Worker threads for the blocking part of ingest: enough for RocksDB's
// group commit to batch fsyncs, few enough to bound the copies in flight.
int IngestWorkers() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(2 * cores, 4, 32);
}

}  // namespace

IngestServiceImpl::IngestServiceImpl(const ServiceEnv& env)
    : shared_(std::make_unique<IngestShared>(env, env.limits.ingest_buffer_bytes,
                                             IngestWorkers())) {}

IngestServiceImpl::~IngestServiceImpl() = default;

grpc::ServerBidiReactor<v1::IngestRequest, v1::IngestResponse>* IngestServiceImpl::Ingest(
    grpc::CallbackServerContext* context) {
  return new IngestReactor(shared_.get(), context);
}

uint64_t IngestServiceImpl::budget_peak_bytes() const { return shared_->budget.peak(); }

}  // namespace reprod::server

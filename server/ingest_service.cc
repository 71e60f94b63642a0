#include "server/ingest_service.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "common/tensor.h"
#include "common/visible.h"
#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/proto_convert.h"
#include "server/quota_ledger.h"
#include "server/review_ops.h"
#include "spdlog/spdlog.h"

namespace reprod::server {

// Cancels Ingest streams the server has waited on for longer than the idle
// timeout: one thread for all streams, which register a Watch for their
// lifetime and mark when they start and stop waiting for a message.
class IdleWatchdog {
 public:
  struct Watch {
    grpc::ServerContext* context = nullptr;
    std::atomic<int64_t> waiting_since_ns{0};  // 0: not waiting
    std::atomic<bool> fired{false};            // cancelled for idling
  };

  explicit IdleWatchdog(absl::Duration timeout) : timeout_(timeout) {
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
        std::clamp(timeout_ / 4, absl::Milliseconds(20), absl::Seconds(1));
    const int64_t limit_ns = absl::ToInt64Nanoseconds(timeout_);
    absl::MutexLock lock(&mu_);
    while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), tick)) {
      const int64_t now = absl::GetCurrentTimeNanos();
      for (Watch* w : watches_) {
        const int64_t since = w->waiting_since_ns.load();
        if (since != 0 && now - since >= limit_ns && !w->fired.exchange(true)) {
          w->context->TryCancel();
        }
      }
    }
  }

  const absl::Duration timeout_;
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

v1::AckKind AckKindToProto(storage::CommitKind kind) {
  switch (kind) {
    case storage::CommitKind::kStored:
      return v1::ACK_KIND_STORED;
    case storage::CommitKind::kAlreadyPresent:
      return v1::ACK_KIND_ALREADY_PRESENT;
    case storage::CommitKind::kReplaced:
      return v1::ACK_KIND_REPLACED;
  }
  return v1::ACK_KIND_UNSPECIFIED;
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
};

using IngestStream = grpc::ServerReaderWriter<v1::IngestResponse, v1::IngestRequest>;

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

// One Ingest call's state between requests: at most one tensor in flight.
// Each request goes through one job: open a tensor from its header
// (BeginTensor), check a chunk against it (CheckChunk), write the chunk
// (WriteChunk), and ack it once the last byte is durable (CommitAndAck).
// Every error ends the stream.
class StreamHandler {
 public:
  // `who`: the caller once authenticated with --auth tokens (its quota
  // applies to the tensors it begins); read at each BeginTensor, so it may
  // be filled in after construction; must outlive the handler.
  StreamHandler(const ServiceEnv& env, IngestStream* stream,
                const std::optional<auth::Principal>* who = nullptr)
      : env_(env), stream_(stream), who_(who) {}

  absl::Status Handle(const v1::IngestRequest& request) {
    if (request.has_begin()) return BeginTensor(request.begin());
    if (request.has_chunk()) {
      REPROD_RETURN_IF_ERROR(CheckChunk(request.chunk()));
      return WriteChunk(request.chunk());
    }
    return absl::InvalidArgumentError("IngestRequest with neither begin nor chunk");
  }

  bool between_tensors() const { return !current_.has_value(); }
  uint64_t acked() const { return acked_; }
  // Per run: the tensors acked on this stream (runs a BeginTensor named).
  const std::map<std::string, PushTally>& tallies() const { return tallies_; }
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
    return absl::StrCat("run '", last_run_, "' between tensors (", acked_, " acked)");
  }

  // The status of a stream whose client closed it (or went away): OK between
  // tensors; otherwise the tensor in flight is discarded.
  grpc::Status Finish(grpc::ServerContext* context) const {
    if (!current_) return grpc::Status::OK;
    if (context->IsCancelled()) {
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
    tallies_[begin.run()];  // recorded even when nothing is acked
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
    current_.emplace();
    current_->run = begin.run();
    current_->tensor_id = begin.tensor_id();
    current_->header = *std::move(header);
    current_->writer = *std::move(writer);
    current_->quota = *std::move(quota);
    if (current_->header.byte_length == 0) return CommitAndAck();
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
    if (current_->received == current_->header.byte_length) return CommitAndAck();
    return absl::OkStatus();
  }

  // Commits the tensor in flight (durable, crc32c verified), wakes watchers
  // and acks it; Cancelled when the client is gone before the ack.
  absl::Status CommitAndAck() {
    absl::StatusOr<storage::CommitResult> done = current_->writer->Commit();
    if (!done.ok()) return InCurrent(done.status());
    current_->quota.Commit(*done);
    env_.events->Notify();
    v1::IngestResponse ack;
    ack.set_tensor_id(current_->tensor_id);
    AddressToProto(current_->header.address, ack.mutable_address());
    ack.set_kind(AckKindToProto(done->kind));
    ack.set_sequence(done->sequence);
    tallies_[current_->run].Count(done->kind, current_->header.byte_length);
    current_.reset();
    ++acked_;
    if (!stream_->Write(ack)) return absl::CancelledError("client went away before the ack");
    return absl::OkStatus();
  }

  // `s` with the run and address of the tensor in flight.
  absl::Status InCurrent(const absl::Status& s) const {
    return WithContext(s, current_->run, current_->header.address);
  }

  const ServiceEnv& env_;
  IngestStream* stream_;
  const std::optional<auth::Principal>* who_;
  std::optional<InFlight> current_;
  uint64_t acked_ = 0;
  std::map<std::string, PushTally> tallies_;
  std::string last_run_;
};

// One "push" record per run the stream named: OK, or `end` for the run the
// stream failed on (a refusal by the gate is recorded by the gate instead).
absl::Status RecordPushes(const ServiceEnv& env, const auth::Principal& who,
                          const StreamHandler& handler, const absl::Status& end,
                          bool refused_by_gate) {
  absl::Status first_error = absl::OkStatus();
  for (const auto& [run, tally] : handler.tallies()) {
    const bool failed_here = !end.ok() && run == handler.last_run();
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
  if (!header.ok()) return bad(header.status());
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

namespace {

// Reads the stream to its end or first error; `refused_by_gate` tells
// whether that error was the gate's refusal of a BeginTensor.
// The status of a stream the watchdog cancelled: DEADLINE_EXCEEDED naming
// where it stood (logged too: the client may never see it).
grpc::Status IdledOut(grpc::ServerContext* context, const StreamHandler& handler,
                      absl::Duration timeout) {
  const std::string message = absl::StrCat(
      "ingest stream idle for ", absl::FormatDuration(timeout), " (--stream-idle-timeout) at ",
      handler.Where(), "; cancelled", handler.between_tensors() ? "" : ", the tensor discarded");
  spdlog::warn("ingest from {}: {}", context->peer(), message);
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, message);
}

grpc::Status ServeStream(const ServiceEnv& env, grpc::ServerContext* context,
                         IngestStream* stream, const std::optional<auth::Principal>& who,
                         StreamHandler& handler, bool& refused_by_gate,
                         IdleWatchdog::Watch& watch, absl::Duration idle_timeout) {
  v1::IngestRequest request;
  watch.waiting_since_ns = absl::GetCurrentTimeNanos();
  while (stream->Read(&request)) {
    watch.waiting_since_ns = 0;
    if (watch.fired) return IdledOut(context, handler, idle_timeout);
    absl::Status status = who && request.has_begin()
                              ? env.auth->CheckMessage(*who, kRouteIngest, request)
                              : absl::OkStatus();
    refused_by_gate = !status.ok();
    if (status.ok()) status = handler.Handle(request);
    if (!status.ok()) {
      if (status.code() != absl::StatusCode::kCancelled) {
        spdlog::warn("ingest from {}: {}", context->peer(), status.ToString());
      }
      return wire::ToGrpcStatus(status);
    }
    if (handler.between_tensors() && env.events->shutting_down()) {
      // Between tensors: stop here so the client resends the rest elsewhere
      // or after the restart.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server shutting down; resend unacked tensors");
    }
    request.Clear();
    watch.waiting_since_ns = absl::GetCurrentTimeNanos();
  }
  watch.waiting_since_ns = 0;
  if (watch.fired) return IdledOut(context, handler, idle_timeout);
  const grpc::Status end = handler.Finish(context);
  if (end.ok()) spdlog::debug("ingest from {}: {} tensors acked", context->peer(), handler.acked());
  return end;
}

}  // namespace

IngestServiceImpl::IngestServiceImpl(const ServiceEnv& env) : env_(env) {
  if (env_.limits.stream_idle_timeout > absl::ZeroDuration()) {
    watchdog_ = std::make_unique<IdleWatchdog>(env_.limits.stream_idle_timeout);
  }
}

IngestServiceImpl::~IngestServiceImpl() = default;

grpc::Status IngestServiceImpl::Ingest(grpc::ServerContext* context, IngestStream* stream) {
  RunEvents::CallGuard guard(env_.events);
  if (env_.events->shutting_down()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "server shutting down; retry after the restart");
  }
  struct StreamCount {
    std::atomic<int>& n;
    ~StreamCount() { --n; }
  } count{open_streams_};
  const int open = ++open_streams_;
  if (env_.limits.max_streams > 0 && open > env_.limits.max_streams) {
    spdlog::warn("refused an ingest stream from {}: {} open, limit {} (--max-streams)",
                 context->peer(), open - 1, env_.limits.max_streams);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("the server has ", open - 1, " ingest streams open, its limit "
                                     "(--max-streams ", env_.limits.max_streams,
                                     "); retry when others have finished"));
  }
  // --auth tokens: the caller is authenticated once, and each BeginTensor's
  // run is authorized on its own (the table's per-message entry).
  std::optional<auth::Principal> who;
  if (env_.auth != nullptr) {
    absl::StatusOr<auth::Principal> principal = env_.auth->Authenticate(*context);
    if (!principal.ok()) {
      spdlog::warn("refused {}: {}", kRouteIngest, std::string(principal.status().message()));
      return wire::ToGrpcStatus(principal.status());
    }
    who = *std::move(principal);
  }
  const int per_token = env_.limits.max_streams_per_token;
  struct TokenCount {
    IngestServiceImpl* service;
    std::string id;  // empty: not counted
    ~TokenCount() {
      if (id.empty()) return;
      absl::MutexLock lock(&service->token_mu_);
      if (--service->token_streams_[id] == 0) service->token_streams_.erase(id);
    }
  } token_count{this, ""};
  if (who && per_token > 0) {
    absl::MutexLock lock(&token_mu_);
    int& n = token_streams_[who->id];
    if (n >= per_token) {
      spdlog::warn("refused an ingest stream of token '{}': {} open, limit {} "
                   "(--max-streams-per-token)", who->label, n, per_token);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("token '", who->label, "' has ", n,
                                       " ingest streams open, its limit (--max-streams-per-token ",
                                       per_token, "); retry when they have finished"));
    }
    ++n;
    token_count.id = who->id;
  }
  StreamHandler handler(env_, stream, &who);
  bool refused_by_gate = false;
  IdleWatchdog::Watch watch;
  watch.context = context;
  struct Registration {
    IdleWatchdog* dog;
    IdleWatchdog::Watch* w;
    ~Registration() {
      if (dog != nullptr) dog->Remove(w);
    }
  } registration{watchdog_.get(), &watch};
  if (watchdog_ != nullptr) watchdog_->Add(&watch);
  const grpc::Status end = ServeStream(env_, context, stream, who, handler, refused_by_gate,
                                       watch, env_.limits.stream_idle_timeout);
  const absl::Status audited =
      RecordPushes(env_, ActorOf(who), handler, wire::FromGrpcStatus(end), refused_by_gate);
  if (end.ok() && !audited.ok()) return wire::ToGrpcStatus(audited);
  return end;
}

}  // namespace reprod::server

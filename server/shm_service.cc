#include "server/shm_service.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/visible.h"
#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/ingest_service.h"
#include "server/metrics/server_metrics.h"
#include "server/proto_convert.h"
#include "server/quota_ledger.h"
#include "server/review_ops.h"
#include "server/shm_region.h"
#include "spdlog/spdlog.h"

namespace reprod::server {
namespace {

// Bytes read from a region per store Append.
constexpr size_t kReadBufferBytes = size_t{1} << 20;

// One Session's regions and what it stored, per run (for the audit).
class ShmSession {
 public:
  // `regions_open` counts the regions of every session against
  // `max_regions`.
  ShmSession(const ServiceEnv& env, const std::optional<auth::Principal>& who,
             std::atomic<int>* regions_open, int max_regions)
      : env_(env), who_(who), regions_open_(regions_open), max_regions_(max_regions) {}
  ~ShmSession() { *regions_open_ -= static_cast<int>(regions_.size()); }
  ShmSession(const ShmSession&) = delete;
  ShmSession& operator=(const ShmSession&) = delete;

  // The response to one request, or the error that ends the session.
  absl::StatusOr<v1::ShmResponse> Handle(const v1::ShmRequest& request) {
    switch (request.kind_case()) {
      case v1::ShmRequest::kRegion:
        return Register(request.region());
      case v1::ShmRequest::kTensor: {
        absl::StatusOr<v1::ShmResponse> stored = Store(request);
        tensor_failed_ = !stored.ok();
        return stored;
      }
      case v1::ShmRequest::kRelease:
        return Release(request.release());
      case v1::ShmRequest::KIND_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError("ShmRequest with neither region, tensor nor release");
  }

  // The audit "push" records of the session: one per run with acked
  // tensors, and one with `end` for the run whose tensor ended the session
  // (unless the gate refused it: the gate recorded that).
  void Audit(const absl::Status& end) const {
    for (const auto& [run, tally] : tallies_) {
      const bool failed_here = !end.ok() && tensor_failed_ && run == last_run_;
      if (failed_here && refused_by_gate_) continue;
      if (!failed_here && tally.tensors == 0) continue;
      Audited(env_, ActorOf(who_), "push", run, failed_here ? end : absl::OkStatus(),
              {{"tensors", absl::StrCat(tally.tensors)},
               {"bytes", absl::StrCat(tally.bytes)},
               {"via", "shared memory"}})
          .IgnoreError();
    }
  }

  uint64_t acked() const { return acked_; }

 private:
  struct Tally {
    uint64_t tensors = 0, bytes = 0;
  };

  absl::StatusOr<v1::ShmResponse> Register(const v1::RegisterRegion& r) {
    if (absl::Status s = ValidateShmName(r.name()); !s.ok()) return s;
    if (regions_.contains(r.name())) {
      return absl::InvalidArgumentError(absl::StrCat("shared-memory region ", VisibleName(r.name()),
                                                     " is already registered on this session"));
    }
    if (regions_.size() >= kMaxShmRegionsPerSession) {
      return absl::ResourceExhaustedError(
          absl::StrCat("this session holds ", regions_.size(),
                       " shared-memory regions, the limit; release one first"));
    }
    if (regions_open_->fetch_add(1) >= max_regions_) {
      --*regions_open_;
      return absl::ResourceExhaustedError(
          absl::StrCat("reprodd holds ", max_regions_,
                       " shared-memory regions open in all sessions, its limit (a quarter of "
                       "its open-file limit); retry when others have finished"));
    }
    absl::StatusOr<std::unique_ptr<ShmRegion>> region =
        ShmRegion::Open(r.name(), r.byte_size(), r.key());
    if (!region.ok()) {
      --*regions_open_;
      return region.status();
    }
    v1::ShmResponse response;
    response.mutable_registered()->set_name(r.name());
    response.mutable_registered()->set_object_bytes((*region)->object_bytes());
    spdlog::debug("shm: registered region {} ({} bytes)", VisibleName(r.name()),
                  (*region)->byte_size());
    regions_.emplace(r.name(), *std::move(region));
    return response;
  }

  absl::StatusOr<v1::ShmResponse> Release(const v1::ReleaseRegion& r) {
    if (regions_.erase(r.name()) == 0) return NotRegistered(r.name());
    --*regions_open_;
    v1::ShmResponse response;
    response.mutable_released()->set_name(r.name());
    return response;
  }

  static absl::Status NotRegistered(std::string_view name) {
    return absl::PermissionDeniedError(
        absl::StrCat("shared-memory region '", VisibleName(name),
                     "' is not registered on this session (a session may use only the regions it "
                     "registered itself)"));
  }

  absl::StatusOr<v1::ShmResponse> Store(const v1::ShmRequest& request) {
    const v1::ShmTensor& t = request.tensor();
    const v1::BeginTensor& begin = t.begin();
    const auto begun = std::chrono::steady_clock::now();
    last_run_ = begin.run();
    tallies_[begin.run()];  // recorded even when nothing is acked
    refused_by_gate_ = false;
    if (who_.has_value() && env_.auth != nullptr) {
      if (absl::Status s = env_.auth->CheckMessage(*who_, kRouteShmSession, request); !s.ok()) {
        refused_by_gate_ = true;
        return s;
      }
    }
    absl::StatusOr<storage::TensorHeader> header = ValidateHeader(begin, env_.limits);
    if (!header.ok()) return header.status();
    const std::string where =
        absl::StrCat("run '", begin.run(), "' tensor ", storage::AddressToString(header->address));
    auto in_tensor = [&where](const absl::Status& s) {
      return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
    };
    auto it = regions_.find(t.region());
    if (it == regions_.end()) return in_tensor(NotRegistered(t.region()));
    const ShmRegion& region = *it->second;
    if (t.length() != header->byte_length) {
      return in_tensor(absl::InvalidArgumentError(absl::StrCat(
          "length ", t.length(), " differs from the header's byte_length ", header->byte_length)));
    }
    if (absl::Status s = CheckShmRange(region.byte_size(), t.offset(), t.length()); !s.ok()) {
      return in_tensor(absl::InvalidArgumentError(
          absl::StrCat("shared-memory region ", VisibleName(region.name()), ": ", s.message())));
    }
    QuotaLedger::Reservation quota;
    if (env_.quota != nullptr) {
      absl::StatusOr<QuotaLedger::Reservation> r = env_.quota->Reserve(
          begin.run(), who_.has_value() ? &*who_ : nullptr, header->byte_length);
      if (!r.ok()) return in_tensor(r.status());
      quota = *std::move(r);
    }
    absl::StatusOr<std::unique_ptr<storage::TensorWriter>> writer =
        env_.store->BeginTensor(begin.run(), *header);
    if (writer.status().code() == absl::StatusCode::kNotFound) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown run '", begin.run(), "' in the header of ",
                       storage::AddressToString(header->address),
                       "; create the run first (RunService.CreateRun)"));
    }
    if (!writer.ok()) return in_tensor(writer.status());
    if (t.length() > 0) {
      // Per tensor, not per session: an idle session holds no buffer.
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kReadBufferBytes, t.length()));
      auto buffer = std::make_unique_for_overwrite<uint8_t[]>(n);
      storage::TensorWriter& w = **writer;
      absl::Status read =
          region.Read(t.offset(), t.length(), absl::MakeSpan(buffer.get(), n),
                      [&w](absl::Span<const uint8_t> piece) { return w.Append(piece); });
      if (!read.ok()) return in_tensor(read);  // the writer is dropped: nothing stored
    }
    // The store's commit errors name the run and tensor themselves.
    absl::StatusOr<storage::CommitResult> done = (*writer)->Commit();
    if (!done.ok()) return done.status();
    quota.Commit(*done);
    env_.events->Notify();
    Tally& tally = tallies_[begin.run()];
    ++tally.tensors;
    tally.bytes += header->byte_length;
    ++acked_;
    if (env_.metrics != nullptr) {
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - begun;
      env_.metrics->TensorAcked(storage::CommitKindName(done->kind), header->byte_length, took.count());
    }
    v1::ShmResponse response;
    v1::IngestResponse* ack = response.mutable_ack();
    ack->set_tensor_id(begin.tensor_id());
    AddressToProto(header->address, ack->mutable_address());
    ack->set_kind(AckKindToProto(done->kind));
    ack->set_sequence(done->sequence);
    return response;
  }

  const ServiceEnv& env_;
  const std::optional<auth::Principal>& who_;
  std::atomic<int>* const regions_open_;
  const int max_regions_;
  std::map<std::string, std::unique_ptr<ShmRegion>> regions_;
  std::map<std::string, Tally> tallies_;
  std::string last_run_;
  bool refused_by_gate_ = false;
  bool tensor_failed_ = false;  // the last request was a tensor that failed
  uint64_t acked_ = 0;
};

}  // namespace

int MaxShmRegionsOpen() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 4096;
  return static_cast<int>(std::clamp<rlim_t>(limit.rlim_cur / 4, 16, 4096));
}

grpc::Status SharedMemoryServiceImpl::Admit(const std::string& token_id, const std::string& label) {
  absl::MutexLock lock(&mu_);
  const int cap = env_.limits.max_streams;
  if (cap > 0 && open_ >= cap) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("the server has ", open_,
                                     " shared-memory sessions open, its limit (--max-streams ", cap,
                                     "); retry when others have finished"));
  }
  const int per_token = env_.limits.max_streams_per_token;
  if (!token_id.empty() && per_token > 0 && per_token_[token_id] >= per_token) {
    const int n = per_token_[token_id];
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("token '", label, "' has ", n,
                                     " shared-memory sessions open, its limit "
                                     "(--max-streams-per-token ",
                                     per_token, "); retry when they have finished"));
  }
  ++open_;
  if (!token_id.empty()) ++per_token_[token_id];
  return grpc::Status::OK;
}

void SharedMemoryServiceImpl::Leave(const std::string& token_id) {
  absl::MutexLock lock(&mu_);
  --open_;
  if (!token_id.empty() && --per_token_[token_id] <= 0) per_token_.erase(token_id);
}

grpc::Status SharedMemoryServiceImpl::Session(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ShmResponse, v1::ShmRequest>* stream) {
  // --auth tokens: the caller first (every call goes through the gate),
  // then the flag; each tensor's run is authorized on its own (Store).
  std::optional<auth::Principal> who;
  if (env_.auth != nullptr) {
    absl::StatusOr<auth::Principal> principal = env_.auth->Authenticate(*context);
    if (!principal.ok()) {
      spdlog::warn("refused {}: {}", kRouteShmSession, std::string(principal.status().message()));
      return wire::ToGrpcStatus(principal.status());
    }
    who = *std::move(principal);
  }
  if (!allow_) {
    spdlog::warn("refused a shared-memory session from {}: reprodd runs without --allow-shm",
                 context->peer());
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this reprodd does not accept shared-memory ingest: start it with "
                        "--allow-shm (REPROD_ALLOW_SHM=1), or send the tensors over the "
                        "wire (IngestService; the Python client's shm=False)");
  }
  if (env_.events->shutting_down()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "server shutting down; retry after the restart");
  }
  const std::string token_id = who.has_value() ? who->id : "";
  if (grpc::Status refused = Admit(token_id, who.has_value() ? who->label : ""); !refused.ok()) {
    spdlog::warn("refused a shared-memory session from {}: {}", context->peer(),
                 refused.error_message());
    return refused;
  }
  if (env_.metrics != nullptr) env_.metrics->StreamOpened();
  ShmSession session(env_, who, &regions_open_, max_regions_);
  absl::Status end = absl::OkStatus();
  v1::ShmRequest request;
  while (stream->Read(&request)) {
    absl::StatusOr<v1::ShmResponse> response;
    {
      // Counted while it works, so the shutdown lets the tensor finish; an
      // idle session does not hold the shutdown up.
      RunEvents::CallGuard guard(env_.events);
      response = session.Handle(request);
    }
    if (!response.ok()) {
      end = response.status();
      break;
    }
    if (!stream->Write(*response)) {
      end = absl::CancelledError("client went away before the response");
      break;
    }
    if (env_.events->shutting_down()) {
      end = absl::UnavailableError("server shutting down; resend unacked tensors");
      break;
    }
  }
  if (end.ok() && context->IsCancelled()) end = absl::CancelledError("client cancelled");
  if (!end.ok() && end.code() != absl::StatusCode::kCancelled) {
    spdlog::warn("shared-memory session from {}: {}", context->peer(), end.ToString());
  } else {
    spdlog::debug("shared-memory session from {}: {} tensors acked", context->peer(),
                  session.acked());
  }
  session.Audit(end);
  if (env_.metrics != nullptr) env_.metrics->StreamClosed();
  Leave(token_id);
  return wire::ToGrpcStatus(end);
}

}  // namespace reprod::server

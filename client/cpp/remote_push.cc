// RemoteClient::Push: one pipelined Ingest stream per connection, resending
// what was not acknowledged after UNAVAILABLE.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/cpp/ingest_messages.h"
#include "client/cpp/remote_client.h"
#include "common/names.h"
#include "common/placement.h"

namespace reprod::client {
namespace {

// Ingest as a stream of encoded IngestRequests: chunks go out as slices
// of the tensor's own bytes (TensorChunker::NextWire); the generated stub
// would copy every byte twice, into the message and into gRPC's buffer.
using IngestStream = grpc::ClientReaderWriter<grpc::ByteBuffer, v1::IngestResponse>;

// Opens Ingest on `channel` as the generated stub does, with ByteBuffer as
// the request type (gRPC serializes a ByteBuffer by taking a reference).
std::unique_ptr<IngestStream> OpenIngestStream(grpc::Channel* channel,
                                               grpc::ClientContext* context) {
  static const grpc::internal::RpcMethod kIngest("/reprod.v1.IngestService/Ingest",
                                                 grpc::internal::RpcMethod::BIDI_STREAMING);
  return std::unique_ptr<IngestStream>(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, v1::IngestResponse>::Create(
          channel, kIngest, context));
}

// `message` encoded as one slice.
grpc::ByteBuffer Encoded(const google::protobuf::Message& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

// While a tensor streams, on_progress is also called every this many bytes
// sent (acks only come once a tensor is complete).
constexpr uint64_t kSentProgressBytes = uint64_t{16} << 20;

// A tensor handed to the stream and not yet acknowledged.
struct Pending {
  uint64_t id = 0;
  PushItem item;
  uint32_t crc = 0;
  uint64_t bytes = 0;
};

std::string ItemAddress(const PushItem& item) {
  std::string s = absl::StrCat(item.checkpoint, "/", item.key);
  if (item.step.has_value()) absl::StrAppend(&s, "@", *item.step);
  if (item.rank != 0) absl::StrAppend(&s, "#rank ", item.rank);
  return s;
}

absl::Status ValidateItem(const PushItem& item) {
  absl::Status s = ValidateCheckpointName(item.checkpoint);
  if (s.ok()) s = ValidateTensorKey(item.key);
  if (s.ok()) s = ValidateRank(item.rank);
  if (s.ok()) s = ValidatePlacement(item.placement, item.tensor.shape());
  if (s.ok()) return s;
  return absl::Status(s.code(),
                      absl::StrCat("tensor ", ItemAddress(item), ": ", std::string(s.message())));
}

absl::Duration Backoff(const PushOptions& options, int attempt) {
  absl::Duration d = options.initial_backoff;
  for (int i = 1; i < attempt && d < options.max_backoff; ++i) d *= 2;
  return std::min(d, options.max_backoff);
}

}  // namespace

// The state of one Push call. The calling thread writes (RunStream,
// WriteTensor); a reader thread per stream collects acks (ReadAcks).
class PushSession {
 public:
  PushSession(RemoteClient& client, const std::string& run, TensorSource& source,
              const PushOptions& options)
      : client_(client), run_(run), source_(source), options_(options) {}

  absl::StatusOr<PushSummary> Run();

 private:
  // One Ingest stream: resends the unacknowledged tensors, then pulls new
  // ones from the source until it is exhausted, fails, or the stream breaks.
  // Returns the stream's final status (server address added).
  absl::Status RunStream();
  // Writes the begin message and the chunks; false when the stream broke.
  bool WriteTensor(IngestStream* stream, const Pending& p);
  void ReadAcks(IngestStream* stream, grpc::ClientContext* context);
  // The last stream's error for a give-up message, naming the server:
  // UNAVAILABLE already does (RemoteClient::FromRpc); CANCELLED comes from
  // a server that was shutting down and says only "CANCELLED".
  std::string LastStreamError(const absl::Status& status) const {
    if (status.code() == absl::StatusCode::kCancelled) {
      return absl::StrCat("reprod server at ", client_.target(),
                          " cancelled the ingest stream (", status.message(), ")");
    }
    return std::string(status.message());
  }
  void NotifyProgress(const PushProgress& snapshot) const {
    if (options_.on_progress) options_.on_progress(snapshot);
  }

  RemoteClient& client_;
  const std::string& run_;
  TensorSource& source_;
  const PushOptions& options_;

  // Used by the calling thread only.
  uint64_t next_id_ = 0;
  bool source_done_ = false;
  absl::Status source_error_;

  absl::Mutex mu_;
  absl::CondVar cv_;  // signalled on acks and at the end of a stream
  std::deque<Pending> unacked_ ABSL_GUARDED_BY(mu_);
  uint64_t unacked_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stream_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status protocol_error_ ABSL_GUARDED_BY(mu_);
  PushSummary summary_ ABSL_GUARDED_BY(mu_);
  PushProgress progress_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<PushSummary> PushSession::Run() {
  if (absl::Status s = ValidateRunName(run_); !s.ok()) return s;
  int failures = 0;  // consecutive stream failures without an ack between
  absl::Time outage_start = absl::Now();
  for (;;) {
    uint64_t acked_before;
    {
      absl::MutexLock lock(&mu_);
      acked_before = summary_.tensors;
    }
    const absl::Status status = RunStream();
    std::string progress_note;
    {
      absl::MutexLock lock(&mu_);
      if (!protocol_error_.ok()) return protocol_error_;
      if (!source_error_.ok()) return source_error_;
      if (status.ok()) {
        if (unacked_.empty()) return summary_;
        return absl::InternalError(absl::StrCat(
            "the server ended the ingest stream without acknowledging ", unacked_.size(),
            " tensors (first: ", ItemAddress(unacked_.front().item), ")"));
      }
      // CANCELLED here is not ours (a protocol error returned above): the
      // server cancelled the call, as reprodd does to streams still
      // running when its shutdown grace ends. Resent like UNAVAILABLE.
      if (status.code() != absl::StatusCode::kUnavailable &&
          status.code() != absl::StatusCode::kCancelled) {
        return status;
      }
      if (summary_.tensors > acked_before) failures = 0;
      progress_note = absl::StrCat(summary_.tensors, " tensors acknowledged, ", unacked_.size(),
                                   " sent but not acknowledged");
    }
    if (failures == 0) outage_start = absl::Now();
    if (++failures > options_.max_reconnects) {
      return absl::UnavailableError(absl::StrCat(LastStreamError(status), " (gave up after ",
                                                 options_.max_reconnects, " reconnect attempts; ",
                                                 progress_note, ")"));
    }
    const absl::Time deadline = outage_start + options_.reconnect_timeout;
    absl::SleepFor(std::min(Backoff(options_, failures), deadline - absl::Now()));
    if (absl::Now() >= deadline ||
        !client_.channel_->WaitForConnected(absl::ToChronoTime(deadline))) {
      return absl::UnavailableError(
          absl::StrCat(LastStreamError(status), " (the server did not come back within ",
                       absl::FormatDuration(options_.reconnect_timeout), "; ", progress_note, ")"));
    }
    PushProgress snapshot;
    {
      absl::MutexLock lock(&mu_);
      ++summary_.reconnects;
      progress_.reconnects = summary_.reconnects;
      snapshot = progress_;
    }
    NotifyProgress(snapshot);
  }
}

absl::Status PushSession::RunStream() {
  grpc::ClientContext context;
  // The bytes of every chunk written stay alive until Finish below: a
  // tensor leaves unacked_ only once acknowledged, that is received whole.
  std::unique_ptr<IngestStream> stream = OpenIngestStream(client_.channel_.get(), &context);
  std::vector<Pending> resend;
  {
    absl::MutexLock lock(&mu_);
    stream_done_ = false;
    resend.assign(unacked_.begin(), unacked_.end());
  }
  std::thread reader;
  try {
    reader = std::thread([this, &stream, &context] { ReadAcks(stream.get(), &context); });
  } catch (const std::system_error& e) {  // std::thread's only way to fail
    context.TryCancel();
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot start the ingest ack reader thread: ", e.what()));
  }

  bool ok = true;
  for (const Pending& p : resend) {
    if (!(ok = WriteTensor(stream.get(), p))) break;
  }
  while (ok && !source_done_ && source_error_.ok()) {
    absl::StatusOr<std::optional<PushItem>> next = source_.Next();
    if (!next.ok()) {
      source_error_ = next.status();
      break;
    }
    if (!next->has_value()) {
      source_done_ = true;
      break;
    }
    Pending p;
    p.item = std::move(**next);
    if (absl::Status s = ValidateItem(p.item); !s.ok()) {
      source_error_ = s;
      break;
    }
    p.id = next_id_++;
    p.bytes = p.item.tensor.num_bytes();
    p.crc = TensorCrc32c(p.item.tensor);  // before waiting: overlaps the network
    {
      absl::MutexLock lock(&mu_);
      progress_.bytes_total = std::max(progress_.bytes_total, source_.TotalBytes());
      while (!stream_done_ && unacked_bytes_ > 0 &&
             unacked_bytes_ + p.bytes > options_.window_bytes) {
        cv_.Wait(&mu_);
      }
      // Owned by unacked_ from here on: resent by the next stream if this
      // one breaks before the ack.
      unacked_.push_back(p);
      unacked_bytes_ += p.bytes;
      if (stream_done_) ok = false;
    }
    if (ok) ok = WriteTensor(stream.get(), p);
  }
  if (ok) stream->WritesDone();
  reader.join();
  return client_.FromRpc(stream->Finish());
}

bool PushSession::WriteTensor(IngestStream* stream, const Pending& p) {
  v1::IngestRequest begin;
  MakeBeginTensor(run_, p.id, p.item, p.crc, &begin);
  if (!stream->Write(Encoded(begin))) return false;
  {
    absl::MutexLock lock(&mu_);
    ++progress_.tensors_sent;
  }
  TensorChunker chunker(p.item.tensor.data(), p.bytes, options_.chunk_bytes);
  uint64_t unreported = 0;
  grpc::ByteBuffer chunk;
  uint64_t n = 0;
  while (chunker.NextWire(&chunk, &n)) {
    if (!stream->Write(chunk)) return false;
    PushProgress snapshot;
    {
      absl::MutexLock lock(&mu_);
      progress_.bytes_sent += n;
      unreported += n;
      if (unreported < kSentProgressBytes) continue;
      unreported = 0;
      snapshot = progress_;
    }
    NotifyProgress(snapshot);  // a large tensor shows progress before its ack
  }
  return true;
}

void PushSession::ReadAcks(IngestStream* stream, grpc::ClientContext* context) {
  v1::IngestResponse ack;
  while (stream->Read(&ack)) {
    PushProgress snapshot;
    bool bad = false;
    {
      absl::MutexLock lock(&mu_);
      if (unacked_.empty() || unacked_.front().id != ack.tensor_id()) {
        protocol_error_ = absl::InternalError(
            absl::StrCat("the server acknowledged tensor id ", ack.tensor_id(), " (",
                         ack.address().checkpoint(), "/", ack.address().key(), ") but ",
                         unacked_.empty() ? std::string("none was in flight")
                                          : absl::StrCat("expected id ", unacked_.front().id)));
        bad = true;
      } else {
        const Pending& p = unacked_.front();
        switch (ack.kind()) {
          case v1::ACK_KIND_ALREADY_PRESENT:
            ++summary_.already_present;
            break;
          case v1::ACK_KIND_REPLACED:
            ++summary_.replaced;
            break;
          default:
            ++summary_.stored;
            break;
        }
        ++summary_.tensors;
        summary_.bytes += p.bytes;
        unacked_bytes_ -= p.bytes;
        progress_.bytes_acked += p.bytes;
        ++progress_.tensors_acked;
        unacked_.pop_front();
        snapshot = progress_;
      }
      cv_.SignalAll();
    }
    if (bad) {
      context->TryCancel();
      break;
    }
    NotifyProgress(snapshot);
    ack.Clear();
  }
  absl::MutexLock lock(&mu_);
  stream_done_ = true;
  cv_.SignalAll();
}

absl::StatusOr<PushSummary> RemoteClient::Push(const std::string& run, TensorSource& source,
                                               const PushOptions& options) {
  PushSession session(*this, run, source, options);
  return session.Run();
}

}  // namespace reprod::client

#include "server/ingest_service.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/names.h"
#include "common/tensor.h"
#include "proto/wire.h"
#include "server/proto_convert.h"
#include "spdlog/spdlog.h"

namespace reprod::server {
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

// The tensor being received on a stream.
struct InFlight {
  std::string run;
  uint64_t tensor_id = 0;
  storage::TensorHeader header;
  uint64_t received = 0;
  std::unique_ptr<storage::TensorWriter> writer;
};

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
  if (absl::Status s = ValidateCheckpointName(address.checkpoint); !s.ok()) {
    return bad(s);
  }
  if (absl::Status s = ValidateTensorKey(address.key); !s.ok()) return bad(s);
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

grpc::Status IngestServiceImpl::Ingest(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::IngestResponse, v1::IngestRequest>* stream) {
  RunEvents::CallGuard guard(env_.events);
  if (env_.events->shutting_down()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "server shutting down; retry after the restart");
  }
  std::optional<InFlight> current;
  uint64_t acked = 0;

  auto commit = [&]() -> absl::Status {
    absl::StatusOr<storage::CommitResult> done = current->writer->Commit();
    if (!done.ok()) {
      return WithContext(done.status(), current->run, current->header.address);
    }
    env_.events->Notify();
    v1::IngestResponse ack;
    ack.set_tensor_id(current->tensor_id);
    AddressToProto(current->header.address, ack.mutable_address());
    ack.set_kind(AckKindToProto(done->kind));
    ack.set_sequence(done->sequence);
    current.reset();
    ++acked;
    if (!stream->Write(ack)) {
      return absl::CancelledError("client went away before the ack");
    }
    return absl::OkStatus();
  };

  v1::IngestRequest request;
  while (stream->Read(&request)) {
    absl::Status status;
    if (request.has_begin()) {
      const v1::BeginTensor& begin = request.begin();
      if (current) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "BeginTensor for ",
            storage::AddressToString(
                AddressFromProto(begin.header().address())),
            " while tensor ", storage::AddressToString(current->header.address),
            " of run '", current->run, "' is incomplete (", current->received,
            " of ", current->header.byte_length, " bytes received)"));
      } else if (absl::StatusOr<storage::TensorHeader> header =
                     ValidateHeader(begin, env_.limits);
                 !header.ok()) {
        status = header.status();
      } else {
        absl::StatusOr<std::unique_ptr<storage::TensorWriter>> writer =
            env_.store->BeginTensor(begin.run(), *header);
        if (writer.status().code() == absl::StatusCode::kNotFound) {
          // An address naming no run is a bad header, like a bad key.
          status = absl::InvalidArgumentError(absl::StrCat(
              "unknown run '", begin.run(), "' in the header of ",
              storage::AddressToString(header->address),
              "; create the run first (RunService.CreateRun; reprodctl push "
              "creates it)"));
        } else if (!writer.ok()) {
          status = WithContext(writer.status(), begin.run(), header->address);
        } else {
          current.emplace();
          current->run = begin.run();
          current->tensor_id = begin.tensor_id();
          current->header = *std::move(header);
          current->writer = *std::move(writer);
          if (current->header.byte_length == 0) status = commit();
        }
      }
    } else if (request.has_chunk()) {
      const v1::TensorChunk& chunk = request.chunk();
      if (!current) {
        status = absl::InvalidArgumentError(
            "TensorChunk without a BeginTensor before it");
      } else if (chunk.offset() != current->received) {
        status = WithContext(
            absl::InvalidArgumentError(absl::StrCat(
                "chunk at offset ", chunk.offset(), ", expected offset ",
                current->received, " (chunks must arrive in order)")),
            current->run, current->header.address);
      } else if (chunk.data().size() > env_.limits.max_chunk_bytes) {
        status = WithContext(
            absl::InvalidArgumentError(absl::StrCat(
                "chunk of ", chunk.data().size(),
                " bytes is over the limit ", env_.limits.max_chunk_bytes,
                " (--max-chunk-bytes)")),
            current->run, current->header.address);
      } else if (chunk.data().size() >
                 current->header.byte_length - current->received) {
        status = WithContext(
            absl::InvalidArgumentError(absl::StrCat(
                "chunk [", chunk.offset(), ", ",
                chunk.offset() + chunk.data().size(),
                ") runs past the declared size ",
                current->header.byte_length)),
            current->run, current->header.address);
      } else {
        const std::string& data = chunk.data();
        status = current->writer->Append(absl::MakeConstSpan(
            reinterpret_cast<const uint8_t*>(data.data()), data.size()));
        if (status.ok()) {
          current->received += data.size();
          if (current->received == current->header.byte_length) {
            status = commit();
          }
        } else {
          status = WithContext(status, current->run, current->header.address);
        }
      }
    } else {
      status = absl::InvalidArgumentError(
          "IngestRequest with neither begin nor chunk");
    }
    if (!status.ok()) {
      if (status.code() != absl::StatusCode::kCancelled) {
        spdlog::warn("ingest from {}: {}", context->peer(), status.ToString());
      }
      return wire::ToGrpcStatus(status);
    }
    if (!current && env_.events->shutting_down()) {
      // Between tensors: stop here so the client resends the rest elsewhere
      // or after the restart.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server shutting down; resend unacked tensors");
    }
    request.Clear();
  }
  if (current) {
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
    }
    return wire::ToGrpcStatus(WithContext(
        absl::InvalidArgumentError(absl::StrCat(
            "stream closed after ", current->received, " of ",
            current->header.byte_length, " bytes; the tensor was discarded")),
        current->run, current->header.address));
  }
  spdlog::debug("ingest from {}: {} tensors acked", context->peer(), acked);
  return grpc::Status::OK;
}

}  // namespace reprod::server

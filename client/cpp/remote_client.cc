#include "client/cpp/remote_client.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/names.h"
#include "proto/wire.h"

namespace reprod::client {
namespace {

// The channel's own reconnect backoff: short, so that a restarted server is
// found again within a second (gRPC's default starts at 1 s and grows to
// 120 s).
constexpr int kMinReconnectBackoffMs = 200;
constexpr int kMaxReconnectBackoffMs = 2000;

absl::Status CheckRun(const std::string& name) { return ValidateRunName(name); }

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteClient>> RemoteClient::Connect(std::string target,
                                                                    ConnectOptions options) {
  if (target.empty()) {
    return absl::InvalidArgumentError("empty server address (expected HOST:PORT)");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kMinReconnectBackoffMs);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kMinReconnectBackoffMs);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create a channel to '", target, "'"));
  }
  // Wait for READY, but give up at the first failed attempt: a refused
  // connection should not cost the whole timeout.
  const auto deadline = absl::ToChronoTime(absl::Now() + options.connect_timeout);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError(absl::StrCat("cannot reach the reprod server at ", target,
                                                 ": connection refused or failed"));
    }
    if (!channel->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(absl::StrCat("cannot reach the reprod server at ", target,
                                                 ": no answer within ",
                                                 absl::FormatDuration(options.connect_timeout)));
    }
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return std::unique_ptr<RemoteClient>(
      new RemoteClient(std::move(target), options, std::move(channel)));
}

RemoteClient::RemoteClient(std::string target, ConnectOptions options,
                           std::shared_ptr<grpc::Channel> channel)
    : target_(std::move(target)),
      options_(options),
      channel_(std::move(channel)),
      runs_(v1::RunService::NewStub(channel_)),
      ingest_(v1::IngestService::NewStub(channel_)),
      compare_(v1::CompareService::NewStub(channel_)),
      reports_(v1::ReportService::NewStub(channel_)) {}

RemoteClient::~RemoteClient() = default;

absl::Status RemoteClient::FromRpc(const grpc::Status& status) const {
  absl::Status s = wire::FromGrpcStatus(status);
  if (s.code() == absl::StatusCode::kUnavailable) {
    return absl::UnavailableError(
        absl::StrCat("reprod server at ", target_, " unavailable: ", std::string(s.message())));
  }
  if (s.code() == absl::StatusCode::kDeadlineExceeded) {
    return absl::DeadlineExceededError(absl::StrCat(
        "reprod server at ", target_, " did not answer in time: ", std::string(s.message())));
  }
  return s;
}

void RemoteClient::SetDeadline(grpc::ClientContext* context, absl::Duration timeout) const {
  if (timeout > absl::ZeroDuration() && timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

absl::StatusOr<v1::Run> RemoteClient::CreateRun(const v1::Run& run, bool exist_ok) {
  if (absl::Status s = CheckRun(run.name()); !s.ok()) return s;
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::CreateRunRequest request;
  *request.mutable_run() = run;
  request.set_exist_ok(exist_ok);
  v1::Run response;
  grpc::Status status = runs_->CreateRun(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<v1::Run> RemoteClient::GetRun(const std::string& name) {
  if (absl::Status s = CheckRun(name); !s.ok()) return s;
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::GetRunRequest request;
  request.set_name(name);
  v1::Run response;
  grpc::Status status = runs_->GetRun(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<std::vector<v1::Run>> RemoteClient::ListRuns(const std::string& prefix) {
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::ListRunsRequest request;
  request.set_prefix(prefix);
  v1::ListRunsResponse response;
  grpc::Status status = runs_->ListRuns(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return std::vector<v1::Run>(response.runs().begin(), response.runs().end());
}

absl::StatusOr<v1::Run> RemoteClient::SealRun(const std::string& name, bool abort) {
  if (absl::Status s = CheckRun(name); !s.ok()) return s;
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::SealRunRequest request;
  request.set_name(name);
  request.set_abort(abort);
  v1::Run response;
  grpc::Status status = runs_->SealRun(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<uint64_t> RemoteClient::DeleteRun(const std::string& name) {
  if (absl::Status s = CheckRun(name); !s.ok()) return s;
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::DeleteRunRequest request;
  request.set_name(name);
  v1::DeleteRunResponse response;
  grpc::Status status = runs_->DeleteRun(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response.tensors_deleted();
}

absl::StatusOr<std::vector<v1::TensorInfo>> RemoteClient::ListTensors(
    const std::string& run, const std::string& checkpoint) {
  if (absl::Status s = CheckRun(run); !s.ok()) return s;
  if (!checkpoint.empty()) {
    if (absl::Status s = ValidateCheckpointName(checkpoint); !s.ok()) return s;
  }
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::ListTensorsRequest request;
  request.set_run(run);
  request.set_checkpoint(checkpoint);
  v1::ListTensorsResponse response;
  grpc::Status status = runs_->ListTensors(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return std::vector<v1::TensorInfo>(response.tensors().begin(), response.tensors().end());
}

absl::StatusOr<v1::Report> RemoteClient::Compare(const v1::CompareRequest& request) {
  if (absl::Status s = CheckRun(request.ref()); !s.ok()) return s;
  if (absl::Status s = CheckRun(request.cand()); !s.ok()) return s;
  grpc::ClientContext context;
  SetDeadline(&context, options_.compare_timeout);
  v1::Report response;
  grpc::Status status = compare_->Compare(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::Status RemoteClient::Watch(const v1::WatchRequest& request,
                                 const std::function<void(const v1::WatchEvent&)>& on_event) {
  if (absl::Status s = CheckRun(request.ref()); !s.ok()) return s;
  if (absl::Status s = CheckRun(request.cand()); !s.ok()) return s;
  grpc::ClientContext context;  // no deadline: lasts as long as training
  std::unique_ptr<grpc::ClientReader<v1::WatchEvent>> reader = compare_->Watch(&context, request);
  v1::WatchEvent event;
  while (reader->Read(&event)) {
    on_event(event);
    event.Clear();
  }
  return FromRpc(reader->Finish());
}

absl::StatusOr<v1::Report> RemoteClient::GetReport(const std::string& id, v1::ReportFormat format) {
  if (id.empty()) return absl::InvalidArgumentError("empty report id");
  grpc::ClientContext context;
  SetDeadline(&context, options_.compare_timeout);
  v1::GetReportRequest request;
  request.set_id(id);
  request.set_format(format);
  v1::Report response;
  grpc::Status status = reports_->GetReport(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<std::vector<v1::Report>> RemoteClient::ListReports(const std::string& run,
                                                                  uint32_t limit) {
  if (!run.empty()) {
    if (absl::Status s = CheckRun(run); !s.ok()) return s;
  }
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::ListReportsRequest request;
  request.set_run(run);
  request.set_limit(limit);
  v1::ListReportsResponse response;
  grpc::Status status = reports_->ListReports(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return std::vector<v1::Report>(response.reports().begin(), response.reports().end());
}

}  // namespace reprod::client

#include "server/run_service.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/names.h"
#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/proto_convert.h"
#include "server/quota_ledger.h"
#include "server/review_ops.h"
#include "spdlog/spdlog.h"

namespace reprod::server {
namespace {

// Size limits of a run's free-form metadata: the run record is read on
// every tensor begin and commit, and its strings reach logs and reports.
constexpr size_t kMaxRunFieldBytes = 256;    // framework, version, device
constexpr size_t kMaxLabels = 64;
constexpr size_t kMaxLabelKeyBytes = 128;
constexpr size_t kMaxLabelValueBytes = 1024;

absl::Status TooLarge(std::string_view run, std::string_view field, size_t size,
                      size_t limit, std::string_view unit) {
  return absl::InvalidArgumentError(absl::StrCat("run '", std::string(run), "': ",
                                                 std::string(field), " has ", size, " ",
                                                 std::string(unit), ", over the limit of ", limit));
}

// InvalidArgument naming the field and its limit when a metadata field of
// `run` is too large.
absl::Status ValidateRunMetadata(const storage::RunInfo& run) {
  for (const auto& [field, value] : {std::pair<std::string_view, const std::string&>{
                                         "framework", run.framework},
                                     {"framework_version", run.framework_version},
                                     {"device", run.device}}) {
    if (value.size() > kMaxRunFieldBytes) {
      return TooLarge(run.name, field, value.size(), kMaxRunFieldBytes, "bytes");
    }
  }
  if (run.labels.size() > kMaxLabels) {
    return TooLarge(run.name, "labels", run.labels.size(), kMaxLabels, "entries");
  }
  for (const auto& [key, value] : run.labels) {
    if (key.size() > kMaxLabelKeyBytes) {
      return TooLarge(run.name, absl::StrCat("a label key (", key.substr(0, 32), "...)"),
                      key.size(), kMaxLabelKeyBytes, "bytes");
    }
    if (value.size() > kMaxLabelValueBytes) {
      return TooLarge(run.name, absl::StrCat("label '", key, "'"), value.size(),
                      kMaxLabelValueBytes, "bytes");
    }
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status RunServiceImpl::CreateRun(grpc::ServerContext* context,
                                       const v1::CreateRunRequest* request,
                                       v1::Run* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteCreateRun, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  storage::RunInfo run = RunFromProto(request->run());
  if (*who) run.owner = (*who)->label;  // --auth tokens: the creating token's label
  std::map<std::string, std::string> details = {
      {"framework", run.framework.substr(0, kMaxRunFieldBytes)}};
  absl::Status created = ValidateRunName(run.name);
  if (created.ok()) created = ValidateRunMetadata(run);
  if (created.ok()) created = env_.store->CreateRun(run);
  if (created.code() == absl::StatusCode::kAlreadyExists &&
      request->exist_ok()) {
    created = absl::OkStatus();
    details["existed"] = "true";
  } else if (created.ok()) {
    spdlog::info("run {} created ({} {})", run.name, run.framework,
                 run.framework_version);
  }
  created = Audited(env_, ActorOf(*who), "create", run.name, created, std::move(details));
  if (!created.ok()) return wire::ToGrpcStatus(created);
  absl::StatusOr<storage::RunInfo> stored = env_.store->GetRun(run.name);
  if (!stored.ok()) return wire::ToGrpcStatus(stored.status());
  RunToProto(*stored, response);
  return grpc::Status::OK;
}

grpc::Status RunServiceImpl::GetRun(grpc::ServerContext* context,
                                    const v1::GetRunRequest* request,
                                    v1::Run* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteGetRun, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  if (absl::Status s = ValidateRunName(request->name()); !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  absl::StatusOr<storage::RunInfo> run = env_.store->GetRun(request->name());
  if (!run.ok()) return wire::ToGrpcStatus(run.status());
  RunToProto(*run, response);
  return grpc::Status::OK;
}

grpc::Status RunServiceImpl::ListRuns(grpc::ServerContext* context,
                                      const v1::ListRunsRequest* request,
                                      v1::ListRunsResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteListRuns, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<std::vector<storage::RunInfo>> runs =
      env_.store->ListRuns(request->prefix());
  if (!runs.ok()) return wire::ToGrpcStatus(runs.status());
  for (const storage::RunInfo& run : *runs) {
    if (*who && !env_.auth->CanSeeRun(**who, run)) continue;
    RunToProto(run, response->add_runs());
  }
  return grpc::Status::OK;
}

grpc::Status RunServiceImpl::SealRun(grpc::ServerContext* context,
                                     const v1::SealRunRequest* request,
                                     v1::Run* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteSealRun, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<storage::RunInfo> run = absl::InvalidArgumentError("unset");
  if (absl::Status s = ValidateRunName(request->name()); !s.ok()) {
    run = s;
  } else {
    run = env_.store->SealRun(request->name(), request->abort() ? storage::RunState::kAborted
                                                                : storage::RunState::kSealed);
  }
  std::map<std::string, std::string> details;
  if (run.ok()) details["tensors"] = absl::StrCat(run->tensor_count);
  if (absl::Status s = Audited(env_, ActorOf(*who), request->abort() ? "abort" : "seal",
                               request->name(), run.status(), std::move(details));
      !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  env_.events->Notify();
  spdlog::info("run {} {} with {} tensors", run->name,
               storage::RunStateName(run->state), run->tensor_count);
  RunToProto(*run, response);
  return grpc::Status::OK;
}

grpc::Status RunServiceImpl::DeleteRun(grpc::ServerContext* context,
                                       const v1::DeleteRunRequest* request,
                                       v1::DeleteRunResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteDeleteRun, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<uint64_t> n = absl::InvalidArgumentError("unset");
  if (absl::Status s = ValidateRunName(request->name()); !s.ok()) {
    n = s;
  } else {
    n = env_.store->DeleteRun(request->name());
    if (n.ok() && env_.quota != nullptr) env_.quota->RunDeleted(request->name());
  }
  std::map<std::string, std::string> details;
  if (n.ok()) details["tensors"] = absl::StrCat(*n);
  if (absl::Status s = Audited(env_, ActorOf(*who), "delete", request->name(), n.status(),
                               std::move(details));
      !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  env_.events->Notify();
  spdlog::info("run {} deleted ({} tensors)", request->name(), *n);
  response->set_tensors_deleted(*n);
  return grpc::Status::OK;
}

grpc::Status RunServiceImpl::ListTensors(grpc::ServerContext* context,
                                         const v1::ListTensorsRequest* request,
                                         v1::ListTensorsResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteListTensors, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  if (absl::Status s = ValidateRunName(request->run()); !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  absl::StatusOr<std::vector<storage::TensorMeta>> tensors =
      env_.store->ListTensors(request->run(), request->checkpoint());
  if (!tensors.ok()) return wire::ToGrpcStatus(tensors.status());
  for (const storage::TensorMeta& t : *tensors) {
    v1::TensorInfo* info = response->add_tensors();
    HeaderToProto(t.header, info->mutable_header());
    info->set_sequence(t.sequence);
  }
  return grpc::Status::OK;
}

grpc::Status RunServiceImpl::ReadTensor(
    grpc::ServerContext* context, const v1::ReadTensorRequest* request,
    grpc::ServerWriter<v1::ReadTensorResponse>* writer) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteReadTensor, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  if (absl::Status s = ValidateRunName(request->run()); !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  const v1::TensorAddress& address = request->address();
  if (absl::Status s = ValidateCheckpointName(address.checkpoint()); !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  if (absl::Status s = ValidateTensorKey(address.key()); !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  absl::StatusOr<std::unique_ptr<storage::TensorReader>> reader =
      env_.store->OpenTensor(request->run(), AddressFromProto(address));
  if (!reader.ok()) return wire::ToGrpcStatus(reader.status());
  const storage::TensorHeader& header = (*reader)->meta().header;

  v1::ReadTensorResponse response;
  HeaderToProto(header, response.mutable_header());
  if (!writer->Write(response)) return grpc::Status::CANCELLED;

  uint64_t chunk = request->chunk_bytes() == 0 ? uint64_t{1} << 20
                                               : request->chunk_bytes();
  chunk = std::min(chunk, env_.limits.max_chunk_bytes);
  std::string buffer;
  for (uint64_t offset = 0; offset < header.byte_length; offset += chunk) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    const uint64_t n = std::min(chunk, header.byte_length - offset);
    buffer.resize(n);
    absl::Status read = (*reader)->Read(
        offset, absl::MakeSpan(reinterpret_cast<uint8_t*>(buffer.data()), n));
    if (!read.ok()) return wire::ToGrpcStatus(read);
    response.Clear();
    v1::TensorChunk* out = response.mutable_chunk();
    out->set_offset(offset);
    out->mutable_data()->swap(buffer);
    if (!writer->Write(response)) return grpc::Status::CANCELLED;
    buffer.swap(*out->mutable_data());
  }
  return grpc::Status::OK;
}

grpc::Status RunServiceImpl::SetReference(grpc::ServerContext* context,
                                          const v1::SetReferenceRequest* request,
                                          v1::Run* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteSetReference, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<storage::RunInfo> run =
      server::SetReference(env_, ActorOf(*who), request->name(), request->reference());
  if (!run.ok()) return wire::ToGrpcStatus(run.status());
  RunToProto(*run, response);
  return grpc::Status::OK;
}

}  // namespace reprod::server

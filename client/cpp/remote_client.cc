#include "client/cpp/remote_client.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cpp/wire_convert.h"
#include "common/crc32c.h"
#include "common/names.h"
#include "proto/wire.h"

namespace reprod::client {
namespace {

// The channel's own reconnect backoff: short, so that a restarted server is
// found again within a second (gRPC's default starts at 1 s and grows to
// 120 s). GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays unset: gRPC takes it as the
// time one connection attempt may take (TCP, TLS, the server's first HTTP/2
// frame; default 20 s), and a short value made a loaded machine or a distant
// server look unreachable.
constexpr int kInitialReconnectBackoffMs = 200;
constexpr int kMaxReconnectBackoffMs = 2000;

absl::Status CheckRun(const std::string& name) { return ValidateRunName(name); }

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const ConnectOptions& options) {
  if (!options.tls.has_value()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.tls->ca_certs;
  ssl.pem_private_key = options.tls->private_key;
  ssl.pem_cert_chain = options.tls->cert_chain;
  return grpc::SslCredentials(ssl);
}

// Adds `authorization: Bearer <token>` to every call of the channel.
class BearerInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(std::string value) : value_(std::move(value)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", value_);
    }
    methods->Proceed();
  }

 private:
  const std::string value_;
};

class BearerInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(const std::string& token) : value_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerInterceptor(value_);
  }

 private:
  const std::string value_;
};

std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target,
                                             const ConnectOptions& options,
                                             const grpc::ChannelArguments& args) {
  if (options.token.empty()) {
    return grpc::CreateCustomChannel(target, ChannelCredentials(options), args);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> bearer;
  bearer.push_back(std::make_unique<BearerInterceptorFactory>(options.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, ChannelCredentials(options), args, std::move(bearer));
}

// Why the channel failed, as gRPC says it: a call on a channel in
// TRANSIENT_FAILURE fails at once with the last connection error.
std::string ProbeConnectError(v1::RunService::Stub& stub) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  v1::GetRunRequest request;
  v1::Run response;
  const grpc::Status status = stub.GetRun(&context, request, &response);
  return status.error_message();
}

bool Mentions(const std::string& text, std::initializer_list<const char*> needles) {
  for (const char* n : needles) {
    if (absl::StrContains(absl::AsciiStrToLower(text), n)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::string> ChannelTarget(const std::string& address) {
  if (address.find(',') == std::string::npos) return address;
  std::vector<std::string> v4, v6;
  for (absl::string_view raw : absl::StrSplit(address, ',')) {
    const std::string part(absl::StripAsciiWhitespace(raw));
    const size_t colon = part.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == part.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("server address '", part, "' in '", address, "' is not HOST:PORT"));
    }
    std::string host = part.substr(0, colon);
    const std::string port = part.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
      return absl::InvalidArgumentError(absl::StrCat("server address '", part, "': ", host,
                                                     " does not resolve (", gai_strerror(rc),
                                                     ")"));
    }
    char text[INET6_ADDRSTRLEN] = {};
    if (found->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr, text,
                sizeof(text));
      v4.push_back(absl::StrCat(text, ":", port));
    } else {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr, text,
                sizeof(text));
      v6.push_back(absl::StrCat("[", text, "]:", port));
    }
    freeaddrinfo(found);
  }
  if (!v4.empty() && !v6.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server addresses '", address, "' mix IPv4 and IPv6; list replicas of one family"));
  }
  return v4.empty() ? absl::StrCat("ipv6:", absl::StrJoin(v6, ","))
                    : absl::StrCat("ipv4:", absl::StrJoin(v4, ","));
}

std::string TlsHint(const std::string& grpc_message, bool tls, bool client_cert, bool connecting) {
  // A connection the server closed is a TLS mismatch only while connecting;
  // later it is an outage (a restart) like any other.
  const bool closed =
      connecting && Mentions(grpc_message, {"socket closed", "connection reset",
                                            "end of tcp stream", "connection closed"});
  if (!tls) {
    // A TLS server drops a connection that does not start a handshake.
    if (closed) {
      return "the server probably requires TLS: give the CA that signed its certificate with "
             "--tls-ca FILE (REPROD_TLS_CA)";
    }
    return "";
  }
  if (Mentions(grpc_message, {"wrong version number", "wrong_version_number", "http_request",
                              "packet length too long"})) {
    return "the server does not speak TLS (plaintext reprodd): drop --tls-ca/--tls-cert, or "
           "start reprodd with --tls-cert and --tls-key";
  }
  if (Mentions(grpc_message, {"peer name", "hostname", "subject alternative"})) {
    return "the server's certificate is not issued for this address: connect by a name or IP "
           "in its subjectAltName";
  }
  if (Mentions(grpc_message, {"certificate verify failed", "certificate_verify_failed",
                              "unable to get local issuer", "self signed", "self-signed"})) {
    return "the server's certificate is not trusted: it is not signed by the CA in --tls-ca "
           "(or it has expired)";
  }
  if (closed ||
      Mentions(grpc_message,
               {"certificate required", "certificate_required", "unknown ca", "unknown_ca",
                "bad certificate", "bad_certificate", "handshake failure", "handshake_failure"})) {
    return client_cert
               ? "the server refused the TLS connection: its --tls-client-ca probably did not "
                 "sign the client certificate in --tls-cert"
               : "the server probably requires a client certificate (mutual TLS): give "
                 "--tls-cert FILE and --tls-key FILE (REPROD_TLS_CERT, REPROD_TLS_KEY)";
  }
  return "";
}

absl::StatusOr<std::unique_ptr<RemoteClient>> RemoteClient::Connect(std::string target,
                                                                    ConnectOptions options) {
  if (target.empty()) {
    return absl::InvalidArgumentError("empty server address (expected HOST:PORT)");
  }
  absl::StatusOr<std::string> channel_target = ChannelTarget(target);
  if (!channel_target.ok()) return channel_target.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kInitialReconnectBackoffMs);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  std::shared_ptr<grpc::Channel> channel =
      CreateChannel(*channel_target, options, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create a channel to '", target, "'"));
  }
  // Wait for READY, but give up at the first failed attempt: a refused
  // connection should not cost the whole timeout.
  const auto deadline = absl::ToChronoTime(absl::Now() + options.connect_timeout);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      return ConnectFailure(target, options, channel);
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
      compare_(v1::CompareService::NewStub(channel_)),
      reports_(v1::ReportService::NewStub(channel_)),
      tokens_(v1::TokenService::NewStub(channel_)),
      audit_(v1::AuditService::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

RemoteClient::~RemoteClient() = default;

absl::Status RemoteClient::ConnectFailure(const std::string& target, const ConnectOptions& options,
                                          const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::RunService::NewStub(channel);
  const std::string why = ProbeConnectError(*stub);
  const bool tls = options.tls.has_value();
  const std::string hint =
      TlsHint(why, tls, tls && !options.tls->cert_chain.empty(), /*connecting=*/true);
  if (!hint.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot connect to the reprod server at ", target,
                                               ": ", hint, " (", why, ")"));
  }
  return absl::UnavailableError(absl::StrCat("cannot reach the reprod server at ", target,
                                             ": connection refused or failed (", why, ")"));
}

absl::Status RemoteClient::FromRpc(const grpc::Status& status) const {
  absl::Status s = wire::FromGrpcStatus(status);
  if (s.code() == absl::StatusCode::kUnavailable) {
    const bool tls = options_.tls.has_value();
    const std::string hint =
        TlsHint(std::string(s.message()), tls, tls && !options_.tls->cert_chain.empty(),
                /*connecting=*/absl::StrContains(s.message(), "failed to connect"));
    const std::string why =
        hint.empty() ? std::string(s.message()) : absl::StrCat(hint, " (", s.message(), ")");
    return absl::UnavailableError(
        absl::StrCat("reprod server at ", target_, " unavailable: ", why));
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

absl::StatusOr<Tensor> RemoteClient::ReadTensor(const std::string& run,
                                                const v1::TensorAddress& address) {
  if (absl::Status s = CheckRun(run); !s.ok()) return s;
  const std::string what = absl::StrCat("run '", run, "' tensor ", AddressToString(address));
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::ReadTensorRequest request;
  request.set_run(run);
  *request.mutable_address() = address;
  std::unique_ptr<grpc::ClientReader<v1::ReadTensorResponse>> reader =
      runs_->ReadTensor(&context, request);
  v1::ReadTensorResponse response;
  std::optional<Tensor> tensor;
  uint64_t expected = 0, got = 0;
  uint32_t crc = 0, want_crc = 0;
  while (reader->Read(&response)) {
    if (response.has_header()) {
      const v1::TensorHeader& h = response.header();
      absl::StatusOr<DType> dtype = wire::DTypeFromWire(h.dtype());
      if (!dtype.ok()) return absl::DataLossError(absl::StrCat(what, ": ", dtype.status().message()));
      absl::StatusOr<Tensor> t = Tensor::Allocate(*dtype, Shape(h.shape().begin(), h.shape().end()));
      if (!t.ok()) return absl::DataLossError(absl::StrCat(what, ": ", t.status().message()));
      if (t->num_bytes() != h.byte_length()) {
        return absl::DataLossError(absl::StrCat(what, ": header says ", h.byte_length(),
                                                " bytes for ", t->num_bytes(), " of its shape"));
      }
      tensor = *std::move(t);
      expected = h.byte_length();
      want_crc = h.crc32c();
    } else if (response.has_chunk() && tensor.has_value()) {
      const std::string& data = response.chunk().data();
      if (response.chunk().offset() != got || data.size() > expected - got) {
        return absl::DataLossError(absl::StrCat(what, ": chunk at ", response.chunk().offset(),
                                                " of ", data.size(), " bytes after ", got,
                                                " of ", expected));
      }
      std::memcpy(static_cast<char*>(tensor->mutable_data()) + got, data.data(), data.size());
      crc = Crc32cExtend(crc, data);
      got += data.size();
    }
  }
  if (grpc::Status status = reader->Finish(); !status.ok()) return FromRpc(status);
  if (!tensor.has_value() || got != expected || crc != want_crc) {
    return absl::DataLossError(absl::StrCat(what, ": received ", got, " of ", expected,
                                            " bytes, CRC-32C ", crc, " (header says ", want_crc,
                                            ")"));
  }
  return *std::move(tensor);
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

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> RemoteClient::CheckHealth(
    absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  grpc::health::v1::HealthCheckRequest request;  // service "": the whole server
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response.status();
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

absl::StatusOr<v1::Run> RemoteClient::SetReference(const std::string& name, bool reference) {
  if (absl::Status s = CheckRun(name); !s.ok()) return s;
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::SetReferenceRequest request;
  request.set_name(name);
  request.set_reference(reference);
  v1::Run response;
  grpc::Status status = runs_->SetReference(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<v1::Report> RemoteClient::SignReport(const std::string& id,
                                                    v1::ReportFormat format) {
  if (id.empty()) return absl::InvalidArgumentError("empty report id");
  grpc::ClientContext context;
  // Signing re-reads both runs' tensor indexes.
  SetDeadline(&context, options_.compare_timeout);
  v1::SignReportRequest request;
  request.set_id(id);
  request.set_format(format);
  v1::Report response;
  grpc::Status status = reports_->SignReport(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<v1::CreateTokenResponse> RemoteClient::CreateToken(
    const v1::CreateTokenRequest& request) {
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::CreateTokenResponse response;
  grpc::Status status = tokens_->CreateToken(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<std::vector<v1::TokenInfo>> RemoteClient::ListTokens() {
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::ListTokensResponse response;
  grpc::Status status = tokens_->ListTokens(&context, v1::ListTokensRequest(), &response);
  if (!status.ok()) return FromRpc(status);
  return std::vector<v1::TokenInfo>(response.tokens().begin(), response.tokens().end());
}

absl::StatusOr<v1::TokenInfo> RemoteClient::RevokeToken(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("empty token id");
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::RevokeTokenRequest request;
  request.set_id(id);
  v1::TokenInfo response;
  grpc::Status status = tokens_->RevokeToken(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<std::vector<v1::AuditEvent>> RemoteClient::ListAuditEvents(
    const std::string& object, uint32_t limit) {
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::ListEventsRequest request;
  request.set_object(object);
  request.set_limit(limit);
  v1::ListEventsResponse response;
  grpc::Status status = audit_->ListEvents(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return std::vector<v1::AuditEvent>(response.events().begin(), response.events().end());
}

absl::StatusOr<v1::VerifyAuditResponse> RemoteClient::VerifyAudit() {
  grpc::ClientContext context;
  // Verification re-reads every signed run's tensors.
  SetDeadline(&context, options_.compare_timeout);
  v1::VerifyAuditResponse response;
  grpc::Status status = audit_->VerifyAudit(&context, v1::VerifyAuditRequest(), &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<v1::BackupResponse> RemoteClient::Backup(const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(&context, options_.compare_timeout);
  v1::BackupRequest request;
  request.set_name(name);
  v1::BackupResponse response;
  grpc::Status status =
      v1::AdminService::NewStub(channel_)->Backup(&context, request, &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

absl::StatusOr<v1::CompactResponse> RemoteClient::Compact() {
  grpc::ClientContext context;
  SetDeadline(&context, options_.compare_timeout);
  v1::CompactResponse response;
  grpc::Status status =
      v1::AdminService::NewStub(channel_)->Compact(&context, v1::CompactRequest(), &response);
  if (!status.ok()) return FromRpc(status);
  return response;
}

}  // namespace reprod::client

#include "server/admin_service.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "proto/wire.h"
#include "server/auth/audit_log.h"
#include "server/auth/token.h"
#include "server/auth_gate.h"
#include "server/proto_convert.h"
#include "server/review_ops.h"

namespace reprod::server {
namespace {

// The sequence a DataLoss of AuditLog::Verify/VerifySignatures or
// VerifySignedRunData names: their messages start "audit record N ".
std::optional<uint64_t> SequenceInMessage(std::string_view message) {
  constexpr std::string_view kPrefix = "audit record ";
  if (!message.starts_with(kPrefix)) return std::nullopt;
  message.remove_prefix(kPrefix.size());
  const size_t end = message.find(' ');
  uint64_t sequence = 0;
  if (!absl::SimpleAtoi(std::string(message.substr(0, end)), &sequence)) return std::nullopt;
  return sequence;
}

}  // namespace

grpc::Status TokenServiceImpl::CreateToken(grpc::ServerContext* context,
                                           const v1::CreateTokenRequest* request,
                                           v1::CreateTokenResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteCreateToken, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<auth::Role> role = auth::ParseRole(request->role());
  if (!role.ok()) return wire::ToGrpcStatus(role.status());
  auth::TokenSpec spec;
  spec.role = *role;
  spec.scope = request->scope();
  spec.label = request->label();
  if (request->expires_in_seconds() > 0) {
    spec.expires_in = absl::Seconds(static_cast<int64_t>(
        std::min<uint64_t>(request->expires_in_seconds(), uint64_t{1} << 40)));
  }
  if (request->has_quota_bytes()) spec.quota_bytes = request->quota_bytes();
  absl::StatusOr<auth::IssuedToken> issued = server::CreateToken(env_, ActorOf(*who), spec);
  if (!issued.ok()) return wire::ToGrpcStatus(issued.status());
  response->set_token(issued->token);
  TokenToProto(issued->record, response->mutable_info());
  return grpc::Status::OK;
}

grpc::Status TokenServiceImpl::ListTokens(grpc::ServerContext* context,
                                          const v1::ListTokensRequest* request,
                                          v1::ListTokensResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteListTokens, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<std::vector<auth::TokenRecord>> tokens = server::ListTokens(env_);
  if (!tokens.ok()) return wire::ToGrpcStatus(tokens.status());
  for (const auth::TokenRecord& t : *tokens) TokenToProto(t, response->add_tokens());
  return grpc::Status::OK;
}

grpc::Status TokenServiceImpl::RevokeToken(grpc::ServerContext* context,
                                           const v1::RevokeTokenRequest* request,
                                           v1::TokenInfo* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteRevokeToken, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  absl::StatusOr<auth::TokenRecord> revoked =
      server::RevokeToken(env_, ActorOf(*who), request->id());
  if (!revoked.ok()) return wire::ToGrpcStatus(revoked.status());
  TokenToProto(*revoked, response);
  return grpc::Status::OK;
}

grpc::Status AuditServiceImpl::ListEvents(grpc::ServerContext* context,
                                          const v1::ListEventsRequest* request,
                                          v1::ListEventsResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteListEvents, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  if (env_.audit == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this server has no audit log");
  }
  const size_t limit = request->limit() == 0 ? 100 : request->limit();
  absl::StatusOr<std::vector<auth::AuditRecord>> events =
      env_.audit->List(request->object(), limit);
  if (!events.ok()) return wire::ToGrpcStatus(events.status());
  for (const auth::AuditRecord& r : *events) AuditEventToProto(r, response->add_events());
  return grpc::Status::OK;
}

grpc::Status AuditServiceImpl::VerifyAudit(grpc::ServerContext* context,
                                           const v1::VerifyAuditRequest* request,
                                           v1::VerifyAuditResponse* response) {
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteVerifyAudit, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  if (env_.audit == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this server has no audit log");
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> records =
      env_.store->ListAuthRecords(auth::kAuditKeyPrefix);
  if (!records.ok()) return wire::ToGrpcStatus(records.status());
  response->set_records(records->size());
  const absl::Status verdict = server::VerifyAudit(env_);
  if (verdict.ok()) {
    response->set_ok(true);
    return grpc::Status::OK;
  }
  if (verdict.code() != absl::StatusCode::kDataLoss) return wire::ToGrpcStatus(verdict);
  response->set_ok(false);
  response->set_reason(std::string(verdict.message()));
  if (std::optional<uint64_t> seq = SequenceInMessage(std::string(verdict.message()))) {
    response->set_bad_sequence(*seq);
  }
  return grpc::Status::OK;
}

}  // namespace reprod::server

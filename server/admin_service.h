// File: server/admin_service.h
//
// TokenService and AuditService (reprod/v1/review.proto): token management
// and the audit log over the wire, for admins (docs/acl.md). The work is
// review_ops.h's: creating and revoking tokens are recorded in the audit
// log, the token secret is returned once and never logged.
//
// Thread-safety: handlers run concurrently; TokenStore, AuditLog and the
// store are thread-safe.
#ifndef REPROD_SERVER_ADMIN_SERVICE_H_
#define REPROD_SERVER_ADMIN_SERVICE_H_

#include "reprod/v1/review.grpc.pb.h"
#include "server/service_env.h"

namespace reprod::server {

class TokenServiceImpl final : public v1::TokenService::Service {
 public:
  explicit TokenServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status CreateToken(grpc::ServerContext* context, const v1::CreateTokenRequest* request,
                           v1::CreateTokenResponse* response) override;
  grpc::Status ListTokens(grpc::ServerContext* context, const v1::ListTokensRequest* request,
                          v1::ListTokensResponse* response) override;
  grpc::Status RevokeToken(grpc::ServerContext* context, const v1::RevokeTokenRequest* request,
                           v1::TokenInfo* response) override;

 private:
  ServiceEnv env_;
};

class AuditServiceImpl final : public v1::AuditService::Service {
 public:
  explicit AuditServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status ListEvents(grpc::ServerContext* context, const v1::ListEventsRequest* request,
                          v1::ListEventsResponse* response) override;
  // Always OK when the log could be read: the verdict is in the response.
  grpc::Status VerifyAudit(grpc::ServerContext* context, const v1::VerifyAuditRequest* request,
                           v1::VerifyAuditResponse* response) override;

 private:
  ServiceEnv env_;
};

}  // namespace reprod::server

#endif  // REPROD_SERVER_ADMIN_SERVICE_H_

// File: client/cpp/grpc_status.h
//
// The one place where the client turns a grpc::Status into an absl::Status.
// absl codes mirror google.rpc.Code, so the mapping is 1:1 and the message
// is kept verbatim:
//
//   grpc::Status s = stub->GetRun(&ctx, request, &run);
//   if (!s.ok()) return FromGrpcStatus(s);
//
// Thread-safety: pure function.
#ifndef REPROD_CLIENT_CPP_GRPC_STATUS_H_
#define REPROD_CLIENT_CPP_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace reprod::client {

// reprod::client::FromGrpcStatus
// OK for OK; otherwise the same code (grpc::StatusCode value == absl code
// value for every canonical code; anything outside 0..16 becomes kUnknown)
// and the server's message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_GRPC_STATUS_H_

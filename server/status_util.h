// File: server/status_util.h
//
// The one place where absl::Status and grpc::Status meet (Triton's
// GrpcStatusUtil idea). absl codes mirror google.rpc.Code, so the mapping is
// 1:1 and messages are kept.
//
//   return ToGrpcStatus(store.CreateRun(run));
//
// Thread-safety: pure functions.
#ifndef REPROD_SERVER_STATUS_UTIL_H_
#define REPROD_SERVER_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace reprod::server {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace reprod::server

#endif  // REPROD_SERVER_STATUS_UTIL_H_

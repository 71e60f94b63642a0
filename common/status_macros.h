// File: common/status_macros.h
//
// REPROD_RETURN_IF_ERROR / REPROD_ASSIGN_OR_RETURN, shaped like absl's
// (public only from LTS 20260526; Debian ships 20220623).
//
//   REPROD_RETURN_IF_ERROR(WriteHeader(out));
//   REPROD_ASSIGN_OR_RETURN(Tensor t, ReadNpy(path));
#ifndef REPROD_COMMON_STATUS_MACROS_H_
#define REPROD_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define REPROD_RETURN_IF_ERROR(expr)                          \
  do {                                                        \
    ::absl::Status reprod_status_ = (expr);                   \
    if (!reprod_status_.ok()) return reprod_status_;          \
  } while (0)

#define REPROD_STATUS_CONCAT_INNER_(a, b) a##b
#define REPROD_STATUS_CONCAT_(a, b) REPROD_STATUS_CONCAT_INNER_(a, b)

#define REPROD_ASSIGN_OR_RETURN(lhs, rexpr) \
  REPROD_ASSIGN_OR_RETURN_IMPL_(            \
      REPROD_STATUS_CONCAT_(reprod_statusor_, __LINE__), lhs, rexpr)

#define REPROD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // REPROD_COMMON_STATUS_MACROS_H_

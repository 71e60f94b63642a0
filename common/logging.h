// File: common/logging.h
//
// spdlog set-up for binaries. Libraries never configure sinks; they log
// through spdlog's default logger (or, preferably, return a Status).
#ifndef REPROD_COMMON_LOGGING_H_
#define REPROD_COMMON_LOGGING_H_

#include <string_view>

#include "absl/status/status.h"

namespace reprod {

// Sends the default logger to stderr with the given level name
// ("trace", "debug", "info", "warn", "error", "off"). InvalidArgument for an
// unknown level.
absl::Status InitLogging(std::string_view level);

}  // namespace reprod

#endif  // REPROD_COMMON_LOGGING_H_

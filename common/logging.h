// File: common/logging.h
//
// spdlog set-up for binaries. Libraries never configure sinks; they log
// through spdlog's default logger (or, preferably, return a Status).
//
// Thread-safety: MakeLogFormatter is safe to call from any thread; call
// InitLogging once, at start-up, before other threads log.
#ifndef REPROD_COMMON_LOGGING_H_
#define REPROD_COMMON_LOGGING_H_

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spdlog/formatter.h"

namespace reprod {

// Longest message a log line shows; longer ones are abbreviated head...tail.
inline constexpr size_t kMaxLogMessageBytes = 4096;

// The formatter of every reprod log line: "[time] [level] message", the
// message through VisibleName(message, kMaxLogMessageBytes)
// (common/visible.h), so a client's string cannot forge or split a log line.
//
// kJson instead writes one JSON object per line, for log collectors:
//   {"time":"2026-12-02T05:00:00.123Z","level":"info","msg":"..."}
// time in UTC; msg is the same VisibleName form with `"` and `\` escaped,
// so every line is valid JSON (and still one line of visible text).
enum class LogFormat { kText, kJson };
std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format = LogFormat::kText);

// "text" or "json"; InvalidArgument naming both otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name);

// Sends the default logger to stderr with the given level name
// ("trace", "debug", "info", "warn", "error", "off"). InvalidArgument for an
// unknown level. Every line goes through MakeLogFormatter(format).
absl::Status InitLogging(std::string_view level, LogFormat format = LogFormat::kText);

}  // namespace reprod

#endif  // REPROD_COMMON_LOGGING_H_

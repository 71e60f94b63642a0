#include "common/logging.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/visible.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace reprod {
namespace {

// "%*": the message through VisibleName, so a log line is one line of
// visible text whatever a client sent, and a huge string costs kMaxLogMessageBytes.
class VisiblePayload : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string shown =
        VisibleName(std::string_view(msg.payload.data(), msg.payload.size()), kMaxLogMessageBytes);
    dest.append(shown.data(), shown.data() + shown.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<VisiblePayload>();
  }
};

// "%*" of the JSON lines: VisiblePayload's text as the inside of a JSON
// string. VisibleText leaves no byte below 0x20 and only valid UTF-8, so
// `"` and `\` are all that need escaping.
class JsonPayload : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string shown =
        VisibleName(std::string_view(msg.payload.data(), msg.payload.size()), kMaxLogMessageBytes);
    for (char c : shown) {
      if (c == '"' || c == '\\') dest.push_back('\\');
      dest.push_back(c);
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonPayload>();
  }
};

}  // namespace

std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format) {
  if (format == LogFormat::kJson) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonPayload>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","msg":"%*"})");
    return formatter;
  }
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<VisiblePayload>('*').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %*");
  return formatter;
}

absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log format '", std::string(name), "' (text, json)"));
}


absl::Status InitLogging(std::string_view level, LogFormat format) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown log level '", std::string(level), "' (trace, debug, info, warn, error, off)"));
  }
  spdlog::drop("reprod");
  auto logger = spdlog::stderr_color_mt("reprod");
  logger->set_formatter(MakeLogFormatter(format));
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

}  // namespace reprod

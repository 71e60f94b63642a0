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

}  // namespace

std::unique_ptr<spdlog::formatter> MakeLogFormatter() {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<VisiblePayload>('*').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %*");
  return formatter;
}


absl::Status InitLogging(std::string_view level) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown log level '", std::string(level), "' (trace, debug, info, warn, error, off)"));
  }
  spdlog::drop("reprod");
  auto logger = spdlog::stderr_color_mt("reprod");
  logger->set_formatter(MakeLogFormatter());
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

}  // namespace reprod

#include "client/cpp/progress.h"

#include <unistd.h>

#include <cstdio>

namespace reprod::client {

ProgressTicker::ProgressTicker(bool enabled)
    : enabled_(enabled),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {
  if (enabled_) thread_ = std::thread([this] { Run(); });
}

ProgressTicker::~ProgressTicker() {
  if (!enabled_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (printed_ && tty_) std::fputs("\r\033[K", stderr);
}

void ProgressTicker::Set(std::string message) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  message_ = std::move(message);
}

void ProgressTicker::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
    if (message_.empty()) continue;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (tty_) {
      std::fprintf(stderr, "\r\033[K[reprodctl] %s ... %.0fs", message_.c_str(), secs);
    } else {
      std::fprintf(stderr, "[reprodctl] %s ... %.0fs\n", message_.c_str(), secs);
    }
    std::fflush(stderr);
    printed_ = true;
  }
}

}  // namespace reprod::client

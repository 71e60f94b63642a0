// File: client/cpp/progress.h
//
// ProgressTicker: tells the person at the terminal what a long command is
// doing. Prints the current message to stderr once a second, starting only
// after the work has taken more than a second (short commands stay silent).
// On a terminal the line is redrawn in place; otherwise one line per tick.
//
// Thread-safety: Set() may be called from any thread.
#ifndef REPROD_CLIENT_CPP_PROGRESS_H_
#define REPROD_CLIENT_CPP_PROGRESS_H_

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace reprod::client {

class ProgressTicker {
 public:
  // `enabled` = false makes every call a no-op (--quiet).
  explicit ProgressTicker(bool enabled = true);
  ~ProgressTicker();  // stops the ticker and clears the line
  ProgressTicker(const ProgressTicker&) = delete;
  ProgressTicker& operator=(const ProgressTicker&) = delete;

  // Replaces the message shown ("loading forward_paddle.npy (2/10)").
  void Set(std::string message);

 private:
  void Run();

  const bool enabled_;
  const bool tty_;
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string message_;  // guarded by mu_
  bool stop_ = false;    // guarded by mu_
  bool printed_ = false; // guarded by mu_
  std::thread thread_;
};

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_PROGRESS_H_

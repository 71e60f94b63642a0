// File: tests/integration/server_process.h
//
// ServerProcess: runs the real `reprodd` binary as a child process on
// loopback for integration tests, the way a user runs it: its own data dir,
// a port chosen by the kernel (or a fixed one, to restart on the same
// address), logs in a file next to the data dir.
//
//   ServerProcess server(ServerProcess::Options{.data_dir = dir});
//   ASSERT_THAT(server.Start(), IsOk());
//   auto channel = server.Channel();
//   ...
//   server.Kill();            // SIGKILL, for crash tests
//   server.Terminate();       // SIGTERM, returns the exit status
//
// Thread-safety: one thread drives a ServerProcess.
#ifndef REPROD_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define REPROD_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace reprod::testing {

class ServerProcess {
 public:
  struct Options {
    std::string data_dir;          // required
    int port = 0;                  // 0: any free port (see port())
    std::string listen;            // overrides 127.0.0.1:<port> when set
    std::string store = "rocksdb";
    std::vector<std::string> extra_args;
  };

  explicit ServerProcess(Options options);
  ~ServerProcess();  // SIGKILLs a still-running child

  // Starts reprodd and waits (up to 30 s) until it listens.
  absl::Status Start();
  // SIGKILL and reap.
  void Kill();
  // SIGTERM and wait (up to `timeout_s`); the exit status as waitpid gives
  // it, or an error when the process had to be killed.
  absl::StatusOr<int> Terminate(int timeout_s = 30);

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  std::string log_path() const { return log_path_; }
  std::string ReadLog() const;

  std::shared_ptr<grpc::Channel> Channel() const;

  // Peak resident set size of the running child (VmHWM), bytes.
  absl::StatusOr<uint64_t> PeakRssBytes() const;

 private:
  Options options_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_path_;
  std::string port_file_;
};

// Options with `data_dir` and every other field at its default.
inline ServerProcess::Options ServerOptionsFor(std::string data_dir) {
  ServerProcess::Options options;
  options.data_dir = std::move(data_dir);
  return options;
}

// A free loopback TCP port (bound and released; racy but fine for tests).
int PickFreePort();

// A fresh empty directory under $TMPDIR, removed by the returned guard.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Path of the reprodd binary (compile definition REPRODD_PATH).
std::string ReproddPath();

}  // namespace reprod::testing

#endif  // REPROD_TESTS_INTEGRATION_SERVER_PROCESS_H_

// File: client/cpp/reprodctl/cli.h
//
// reprodctl's command line: the CLI11 app with the global options (--quiet,
// --backend, --log-level, --server / REPROD_SERVER, --version) and every
// subcommand registered. main() is `return Cli().Main(argc, argv);`; tests
// build a Cli and parse argument lists without running anything.
//
// Thread-safety: not thread-safe.
#ifndef REPROD_CLIENT_CPP_REPRODCTL_CLI_H_
#define REPROD_CLIENT_CPP_REPRODCTL_CLI_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "client/cpp/reprodctl/commands.h"

namespace reprod::reprodctl {

class Cli {
 public:
  Cli();
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;

  // Parses argv, then runs the chosen subcommand. Returns its exit code;
  // usage errors print CLI11's message and return kExitBadInput, --help and
  // --version return kExitPass. Never throws.
  int Main(int argc, const char* const* argv);

  // The parser (tests: app().parse(args) throws CLI::ParseError on usage
  // errors, as CLI11 does).
  CLI::App& app() { return app_; }
  const GlobalOptions& global() const { return global_; }

 private:
  CLI::App app_;
  GlobalOptions global_;
  std::vector<std::pair<CLI::App*, Runner>> commands_;
};

}  // namespace reprod::reprodctl

#endif  // REPROD_CLIENT_CPP_REPRODCTL_CLI_H_

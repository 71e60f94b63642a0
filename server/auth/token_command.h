// File: server/auth/token_command.h
//
// `reprodd token ...`: manages tokens directly in the data directory while
// the server is stopped (the RocksDB store is locked by a running reprodd,
// so this fails with "in use" then; stop it, run the command, start it).
//
//   reprodd token create --role admin --label ops --data-dir /var/lib/reprod
//   reprodd token create --role submitter --scope team42 --label "team42 CI"
//       --expires-in 30d
//   reprodd token list   --data-dir DIR      # id, role, scope, label, dates
//   reprodd token revoke ID-PREFIX --data-dir DIR
//
// `create` prints the token once, on stdout, alone on its line (everything
// else goes to stderr), so `TOKEN=$(reprodd token create ...)` works; only
// its hash is stored. Exit codes: 0 done, 2 bad usage, 1 anything else.
//
// Thread-safety: call from main only.
#ifndef REPROD_SERVER_AUTH_TOKEN_COMMAND_H_
#define REPROD_SERVER_AUTH_TOKEN_COMMAND_H_

#include <ostream>

namespace reprod::server::auth {

// argv[0] is "token" (main passes argc - 1, argv + 1). Writes the token (or
// the listing) to `out` and messages to `err`; returns the exit code.
int RunTokenCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace reprod::server::auth

#endif  // REPROD_SERVER_AUTH_TOKEN_COMMAND_H_

// File: server/restore_command.h
//
// `reprodd restore BACKUP --data-dir DIR`: makes DIR a store holding what a
// backup (`reprodctl admin backup`) holds, while no server uses DIR. DIR
// must be absent or an empty folder; the backup stays as it was (table and
// blob files are hard-linked where they share a filesystem, the rest is
// copied). Then start reprodd on DIR.
//
// Exit codes: 0 restored; 2 bad usage, DIR not empty, BACKUP not a store,
// or a store format newer than this build reads (the message names both
// versions); 1 anything else (I/O).
//
// Thread-safety: call from main only.
#ifndef REPROD_SERVER_RESTORE_COMMAND_H_
#define REPROD_SERVER_RESTORE_COMMAND_H_

#include <ostream>

namespace reprod::server {

// argv[0] is "restore" (main passes argc - 1, argv + 1). Writes the summary
// to `out`, messages to `err`; returns the exit code.
int RunRestoreCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace reprod::server

#endif  // REPROD_SERVER_RESTORE_COMMAND_H_

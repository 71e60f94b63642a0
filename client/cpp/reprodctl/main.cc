// reprodctl: compare tensor dumps of a reference and a port, offline (files)
// and against a reprod server (push, runs, compare RUN RUN, watch, report).
// See `reprodctl --help` and cli.h.
#include "client/cpp/reprodctl/cli.h"
#include "common/malloc_tuning.h"

int main(int argc, char** argv) {
  // push streams 1 MiB chunks: without this a quarter of its time went to
  // page faults of buffers the heap had just given back.
  reprod::TuneMallocForStreaming();
  return reprod::reprodctl::Cli().Main(argc, argv);
}

// reprodctl: compare tensor dumps of a reference and a port, offline (files)
// and against a reprod server (push, runs, compare RUN RUN, watch, report).
// See `reprodctl --help` and cli.h.
#include "client/cpp/reprodctl/cli.h"

int main(int argc, char** argv) { return reprod::reprodctl::Cli().Main(argc, argv); }

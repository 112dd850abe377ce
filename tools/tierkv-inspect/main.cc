// tierkv-inspect DIR: lists the records of a disk-tier cache directory and verifies every one.
// Exit status: 0 when every record verified, 1 when some are corrupt or foreign, 2 on a usage or
// I/O error. The main `tierkv` CLI wraps the same function (src/tiers/disk/inspect.h).
#include <cstdio>
#include <cstring>

#include "tiers/disk/inspect.h"

int main(int argc, char** argv) {
  if (argc != 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fprintf(stderr,
                 "usage: tierkv-inspect DIR\n"
                 "Lists the chunk records of a tierkv disk cache directory (identity, chunk key, "
                 "tokens, bytes) and verifies each one's header and checksums. Read-only.\n");
    return 2;
  }
  auto rep = tierkv::disk::inspect_disk_directory(argv[1]);
  if (!rep.ok()) {
    std::fprintf(stderr, "tierkv-inspect: %s\n", rep.status().to_string().c_str());
    return 2;
  }
  tierkv::disk::print_inspect_report(*rep, stdout);
  return rep->corrupt + rep->foreign == 0 ? 0 : 1;
}

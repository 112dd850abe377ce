#include "subcommands.h"

#include <array>

namespace tierkv::cli {

std::span<const Subcommand> subcommands() {
  static constexpr std::array kTable{
      Subcommand{"replay",
                 "replay a workload (chat, document QA, a request trace) through a "
                 "continuous-batching loop once per cache policy; print time to first token",
                 define_replay},
      Subcommand{"inspect", "list and verify the chunk records of a disk-tier cache directory",
                 define_inspect},
  };
  return kTable;
}

}  // namespace tierkv::cli

#include "subcommands.h"

#include <array>

namespace tierkv::cli {

std::span<const Subcommand> subcommands() {
  static constexpr std::array kTable{
      Subcommand{"replay",
                 "replay a workload (chat, document QA, a request trace) through a "
                 "continuous-batching loop once per cache policy; print time to first token",
                 define_replay},
      Subcommand{"calibrate",
                 "measure this machine (transfer paths, prefill per layer, lower tiers) and write "
                 "the profile the planner reads",
                 define_calibrate},
      Subcommand{"inspect", "list and verify the chunk records of a disk-tier cache directory",
                 define_inspect},
  };
  return kTable;
}

}  // namespace tierkv::cli

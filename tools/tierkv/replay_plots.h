// Plots of a replay: runs bench/replay/plot_replay.py (python3 and Debian's python3-matplotlib)
// on the JSON Lines file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::cli::replay {

// Whether python3 can import matplotlib here.
bool matplotlib_available();

// Draws the TTFT plots of every workload and the timeline of request `timeline_id` under each of
// `timeline_policies` into `dir`. The script's table and the files it wrote go to stdout.
// Internal error naming the command when the script fails.
Status draw_plots(const std::string& script, const std::string& jsonl, const std::string& dir,
                  const std::vector<std::string>& timeline_policies, std::int64_t timeline_id);

}  // namespace tierkv::cli::replay

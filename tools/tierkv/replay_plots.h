// Plots of a replay: runs bench/replay/plot_replay.py (python3 and Debian's python3-matplotlib)
// on the JSON Lines file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::cli::replay {

// A Python that can import matplotlib: `python3` on PATH, else Debian's /usr/bin/python3 (where
// python3-matplotlib installs it, when PATH leads to another Python, e.g. pyenv's). "" when none.
std::string python_with_matplotlib();

// Draws the TTFT plots of every workload and the timeline of each (policy, request id) of
// `timelines` into `dir`. The script's table and the files it wrote go to stdout.
// Internal error naming the command when the script fails.
Status draw_plots(const std::string& python, const std::string& script, const std::string& jsonl, const std::string& dir,
                  const std::vector<std::pair<std::string, std::int64_t>>& timelines);

}  // namespace tierkv::cli::replay

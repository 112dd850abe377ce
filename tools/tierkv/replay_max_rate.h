// The highest arrival-rate scale a policy sustains: replays of one workload with its arrivals
// compressed by a scale s (s = 2: twice the rate), searched for the largest s whose p90 time to
// first token stays under a threshold. Doubling from 1 until a replay fails the threshold (or
// halving until one passes), then bisection (in log scale) between the last pass and the first
// failure, `steps` replays in all.
#pragma once

#include <functional>

#include "replay_output.h"
#include "tierkv/status.h"

namespace tierkv::cli::replay {

// `p90_at(s)` replays at scale s and returns its p90 TTFT in ms. Fills m.max_scale,
// m.failed_scale and m.probes.
Status find_max_rate(const std::function<Result<double>(double)>& p90_at, int steps, MaxRate& m);

}  // namespace tierkv::cli::replay

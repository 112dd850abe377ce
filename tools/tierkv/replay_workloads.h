// The workloads `tierkv replay` runs: the generators of src/replay/workload.h with the replay's
// flags applied, and what the replay needs to know about them before running.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "replay/workload.h"
#include "replay_options.h"
#include "tierkv/model_spec.h"
#include "tierkv/status.h"

namespace tierkv::cli::replay {

struct PreparedWorkload {
  tierkv::replay::Workload workload;
  tierkv::replay::WorkloadSummary summary;
  // Per request: the leading page-aligned tokens of its whole prompt (a chat turn's history
  // included, with stand-ins for the tokens the model will generate) that an earlier request's
  // prompt already had: what a cache that kept everything could serve.
  std::vector<std::int32_t> shared_prefix;
  std::int32_t longest_prompt = 0;  // whole prompt, tokens (chat: with its history)
  std::int32_t longest_output = 0;
  std::int32_t longest_request = 0;  // whole prompt + output tokens
};

// Builds workload `name` (chat, docqa, trace) for `model` with the options' sizes (after
// resolve_defaults): the generator's options, then --requests, --minutes and --time-scale for
// the synthetic workloads (the trace reader applies them itself). InvalidArgument naming the
// flag when the sizes cannot fit the model's positions.
Result<PreparedWorkload> prepare_workload(const std::string& name, const ReplayOptions& o,
                                          const ModelSpec& model);

// The first request with the longest shared prefix (0 for an empty workload).
std::int64_t default_timeline_request(const PreparedWorkload& w);

// The same requests arriving `factor` times sooner (arrival and think times divided by it).
tierkv::replay::Workload compress_arrivals(const tierkv::replay::Workload& w, double factor);

}  // namespace tierkv::cli::replay

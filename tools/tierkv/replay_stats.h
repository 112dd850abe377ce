// Statistics of `tierkv replay`: per-policy summaries and the cross-policy output check.
// Percentiles are nearest-rank, as bench/replay/plot_replay.py computes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "replay_loop.h"

namespace tierkv::cli::replay {

// Nearest-rank percentile (p in (0, 100]) of `values`; 0 when empty.
double percentile(std::vector<double> values, double p);

struct PolicySummary {
  std::string policy;  // the policy's label
  std::string workload;
  std::int64_t requests = 0;
  double ttft_p50 = 0, ttft_p90 = 0, ttft_p99 = 0;  // ms
  double itl_p50 = 0, itl_p90 = 0;  // ms, over every gap between consecutive output tokens
  std::int64_t prompt_tokens = 0;
  TierTokens hit_tokens;  // summed over requests, per tier
  std::vector<std::pair<std::string, double>> hit_rate;  // hit tokens / prompt tokens
  TierTokens bytes_moved, memory_bytes;
  std::int64_t loaded_tokens = 0, computed_tokens = 0, recomputed_tokens = 0, fallback_tokens = 0;
  std::uint64_t saved_chunks = 0, dropped_chunks = 0, save_errors = 0;  // into the host tier
  double wall_s = 0, virtual_s = 0;
};

PolicySummary summarize_run(const PolicyRun& run, const std::string& workload);

// A request whose greedy output differs from the reference policy's (the first run).
struct Mismatch {
  std::int64_t id = 0;
  std::string policy, reference;
  std::int32_t position = 0;  // first differing output token
  std::int32_t got = -1, want = -1;  // -1: that output is shorter
};

// Compares every run's outputs with the first run's, request by request.
std::vector<Mismatch> compare_outputs(const std::vector<PolicyRun>& runs);

// 16 hex digits naming a request's output tokens (equal outputs, equal digests).
std::string output_digest(const std::vector<std::int32_t>& tokens);

}  // namespace tierkv::cli::replay

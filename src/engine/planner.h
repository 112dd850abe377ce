// The warm-prefill planner: for one request, which cached tokens to load and which to recompute,
// and the prefill chunk size, from measured costs (tierkv/profile.h). A pure function of its
// inputs, so it is tested without a model or a device.
//
// The model of one request's time to first token. Tokens [0, gpu_end) are on the GPU already.
// A plan recomputes [gpu_end, load_begin), loads [load_begin, load_end) and computes
// [load_end, prompt). Loads start after the loads queued ahead of them; chunks from a lower tier
// are first read into host slots (at the tier's bandwidth, after its tail latency) and cross the
// link in groups as they land (kLowerLoadGroups); host chunks cross layer by layer, one layer of
// every chunk at a time. Compute runs the recomputed front first (it needs nothing loaded), then
// the tail in chunks of chunk_tokens on a grid from position 0; layer l of the first tail chunk
// starts when layer l-1 finished and layer l has landed. Compute beside a load is slowed by the
// profile's measured fraction. The time to first token is the end of the last tail chunk.
//
// The planner evaluates every front length (each chunk-grid boundary between gpu_end and what is
// cached), whether to load the lower tiers' part at all, and each chunk size, and takes the
// fastest. Computing everything after gpu_end is always a candidate, so the plan it picks is
// never predicted slower than recomputing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tierkv/profile.h"
#include "tierkv/warm_prefill.h"

namespace tierkv {

struct PlanInput {
  PrefillPolicy policy = PrefillPolicy::kPlanned;
  std::int32_t prompt_tokens = 0;
  std::int32_t gpu_end = 0;    // page-aligned; GPU-resident prefix
  std::int32_t host_end = 0;   // >= gpu_end: cached through the host tier
  std::int32_t lower_end = 0;  // >= host_end: cached through the lower tiers
  // Per lower tier holding part of [host_end, lower_end): its name (for the profile) and tokens.
  std::vector<std::pair<std::string, std::int32_t>> lower_tiers;
  std::int32_t page_tokens = 16;
  std::int32_t cache_chunk_tokens = 256;  // loads below the GPU move whole chunks
  std::int32_t max_chunk_tokens = 2048;   // the model's longest prefill chunk
  std::int32_t chunk_tokens = 0;          // fixed prefill chunk size; 0: the planner's choice
  std::int32_t split = -1;                // kPlanned: a fixed front/back split; -1: searched
  std::int32_t num_layers = 0;
  std::size_t kv_bytes_per_token_layer = 0;  // K plus V of one token in one layer
  double queued_ahead_us = 0;                // loads queued before this one
};

// A lower tiers' part is copied to the device in this many groups of chunks, each as soon as it
// is in host slots (the copies of the first groups overlap the reads of the later ones).
inline constexpr std::int32_t kLowerLoadGroups = 8;
// The chunks in one such group, of a part of `chunks` chunks.
inline std::int32_t lower_load_group(std::int32_t chunks) {
  return chunks <= 0 ? 0 : (chunks + kLowerLoadGroups - 1) / kLowerLoadGroups;
}

// The chunk sizes the planner tries (each <= max_chunk_tokens and <= the largest chunk the
// profile's prefill grid measured).
inline constexpr std::int32_t kPlannerChunkSizes[] = {128, 256, 512, 1024, 2048};
// What a plan that recomputes a front while the back loads must gain over the best plan without
// one, as a fraction of its predicted time, to be chosen.
inline constexpr double kFrontMargin = 0.10;
// The chunk size when the caller fixes none and the policy does not plan.
inline constexpr std::int32_t kDefaultPrefillChunk = 512;

// The predicted time of one fixed split: recompute [gpu_end, load_begin), load
// [load_begin, load_end), compute the rest in chunks of `chunk`. `gated`: the tail's layers wait
// per layer (warm prefill); otherwise the whole load finishes before the tail starts.
struct PlanCost {
  double total_us = 0, load_us = 0, compute_us = 0;
  double lower_ready_us = 0;  // when the lower tiers' part is predicted to be in host slots
};
PlanCost predict(const PlanInput& in, const CostProfile& profile, std::int32_t load_begin,
                 std::int32_t load_end, std::int32_t chunk, bool gated);

// Every layer of tokens [begin, end), each over the prompt before it, computed in chunks of
// `chunk` on a grid from position 0: what recomputing that range costs, in microseconds.
double compute_range_us(const PlanInput& in, const CostProfile& profile, std::int32_t begin,
                        std::int32_t end, std::int32_t chunk);

// The plan for `in` (policy decides which candidates are allowed). Ranges are clipped so that at
// least the prompt's last token is computed (its logits are the answer).
WarmPrefillPlan make_plan(const PlanInput& in, const CostProfile& profile);

}  // namespace tierkv

// One cache policy of `tierkv replay`, as a running engine: a fresh GPU page pool, the reference
// runner over it, a Cache with the policy's tiers, and the warm-prefill executor
// (tierkv/warm_prefill.h) that every prefill goes through.
//
//   policy             executor policy     GPU prefix  host tier      below the host tier
//   recompute          kRecompute          -           -              -
//   gpu-only           kGpuOnly            yes         -              -
//   load-then-compute  kLoadThenCompute    yes         --host-bytes   -
//   warm               kLayerwise          yes         --host-bytes   -
//   planned            kPlanned            yes         --host-bytes   -
//   planned-slow       kPlanned            yes         staging        the experiment tier
//   planned-disk       kPlanned            yes         staging        a disk tier (--disk-dir)
//   planned-redis      kPlanned            yes         staging        Redis (--redis)
//
// "GPU prefix": a request's full prompt pages are published in the pool once computed, and a
// later prompt with the same prefix reuses them with no copy. Under the policies over a lower
// tier the host tier is only a staging area (one long prompt's chunks), so that hits come from the
// tier below it; the experiment tier is host memory served at a stated bandwidth
// (src/tiers/memory/), and says so wherever it appears.
//
// Ownership: an engine borrows the Backend; it owns everything else, and removes the disk tier's
// directory it created. Thread safety: one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/llama.h"
#include "tierkv/backend.h"
#include "tierkv/profile.h"
#include "tierkv/status.h"
#include "tierkv/warm_prefill.h"

namespace tierkv::cli::replay {

enum class LowerTier : std::uint8_t { kNone, kExperiment, kDisk, kRedis };

struct PolicySpec {
  std::string id;     // "warm", "planned-slow", ...
  std::string label;  // in tables and JSON: the id, and "(experiment tier, N GB/s)" for that tier
  PrefillPolicy prefill = PrefillPolicy::kPlanned;
  bool gpu_prefix = true;
  bool host_tier = false;
  LowerTier lower = LowerTier::kNone;
};

// The tier name the replay reports for the experiment tier, everywhere.
inline constexpr const char* kExperimentTierName = "experiment-tier";

struct EngineConfig {
  ModelSpec model;  // with the weights' digest
  std::function<Result<LlamaWeights>(Backend&, Stream&)> weights;  // called once per engine
  std::int64_t gpu_pages = 0;
  std::int32_t cache_chunk_tokens = 256;
  std::int32_t chunk_tokens = 0;  // prefill chunk; 0: the executor's
  std::int32_t max_batch = 32;
  std::uint64_t host_bytes = 0, staging_bytes = 0;
  std::uint64_t slow_bytes = 0;
  double slow_gbps = 0, slow_latency_us = 0;
  std::string disk_dir;  // parent of the fresh directory planned-disk uses
  std::uint64_t disk_bytes = 0;
  std::string redis;  // host:port
  std::shared_ptr<const CostProfile> profile;  // may be empty (then kPlanned acts as kLayerwise)
  // Lower tiers the profile lacks, measured by the first planned policy that uses one and kept for
  // the others (shared by the copies of one configuration).
  std::shared_ptr<std::map<std::string, TierCost>> measured_tiers =
      std::make_shared<std::map<std::string, TierCost>>();
};

// Leading prompt tokens by tier ("gpu", "host", lower tiers' names), in tier order.
using TierTokens = std::vector<std::pair<std::string, std::int64_t>>;

struct PrefillOutcome {
  std::int32_t next_token = -1;
  TierTokens hit_tokens;
  std::int32_t loaded_tokens = 0, recomputed_tokens = 0, computed_tokens = 0;
  std::int32_t fallback_tokens = 0;
  std::uint64_t bytes_loaded = 0;
  std::string plan;  // "gpu 512 + load 3072 + compute 130"
  std::string why;   // the planner's reason
  std::vector<TimelineEntry> timeline;
};

// What the tiers held and moved over the engine's life.
struct TierUsage {
  TierTokens bytes_moved;   // bytes read from each tier below the GPU
  TierTokens memory_bytes;  // each tier's budget
  std::uint64_t saved_chunks = 0, dropped_chunks = 0, save_errors = 0;
  std::uint64_t load_fallback_tokens = 0;
  std::vector<std::string> descriptions;  // one line per tier
};

Result<PolicySpec> policy_spec(const std::string& id, const EngineConfig& config);

// A prefill in progress: what the executor's run reads stays here until it is done.
struct PrefillJob {
  std::span<const std::int32_t> prompt;
  PromptKeys keys;
  MatchResult match;
  std::int32_t gpu_matched = 0;  // GPU tokens the match found (before taking pages)
  std::vector<std::int32_t> pages;
  std::unique_ptr<WarmPrefillRun> run;
};

class PolicyEngine {
 public:
  // Allocates the pool (checked against the device's free memory), creates the runner with fresh
  // weights, the stores, the cache and the executor.
  static Result<std::unique_ptr<PolicyEngine>> create(Backend& backend, const PolicySpec& spec,
                                                      const EngineConfig& config);
  ~PolicyEngine();

  const PolicySpec& spec() const;

  // Starts the prefill of `prompt` through the executor (WarmPrefill::start): takes pages for the
  // prompt and `output_tokens` more tokens and queues the loads. `prompt` must stay valid until
  // the job is done. std::nullopt when the pool has no room for it now (nothing changed; retry
  // after a request finished).
  Result<std::optional<std::unique_ptr<PrefillJob>>> start_prefill(
      std::span<const std::int32_t> prompt, const std::string& tenant, std::int32_t output_tokens,
      bool timeline);
  // Queues the job's next prefill chunk. When that was the last, fills `seq` (the job's pages,
  // len = prompt size) and returns the outcome; std::nullopt while chunks remain. On an error the
  // job's pages go back to the pool.
  Result<std::optional<PrefillOutcome>> step_prefill(PrefillJob& job, Sequence& seq);
  // One decode step of the batch: fills `next`.
  Status decode(std::span<Sequence* const> seqs, std::span<const std::int32_t> tokens,
                std::vector<std::int32_t>& next);
  // The request is done: waits for the saves that may still read its pages, then releases them.
  Status finish(Sequence& seq);
  // Pages a request of this size needs.
  std::int64_t pages_needed(std::int32_t prompt_tokens, std::int32_t output_tokens) const;
  std::int64_t pool_pages() const;

  TierUsage usage() const;
  // The cache's statistics in the Prometheus text format (tierkv/metrics.h).
  std::string metrics() const;

 private:
  struct State;
  explicit PolicyEngine(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace tierkv::cli::replay

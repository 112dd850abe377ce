// Warm prefill: a returning prompt's cached prefix streams into the GPU behind its own prefill.
//
// For one request: match -> plan -> run.
//   match  Cache::match says how many leading tokens the GPU pool, the host tier and the lower
//          tiers hold.
//   plan   The planner decides, from measured costs (tierkv/profile.h), which cached chunks to load
//          and which to recompute, and the prefill chunk size. Loading from host memory over PCIe
//          hides behind the new tokens' prefill; from a slow tier (disk, a remote store) it may
//          not, and then the best plan recomputes the front of the prefix while its back loads,
//          meeting where both finish together. Every plan it may choose is predicted no slower
//          than recomputing the whole prompt: a hit never makes a request slower by design.
//   run    Loads are queued first (a slow tier's chunks are promoted into host slots first); the
//          chunked prefill of the tokens to compute runs on the compute stream; each layer's
//          attention that reads loaded KV waits for that layer's load and nothing else. Full
//          chunks become saves once final.
//
// Failure: a load that fails or comes up short (a chunk evicted since match, a copy error, a
// record that fails verification, a slow tier that falls behind the plan) turns the rest of that
// request's plan into recompute. The answer is slower, never different.
//
// The model is the engine's: anything that can run a prefill chunk and call a hook before each
// layer's attention (PrefillModel). tierkv's reference Llama runner is one (engine/runner_model.h).
//
// Ownership: a WarmPrefill borrows the Backend, the Cache and the PrefillModel, which must outlive
// it.
// Thread safety: one run() at a time per WarmPrefill; plan() may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/cache.h"
#include "tierkv/model_spec.h"
#include "tierkv/profile.h"
#include "tierkv/status.h"

namespace tierkv {

// Called by a model while it queues one prefill chunk. Both may be empty.
struct LayerHooks {
  // Right before layer `layer` reads KV of earlier tokens (its attention). May make `stream` wait
  // (for a load) but must not block. An error aborts the chunk.
  std::function<Status(std::int32_t layer, Stream& stream)> before_attention;
  // Right after layer `layer` is queued (e.g. to record an event for a timeline).
  std::function<Status(std::int32_t layer, Stream& stream)> after_layer;
};

struct PrefillChunk {
  std::span<const std::int32_t> tokens;  // the chunk's token ids
  std::int32_t start = 0;                // position of tokens[0]: [0, start) has its KV in pages
  std::span<const std::int32_t> pages;   // the sequence's page ids, covering [0, start + n)
  bool last = false;                     // the prompt's last chunk: produce the next token
};

// The engine's model, as the executor drives it.
class PrefillModel {
 public:
  virtual ~PrefillModel() = default;
  virtual const ModelSpec& spec() const = 0;
  // The longest chunk prefill() takes.
  virtual std::int32_t max_chunk_tokens() const = 0;
  // Queues the chunk on `stream`, writing its KV into the pages and calling the hooks for every
  // layer. For the last chunk, blocks until the next token (greedy) is known and stores it in
  // *next_token. A refused chunk changes nothing.
  virtual Status prefill(const PrefillChunk& chunk, const LayerHooks& hooks, Stream& stream,
                         std::int32_t* next_token) = 0;
};

enum class PrefillPolicy : std::uint8_t {
  kRecompute = 0,        // compute the whole prompt; no cache at all (nothing is saved either)
  kGpuOnly = 1,          // reuse GPU-resident pages; compute the rest
  kLoadThenCompute = 2,  // load every cached chunk, wait for all of it, then compute the rest
  kLayerwise = 3,        // load every cached chunk; layer l's attention waits for layer l only
  kPlanned = 4,          // the planner chooses per chunk: load or recompute, and the chunk size
};
const char* prefill_policy_name(PrefillPolicy p);  // "recompute", "gpu-only", ...

struct WarmPrefillOptions {
  PrefillPolicy policy = PrefillPolicy::kPlanned;
  // Prefill chunk size. 0: the planner's choice (kPlanned), else 512 clamped to the model's
  // maximum. Chunks are cut on a grid of this size from position 0, so a token's KV is computed in
  // the same chunk (hence the same arithmetic) whatever was cached.
  std::int32_t chunk_tokens = 0;
  // For benchmarks and tuning, with kPlanned: recompute [gpu_end, split) and load from split on,
  // instead of the planner's split (clipped to what is cached; page-aligned). -1: the planner's.
  std::int32_t split = -1;
  bool save = true;  // save the prompt's full chunks once their KV is final
  // Record per-layer load and compute times (WarmPrefillResult::timeline); the loads are then
  // queued whole before the compute.
  bool timeline = false;
  // Layers of each load queued before the compute is (LoadRequest::queue_layers); the rest are
  // queued beside it. -1: all of them first (for comparison; a timeline run does so).
  std::int32_t queue_layers = 1 + Load::kQueueAhead;
};

// What the planner decided for one request. The prompt's tokens fall into five ranges:
//   [0, gpu_end)              reused from GPU pages as they are
//   [gpu_end, load_begin)     recomputed (the front of the cached prefix, when loading is slower)
//   [load_begin, host_end)    loaded from the host tier
//   [host_end, load_end)      promoted from lower tiers into host slots, then loaded
//   [load_end, prompt)        computed (not cached, or recomputed because loading it loses)
struct WarmPrefillPlan {
  PrefillPolicy policy = PrefillPolicy::kPlanned;
  std::int32_t prompt_tokens = 0;
  std::int32_t gpu_end = 0, load_begin = 0, host_end = 0, load_end = 0;
  std::int32_t chunk_tokens = 0;
  double queued_ahead_ms = 0;  // predicted time of other loads queued before this one
  // Predictions (ms): this plan, loading alone, computing what it computes alone, and computing
  // the whole prompt (every cached token recomputed).
  double predicted_ms = 0, load_ms = 0, compute_ms = 0, recompute_all_ms = 0;
  // When the lower tiers' part is predicted to be in host slots (0: no such part, or no profile):
  // 1.25 times it plus 2 ms is the deadline past which the run weighs what has not arrived
  // against computing it (WarmPrefillRun).
  double lower_ready_ms = 0;
  std::string why;  // one line a person can read: the choice and the figures behind it

  std::int32_t loaded_tokens() const { return load_end - load_begin; }
  std::int32_t computed_tokens() const { return prompt_tokens - gpu_end - loaded_tokens(); }
};

// One bar of a request's timeline: a layer's load or a chunk's layer of compute, in ms from the
// start of run().
struct TimelineEntry {
  enum class Lane : std::uint8_t { kLoad, kCompute } lane = Lane::kCompute;
  std::int32_t layer = 0;
  // compute: the index of the prefill chunk; load: the index of the load in the run (0 but for a
  // plan of several loads)
  std::int32_t chunk = 0;
  double start_ms = 0, end_ms = 0;
};

struct WarmPrefillResult {
  std::int32_t next_token = -1;
  WarmPrefillPlan plan;
  std::int32_t loaded_tokens = 0;    // that arrived by load
  std::int32_t computed_tokens = 0;  // that were computed (recomputed prefix included)
  // Planned to load but recomputed: evicted since match, failed, or late from a slow tier.
  std::int32_t fallback_tokens = 0;
  Status load_status;  // why the fallback happened (OK when none)
  // A lower tiers' part: when the run stopped waiting for it (every chunk in host slots, or the
  // rest handed to compute), in ms from the start, beside the plan's lower_ready_ms; and how many
  // times it waited past the plan's deadline because the chunks still coming would arrive sooner
  // than computing them. 0 without such a part.
  double lower_ready_ms = 0;
  std::int32_t lower_extensions = 0;
  std::uint64_t bytes_loaded = 0;
  double ttft_ms = 0;  // wall time of run(), from its call to the next token
  // Host time inside ttft_ms before the first chunk could be queued: making the plan, and then
  // queuing the host part's copies (and starting the lower tiers' promotion). start_many() queues
  // the host parts of all its requests in one call: each of them reports that call's time.
  double plan_ms = 0, queue_ms = 0;
  std::vector<TimelineEntry> timeline;  // with WarmPrefillOptions::timeline
  // The save of the prompt's full chunks (WarmPrefillOptions::save), in flight: the engine must
  // keep the prompt's pages unchanged until save->done() (or save->wait()); null when nothing was
  // saved.
  std::shared_ptr<Save> save;
};

struct WarmPrefillRequest {
  std::span<const std::int32_t> tokens;  // the whole prompt
  const PromptKeys* keys = nullptr;      // Cache::keys of `tokens`
  MatchResult match;                     // Cache::match of `keys`, taken by the engine
  // The engine's paged KV (block_table, seq_lens and batch unused; num_pages required).
  PagedKvView kv;
  // Page ids for the whole prompt, one per page of [0, tokens.size()): the first
  // match.gpu_tokens / page_tokens hold the GPU-resident prefix (the engine took references on
  // them); the rest are the engine's own fresh pages, which the run writes. The page holding the
  // prompt's last token is always computed, so match.gpu_tokens must not reach it
  // (match.gpu_tokens <= (tokens - 1) rounded down to a page); set match.gpu_tokens to 0 when the
  // engine did not take the resident pages.
  std::span<const std::int32_t> pages;
  WarmPrefillOptions options;
};

class WarmPrefillRun;

class WarmPrefill {
 public:
  // `profile` feeds the planner (kPlanned); a profile without figures makes kPlanned behave as
  // kLayerwise (and the plan's `why` says so).
  // `backend` is the one the cache and the model run on (for the timeline's events).
  static Result<std::unique_ptr<WarmPrefill>> create(Backend& backend, Cache& cache,
                                                     PrefillModel& model,
                                                     const CostProfile& profile);
  ~WarmPrefill();

  // The plan run() would follow for this request, without running it.
  Result<WarmPrefillPlan> plan(const WarmPrefillRequest& request) const;

  // Plans and runs one request; returns after the next token is known (its KV and the loaded KV
  // are in the pages; saves may still be in flight). InvalidArgument for a malformed request
  // (keys of another cache, pages that do not cover the prompt, a chunk size the model refuses).
  // The same as start() and step() until done, then finish().
  Result<WarmPrefillResult> run(const WarmPrefillRequest& request, Stream& compute);

  // Starts one request for an engine that interleaves prefill chunks with other work (a
  // continuous-batching step: one prefill chunk, then a decode token for every running request):
  // plans it and queues its loads (and starts its lower tiers' promotion), computing nothing yet.
  // The request's spans (tokens, keys, pages) must stay valid until the run is destroyed. Errors
  // as run().
  Result<std::unique_ptr<WarmPrefillRun>> start(const WarmPrefillRequest& request, Stream& compute);

  // Starts several requests at once, for an engine that prefills more than one per step: each is
  // planned and started as by start(), and their host-tier loads are queued in one
  // Cache::load_many call, layer-major, so that every request's early layers land before any
  // request's late ones; a prefix two of them load is copied once over PCIe and device to device
  // for the other (Cache::load). Each request's planner counts the loads of the requests before
  // it in the batch as queued ahead. Every request is checked before anything starts: the first
  // malformed one fails the call (InvalidArgument naming its index).
  Result<std::vector<std::unique_ptr<WarmPrefillRun>>> start_many(
      std::span<const WarmPrefillRequest> requests, Stream& compute);

 private:
  friend class WarmPrefillRun;
  struct State;
  explicit WarmPrefill(std::unique_ptr<State> s);
  std::unique_ptr<State> state_;
};

// One request in progress (WarmPrefill::start). Each step() queues the next prefill chunk on the
// compute stream; the prompt's last chunk blocks until the next token is known, the others do
// not, except that the first chunk after a lower tiers' part waits for what the tiers deliver, up
// to the plan's deadline, and past it while the rest, at the pace the chunks came so far, would
// arrive sooner than computing it takes. A load that turns out to have failed makes the run compute
// again from there, in more steps: the answer is the right one. Destroying a run waits for the
// loads it queued (nothing it queued writes into the pages after that). Used by one thread at a
// time.
class WarmPrefillRun {
 public:
  ~WarmPrefillRun();
  WarmPrefillRun(const WarmPrefillRun&) = delete;
  WarmPrefillRun& operator=(const WarmPrefillRun&) = delete;

  // Queues the next chunk; true when the prompt is done (finish() then has the result). An error
  // of the model or the device (not of a load: that is recomputed) ends the run.
  // FailedPrecondition once done.
  Result<bool> step();
  bool done() const;
  // Tokens the next step() computes at most (0 when done): a scheduler's estimate of its cost.
  std::int32_t next_chunk_tokens() const;
  const WarmPrefillPlan& plan() const;
  // The result, once done (FailedPrecondition before): saves the prompt's full chunks (options),
  // reads the timeline. Call it once.
  Result<WarmPrefillResult> finish();

 private:
  friend class WarmPrefill;
  struct State;
  explicit WarmPrefillRun(std::unique_ptr<State> s);
  std::unique_ptr<State> state_;
};

}  // namespace tierkv

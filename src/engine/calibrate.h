// Measuring this machine for the planner: what `tierkv calibrate` runs, as a library function.
//
// It measures, on `backend`:
//   - the host->device paths' bandwidth by run size and fixed cost (the transfer engine's own
//     calibration: copy engines and the SM gather kernel);
//   - one prefill layer of the model's shape (random weights) on a grid of new tokens x prefix
//     tokens, as the reference runner computes it: the median of `reps` timed runs per point,
//     divided by the number of layers;
//   - the slowdown a copy-engine load beside a prefill chunk causes it (the same chunk timed alone
//     and beside a large host->device copy on another stream);
//   - each lower tier's read bandwidth and latency (median and p99 per chunk read), by writing and
//     reading back `tier_chunks` chunk records of the model's shape.
// Sizes are clamped to what the model allows (max_positions) and what the device holds; the
// profile says what it measured. Nothing is written: the caller saves the profile.
//
// Thread safety: one call at a time per backend (it times the device).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/profile.h"
#include "tierkv/store.h"

namespace tierkv {

struct CalibrateOptions {
  ModelSpec model;  // the shape whose prefill is measured (its weights are random)
  std::vector<std::int32_t> new_tokens = {128, 512, 2048};
  std::vector<std::int32_t> prefix_tokens = {0, 4096, 16384};
  std::int32_t reps = 3;
  std::int32_t chunk_tokens = 256;  // the cache's chunk: the size tier records are measured at
  std::vector<std::shared_ptr<Store>> tiers;
  std::int32_t tier_chunks = 8;
  // Reads in flight at once when measuring a tier's bandwidth: the cache's promotion threads
  // (WriteDownOptions::promote_threads), which read one prefix that many chunks at a time.
  std::int32_t tier_readers = 2;
  std::function<void(std::string_view)> progress;  // a line per step, optional
};

Result<CostProfile> calibrate(Backend& backend, const CalibrateOptions& options);

// One lower tier's figures, as the planner reads them: chunks (of options.model's shape and
// options.chunk_tokens) read tier_readers at a time at read_gbps (all their bytes over the wall
// time), each read costing latency_us (what a one-layer read takes beyond its bytes, read alone),
// and a tail of p99_latency_us for the slowest. Writes and erases records of its own
// (max(tier_chunks, tier_readers) at a time).
Result<TierCost> measure_tier(const CalibrateOptions& options, Store& store);

// The seed report's question, answered from a profile: per layer, loading a prefix of P tokens
// from the host tier against computing a chunk of n new tokens over it, and the smallest chunk
// whose compute hides the load (the chunk a warm prefill needs for the load to cost nothing).
struct HideRow {
  std::int32_t prefix_tokens = 0;
  double load_us = 0;               // one layer of the prefix over the copy engines
  std::vector<double> compute_us;   // one layer of each chunk size over the prefix
  std::int32_t hides_at = -1;       // the smallest chunk size whose compute >= load; -1: none
};
std::vector<HideRow> hide_analysis(const CostProfile& profile, const ModelSpec& model,
                                   std::span<const std::int32_t> prefixes,
                                   std::span<const std::int32_t> chunk_sizes);
// A text table of those rows, one per prefix.
std::string format_hide_analysis(const std::vector<HideRow>& rows,
                                 std::span<const std::int32_t> chunk_sizes);

}  // namespace tierkv

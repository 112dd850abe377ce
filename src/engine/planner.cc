#include "engine/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace tierkv {
namespace {

// When the profile has no figures for a lower tier: a slow disk's.
constexpr double kUnknownTierGbps = 1.0;
constexpr double kUnknownTierLatencyUs = 1000.0;

std::int32_t round_down(std::int32_t v, std::int32_t unit) {
  return unit > 0 ? v / unit * unit : v;
}

// The ranges a plan may use, clipped so that the last token is always computed.
struct Bounds {
  std::int32_t gpu = 0, host = 0, lower = 0;
};

Bounds bounds(const PlanInput& in) {
  const std::int32_t last = std::max(in.prompt_tokens - 1, 0);
  Bounds b;
  b.gpu = std::min(in.gpu_end, round_down(last, in.page_tokens));
  const std::int32_t cached_cap = round_down(last, in.cache_chunk_tokens);
  b.host = std::max(b.gpu, std::min(in.host_end, cached_cap));
  b.lower = std::max(b.host, std::min(in.lower_end, cached_cap));
  return b;
}

// Compute costs of pieces on a grid of `chunk` tokens from position 0.
class ComputeCosts {
 public:
  ComputeCosts(const PlanInput& in, const CostProfile& p, std::int32_t chunk)
      : in_(in), p_(p), chunk_(chunk) {
    const std::int32_t pieces = (in.prompt_tokens + chunk - 1) / chunk;
    cum_.assign(std::size_t(pieces) + 1, 0.0);
    for (std::int32_t i = 0; i < pieces; ++i) {
      const std::int32_t a = i * chunk, b = std::min(in.prompt_tokens, a + chunk);
      cum_[std::size_t(i) + 1] = cum_[std::size_t(i)] + all_layers(a, b);
    }
  }

  // One layer of tokens [a, b) over the prefix [0, a).
  double layer(std::int32_t a, std::int32_t b) const { return p_.prefill.layer_us(b - a, a); }
  double all_layers(std::int32_t a, std::int32_t b) const {
    return b > a ? layer(a, b) * in_.num_layers : 0.0;
  }
  // Every layer of [a, b) cut on the grid.
  double range(std::int32_t a, std::int32_t b) const {
    if (b <= a) return 0;
    const std::int32_t first_end = std::min(b, (a / chunk_ + 1) * chunk_);
    double us = all_layers(a, first_end);
    if (first_end < b) {
      const std::int32_t i = first_end / chunk_;
      const std::int32_t j = b / chunk_;  // whole pieces [i, j), then a partial one if b is not on the grid
      us += cum_[std::size_t(j)] - cum_[std::size_t(i)];
      if (j * chunk_ < b) us += all_layers(j * chunk_, b);
    }
    return us;
  }
  // The end of the grid piece that starts at a.
  std::int32_t piece_end(std::int32_t a) const {
    return std::min(in_.prompt_tokens, (a / chunk_ + 1) * chunk_);
  }

 private:
  const PlanInput& in_;
  const CostProfile& p_;
  std::int32_t chunk_;
  std::vector<double> cum_;  // cum_[i]: every layer of grid pieces [0, i)
};

// Time (µs, from the load's start) at which layer l of loads [load_begin, load_end) has landed.
// Copies to the GPU run slower by `beside` (the profile's load_slowdown_beside_compute) while
// prefill computes beside them, which is taken to be the first `busy` µs.
struct LoadModel {
  double queued = 0, host_layer = 0, lower_start = 0, lower_layer = 0;
  // The lower part is copied in groups as they land in host slots: the first group is ready at
  // lower_first, and the last group's share of the copies (last_share) follows lower_start.
  double lower_first = 0, last_share = 1;
  double beside = 0, busy = 0;
  bool any = false, lower = false;
  std::int32_t layers = 0;

  // When copies of `work` µs (at full speed) that start at `t0` finish.
  double finish(double t0, double work) const {
    if (t0 >= busy || beside <= 0) return t0 + work;
    const double slowed = (busy - t0) / (1.0 + beside);  // work done before the compute ends
    return work <= slowed ? t0 + work * (1.0 + beside) : busy + (work - slowed);
  }
  double done(std::int32_t l) const {
    const double host_done = finish(0, queued + (l + 1) * host_layer);
    if (!lower) return host_done;
    const double host_end = finish(0, queued + layers * host_layer);
    const double link = finish(std::max(host_end, lower_first), (l + 1) * lower_layer);
    return std::max(link, lower_start + (l + 1) * lower_layer * last_share);
  }
  double end() const { return any ? done(layers - 1) : 0.0; }
};

LoadModel load_model(const PlanInput& in, const CostProfile& p, const Bounds& b,
                     std::int32_t begin, std::int32_t end) {
  LoadModel m;
  m.layers = in.num_layers;
  m.queued = in.queued_ahead_us;
  if (end <= begin) return m;
  m.any = true;
  const double tb = double(in.kv_bytes_per_token_layer);
  const double run = double(in.cache_chunk_tokens) * tb / 2;  // a chunk's K (or V) of one layer
  const std::int32_t host_tokens = std::max(0, std::min(end, b.host) - begin);
  const std::int32_t lower_tokens = std::max(0, end - std::max(begin, b.host));
  if (host_tokens > 0) m.host_layer = p.host_to_device_copy_engine.us(host_tokens * tb, run);
  if (lower_tokens > 0) {
    m.lower = true;
    m.lower_layer = p.host_to_device_copy_engine.us(lower_tokens * tb, run);
    // Reading into host slots: the tiers' share of this range, proportional to what each holds.
    std::int32_t held = 0;
    for (const auto& [name, tokens] : in.lower_tiers)
      held += tokens;
    double staging = 0, latency = 0;
    for (const auto& [name, tokens] : in.lower_tiers) {
      if (tokens <= 0 || held <= 0) continue;
      const TierCost* t = p.tier(name);
      const double gbps = t != nullptr ? t->read_gbps : kUnknownTierGbps;
      const double tail = t != nullptr ? std::max(t->p99_latency_us, t->latency_us)
                                       : kUnknownTierLatencyUs;
      const double share = double(lower_tokens) * tokens / held;
      staging += share * tb * in.num_layers / (gbps * 1e3);
      latency = std::max(latency, tail);
    }
    m.lower_start = m.queued + latency + staging;
    const std::int32_t chunks = (lower_tokens + in.cache_chunk_tokens - 1) / in.cache_chunk_tokens;
    const std::int32_t group = lower_load_group(chunks);
    m.last_share = double(group) / double(chunks);
    m.lower_first = m.queued + latency + staging * m.last_share;
  }
  return m;
}

// predict() with the compute costs of its chunk size built by the caller (the planner's search
// builds them once per chunk size, not once per candidate).
PlanCost predict_with(const PlanInput& in, const CostProfile& profile, const Bounds& b,
                      const ComputeCosts& c, std::int32_t load_begin, std::int32_t load_end,
                      bool gated) {
  LoadModel load = load_model(in, profile, b, load_begin, load_end);
  const double slow = load.any ? 1.0 + profile.copy_engine_compute_slowdown : 1.0;
  const std::int32_t tail_begin = std::max(load_end, load_begin);
  // The compute beside the load: the front, and (gated) the tail, which runs as layers land.
  load.beside = profile.load_slowdown_beside_compute;
  load.busy = (c.range(b.gpu, load_begin) + (gated ? c.range(tail_begin, in.prompt_tokens) : 0.0)) *
              slow;
  PlanCost cost;
  cost.load_us = load.end();
  cost.lower_ready_us = load.lower ? load.lower_start : 0.0;
  cost.compute_us = c.range(b.gpu, load_begin) + c.range(tail_begin, in.prompt_tokens);
  double t = c.range(b.gpu, load_begin) * slow;  // the recomputed front needs nothing loaded
  if (tail_begin < in.prompt_tokens) {
    const std::int32_t first_end = c.piece_end(tail_begin);
    const double per_layer = c.layer(tail_begin, first_end) * slow;
    if (load.any && !gated) t = std::max(t, load.end());
    for (std::int32_t l = 0; l < in.num_layers; ++l)
      t = (load.any && gated ? std::max(t, load.done(l)) : t) + per_layer;
    t += c.range(first_end, in.prompt_tokens);
  } else {
    t = std::max(t, load.end());
  }
  cost.total_us = t;
  return cost;
}

}  // namespace

PlanCost predict(const PlanInput& in, const CostProfile& profile, std::int32_t load_begin,
                 std::int32_t load_end, std::int32_t chunk, bool gated) {
  return predict_with(in, profile, bounds(in), ComputeCosts(in, profile, chunk), load_begin,
                      load_end, gated);
}

double compute_range_us(const PlanInput& in, const CostProfile& profile, std::int32_t begin,
                        std::int32_t end, std::int32_t chunk) {
  if (end <= begin || chunk <= 0 || in.prompt_tokens <= 0) return 0.0;
  return ComputeCosts(in, profile, chunk).range(begin, std::min(end, in.prompt_tokens));
}

const char* prefill_policy_name(PrefillPolicy p) {
  switch (p) {
    case PrefillPolicy::kRecompute: return "recompute";
    case PrefillPolicy::kGpuOnly: return "gpu-only";
    case PrefillPolicy::kLoadThenCompute: return "load-then-compute";
    case PrefillPolicy::kLayerwise: return "warm";
    case PrefillPolicy::kPlanned: return "planned";
  }
  return "unknown";
}

WarmPrefillPlan make_plan(const PlanInput& request, const CostProfile& profile) {
  // What the policy may use at all.
  PlanInput in = request;
  if (in.policy == PrefillPolicy::kRecompute) in.gpu_end = in.host_end = in.lower_end = 0;
  if (in.policy == PrefillPolicy::kGpuOnly) in.host_end = in.lower_end = in.gpu_end;
  if (in.policy == PrefillPolicy::kRecompute || in.policy == PrefillPolicy::kGpuOnly)
    in.lower_tiers.clear();
  const Bounds b = bounds(in);
  WarmPrefillPlan plan;
  plan.policy = in.policy;
  plan.prompt_tokens = in.prompt_tokens;
  plan.queued_ahead_ms = in.queued_ahead_us / 1e3;
  const std::int32_t max_chunk = std::max(1, in.max_chunk_tokens);
  const std::int32_t fixed =
      in.chunk_tokens > 0 ? std::min(in.chunk_tokens, max_chunk)
                          : std::min(kDefaultPrefillChunk, max_chunk);
  const bool can_plan = profile.complete() && in.num_layers > 0;

  std::int32_t gpu = b.gpu, begin = b.gpu, end = b.gpu, chunk = fixed;
  bool gated = true;
  std::string how;
  switch (in.policy) {
    case PrefillPolicy::kRecompute:
      how = "recompute the whole prompt";
      break;
    case PrefillPolicy::kGpuOnly:
      how = "reuse the GPU pages, compute the rest";
      break;
    case PrefillPolicy::kLoadThenCompute:
      end = b.lower;
      gated = false;
      how = "load every cached chunk, then compute";
      break;
    case PrefillPolicy::kLayerwise:
      end = b.lower;
      how = "load every cached chunk layer by layer behind the compute";
      break;
    case PrefillPolicy::kPlanned:
      if (!can_plan) {
        end = b.lower;
        how = "no cost profile: load every cached chunk layer by layer (run tierkv calibrate)";
        break;
      }
      {
        double best = std::numeric_limits<double>::infinity();
        std::vector<std::int32_t> sizes;
        if (in.chunk_tokens > 0) {
          sizes.push_back(fixed);
        } else {
          // Only sizes whose cost was measured or lies between measured ones: beyond the grid the
          // cost is extrapolated linearly, and a chunk's attention over itself grows faster.
          const std::int32_t measured =
              profile.prefill.new_tokens.empty() ? max_chunk : profile.prefill.new_tokens.back();
          for (std::int32_t s : kPlannerChunkSizes)
            if (s <= max_chunk && s <= measured) sizes.push_back(s);
          if (sizes.empty()) sizes.push_back(std::min(max_chunk, kPlannerChunkSizes[0]));
        }
        std::vector<std::int32_t> ends = {b.gpu, b.host, b.lower};
        if (in.split >= 0) ends = {b.lower};
        ends.erase(std::unique(ends.begin(), ends.end()), ends.end());
        for (std::int32_t s : sizes) {
          const ComputeCosts costs(in, profile, s);
          for (std::int32_t e : ends) {
            // Fronts: gpu_end, then every boundary of the compute grid and of the cache's
            // chunks up to e (the load starts there; both grids are powers of two).
            const std::int32_t step = std::max(in.page_tokens, std::min(s, in.cache_chunk_tokens));
            const std::int32_t fixed_k =
                in.split >= 0 ? std::clamp(in.split / in.page_tokens * in.page_tokens, b.gpu, e)
                              : -1;
            for (std::int32_t k = fixed_k >= 0 ? fixed_k : b.gpu; k <= e;) {
              // A longer front only adds to the front's compute, which alone bounds the time
              // from below: past the best so far, no longer front can win.
              if (fixed_k < 0 && k > b.gpu && costs.range(b.gpu, k) >= best) break;
              // A recomputed front must win by a margin: its prediction adds up two overlapped
              // activities, and on the H100 predicted gains of 5-7% over loading everything from
              // the host tier came out 4-13% slower (bench/results/warm-prefill-*-run2.txt).
              const double t = predict_with(in, profile, b, costs, k, e, true).total_us *
                               (k > b.gpu && e > k && in.split < 0 ? 1.0 + kFrontMargin : 1.0);
              if (t < best * 0.999) {
                best = t;
                begin = k;
                end = e;
                chunk = s;
              }
              if (k == e || fixed_k >= 0) break;
              k = std::min(e, (k / step + 1) * step);
            }
          }
        }
        how = in.split >= 0 ? "a fixed split"
              : begin > b.gpu ? "recompute the front while the back loads"
              : end > begin ? "load the cached chunks behind the compute"
                            : "compute: loading would be slower";
        if (end < b.lower && end > begin) how += " (the lower tiers' part is recomputed)";
      }
      break;
  }
  plan.gpu_end = gpu;
  plan.load_begin = begin;
  plan.load_end = end;
  plan.host_end = std::clamp(b.host, begin, end);
  plan.chunk_tokens = chunk;
  if (can_plan) {
    const PlanCost c = predict(in, profile, begin, end, chunk, gated);
    const PlanCost none = predict(in, profile, gpu, gpu, chunk, true);
    plan.predicted_ms = c.total_us / 1e3;
    plan.load_ms = c.load_us / 1e3;
    plan.compute_ms = c.compute_us / 1e3;
    plan.recompute_all_ms = none.total_us / 1e3;
    plan.lower_ready_ms = c.lower_ready_us / 1e3;
  }
  char line[320];
  std::snprintf(line, sizeof line,
                "%s: reuse %d, recompute %d, load %d (%d from host), compute %d tokens in chunks "
                "of %d; predicted %.2f ms (load %.2f, compute %.2f, queued ahead %.2f; computing "
                "all would take %.2f)",
                how.c_str(), gpu, begin - gpu, end - begin, plan.host_end - begin,
                in.prompt_tokens - std::max(end, begin), chunk, plan.predicted_ms, plan.load_ms,
                plan.compute_ms, plan.queued_ahead_ms, plan.recompute_all_ms);
  plan.why = line;
  return plan;
}

}  // namespace tierkv

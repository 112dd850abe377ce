#include "tierkv/warm_prefill.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "engine/planner.h"

namespace tierkv {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// A stretch of the prompt, in position order: computed, or arriving by one Load.
struct Region {
  std::int32_t begin = 0, end = 0;
  Load* load = nullptr;  // null: computed
};

// The events a timeline records, read once the run is over.
struct TimelineEvents {
  std::unique_ptr<Event> start;
  struct Mark {
    TimelineEntry::Lane lane;
    std::int32_t layer, chunk;
    std::unique_ptr<Event> event;
  };
  std::vector<Mark> marks;  // in queueing order per lane
};

}  // namespace

struct WarmPrefill::State {
  Backend& backend;
  Cache& cache;
  PrefillModel& model;
  CostProfile profile;
  std::unique_ptr<Stream> timeline_stream;  // waits on load layers to time them

  State(Backend& b, Cache& c, PrefillModel& m, const CostProfile& p)
      : backend(b), cache(c), model(m), profile(p) {}

  Status check(const WarmPrefillRequest& r) const;
  PlanInput plan_input(const WarmPrefillRequest& r) const;

  struct Attempt {
    std::int32_t next_token = -1;
    std::int32_t loaded = 0, computed = 0, fallback = 0;
    Status load_status;
    std::int32_t failed_at = -1;  // begin of the first region whose load failed
    std::uint64_t bytes_loaded = 0;
  };
  // Runs the plan's regions from `from` on (the ones before are in the pages already); with
  // `no_loads`, computes everything from `from`.
  Status attempt(const WarmPrefillRequest& r, Stream& stream, const WarmPrefillPlan& plan,
                 std::int32_t from, bool no_loads, Clock::time_point start, TimelineEvents* tl,
                 Attempt& out);
  Status compute(const WarmPrefillRequest& r, Stream& stream, std::int32_t begin, std::int32_t end,
                 std::int32_t grid, const std::vector<Load*>& gates, bool last_region,
                 TimelineEvents* tl, std::int32_t& chunk_index, std::int32_t* next);
};

WarmPrefill::WarmPrefill(std::unique_ptr<State> s) : state_(std::move(s)) {}
WarmPrefill::~WarmPrefill() = default;

Result<std::unique_ptr<WarmPrefill>> WarmPrefill::create(Backend& backend, Cache& cache,
                                                         PrefillModel& model,
                                                         const CostProfile& profile) {
  const ModelSpec& c = cache.options().model;
  const ModelSpec& m = model.spec();
  if (c.num_layers != m.num_layers || c.num_kv_heads != m.num_kv_heads ||
      c.head_dim != m.head_dim || c.kv_dtype != m.kv_dtype || c.page_tokens != m.page_tokens) {
    return invalid_argument("warm prefill: the model's KV shape is not the cache's");
  }
  if (model.max_chunk_tokens() < 1) return invalid_argument("warm prefill: the model takes no chunk");
  auto st = std::make_unique<State>(backend, cache, model, profile);
  TIERKV_ASSIGN_OR_RETURN(st->timeline_stream, backend.create_stream());
  return std::unique_ptr<WarmPrefill>(new WarmPrefill(std::move(st)));
}

Status WarmPrefill::State::check(const WarmPrefillRequest& r) const {
  const std::int32_t page = model.spec().page_tokens;
  const std::int64_t n = std::int64_t(r.tokens.size());
  if (r.keys == nullptr) return invalid_argument("warm prefill: keys are required");
  if (n == 0) return invalid_argument("warm prefill: empty prompt");
  if (r.keys->tokens != n) return invalid_argument("warm prefill: the keys are of another prompt");
  if (std::int64_t(r.pages.size()) * page < n) {
    return invalid_argument("warm prefill: " + std::to_string(r.pages.size()) +
                            " pages do not cover " + std::to_string(n) + " tokens");
  }
  const MatchResult& m = r.match;
  if (m.gpu_tokens < 0 || m.gpu_tokens % page != 0 || m.gpu_tokens > (n - 1) / page * page) {
    return invalid_argument("warm prefill: match.gpu_tokens " + std::to_string(m.gpu_tokens) +
                            " must be whole pages before the page of the last token");
  }
  if (m.host_tokens < m.gpu_tokens || m.lower_tokens > n || m.host_tokens > n)
    return invalid_argument("warm prefill: the match does not fit the prompt");
  if (r.options.policy == PrefillPolicy::kRecompute && m.gpu_tokens > 0) {
    return invalid_argument(
        "warm prefill: recompute writes every page of the prompt: pass match.gpu_tokens = 0 and "
        "pages of the request's own");
  }
  if (r.options.chunk_tokens < 0 || r.options.chunk_tokens > model.max_chunk_tokens()) {
    return invalid_argument("warm prefill: chunk_tokens " + std::to_string(r.options.chunk_tokens) +
                            " outside [0, " + std::to_string(model.max_chunk_tokens()) + "]");
  }
  return Status::Ok();
}

PlanInput WarmPrefill::State::plan_input(const WarmPrefillRequest& r) const {
  const ModelSpec& m = model.spec();
  const CacheOptions& co = cache.options();
  PlanInput in;
  in.policy = r.options.policy;
  in.prompt_tokens = std::int32_t(r.tokens.size());
  in.gpu_end = r.match.gpu_tokens;
  in.host_end = r.match.host_tokens;
  in.lower_end = std::max(r.match.lower_tokens, r.match.host_tokens);
  for (std::size_t i = 0; i < r.match.lower_tier_tokens.size() && i < co.lower_tiers.size(); ++i)
    in.lower_tiers.emplace_back(co.lower_tiers[i]->capabilities().name, r.match.lower_tier_tokens[i]);
  in.page_tokens = m.page_tokens;
  in.cache_chunk_tokens = co.chunk_tokens;
  in.max_chunk_tokens = model.max_chunk_tokens();
  in.chunk_tokens = r.options.chunk_tokens;
  in.split = r.options.split;
  in.num_layers = m.num_layers;
  in.kv_bytes_per_token_layer = m.kv_bytes_per_token_layer();
  const double gbps = profile.host_to_device_copy_engine.gbps(1 << 20);
  if (gbps > 0) in.queued_ahead_us = double(cache.queued_load_bytes()) / (gbps * 1e3);
  return in;
}

Result<WarmPrefillPlan> WarmPrefill::plan(const WarmPrefillRequest& r) const {
  TIERKV_RETURN_IF_ERROR(state_->check(r));
  return make_plan(state_->plan_input(r), state_->profile);
}

// Computes [begin, end) in pieces on the grid of `grid` tokens from position 0; each layer's
// attention in the first piece first waits for that layer of every load in `gates` (the pieces
// after it are behind those waits on the same stream).
Status WarmPrefill::State::compute(const WarmPrefillRequest& r, Stream& stream, std::int32_t begin,
                                   std::int32_t end, std::int32_t grid,
                                   const std::vector<Load*>& gates, bool last_region,
                                   TimelineEvents* tl, std::int32_t& chunk_index,
                                   std::int32_t* next) {
  std::int32_t chunk_now = 0;
  LayerHooks hooks;
  if (!gates.empty()) {
    hooks.before_attention = [&gates](std::int32_t layer, Stream& s) -> Status {
      for (Load* l : gates)
        TIERKV_RETURN_IF_ERROR(l->wait_layer(layer, s));
      return Status::Ok();
    };
  }
  if (tl != nullptr) {
    hooks.after_layer = [&](std::int32_t layer, Stream& s) -> Status {
      TIERKV_ASSIGN_OR_RETURN(auto e, backend.create_event());
      TIERKV_RETURN_IF_ERROR(s.record(*e));
      tl->marks.push_back({TimelineEntry::Lane::kCompute, layer, chunk_now, std::move(e)});
      return Status::Ok();
    };
  }
  for (std::int32_t a = begin; a < end;) {
    const std::int32_t b = std::min(end, (a / grid + 1) * grid);
    PrefillChunk c;
    c.tokens = r.tokens.subspan(std::size_t(a), std::size_t(b - a));
    c.start = a;
    c.pages = r.pages;
    c.last = last_region && b == end;
    chunk_now = chunk_index++;
    TIERKV_RETURN_IF_ERROR(model.prefill(c, hooks, stream, c.last ? next : nullptr));
    hooks.before_attention = nullptr;
    a = b;
  }
  return Status::Ok();
}

// Records, on the timeline stream, when each layer of `load` landed.
Status time_load(Backend& backend, Stream& side, const Load& load, std::int32_t layers,
                 TimelineEvents& tl) {
  for (std::int32_t l = 0; l < layers; ++l) {
    TIERKV_RETURN_IF_ERROR(load.wait_layer(l, side));
    TIERKV_ASSIGN_OR_RETURN(auto e, backend.create_event());
    TIERKV_RETURN_IF_ERROR(side.record(*e));
    tl.marks.push_back({TimelineEntry::Lane::kLoad, l, 0, std::move(e)});
  }
  return Status::Ok();
}

Status WarmPrefill::State::attempt(const WarmPrefillRequest& r, Stream& stream,
                                   const WarmPrefillPlan& plan, std::int32_t from, bool no_loads,
                                   Clock::time_point start, TimelineEvents* tl, Attempt& out) {
  const std::int32_t n = std::int32_t(r.tokens.size());
  const std::int32_t page = model.spec().page_tokens, layers = model.spec().num_layers;
  const std::int32_t chunk = cache.options().chunk_tokens;
  std::vector<Region> regions;
  std::vector<std::unique_ptr<Load>> loads;
  std::optional<Promotion> promotion;
  const auto add_compute = [&](std::int32_t b, std::int32_t e) {
    if (e <= b) return;
    if (!regions.empty() && regions.back().load == nullptr && regions.back().end == b) {
      regions.back().end = e;
    } else {
      regions.push_back({b, e, nullptr});
    }
  };
  // Queues a load of [b, e); what does not arrive is computed. Returns where it stopped.
  const auto add_load = [&](std::int32_t b, std::int32_t e) -> std::int32_t {
    if (e <= b) return b;
    LoadRequest lr;
    lr.keys = r.keys;
    lr.first_token = b;
    lr.num_tokens = e - b;
    lr.dst = r.kv;
    lr.dst_pages = r.pages.subspan(std::size_t(b / page));
    auto load = cache.load(lr);
    if (!load.ok()) {
      if (out.load_status.ok()) out.load_status = load.status();
      return b;
    }
    const std::int32_t got = load->loaded_tokens();
    if (got < e - b && out.load_status.ok())
      out.load_status = not_found("warm prefill: chunks left the host tier since match()");
    if (got == 0) return b;
    loads.push_back(std::make_unique<Load>(std::move(load).value()));
    regions.push_back({b, b + got, loads.back().get()});
    if (tl != nullptr) time_load(backend, *timeline_stream, *loads.back(), layers, *tl).ignore();
    return b + got;
  };

  const std::int32_t load_begin = no_loads ? n : std::max(from, plan.load_begin);
  const std::int32_t load_end = no_loads ? n : std::max(load_begin, plan.load_end);
  const std::int32_t host_end = std::clamp(plan.host_end, load_begin, load_end);
  // Lower-tier chunks are read into host slots first; start that before anything else. Promotion
  // moves whole chunks: it starts at the chunk holding host_end (which is inside a chunk when the
  // GPU prefix ends there), and the load then takes that chunk's pages from host_end on.
  const std::int32_t promote_begin = host_end / chunk * chunk;
  if (host_end < load_end) {
    auto p = cache.promote(*r.keys, promote_begin, load_end);
    if (p.ok()) {
      promotion.emplace(std::move(p).value());
    } else if (out.load_status.ok()) {
      out.load_status = p.status();
    }
  }
  // The front that is recomputed, then the host part of the load.
  add_compute(from, std::min(load_begin, n));
  const std::int32_t host_got = add_load(load_begin, host_end);
  add_compute(host_got, host_end);

  // Compute what comes before the lower tiers' part while it is read; then take what arrived in
  // time and compute the rest (a slow tier that falls behind its plan hands its rest over).
  std::int32_t chunk_index = 0;
  std::size_t next_region = 0;
  const auto run_regions = [&](std::size_t upto, bool last) -> Status {
    for (; next_region < upto; ++next_region) {
      const Region& g = regions[next_region];
      if (g.load != nullptr) continue;
      std::vector<Load*> gates;
      for (std::size_t i = 0; i < next_region; ++i)
        if (regions[i].load != nullptr) gates.push_back(regions[i].load);
      if (plan.policy == PrefillPolicy::kLoadThenCompute) {
        for (Load* l : gates)
          l->wait().ignore();  // errors are collected after the run
      }
      const bool is_last = last && next_region + 1 == upto;
      TIERKV_RETURN_IF_ERROR(compute(r, stream, g.begin, g.end, plan.chunk_tokens, gates, is_last,
                                     tl, chunk_index, &out.next_token));
      out.computed += g.end - g.begin;
    }
    return Status::Ok();
  };
  Status run;
  if (promotion) {
    run = run_regions(regions.size(), false);
    // The planner's promise: the lower part is in host slots by lower_ready_ms after the start.
    // Past that (with a margin for the tier's noise) what has not arrived is computed instead.
    // Without predictions (no profile) the promotion is waited for whole.
    const std::int32_t want = (load_end - promote_begin) / chunk;
    auto deadline = Clock::time_point::max();
    if (plan.lower_ready_ms > 0) {
      const double budget_ms = plan.lower_ready_ms * 1.25 + 2.0;
      deadline = start + std::chrono::microseconds(std::int64_t(budget_ms * 1e3));
    }
    const std::int32_t got = promotion->wait_for(want, deadline);
    if (got < want) {
      promotion->cancel();
      if (out.load_status.ok()) {
        const Status why = promotion->done() ? promotion->wait() : Status::Ok();
        out.load_status = !why.ok() ? why
                                    : deadline_exceeded("warm prefill: the lower tiers delivered " +
                                                        std::to_string(got) + " of " +
                                                        std::to_string(want) +
                                                        " chunks by the plan's deadline");
      }
    }
    const std::int32_t arrived = std::min(load_end, promote_begin + got * chunk);
    const std::int32_t lower_got = add_load(host_end, std::max(host_end, arrived));
    add_compute(lower_got, load_end);
  } else {
    add_compute(host_end, load_end);  // no promotion could start: compute the lower part
  }
  add_compute(load_end, n);
  if (run.ok()) run = run_regions(regions.size(), true);

  // Every load is over before the pages it wrote are used or its pins go: collect the errors.
  for (const Region& g : regions) {
    if (g.load == nullptr) continue;
    const Status s = g.load->wait();
    if (!s.ok()) {
      if (out.failed_at < 0) out.failed_at = g.begin;
      if (out.load_status.ok()) out.load_status = s;
    } else if (out.failed_at < 0) {
      out.loaded += g.end - g.begin;
      out.bytes_loaded += std::uint64_t(g.end - g.begin) * model.spec().kv_bytes_per_token();
    }
  }
  if (!run.ok()) {
    stream.synchronize().ignore();  // what was queued is over, and the stream's error cleared
    if (out.failed_at < 0) {
      // The compute failed with no failed load to blame: a model or device error, not a miss.
      return run;
    }
  }
  return Status::Ok();
}

Result<WarmPrefillResult> WarmPrefill::run(const WarmPrefillRequest& r, Stream& compute_stream) {
  State& s = *state_;
  const auto t0 = Clock::now();
  TIERKV_RETURN_IF_ERROR(s.check(r));
  WarmPrefillResult res;
  res.plan = make_plan(s.plan_input(r), s.profile);
  std::optional<TimelineEvents> tl;
  if (r.options.timeline) {
    tl.emplace();
    TIERKV_ASSIGN_OR_RETURN(tl->start, s.backend.create_event());
    TIERKV_RETURN_IF_ERROR(compute_stream.record(*tl->start));
    TIERKV_RETURN_IF_ERROR(s.timeline_stream->wait(*tl->start));
  }
  State::Attempt a;
  TIERKV_RETURN_IF_ERROR(s.attempt(r, compute_stream, res.plan, res.plan.gpu_end, false, t0,
                                   tl ? &*tl : nullptr, a));
  res.load_status = a.load_status;
  res.loaded_tokens = a.loaded;
  res.bytes_loaded = a.bytes_loaded;
  res.computed_tokens = a.computed;
  res.next_token = a.next_token;
  res.fallback_tokens = res.plan.loaded_tokens() - a.loaded;
  if (a.failed_at >= 0) {
    // A load failed after it was queued: what was computed from it on used bad KV. Compute again
    // from there; everything before it is right (computed, or loaded by loads that succeeded).
    State::Attempt again;
    TIERKV_RETURN_IF_ERROR(
        s.attempt(r, compute_stream, res.plan, a.failed_at, true, t0, nullptr, again));
    res.next_token = again.next_token;
    res.computed_tokens += again.computed;
  }
  res.ttft_ms = ms_since(t0);
  if (r.options.save && r.options.policy != PrefillPolicy::kRecompute) {
    SaveRequest sr;
    sr.keys = r.keys;
    sr.num_tokens = std::int32_t(r.tokens.size());
    sr.src = r.kv;
    sr.src_pages = r.pages;
    sr.producer = &compute_stream;
    auto saved = s.cache.save(sr);  // a save that cannot start costs a later hit, nothing else
    if (saved.ok()) res.save = std::make_shared<Save>(std::move(saved).value());
  }
  if (tl) {
    TIERKV_RETURN_IF_ERROR(compute_stream.synchronize());
    TIERKV_RETURN_IF_ERROR(s.timeline_stream->synchronize());
    double prev_compute = 0, prev_load = 0;
    for (auto& m : tl->marks) {
      auto end = s.backend.elapsed_ms(*tl->start, *m.event);
      if (!end.ok()) continue;
      double& prev = m.lane == TimelineEntry::Lane::kLoad ? prev_load : prev_compute;
      if (m.lane == TimelineEntry::Lane::kLoad && m.layer == 0) prev = 0;
      res.timeline.push_back({m.lane, m.layer, m.chunk, std::min(prev, *end), *end});
      prev = *end;
    }
  }
  return res;
}

}  // namespace tierkv

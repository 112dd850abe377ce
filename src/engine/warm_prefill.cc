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

// How many times a run late from the lower tiers re-estimates and waits again before it computes
// the rest: each wait is the rest at the pace so far, so a steady tier needs one.
constexpr int kLowerExtensions = 3;

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
  // `ahead_bytes`: loads about to be queued before this one (start_many's earlier requests).
  PlanInput plan_input(const WarmPrefillRequest& r, std::uint64_t ahead_bytes = 0) const;
  // A run planned and ready for begin(): the plan made, the timeline's start recorded.
  Result<std::unique_ptr<WarmPrefillRun::State>> prepare(const WarmPrefillRequest& r,
                                                         Stream& compute,
                                                         std::uint64_t ahead_bytes);
};

// One request in progress. Its regions grow as the run goes: at the start the front, the host
// part of the load and (when no lower tier is involved) the tail; the lower tiers' part and the
// tail once their promotion delivered or its deadline passed.
struct WarmPrefillRun::State {
  WarmPrefill::State& exec;
  WarmPrefillRequest r;
  Stream& stream;
  Clock::time_point t0;
  WarmPrefillResult res;
  std::optional<TimelineEvents> tl;

  std::vector<Region> regions;
  std::vector<std::unique_ptr<Load>> loads;
  std::optional<Promotion> promotion;
  std::int32_t promote_begin = 0, host_end = 0, load_end = 0;
  Clock::time_point promote_start;
  bool lower_pending = false;  // the lower part and the tail are not regions yet

  std::size_t region = 0;  // the region the next chunk belongs to
  std::int32_t pos = 0;    // where the next chunk starts
  std::int32_t chunk_index = 0;
  bool fallback = false;  // recomputing after a failed load
  bool finished = false;
  std::int32_t next_token = -1;

  State(WarmPrefill::State& e, const WarmPrefillRequest& req, Stream& s)
      : exec(e), r(req), stream(s), t0(Clock::now()) {}
  ~State() {
    // Nothing this run queued may write into the pages or read the pins after it is gone.
    for (auto& l : loads)
      l->wait().ignore();
  }

  std::int32_t n() const { return std::int32_t(r.tokens.size()); }
  std::int32_t page() const { return exec.model.spec().page_tokens; }
  std::int32_t chunk() const { return exec.cache.options().chunk_tokens; }

  void add_compute(std::int32_t b, std::int32_t e);
  std::int32_t add_load(std::int32_t b, std::int32_t e);
  LoadRequest load_request(std::int32_t b, std::int32_t e) const;
  // Takes the load of [b, e) that `load` queued (or its error); returns where it stopped.
  std::int32_t attach_load(std::int32_t b, std::int32_t e, Result<Load> load);
  void begin(std::int32_t from, bool no_loads);
  // begin() in two halves around the host part's load, [load_begin, host_end), which
  // begin_front() returns; begin_back() takes where that load stopped.
  std::pair<std::int32_t, std::int32_t> begin_front(std::int32_t from, bool no_loads);
  void begin_back(std::int32_t host_got);
  void resolve_lower();
  std::vector<Load*> gates_before(std::size_t i) const;
  Status run_chunk(bool* done);
  // After the last chunk: collects every load's status; a failure turns the rest into recompute.
  // Returns whether the run is over.
  bool settle();
  void mark_landing();
  Status timeline_entries();
};

void WarmPrefillRun::State::add_compute(std::int32_t b, std::int32_t e) {
  if (e <= b) return;
  // Extends the last region when it is computed and not yet behind the run (a region the run
  // has finished is not looked at again: the lower tiers' part, added after the front was
  // computed, must be a region of its own).
  if (!regions.empty() && regions.back().load == nullptr && regions.back().end == b &&
      region < regions.size()) {
    regions.back().end = e;
  } else {
    regions.push_back({b, e, nullptr});
  }
}

LoadRequest WarmPrefillRun::State::load_request(std::int32_t b, std::int32_t e) const {
  LoadRequest lr;
  lr.keys = r.keys;
  lr.first_token = b;
  lr.num_tokens = e - b;
  lr.dst = r.kv;
  lr.dst_pages = r.pages.subspan(std::size_t(b / page()));
  // The first layers now, the rest beside the compute (LoadRequest::queue_layers), so that the
  // first chunk's kernels are not queued behind thousands of copies. A timeline run queues them
  // all first, to time each layer's landing (mark_landing).
  lr.queue_layers = tl ? -1 : r.options.queue_layers;
  return lr;
}

// Queues a load of [b, e); what does not arrive is computed. Returns where it stopped.
std::int32_t WarmPrefillRun::State::add_load(std::int32_t b, std::int32_t e) {
  if (e <= b) return b;
  return attach_load(b, e, exec.cache.load(load_request(b, e)));
}

std::int32_t WarmPrefillRun::State::attach_load(std::int32_t b, std::int32_t e, Result<Load> load) {
  if (!load.ok()) {
    if (res.load_status.ok()) res.load_status = load.status();
    return b;
  }
  const std::int32_t got = load->loaded_tokens();
  if (got < e - b && res.load_status.ok())
    res.load_status = not_found("warm prefill: chunks left the host tier since match()");
  if (got == 0) return b;
  loads.push_back(std::make_unique<Load>(std::move(load).value()));
  regions.push_back({b, b + got, loads.back().get()});
  if (tl) mark_landing();
  return b + got;
}

// Lays out the regions from `from` on: the recomputed front, the host part of the load, and, when
// no lower tier is involved (or `no_loads`), the tail. A lower tiers' part starts its promotion.
void WarmPrefillRun::State::begin(std::int32_t from, bool no_loads) {
  const auto [b, e] = begin_front(from, no_loads);
  begin_back(add_load(b, e));
}

std::pair<std::int32_t, std::int32_t> WarmPrefillRun::State::begin_front(std::int32_t from,
                                                                         bool no_loads) {
  const WarmPrefillPlan& plan = res.plan;
  const std::int32_t load_begin = no_loads ? n() : std::max(from, plan.load_begin);
  load_end = no_loads ? n() : std::max(load_begin, plan.load_end);
  host_end = std::clamp(plan.host_end, load_begin, load_end);
  // Promotion moves whole chunks: it starts at the chunk holding host_end (inside a chunk when the
  // GPU prefix ends there), and the load then takes that chunk's pages from host_end on.
  promote_begin = host_end / chunk() * chunk();
  if (host_end < load_end) {
    promote_start = Clock::now();
    auto p = exec.cache.promote(*r.keys, promote_begin, load_end);
    if (p.ok()) {
      promotion.emplace(std::move(p).value());
    } else if (res.load_status.ok()) {
      res.load_status = p.status();
    }
  }
  add_compute(from, std::min(load_begin, n()));
  return {load_begin, host_end};
}

void WarmPrefillRun::State::begin_back(std::int32_t host_got) {
  add_compute(host_got, host_end);
  lower_pending = promotion.has_value();
  if (!lower_pending) {
    add_compute(host_end, load_end);  // no promotion could start: compute the lower part
    add_compute(load_end, n());
  }
}

// The lower tiers' part is loaded in groups of chunks (kLowerLoadGroups), each queued as soon as
// its chunks are in host slots, so that the copies of the first groups overlap the reads of the
// later ones. The planner's promise: the whole part is in host slots by lower_ready_ms after the
// start. Past that (with a margin for the tier's noise) the run looks at how fast the chunks are
// coming: when the rest, at the pace so far, arrives sooner than computing it would take, it
// waits for them (a tier a little slower than its profile still saves the compute); otherwise, or
// when nothing came at all, what has not arrived is computed instead. Without predictions (no
// profile) the promotion is waited for whole.
void WarmPrefillRun::State::resolve_lower() {
  const std::int32_t want = (load_end - promote_begin) / chunk();
  const std::int32_t group = std::max<std::int32_t>(1, lower_load_group(want));
  auto deadline = Clock::time_point::max();
  if (res.plan.lower_ready_ms > 0) {
    const double budget_ms = res.plan.lower_ready_ms * 1.25 + 2.0;
    deadline = t0 + std::chrono::microseconds(std::int64_t(budget_ms * 1e3));
  }
  std::int32_t queued = 0;     // chunks whose load is queued
  std::int32_t at = host_end;  // where the next load starts
  bool short_load = false;
  while (queued < want) {
    const std::int32_t got = promotion->wait_for(std::min(want, queued + group), deadline);
    if (got > queued) {
      const std::int32_t e = std::min(load_end, promote_begin + got * chunk());
      const std::int32_t stop = add_load(at, e);
      queued = got;
      at = stop;
      if (stop < e) {  // the chunks left the host tier (the load says why): compute from there
        short_load = true;
        break;
      }
      continue;
    }
    // Nothing more by the deadline, or the promotion ended.
    if (promotion->done() || got == 0 || res.lower_extensions >= kLowerExtensions) break;
    const double rest_ms = ms_since(promote_start) / got * (want - got) * 1.25;
    const double compute_ms =
        compute_range_us(exec.plan_input(r), exec.profile, at, load_end, res.plan.chunk_tokens) /
        1e3;
    if (rest_ms >= compute_ms) break;  // computing the rest is sooner: stop waiting
    ++res.lower_extensions;
    deadline = Clock::now() + std::chrono::microseconds(std::int64_t(rest_ms * 1e3) + 2000);
  }
  res.lower_ready_ms = ms_since(t0);
  if (queued < want || short_load) {
    // Whether it ended on its own (a failed read) is asked before cancelling it: after, it ends
    // as cancelled.
    const Status why = promotion->done() ? promotion->wait() : Status::Ok();
    promotion->cancel();
    if (res.load_status.ok()) {
      res.load_status =
          !why.ok() ? why
                    : deadline_exceeded("warm prefill: the lower tiers delivered " +
                                        std::to_string(queued) + " of " + std::to_string(want) +
                                        " chunks by the plan's deadline");
    }
  }
  add_compute(at, load_end);
  add_compute(load_end, n());
  lower_pending = false;
}

std::vector<Load*> WarmPrefillRun::State::gates_before(std::size_t i) const {
  std::vector<Load*> gates;
  for (std::size_t k = 0; k < i; ++k)
    if (regions[k].load != nullptr) gates.push_back(regions[k].load);
  return gates;
}

// Queues the next chunk: the next piece of the grid inside the current computed region. The first
// piece of a region waits, layer by layer, for the loads of the regions before it (the pieces
// after it are behind those waits on the same stream).
Status WarmPrefillRun::State::run_chunk(bool* last) {
  *last = false;
  for (;;) {
    while (region < regions.size() && regions[region].load != nullptr)
      ++region;
    if (region < regions.size()) break;
    if (!lower_pending) return internal_error("warm prefill: no region left to compute");
    resolve_lower();
  }
  const Region g = regions[region];
  if (pos < g.begin) pos = g.begin;
  const std::int32_t grid = res.plan.chunk_tokens;
  const std::int32_t b = std::min(g.end, (pos / grid + 1) * grid);
  std::vector<Load*> gates;
  if (pos == g.begin) gates = gates_before(region);
  if (pos == g.begin && res.plan.policy == PrefillPolicy::kLoadThenCompute) {
    for (Load* l : gates)
      l->wait().ignore();  // the whole load before any compute; errors are collected at the end
  }
  LayerHooks hooks;
  if (!gates.empty()) {
    hooks.before_attention = [&gates](std::int32_t layer, Stream& s) -> Status {
      for (Load* l : gates)
        TIERKV_RETURN_IF_ERROR(l->wait_layer(layer, s));
      return Status::Ok();
    };
  }
  const std::int32_t chunk_now = chunk_index++;
  if (tl) {
    hooks.after_layer = [this, chunk_now](std::int32_t layer, Stream& s) -> Status {
      TIERKV_ASSIGN_OR_RETURN(auto e, exec.backend.create_event());
      TIERKV_RETURN_IF_ERROR(s.record(*e));
      tl->marks.push_back({TimelineEntry::Lane::kCompute, layer, chunk_now, std::move(e)});
      return Status::Ok();
    };
  }
  PrefillChunk c;
  c.tokens = r.tokens.subspan(std::size_t(pos), std::size_t(b - pos));
  c.start = pos;
  c.pages = r.pages;
  c.last = b == n() && !lower_pending && region + 1 == regions.size();
  const Status s = exec.model.prefill(c, hooks, stream, c.last ? &next_token : nullptr);
  res.computed_tokens += b - pos;
  pos = b;
  if (pos == g.end) ++region;
  *last = c.last;
  return s;
}

bool WarmPrefillRun::State::settle() {
  if (fallback) return true;  // the second pass loads nothing; the first pass's counts stand
  std::int32_t failed_at = -1;
  std::int32_t loaded = 0;
  std::uint64_t bytes = 0;
  for (const Region& g : regions) {
    if (g.load == nullptr) continue;
    const Status s = g.load->wait();
    if (!s.ok()) {
      if (failed_at < 0) failed_at = g.begin;
      if (res.load_status.ok()) res.load_status = s;
    } else if (failed_at < 0) {
      loaded += g.end - g.begin;
      bytes += std::uint64_t(g.end - g.begin) * exec.model.spec().kv_bytes_per_token();
    }
  }
  res.loaded_tokens = loaded;
  res.bytes_loaded = bytes;
  if (failed_at < 0) return true;
  // A load failed after it was queued: what was computed from it on used bad KV. Compute again
  // from there; everything before it is right (computed, or loaded by loads that succeeded).
  stream.synchronize().ignore();  // what was queued is over, and the stream's error cleared
  regions.clear();
  region = 0;
  pos = failed_at;
  lower_pending = false;
  fallback = true;
  add_compute(failed_at, n());
  return false;
}

// When each layer of the load just attached landed: an event on the timeline stream behind it.
// A timeline run queues its loads whole (load_request), so these are queued right after the
// copies and time their landing. Timing only: a failure records nothing.
void WarmPrefillRun::State::mark_landing() {
  Stream& side = *exec.timeline_stream;
  const Load& load = *loads.back();
  const auto index = std::int32_t(loads.size() - 1);
  for (std::int32_t l = 0; l < load.queued_layers(); ++l) {
    if (!load.wait_layer(l, side).ok()) break;
    auto landed = exec.backend.create_event();
    if (!landed.ok() || !side.record(**landed).ok()) break;
    tl->marks.push_back({TimelineEntry::Lane::kLoad, l, index, std::move(landed).value()});
  }
}

Status WarmPrefillRun::State::timeline_entries() {
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  TIERKV_RETURN_IF_ERROR(exec.timeline_stream->synchronize());
  double prev_compute = 0;
  std::vector<double> prev_load;  // per load (a load mark's chunk is the load's index)
  for (auto& m : tl->marks) {
    auto end = exec.backend.elapsed_ms(*tl->start, *m.event);
    if (!end.ok()) continue;
    const bool load = m.lane == TimelineEntry::Lane::kLoad;
    if (load && std::size_t(m.chunk) >= prev_load.size())
      prev_load.resize(std::size_t(m.chunk) + 1);
    double& prev = load ? prev_load[std::size_t(m.chunk)] : prev_compute;
    if (load && m.layer == 0) prev = 0;
    res.timeline.push_back({m.lane, m.layer, m.chunk, std::min(prev, *end), *end});
    prev = *end;
  }
  return Status::Ok();
}

// ---- WarmPrefill --------------------------------------------------------------------------------

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
  if (model.max_chunk_tokens() < 1)
    return invalid_argument("warm prefill: the model takes no chunk");
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
  if (r.options.queue_layers < -1) {
    return invalid_argument("warm prefill: options.queue_layers " +
                            std::to_string(r.options.queue_layers) + " must be -1 (all) or >= 0");
  }
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

PlanInput WarmPrefill::State::plan_input(const WarmPrefillRequest& r,
                                         std::uint64_t ahead_bytes) const {
  const ModelSpec& m = model.spec();
  const CacheOptions& co = cache.options();
  PlanInput in;
  in.policy = r.options.policy;
  in.prompt_tokens = std::int32_t(r.tokens.size());
  in.gpu_end = r.match.gpu_tokens;
  in.host_end = r.match.host_tokens;
  in.lower_end = std::max(r.match.lower_tokens, r.match.host_tokens);
  for (std::size_t i = 0; i < r.match.lower_tier_tokens.size() && i < co.lower_tiers.size(); ++i)
    in.lower_tiers.emplace_back(co.lower_tiers[i]->capabilities().name,
                                r.match.lower_tier_tokens[i]);
  in.page_tokens = m.page_tokens;
  in.cache_chunk_tokens = co.chunk_tokens;
  in.max_chunk_tokens = model.max_chunk_tokens();
  in.chunk_tokens = r.options.chunk_tokens;
  in.split = r.options.split;
  in.num_layers = m.num_layers;
  in.kv_bytes_per_token_layer = m.kv_bytes_per_token_layer();
  const double gbps = profile.host_to_device_copy_engine.gbps(1 << 20);
  if (gbps > 0) in.queued_ahead_us = double(cache.queued_load_bytes() + ahead_bytes) / (gbps * 1e3);
  return in;
}

Result<WarmPrefillPlan> WarmPrefill::plan(const WarmPrefillRequest& r) const {
  TIERKV_RETURN_IF_ERROR(state_->check(r));
  return make_plan(state_->plan_input(r), state_->profile);
}

Result<std::unique_ptr<WarmPrefillRun::State>> WarmPrefill::State::prepare(
    const WarmPrefillRequest& r, Stream& compute, std::uint64_t ahead_bytes) {
  auto st = std::make_unique<WarmPrefillRun::State>(*this, r, compute);
  st->res.plan = make_plan(plan_input(r, ahead_bytes), profile);
  st->res.plan_ms = ms_since(st->t0);
  if (r.options.timeline) {
    st->tl.emplace();
    TIERKV_ASSIGN_OR_RETURN(st->tl->start, backend.create_event());
    TIERKV_RETURN_IF_ERROR(compute.record(*st->tl->start));
    TIERKV_RETURN_IF_ERROR(timeline_stream->wait(*st->tl->start));
  }
  return st;
}

Result<std::unique_ptr<WarmPrefillRun>> WarmPrefill::start(const WarmPrefillRequest& r,
                                                           Stream& compute_stream) {
  State& s = *state_;
  TIERKV_RETURN_IF_ERROR(s.check(r));
  TIERKV_ASSIGN_OR_RETURN(auto st, s.prepare(r, compute_stream, 0));
  const auto queue_start = Clock::now();
  st->begin(st->res.plan.gpu_end, false);
  st->res.queue_ms = ms_since(queue_start);
  return std::unique_ptr<WarmPrefillRun>(new WarmPrefillRun(std::move(st)));
}

Result<std::vector<std::unique_ptr<WarmPrefillRun>>> WarmPrefill::start_many(
    std::span<const WarmPrefillRequest> requests, Stream& compute_stream) {
  State& s = *state_;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (Status c = s.check(requests[i]); !c.ok())
      return requests.size() == 1 ? c : c.with_context("start_many: request " + std::to_string(i));
  }
  std::vector<std::unique_ptr<WarmPrefillRun::State>> runs;
  std::vector<std::pair<std::int32_t, std::int32_t>> host_parts;
  std::vector<LoadRequest> loads;
  std::uint64_t ahead = 0;
  const std::uint64_t token_bytes = s.model.spec().kv_bytes_per_token();
  for (const WarmPrefillRequest& r : requests) {
    TIERKV_ASSIGN_OR_RETURN(auto st, s.prepare(r, compute_stream, ahead));
    const auto queue_start = Clock::now();
    const auto [b, e] = st->begin_front(st->res.plan.gpu_end, false);
    st->res.queue_ms = ms_since(queue_start);
    host_parts.emplace_back(b, e);
    if (e > b) {
      loads.push_back(st->load_request(b, e));
      ahead += std::uint64_t(e - b) * token_bytes;
    }
    runs.push_back(std::move(st));
  }
  // One call: the host parts are queued layer-major, and repeated prefixes are shared.
  const auto queue_start = Clock::now();
  Result<std::vector<Load>> queued = s.cache.load_many(loads);
  const double queue_ms = ms_since(queue_start);
  std::vector<std::unique_ptr<WarmPrefillRun>> out;
  std::size_t k = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const auto [b, e] = host_parts[i];
    std::int32_t got = b;
    if (e > b) {
      got = runs[i]->attach_load(
          b, e,
          queued.ok() ? Result<Load>(std::move((*queued)[k])) : Result<Load>(queued.status()));
      ++k;
    }
    runs[i]->begin_back(got);
    runs[i]->res.queue_ms += queue_ms;
    out.push_back(std::unique_ptr<WarmPrefillRun>(new WarmPrefillRun(std::move(runs[i]))));
  }
  return out;
}

Result<WarmPrefillResult> WarmPrefill::run(const WarmPrefillRequest& r, Stream& compute_stream) {
  TIERKV_ASSIGN_OR_RETURN(auto run, start(r, compute_stream));
  while (!run->done())
    TIERKV_RETURN_IF_ERROR(run->step().status());
  return run->finish();
}

// ---- WarmPrefillRun -----------------------------------------------------------------------------

WarmPrefillRun::WarmPrefillRun(std::unique_ptr<State> s) : state_(std::move(s)) {}
WarmPrefillRun::~WarmPrefillRun() = default;

const WarmPrefillPlan& WarmPrefillRun::plan() const {
  return state_->res.plan;
}

bool WarmPrefillRun::done() const {
  return state_->finished;
}

std::int32_t WarmPrefillRun::next_chunk_tokens() const {
  const State& s = *state_;
  if (s.finished) return 0;
  const std::int32_t grid = s.res.plan.chunk_tokens;
  return std::min(s.n(), (s.pos / grid + 1) * grid) - s.pos;
}

Result<bool> WarmPrefillRun::step() {
  State& s = *state_;
  if (s.finished) return failed_precondition("warm prefill: the run is over");
  bool last = false;
  const Status ran = s.run_chunk(&last);
  if (!ran.ok() || last) {
    const bool over = s.settle();
    if (!ran.ok() && over) return ran;  // no failed load to blame: a model or device error
    if (!over) return false;            // a load failed: recompute from there, chunk by chunk
    s.finished = true;
    s.res.next_token = s.next_token;
    s.res.ttft_ms = ms_since(s.t0);
  }
  return s.finished;
}

Result<WarmPrefillResult> WarmPrefillRun::finish() {
  State& s = *state_;
  if (!s.finished) return failed_precondition("warm prefill: finish() before the last chunk");
  WarmPrefillResult& res = s.res;
  res.fallback_tokens = res.plan.loaded_tokens() - res.loaded_tokens;
  const WarmPrefillRequest& r = s.r;
  if (r.options.save && r.options.policy != PrefillPolicy::kRecompute) {
    SaveRequest sr;
    sr.keys = r.keys;
    sr.num_tokens = std::int32_t(r.tokens.size());
    sr.src = r.kv;
    sr.src_pages = r.pages;
    sr.producer = &s.stream;
    auto saved = s.exec.cache.save(sr);  // a save that cannot start costs a later hit, nothing else
    if (saved.ok()) res.save = std::make_shared<Save>(std::move(saved).value());
  }
  if (s.tl) TIERKV_RETURN_IF_ERROR(s.timeline_entries());
  return std::move(res);
}

}  // namespace tierkv

#include "tierkv/cache.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "cache/geometry.h"
#include "core/keys.h"
#include "core/sha256.h"
#include "tiers/host/host_tier.h"
#include "transfer/transfer_engine.h"

namespace tierkv {

// ---- Load ---------------------------------------------------------------------------------------

struct Load::State {
  std::int32_t first_token = 0, loaded_tokens = 0, requested_tokens = 0;
  CopyPath path = CopyPath::kCopyEngine;
  std::vector<HostTier::Pin> pins;                 // released only after the copies landed
  std::vector<std::unique_ptr<Event>> layer_done;  // one per layer; empty when nothing loads
};

Load::Load(std::unique_ptr<State> s) : state_(std::move(s)) {}
Load::Load(Load&&) noexcept = default;
Load& Load::operator=(Load&& o) noexcept {
  if (this != &o) {
    if (state_) wait().ignore();
    state_ = std::move(o.state_);
  }
  return *this;
}
Load::~Load() {
  if (state_) wait().ignore();
}

std::int32_t Load::first_token() const {
  return state_->first_token;
}
std::int32_t Load::loaded_tokens() const {
  return state_->loaded_tokens;
}
std::int32_t Load::requested_tokens() const {
  return state_->requested_tokens;
}
CopyPath Load::path() const {
  return state_->path;
}

Status Load::wait_layer(std::int32_t layer, Stream& stream) const {
  if (state_->layer_done.empty()) return Status::Ok();
  if (layer < 0 || std::size_t(layer) >= state_->layer_done.size()) {
    return invalid_argument("wait_layer: layer " + std::to_string(layer) + " of " +
                            std::to_string(state_->layer_done.size()));
  }
  return stream.wait(*state_->layer_done[std::size_t(layer)]);
}

Status Load::wait() {
  Status s;
  if (!state_->layer_done.empty()) s = state_->layer_done.back()->synchronize();
  state_->pins.clear();
  return s;
}

// ---- Save ---------------------------------------------------------------------------------------

struct SaveState {
  std::int32_t queued = 0, present = 0, dropped = 0;
  mutable std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // GUARDED_BY(mu)
  Status status;      // GUARDED_BY(mu)
};

Save::Save(std::shared_ptr<SaveState> s) : state_(std::move(s)) {}
Save::Save(Save&&) noexcept = default;
Save& Save::operator=(Save&&) noexcept = default;
Save::~Save() = default;

std::int32_t Save::queued_chunks() const {
  return state_->queued;
}
std::int32_t Save::present_chunks() const {
  return state_->present;
}
std::int32_t Save::dropped_chunks() const {
  return state_->dropped;
}
bool Save::done() const {
  std::lock_guard lock(state_->mu);
  return state_->done;
}
Status Save::wait() {
  std::unique_lock lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  return state_->status;
}

// ---- Cache --------------------------------------------------------------------------------------

namespace {

struct PendingSave {
  std::shared_ptr<SaveState> save;
  std::unique_ptr<Event> landed;
  std::vector<HostTier::Pin> reserved;
};

struct Counters {  // statistics only: relaxed atomics
  std::atomic<std::uint64_t> matches{0}, loads{0}, loaded_tokens{0}, missing_tokens{0};
  std::atomic<std::uint64_t> saves{0}, saved_chunks{0}, present_chunks{0}, dropped_chunks{0},
      failed_chunks{0};
  std::atomic<std::uint64_t> bytes_loaded{0}, bytes_saved{0};
};

void add(std::atomic<std::uint64_t>& c, std::uint64_t v) {
  c.fetch_add(v, std::memory_order_relaxed);
}

Digest cache_identity(const CacheOptions& o) {
  Sha256 h;
  h.str("tierkv.cache-identity.v1");
  const Digest model = o.model.identity_digest();
  h.bytes(model.data(), model.size());
  h.u32(static_cast<std::uint32_t>(o.page_layout)).u32(static_cast<std::uint32_t>(o.chunk_tokens));
  return h.finish();
}

}  // namespace

struct Cache::State {
  Backend& backend;
  CacheOptions opts;
  Digest identity;
  ChunkGeometry geo;
  std::unique_ptr<HostTier> host;
  std::unique_ptr<TransferEngine> transfer;
  std::unique_ptr<Stream> load_stream, save_stream;
  std::mutex load_mu, save_mu;  // one thread at a time on each stream
  Counters counters;

  // Saves in flight, published by the completion thread once their bytes landed.
  std::mutex pending_mu;
  std::condition_variable pending_cv;
  std::deque<PendingSave> pending;  // GUARDED_BY(pending_mu)
  std::size_t in_flight = 0;        // GUARDED_BY(pending_mu): queued plus the one being finished
  bool stopping = false;            // GUARDED_BY(pending_mu)
  std::thread completer;

  State(Backend& b, const CacheOptions& o)
      : backend(b), opts(o), identity(cache_identity(o)), geo(o) {}

  void complete_saves();
  void finish(PendingSave& p);
};

void Cache::State::complete_saves() {
  for (;;) {
    PendingSave p;
    {
      std::unique_lock lock(pending_mu);
      pending_cv.wait(lock, [&] { return stopping || !pending.empty(); });
      if (pending.empty()) return;
      p = std::move(pending.front());
      pending.pop_front();
    }
    finish(p);
    {
      std::lock_guard lock(pending_mu);
      --in_flight;
    }
    pending_cv.notify_all();
  }
}

// Publishes the chunks of a save whose bytes landed; drops them (unpublished) if the copy failed.
void Cache::State::finish(PendingSave& p) {
  const Status landed = p.landed->synchronize();
  if (landed.ok()) {
    for (HostTier::Pin& pin : p.reserved)
      host->commit(std::move(pin));
    add(counters.saved_chunks, p.reserved.size());
  } else {
    p.reserved.clear();
    add(counters.failed_chunks, p.save->queued);
  }
  {
    std::lock_guard lock(p.save->mu);
    p.save->done = true;
    p.save->status = landed;
  }
  p.save->cv.notify_all();
}

Result<std::unique_ptr<Cache>> Cache::create(Backend& backend, const CacheOptions& o) {
  TIERKV_RETURN_IF_ERROR(o.model.validate());
  if (o.chunk_tokens <= 0 || o.chunk_tokens % o.model.page_tokens != 0) {
    return invalid_argument("cache: chunk_tokens (" + std::to_string(o.chunk_tokens) +
                            ") must be a positive multiple of page_tokens (" +
                            std::to_string(o.model.page_tokens) + ")");
  }
  if (o.gpu_pool != nullptr) {
    const PagePoolOptions& p = o.gpu_pool->options();
    if (p.model.identity_digest() != o.model.identity_digest() || p.layout != o.page_layout) {
      return invalid_argument("cache: the GPU page pool was made for another model or page layout");
    }
  }
  auto st = std::make_unique<State>(backend, o);
  if (o.host_bytes > 0) {
    TIERKV_ASSIGN_OR_RETURN(st->host,
                            HostTier::create(backend, o.host_bytes, st->geo.chunk_bytes()));
  }
  TIERKV_ASSIGN_OR_RETURN(st->transfer, TransferEngine::create(backend, o.transfer));
  TIERKV_ASSIGN_OR_RETURN(st->load_stream, backend.create_stream());
  TIERKV_ASSIGN_OR_RETURN(st->save_stream, backend.create_stream());
  st->completer = std::thread([s = st.get()] { s->complete_saves(); });
  return std::unique_ptr<Cache>(new Cache(std::move(st)));
}

Cache::Cache(std::unique_ptr<State> s) : state_(std::move(s)) {}

Cache::~Cache() {
  flush().ignore();
  {
    std::lock_guard lock(state_->pending_mu);
    state_->stopping = true;
  }
  state_->pending_cv.notify_all();
  state_->completer.join();
}

const Digest& Cache::identity() const {
  return state_->identity;
}
const CacheOptions& Cache::options() const {
  return state_->opts;
}

Result<PromptKeys> Cache::keys(std::span<const std::int32_t> tokens, std::string_view salt) const {
  PromptKeys k;
  TIERKV_RETURN_IF_ERROR(
      compute_page_keys(state_->identity, salt, tokens, state_->opts.model.page_tokens, k.pages));
  k.tokens = static_cast<std::int32_t>(tokens.size());
  k.page_tokens = state_->opts.model.page_tokens;
  k.chunk_tokens = state_->opts.chunk_tokens;
  return k;
}

MatchResult Cache::match(const PromptKeys& keys) {
  State& s = *state_;
  add(s.counters.matches, 1);
  MatchResult m;
  if (s.opts.gpu_pool != nullptr)
    m.gpu_tokens = s.opts.gpu_pool->count_cached(keys.pages) * keys.page_tokens;
  std::int32_t c = 0;
  for (; c < keys.full_chunks(); ++c) {
    const bool on_gpu = (c + 1) * keys.chunk_tokens <= m.gpu_tokens;
    if (!on_gpu && (s.host == nullptr || !s.host->contains(keys.chunk_key(c)))) break;
  }
  m.host_tokens = std::max(m.gpu_tokens, c * keys.chunk_tokens);
  return m;
}

Result<Load> Cache::load(const LoadRequest& r) {
  State& s = *state_;
  TIERKV_RETURN_IF_ERROR(s.geo.check_keys(r.keys));
  TIERKV_RETURN_IF_ERROR(s.geo.check_range(*r.keys, r.first_token, r.num_tokens, "load"));
  TIERKV_RETURN_IF_ERROR(s.geo.check_view(r.dst, r.dst_pages, r.num_tokens, "load"));
  auto st = std::make_unique<Load::State>();
  st->first_token = r.first_token;
  st->requested_tokens = r.num_tokens;
  const std::int32_t first_chunk = r.first_token / s.opts.chunk_tokens;
  const std::int32_t chunks = r.num_tokens / s.opts.chunk_tokens;
  for (std::int32_t c = 0; c < chunks && s.host != nullptr; ++c) {
    HostTier::Pin pin = s.host->pin(r.keys->chunk_key(first_chunk + c));
    if (!pin) break;  // gone since match(): the rest is recomputed
    st->pins.push_back(std::move(pin));
  }
  st->loaded_tokens = std::int32_t(st->pins.size()) * s.opts.chunk_tokens;
  add(s.counters.loads, 1);
  add(s.counters.loaded_tokens, std::uint64_t(st->loaded_tokens));
  add(s.counters.missing_tokens, std::uint64_t(r.num_tokens - st->loaded_tokens));
  if (st->pins.empty()) return Load(std::move(st));

  for (std::int32_t l = 0; l < s.opts.model.num_layers; ++l) {
    TIERKV_ASSIGN_OR_RETURN(auto e, s.backend.create_event());
    st->layer_done.push_back(std::move(e));
  }
  std::vector<CopyRun> runs;
  std::lock_guard lock(s.load_mu);
  for (std::int32_t l = 0; l < s.opts.model.num_layers; ++l) {
    runs.clear();
    for (std::size_t c = 0; c < st->pins.size(); ++c) {
      const auto pages = r.dst_pages.subspan(c * std::size_t(s.geo.pages_per_chunk),
                                             std::size_t(s.geo.pages_per_chunk));
      s.geo.append_runs(r.dst, l, pages, st->pins[c].data(), Direction::kToDevice, runs);
    }
    TIERKV_ASSIGN_OR_RETURN(st->path, s.transfer->copy(runs, r.compute_beside, *s.load_stream));
    TIERKV_RETURN_IF_ERROR(s.load_stream->record(*st->layer_done[std::size_t(l)]));
  }
  add(s.counters.bytes_loaded, st->pins.size() * s.geo.chunk_bytes());
  return Load(std::move(st));
}

Result<Save> Cache::save(const SaveRequest& r) {
  State& s = *state_;
  TIERKV_RETURN_IF_ERROR(s.geo.check_keys(r.keys));
  if (r.producer == nullptr) return invalid_argument("save: the producer stream is required");
  if (r.num_tokens < 0 || r.num_tokens > r.keys->tokens) {
    return invalid_argument("save: num_tokens " + std::to_string(r.num_tokens) +
                            " outside the prompt");
  }
  const std::int32_t chunks = r.num_tokens / s.opts.chunk_tokens;
  TIERKV_RETURN_IF_ERROR(
      s.geo.check_view(r.src, r.src_pages, chunks * s.opts.chunk_tokens, "save"));
  auto state = std::make_shared<SaveState>();
  add(s.counters.saves, 1);
  PendingSave p;
  p.save = state;
  std::vector<std::int32_t> chunk_ids;
  for (std::int32_t c = 0; c < chunks && s.host != nullptr; ++c) {
    auto pin = s.host->reserve(r.keys->chunk_key(c));
    if (pin.ok()) {
      p.reserved.push_back(std::move(pin).value());
      chunk_ids.push_back(c);
    } else if (pin.status().code() == StatusCode::kAlreadyExists) {
      ++state->present;
    } else {
      ++state->dropped;
    }
  }
  if (s.host == nullptr) state->dropped = chunks;
  state->queued = std::int32_t(p.reserved.size());
  add(s.counters.present_chunks, std::uint64_t(state->present));
  add(s.counters.dropped_chunks, std::uint64_t(state->dropped));
  if (p.reserved.empty()) {
    state->done = true;
    return Save(state);
  }

  std::vector<CopyRun> runs;
  for (std::size_t i = 0; i < chunk_ids.size(); ++i) {
    const auto pages = r.src_pages.subspan(std::size_t(chunk_ids[i]) * s.geo.pages_per_chunk,
                                           std::size_t(s.geo.pages_per_chunk));
    for (std::int32_t l = 0; l < s.opts.model.num_layers; ++l) {
      s.geo.append_runs(r.src, l, pages, p.reserved[i].data(), Direction::kToHost, runs);
    }
  }
  TIERKV_ASSIGN_OR_RETURN(auto produced, s.backend.create_event());
  TIERKV_ASSIGN_OR_RETURN(p.landed, s.backend.create_event());
  TIERKV_RETURN_IF_ERROR(r.producer->record(*produced));
  {
    std::lock_guard lock(s.save_mu);
    TIERKV_RETURN_IF_ERROR(s.save_stream->wait(*produced));
    TIERKV_RETURN_IF_ERROR(s.transfer->copy(runs, r.compute_beside, *s.save_stream).status());
    TIERKV_RETURN_IF_ERROR(s.save_stream->record(*p.landed));
  }
  add(s.counters.bytes_saved, p.reserved.size() * s.geo.chunk_bytes());
  {
    std::lock_guard lock(s.pending_mu);
    ++s.in_flight;
    s.pending.push_back(std::move(p));
  }
  s.pending_cv.notify_all();
  return Save(state);
}

Status Cache::flush() {
  State& s = *state_;
  std::unique_lock lock(s.pending_mu);
  s.pending_cv.wait(lock, [&] { return s.in_flight == 0; });
  return Status::Ok();
}

CacheStats Cache::stats() const {
  const State& s = *state_;
  const Counters& c = s.counters;
  CacheStats st;
  st.matches = c.matches.load();
  st.loads = c.loads.load();
  st.loaded_tokens = c.loaded_tokens.load();
  st.missing_tokens = c.missing_tokens.load();
  st.saves = c.saves.load();
  st.saved_chunks = c.saved_chunks.load();
  st.present_chunks = c.present_chunks.load();
  st.dropped_chunks = c.dropped_chunks.load();
  st.failed_chunks = c.failed_chunks.load();
  st.bytes_loaded = c.bytes_loaded.load();
  st.bytes_saved = c.bytes_saved.load();
  const TransferCounters t = s.transfer->counters();
  st.copy_engine_transfers = t.copy_engine;
  st.sm_kernel_transfers = t.sm_kernel;
  if (s.host != nullptr) {
    const HostTierStats h = s.host->stats();
    st.host_budget_bytes = h.budget_bytes;
    st.host_allocated_bytes = h.allocated_bytes;
    st.host_slots = h.slots;
    st.host_ready_slots = h.ready_slots;
    st.host_pinned_slots = h.pinned_slots;
  }
  return st;
}

}  // namespace tierkv

#include "tierkv/cache.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "cache/cache_state.h"
#include "cache/geometry.h"
#include "core/keys.h"
#include "core/sha256.h"
#include "tiers/host/host_tier.h"
#include "transfer/transfer_engine.h"

namespace tierkv {

// ---- Load ---------------------------------------------------------------------------------------

struct Load::State {
  std::shared_ptr<Cache::State> cache;  // keeps the host tier and the load stream alive
  std::int32_t first_token = 0, loaded_tokens = 0, requested_tokens = 0;
  CopyPath path = CopyPath::kCopyEngine;
  std::vector<HostTier::Pin> pins;                 // released only after the copies landed
  std::vector<std::unique_ptr<Event>> layer_done;  // one per layer; empty when nothing loads
  std::shared_ptr<QueuedLoad> queued;              // what queued_load_bytes() sees of it
  bool finished = false;                           // the copies are over and the pins released
  bool reported = false;                           // wait() returned `status` to the caller
  Status status;                                   // the copies' first error, once finished

  // Waits for every layer's copies, releases the pins; idempotent.
  void finish();
  ~State();
};

Load::Load(std::unique_ptr<State> s) : state_(std::move(s)) {}
Load::Load(Load&&) noexcept = default;
Load& Load::operator=(Load&& o) noexcept = default;
Load::~Load() = default;

std::int32_t Load::first_token() const {
  return state_ ? state_->first_token : 0;
}
std::int32_t Load::loaded_tokens() const {
  return state_ ? state_->loaded_tokens : 0;
}
std::int32_t Load::requested_tokens() const {
  return state_ ? state_->requested_tokens : 0;
}
CopyPath Load::path() const {
  return state_ ? state_->path : CopyPath::kCopyEngine;
}

namespace {
Status moved_from(const char* what) {
  return failed_precondition(std::string(what) + ": the handle was moved from");
}
}  // namespace

// ---- Save ---------------------------------------------------------------------------------------

Save::Save(std::shared_ptr<SaveState> s) : state_(std::move(s)) {}
Save::Save(Save&&) noexcept = default;
Save& Save::operator=(Save&&) noexcept = default;
Save::~Save() = default;

std::int32_t Save::queued_chunks() const {
  return state_ ? state_->queued : 0;
}
std::int32_t Save::present_chunks() const {
  return state_ ? state_->present : 0;
}
std::int32_t Save::dropped_chunks() const {
  return state_ ? state_->dropped : 0;
}
bool Save::done() const {
  if (!state_) return true;
  std::lock_guard lock(state_->mu);
  return state_->done;
}
Status Save::wait() {
  if (!state_) return moved_from("Save::wait");
  std::unique_lock lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  return state_->status;
}

// ---- Cache --------------------------------------------------------------------------------------

namespace {

Digest cache_identity(const CacheOptions& o) {
  Sha256 h;
  h.str("tierkv.cache-identity.v1");
  const Digest model = o.model.identity_digest();
  h.bytes(model.data(), model.size());
  h.u32(static_cast<std::uint32_t>(o.page_layout)).u32(static_cast<std::uint32_t>(o.chunk_tokens));
  return h.finish();
}

// The identity the page keys of one request chain from: the cache's, or, with an adapter or extra
// inputs, a digest of the cache's and those (tierkv/key.h).
Digest request_identity(const Digest& cache, const KeyScope& scope) {
  if (scope.adapter.empty() && scope.extra.empty()) return cache;
  Sha256 h;
  h.str("tierkv.key-scope.v1");
  h.bytes(cache.data(), cache.size());
  h.str(scope.adapter).u64(scope.adapter_version).u64(scope.extra.size());
  for (const auto& d : scope.extra)
    h.bytes(d.data(), d.size());
  return h.finish();
}

Digest salt_tag(std::string_view salt) {
  Sha256 h;
  h.str("tierkv.salt-tag.v1").str(salt);
  return h.finish();
}

// Blocks until everything queued on `stream` so far has run: an event recorded now and waited
// for, or (when even that cannot be queued) the whole stream drained. Errors are the queued work's
// own and reach whoever waits for it; here only completion matters.
void drain(Backend& backend, Stream& stream) {
  auto e = backend.create_event();
  if (e.ok() && stream.record(**e).ok()) {
    (*e)->synchronize().ignore();
    return;
  }
  stream.synchronize().ignore();
}

}  // namespace

Cache::State::State(Backend& b, const CacheOptions& o)
    : backend(b), opts(o), identity(cache_identity(o)), geo(o) {}

Cache::State::~State() {
  // Streams first: destroying one waits for its queued copies, which read and write the host
  // slab.
  load_stream.reset();
  save_stream.reset();
}

void Load::State::finish() {
  if (finished) return;
  for (std::size_t l = 0; l < layer_done.size(); ++l) {
    // Each layer: another thread's drain may have cleared the stream's error.
    std::unique_lock<std::mutex> shared;  // the last layer's event is also asked by the cache
    if (queued != nullptr && l + 1 == layer_done.size()) shared = std::unique_lock(queued->mu);
    const Status s = layer_done[l]->synchronize();
    if (!s.ok() && status.ok()) status = s.with_context("load");
  }
  if (queued != nullptr) {
    std::lock_guard lock(queued->mu);
    queued->last = nullptr;  // the events go with this state
    queued->finished = true;
  }
  pins.clear();
  finished = true;
  if (!status.ok()) {
    add(cache->counters.load_errors, 1);
    Cache::State::clear_stream_error(cache->load_mu, *cache->load_stream);
  }
}

Load::State::~State() {
  if (cache == nullptr) return;
  finish();
  if (!status.ok() && !reported) cache->report(status);
}

Status Load::wait_layer(std::int32_t layer, Stream& stream) const {
  if (!state_) return moved_from("Load::wait_layer");
  const std::int32_t layers = state_->cache->opts.model.num_layers;
  if (layer < 0 || layer >= layers) {
    return invalid_argument("wait_layer: layer " + std::to_string(layer) + " outside [0, " +
                            std::to_string(layers) + ")");
  }
  if (state_->layer_done.empty()) return Status::Ok();
  if (state_->finished && !state_->status.ok()) return state_->status;
  Event& e = *state_->layer_done[std::size_t(layer)];
  std::unique_lock<std::mutex> shared;  // the last layer's event is also asked by the cache
  if (state_->queued != nullptr && layer + 1 == layers)
    shared = std::unique_lock(state_->queued->mu);
  const Result<bool> landed = e.done();  // an error that is known already is returned here
  if (!landed.ok()) return landed.status().with_context("load of layer " + std::to_string(layer));
  if (*landed) return Status::Ok();
  return stream.wait(e);
}

Status Load::wait() {
  if (!state_) return moved_from("Load::wait");
  state_->finish();
  state_->reported = true;
  return state_->status;
}

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
    for (std::size_t i = 0; i < p.reserved.size(); ++i) {
      host->commit(std::move(p.reserved[i]));
      if (lower != nullptr) lower->offer(p.salt_tag, p.chunk_keys[i], p.sightings[i], true);
    }
    add(counters.saved_chunks, p.reserved.size());
  } else {
    p.reserved.clear();  // the copy is over (its event completed): the slots are free again
    clear_stream_error(save_mu, *save_stream);
    add(counters.failed_chunks, std::uint64_t(p.save->queued));
    add(counters.save_errors, 1);
    {
      std::lock_guard lock(pending_mu);
      if (flush_error.ok()) flush_error = landed.with_context("save");
    }
    report(landed.with_context("save"));
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
  TIERKV_RETURN_IF_ERROR(require_weights_digest(o.model.identity));
  if (o.page_layout != KvLayout::kNHD && o.page_layout != KvLayout::kHND)
    return invalid_argument("cache: page_layout must be NHD or HND");
  if (o.chunk_tokens <= 0 || o.chunk_tokens > kMaxChunkTokens ||
      o.chunk_tokens % o.model.page_tokens != 0) {
    return invalid_argument("cache: chunk_tokens (" + std::to_string(o.chunk_tokens) +
                            ") must be a multiple of page_tokens (" +
                            std::to_string(o.model.page_tokens) + ") in [1, " +
                            std::to_string(kMaxChunkTokens) + "]");
  }
  if (o.transfer.sm_blocks < 1 || o.transfer.sm_blocks > 1024)
    return invalid_argument("cache: transfer.sm_blocks must be in [1, 1024]");
  if (o.gpu_pool != nullptr) {
    const PagePoolOptions& p = o.gpu_pool->options();
    if (p.model.identity_digest() != o.model.identity_digest() || p.layout != o.page_layout) {
      return invalid_argument("cache: the GPU page pool was made for another model or page layout");
    }
  }
  if (!o.lower_tiers.empty() && o.host_bytes == 0) {
    return invalid_argument(
        "cache: lower_tiers need a host tier (host_bytes > 0): every lower-tier hit reaches the "
        "GPU through a host slot");
  }
  try {
    auto st = std::make_shared<State>(backend, o);
    if (o.host_bytes > 0) {
      HostTierOptions h;
      h.budget_bytes = o.host_bytes;
      h.chunk_bytes = st->geo.chunk_bytes();
      h.on_pin_error = o.on_async_error;
      TIERKV_ASSIGN_OR_RETURN(st->host, HostTier::create(backend, h));
    }
    if (!o.lower_tiers.empty()) {
      TIERKV_ASSIGN_OR_RETURN(
          st->lower, LowerTiers::create(o, st->identity, 2 * st->geo.chunk_layer_bytes, *st->host));
    }
    TIERKV_ASSIGN_OR_RETURN(st->transfer, TransferEngine::create(backend, o.transfer));
    TIERKV_ASSIGN_OR_RETURN(st->load_stream, backend.create_stream());
    TIERKV_ASSIGN_OR_RETURN(st->save_stream, backend.create_stream());
    st->completer = std::thread([s = st.get()] { s->complete_saves(); });
    return std::unique_ptr<Cache>(new Cache(std::move(st)));
  } catch (const std::bad_alloc&) {
    return resource_exhausted("cache: out of host memory");
  } catch (const std::system_error& e) {
    return resource_exhausted(std::string("cache: cannot start its thread: ") + e.what());
  }
}

Cache::Cache(std::shared_ptr<State> s) : state_(std::move(s)) {}

Cache::~Cache() {
  flush().ignore();
  if (state_->lower != nullptr) state_->lower->stop();  // after flush(): its chunks are offered
  // on_async_error is not called from the pinning thread after the Cache is gone.
  if (state_->host != nullptr) state_->host->stop_pinning();
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
  return keys(tokens, KeyScope{.salt = salt});
}

Result<PromptKeys> Cache::keys(std::span<const std::int32_t> tokens, const KeyScope& scope) const {
  const State& s = *state_;
  if (std::int64_t(tokens.size()) > kMaxPromptTokens) {
    return invalid_argument("keys: " + std::to_string(tokens.size()) + " tokens exceed " +
                            std::to_string(kMaxPromptTokens));
  }
  if (const std::int32_t vocab = s.opts.model.vocab; vocab > 0) {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] >= vocab) {
        return invalid_argument("keys: token " + std::to_string(i) + " is " +
                                std::to_string(tokens[i]) + ", outside the vocabulary (" +
                                std::to_string(vocab) + ")");
      }
    }
  }
  try {
    PromptKeys k;
    TIERKV_RETURN_IF_ERROR(compute_page_keys(request_identity(s.identity, scope), scope.salt,
                                             tokens, s.opts.model.page_tokens, k.pages));
    k.tokens = static_cast<std::int32_t>(tokens.size());
    k.page_tokens = s.opts.model.page_tokens;
    k.chunk_tokens = s.opts.chunk_tokens;
    k.identity = s.identity;
    k.salt_tag = salt_tag(scope.salt);
    return k;
  } catch (const std::bad_alloc&) {
    return resource_exhausted("keys: out of host memory");
  }
}

Result<MatchResult> Cache::match(const PromptKeys& keys) {
  State& s = *state_;
  TIERKV_RETURN_IF_ERROR(s.check_cache_keys(&keys));
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
  m.lower_tokens = m.host_tokens;
  if (s.lower != nullptr) {
    try {
      s.lower->match(keys, c, m);
    } catch (const std::bad_alloc&) {
      return resource_exhausted("match: out of host memory");
    }
  }
  return m;
}

Result<Load> Cache::load(const LoadRequest& r) {
  State& s = *state_;
  TIERKV_RETURN_IF_ERROR(s.check_cache_keys(r.keys));
  TIERKV_RETURN_IF_ERROR(s.geo.check_load_range(*r.keys, r.first_token, r.num_tokens));
  TIERKV_RETURN_IF_ERROR(
      s.geo.check_view(r.dst, r.dst_pages, r.num_tokens / s.opts.model.page_tokens, "load"));
  try {
    auto st = std::make_unique<Load::State>();
    st->first_token = r.first_token;
    st->requested_tokens = r.num_tokens;
    // The load covers chunks [first_chunk, end_chunk); the first may be entered mid-way.
    const std::int32_t first_chunk = r.first_token / s.opts.chunk_tokens;
    const std::int32_t end_chunk = (r.first_token + r.num_tokens) / s.opts.chunk_tokens;
    for (std::int32_t c = first_chunk; c < end_chunk && s.host != nullptr && r.num_tokens > 0;
         ++c) {
      HostTier::Pin pin = s.host->pin(r.keys->chunk_key(c));
      if (!pin) break;  // gone since match(): the rest is recomputed
      st->pins.push_back(std::move(pin));
    }
    const std::int32_t got_end =
        st->pins.empty() ? r.first_token
                         : (first_chunk + std::int32_t(st->pins.size())) * s.opts.chunk_tokens;
    st->loaded_tokens = got_end - r.first_token;
    add(s.counters.loads, 1);
    add(s.counters.loaded_tokens, std::uint64_t(st->loaded_tokens));
    add(s.counters.missing_tokens, std::uint64_t(r.num_tokens - st->loaded_tokens));
    st->cache = state_;
    if (st->pins.empty()) {
      st->finished = true;
      return Load(std::move(st));
    }
    return s.queue_load(r, std::move(st));
  } catch (const std::bad_alloc&) {
    return resource_exhausted("load: out of host memory");
  }
}

// Queues a pinned load's copies, layer by layer. On a failure midway, waits until nothing queued
// can land any more, then drops the pins and returns the error.
Result<Load> Cache::State::queue_load(const LoadRequest& r, std::unique_ptr<Load::State> st) {
  const std::int32_t layers = opts.model.num_layers, ppc = geo.pages_per_chunk;
  for (std::int32_t l = 0; l < layers; ++l) {
    auto e = backend.create_event();
    if (!e.ok()) {
      st->pins.clear();
      st->finished = true;  // nothing queued yet
      add(counters.load_errors, 1);
      return e.status().with_context("load");
    }
    st->layer_done.push_back(std::move(e).value());
  }
  auto queued_load = std::make_shared<QueuedLoad>();  // before anything is queued: may throw
  queued_load->bytes = std::uint64_t(st->loaded_tokens) * opts.model.kv_bytes_per_token();
  queued_load->last = st->layer_done.back().get();
  const std::int32_t page0 = r.first_token / opts.model.page_tokens;  // first page of the load
  const std::int32_t first_chunk = r.first_token / opts.chunk_tokens;
  std::vector<CopyRun> runs;
  std::lock_guard lock(load_mu);
  for (std::int32_t l = 0; l < layers; ++l) {
    runs.clear();
    for (std::size_t c = 0; c < st->pins.size(); ++c) {
      // Page p of the prompt goes to dst_pages[p - page0]; the chunk's pages before page0 (first
      // chunk only) are not copied.
      const std::int32_t chunk_page0 = (first_chunk + std::int32_t(c)) * ppc;
      const std::int32_t skip = std::max(0, page0 - chunk_page0);
      const auto pages = r.dst_pages.subspan(std::size_t(chunk_page0 + skip - page0),
                                             std::size_t(ppc - skip));
      geo.append_runs(r.dst, l, pages, skip, st->pins[c].data(), Direction::kToDevice, runs);
    }
    Status queued = Status::Ok();
    auto path = transfer->copy(runs, r.compute_beside, *load_stream);
    if (!path.ok()) {
      queued = path.status();
    } else {
      st->path = *path;
      queued = load_stream->record(*st->layer_done[std::size_t(l)]);
    }
    if (!queued.ok()) {
      drain(backend, *load_stream);  // nothing of this load may land after we return
      st->pins.clear();
      st->layer_done.clear();
      st->finished = true;
      add(counters.load_errors, 1);
      return queued.with_context("load: queueing layer " + std::to_string(l));
    }
  }
  add(counters.bytes_loaded, queued_load->bytes);
  st->queued = queued_load;
  track_load(std::move(queued_load));
  return Load(std::move(st));
}

void Cache::State::track_load(std::shared_ptr<QueuedLoad> q) {
  std::lock_guard lock(queued_mu);
  while (!queued_loads.empty() && queued_loads.front()->finished)
    queued_loads.pop_front();
  try {
    queued_loads.push_back(std::move(q));
  } catch (const std::bad_alloc&) {
    // Untracked: queued_load_bytes() undercounts this load; nothing else depends on it.
  }
}

// Loads leave in queue order: the stream runs them in that order.
std::uint64_t Cache::State::queued_load_bytes() {
  std::lock_guard lock(queued_mu);
  while (!queued_loads.empty()) {
    QueuedLoad& q = *queued_loads.front();
    if (!q.finished) {
      std::unique_lock event(q.mu, std::try_to_lock);
      if (!event.owns_lock()) break;  // its Load is asking the event: not known to be over
      if (q.last != nullptr) {
        const Result<bool> landed = q.last->done();
        if (landed.ok() && !*landed) break;  // an error also means its copies are over
      }
    }
    queued_loads.pop_front();
  }
  std::uint64_t bytes = 0;
  for (const auto& q : queued_loads)
    bytes += q->bytes;
  return bytes;
}

std::uint64_t Cache::queued_load_bytes() const {
  return state_->queued_load_bytes();
}

Result<Save> Cache::save(const SaveRequest& r) {
  State& s = *state_;
  TIERKV_RETURN_IF_ERROR(s.check_cache_keys(r.keys));
  if (r.producer == nullptr) return invalid_argument("save: the producer stream is required");
  if (r.num_tokens < 0 || r.num_tokens > r.keys->tokens) {
    return invalid_argument("save: num_tokens " + std::to_string(r.num_tokens) +
                            " outside the prompt's " + std::to_string(r.keys->tokens));
  }
  const std::int32_t chunks = r.num_tokens / s.opts.chunk_tokens;
  TIERKV_RETURN_IF_ERROR(s.geo.check_view(
      r.src, r.src_pages, std::int64_t{chunks} * s.geo.pages_per_chunk, "save"));
  try {
    auto state = std::make_shared<SaveState>();
    add(s.counters.saves, 1);
    PendingSave p;
    p.save = state;
    p.salt_tag = r.keys->salt_tag;
    std::vector<std::int32_t> chunk_ids;
    for (std::int32_t c = 0; c < chunks && s.host != nullptr; ++c) {
      const Key& key = r.keys->chunk_key(c);
      // Every chunk of a save is a sighting (write-down admission), whatever the host tier does.
      const std::uint32_t seen = s.lower != nullptr ? s.lower->sight(key) : 0;
      auto pin = s.host->reserve(key);
      if (pin.ok()) {
        p.reserved.push_back(std::move(pin).value());
        chunk_ids.push_back(c);
        p.chunk_keys.push_back(key);
        p.sightings.push_back(seen);
      } else if (pin.status().code() == StatusCode::kAlreadyExists) {
        ++state->present;
        if (s.lower != nullptr) s.lower->offer(p.salt_tag, key, seen, false);
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
        s.geo.append_runs(r.src, l, pages, 0, p.reserved[i].data(), Direction::kToHost, runs);
      }
    }
    // Until a copy is queued, a failure only has to drop the reservations; after it, the copy may
    // still be writing into the reserved slots, so it must be over before they can be reused.
    const auto failed = [&](const Status& why, bool copy_queued) -> Status {
      if (copy_queued) drain(s.backend, *s.save_stream);
      p.reserved.clear();
      add(s.counters.save_errors, 1);
      return why.with_context("save");
    };
    auto produced = s.backend.create_event();
    auto landed = s.backend.create_event();
    if (!produced.ok()) return failed(produced.status(), false);
    if (!landed.ok()) return failed(landed.status(), false);
    p.landed = std::move(landed).value();
    if (Status st = r.producer->record(**produced); !st.ok()) return failed(st, false);
    {
      std::lock_guard lock(s.save_mu);
      if (Status st = s.save_stream->wait(**produced); !st.ok()) return failed(st, false);
      if (auto path = s.transfer->copy(runs, r.compute_beside, *s.save_stream); !path.ok())
        return failed(path.status(), false);  // a copy that fails to queue copies nothing
      if (Status st = s.save_stream->record(*p.landed); !st.ok()) return failed(st, true);
    }
    const std::uint64_t bytes = p.reserved.size() * s.geo.chunk_bytes();
    try {
      std::lock_guard lock(s.pending_mu);
      s.pending.push_back(std::move(p));  // on failure `p` is untouched (deque's strong guarantee)
      ++s.in_flight;
    } catch (const std::bad_alloc&) {
      // The copy is queued: the slots are released only after it is over.
      return failed(resource_exhausted("out of host memory"), true);
    }
    add(s.counters.bytes_saved, bytes);
    s.pending_cv.notify_all();
    return Save(state);
  } catch (const std::bad_alloc&) {
    return resource_exhausted("save: out of host memory");
  }
}

void Cache::State::wait_saves() {
  std::unique_lock lock(pending_mu);
  pending_cv.wait(lock, [&] { return in_flight == 0; });
}

Status Cache::flush() {
  State& s = *state_;
  s.wait_saves();
  std::lock_guard lock(s.pending_mu);
  return std::exchange(s.flush_error, Status::Ok());
}

Status Cache::flush_lower_tiers() {
  State& s = *state_;
  s.wait_saves();  // their chunks are offered once they landed
  return s.lower != nullptr ? s.lower->flush() : Status::Ok();
}

CacheStats Cache::stats() const {
  const State& s = *state_;
  const CacheCounters& c = s.counters;
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
  st.load_errors = c.load_errors.load();
  st.save_errors = c.save_errors.load();
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
    st.host_usable_bytes = h.usable_bytes;
  }
  if (s.lower != nullptr) {
    try {
      s.lower->stats(st, st.saved_chunks * s.geo.chunk_bytes());
    } catch (const std::bad_alloc&) {
      st.lower_tiers.clear();  // the figures of the lower tiers are left out
    }
  }
  return st;
}

}  // namespace tierkv

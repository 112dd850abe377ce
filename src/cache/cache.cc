#include "tierkv/cache.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
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
  std::shared_ptr<LoadSource> source;  // its pages offered to later loads; null when none
  std::shared_ptr<LoadBatch> batch;    // while layers are left to queue; else null
  std::int32_t shared_tokens = 0;      // of loaded_tokens, copied from a load in flight
  bool finished = false;               // the copies are over and the pins released
  bool reported = false;               // wait() returned `status` to the caller
  Status status;                       // the copies' first error, once finished

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
std::int32_t Load::shared_tokens() const {
  return state_ ? state_->shared_tokens : 0;
}
std::int32_t Load::queued_layers() const {
  if (!state_) return 0;
  if (state_->batch != nullptr) return state_->batch->queued.load(std::memory_order_acquire);
  return std::int32_t(state_->layer_done.size());
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
  stop_threads();  // joined already by ~Cache, unless create() failed after starting them
  // Streams next: destroying one waits for its queued copies, which read and write the host
  // slab.
  load_stream.reset();
  save_stream.reset();
}

void Load::State::finish() {
  if (finished) return;
  std::size_t recorded = layer_done.size();
  if (batch != nullptr) {
    const Status q = cache->queue_through(*batch, std::int32_t(layer_done.size()) - 1);
    if (!q.ok()) status = q;
    recorded = std::size_t(batch->queued.load(std::memory_order_acquire));
  }
  std::vector<std::shared_ptr<Event>> readers;
  if (source != nullptr) {
    cache->close_source(source);
    std::lock_guard lock(cache->share_mu);
    readers.swap(source->readers);
  }
  for (std::size_t l = 0; l < recorded; ++l) {
    // Each layer: another thread's drain may have cleared the stream's error.
    std::unique_lock<std::mutex> shared;  // the last layer's event is also asked by the cache
    if (queued != nullptr && l + 1 == layer_done.size()) shared = std::unique_lock(queued->mu);
    const Status s = layer_done[l]->synchronize();
    if (!s.ok() && status.ok()) status = s.with_context("load");
  }
  // Loads that copied out of this load's pages: their errors are theirs to report.
  for (const auto& r : readers)
    r->synchronize().ignore();
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
  if (LoadBatch* b = state_->batch.get()) {
    const Status q = state_->cache->queue_through(*b, layer + kQueueAhead);
    if (layer >= b->queued.load(std::memory_order_acquire)) {
      return q.ok() ? internal_error("wait_layer: layer " + std::to_string(layer) + " not queued")
                    : q;
    }
  }
  Event& e = *state_->layer_done[std::size_t(layer)];
  std::unique_lock<std::mutex> shared;  // the last layer's event is also asked by the cache
  if (state_->queued != nullptr && layer + 1 == layers)
    shared = std::unique_lock(state_->queued->mu);
  const Result<bool> landed = e.done();  // an error that is known already is returned here
  if (!landed.ok()) return landed.status().with_context("load of layer " + std::to_string(layer));
  if (*landed) return Status::Ok();
  return stream.wait(e);
}

Status Load::queue_through(std::int32_t layer) const {
  if (!state_) return moved_from("Load::queue_through");
  if (layer < 0) {
    return invalid_argument("queue_through: layer " + std::to_string(layer) + " is negative");
  }
  LoadBatch* b = state_->batch.get();
  if (b == nullptr) return Status::Ok();  // all queued, or nothing to load
  const Status q = state_->cache->queue_through(*b, layer);
  return std::min(layer, b->layers - 1) < b->queued.load(std::memory_order_acquire) ? Status::Ok()
                                                                                    : q;
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
    if (o.queue_in_background) {
      try {
        st->queuer = std::thread([s = st.get()] { s->queue_in_background(); });
      } catch (...) {
        st->stop_threads();
        throw;
      }
    }
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
  state_->stop_threads();
}

// Loads that outlive the Cache queue their later layers themselves (wait_layer, wait, destruction).
void Cache::State::stop_threads() {
  {
    std::lock_guard lock(pending_mu);
    stopping = true;
  }
  pending_cv.notify_all();
  if (completer.joinable()) completer.join();
  {
    std::lock_guard lock(load_mu);
    queuer_stop = true;
  }
  queue_cv.notify_all();
  if (queuer.joinable()) queuer.join();
}

// The cache's queueing thread: the open batch's later layers, one at a time (load_mu is let go
// between layers, so an engine's wait_layer() or load() gets in at once).
void Cache::State::queue_in_background() {
  std::unique_lock lock(load_mu);
  for (;;) {
    std::shared_ptr<LoadBatch> b;
    queue_cv.wait(lock, [&] {
      if (queuer_stop) return true;
      b = open_batch.lock();
      return b != nullptr && b->error.ok() && b->queued.load(std::memory_order_relaxed) < b->layers;
    });
    if (queuer_stop) return;
    advance_locked(*b, b->queued.load(std::memory_order_relaxed)).ignore();  // the next layer
    b.reset();
    lock.unlock();
    std::this_thread::yield();
    lock.lock();
  }
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
  TIERKV_ASSIGN_OR_RETURN(std::vector<Load> loads, load_many({&r, 1}));
  return std::move(loads.front());
}

Result<std::vector<Load>> Cache::load_many(std::span<const LoadRequest> requests) {
  State& s = *state_;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const LoadRequest& r = requests[i];
    Status ok = s.check_cache_keys(r.keys);
    if (ok.ok() && r.queue_layers < -1) {
      ok = invalid_argument("load: queue_layers " + std::to_string(r.queue_layers) +
                            " must be -1 (all) or >= 0");
    }
    if (ok.ok()) ok = s.geo.check_load_range(*r.keys, r.first_token, r.num_tokens);
    if (ok.ok()) {
      ok = s.geo.check_view(r.dst, r.dst_pages, r.num_tokens / s.opts.model.page_tokens, "load");
    }
    if (!ok.ok()) {
      return requests.size() == 1 ? ok : ok.with_context("load_many: request " + std::to_string(i));
    }
  }
  try {
    return s.queue_loads(state_, requests);
  } catch (const std::bad_alloc&) {
    return resource_exhausted("load: out of host memory");
  }
}

void Cache::State::withdraw_locked(const std::shared_ptr<LoadSource>& source) {
  source->open = false;
  for (const Key& k : source->chunks) {
    auto it = offers.find(k);
    if (it != offers.end() && it->second.source == source) offers.erase(it);
  }
}

void Cache::State::close_source(const std::shared_ptr<LoadSource>& source) {
  {
    std::lock_guard lock(share_mu);
    if (!source->open) return;
    withdraw_locked(source);
  }
  // A load that found the source before it closed queues under load_mu and adds its reader
  // before letting go: once load_mu is ours, every reader is in the list.
  std::lock_guard lock(load_mu);
}

// Pins (or finds in flight) every request's chunks and queues their copies layer-major (LoadBatch):
// the first layers here, the rest as the engine reaches them. On a failure here, waits until
// nothing queued can land any more, then drops the pins and returns the error.
Result<std::vector<Load>> Cache::State::queue_loads(const std::shared_ptr<State>& self,
                                                    std::span<const LoadRequest> requests) {
  const std::int32_t layers = opts.model.num_layers, ppc = geo.pages_per_chunk;
  const std::int32_t chunk_tokens = opts.chunk_tokens;
  using ChunkFrom = LoadBatch::ChunkFrom;

  struct Planned {
    const LoadRequest* request = nullptr;
    std::unique_ptr<Load::State> st;
    std::vector<ChunkFrom> from;  // one per chunk, from the load's first chunk on
    std::int32_t first_chunk = 0, page0 = 0;
    std::uint64_t host_bytes = 0, shared_chunks = 0;
  };
  std::vector<Planned> plan(requests.size());
  std::int32_t queue_now = 1;  // layers queued before returning: at least the first
  // Events first: nothing is queued if they cannot be made.
  for (std::size_t i = 0; i < requests.size(); ++i) {
    plan[i].request = &requests[i];
    plan[i].st = std::make_unique<Load::State>();
    plan[i].st->cache = nullptr;  // set once queued: a failed batch must not finish() these
    const std::int32_t q = requests[i].queue_layers;
    queue_now = std::max(queue_now, q < 0 ? layers : std::min(q, layers));
    if (requests[i].num_tokens == 0) continue;
    for (std::int32_t l = 0; l < layers; ++l) {
      auto e = backend.create_event();
      if (!e.ok()) {
        add(counters.load_errors, 1);
        return e.status().with_context("load");
      }
      plan[i].st->layer_done.push_back(std::move(e).value());
    }
  }
  auto batch = std::make_shared<LoadBatch>();
  batch->layers = layers;
  std::lock_guard lock(load_mu);
  complete_open_batch_locked();  // the loads asked for earlier run first
  for (Planned& p : plan) {
    const LoadRequest& r = *p.request;
    Load::State& st = *p.st;
    st.first_token = r.first_token;
    st.requested_tokens = r.num_tokens;
    p.first_chunk = r.first_token / chunk_tokens;
    p.page0 = r.first_token / opts.model.page_tokens;
    const std::int32_t end_chunk = (r.first_token + r.num_tokens) / chunk_tokens;
    for (std::int32_t c = p.first_chunk; c < end_chunk && r.num_tokens > 0; ++c) {
      const Key& key = r.keys->chunk_key(c);
      ChunkFrom f;
      {
        std::lock_guard share(share_mu);
        auto it = offers.find(key);
        if (it != offers.end() && it->second.source->open) {
          f.source = it->second.source;
          f.source_chunk = it->second.chunk;
        }
      }
      if (f.source == nullptr) {
        if (host == nullptr) break;
        HostTier::Pin pin = host->pin(key);
        if (!pin) break;  // gone since match(): the rest is recomputed
        f.slot = pin.data();
        st.pins.push_back(std::move(pin));
      }
      p.from.push_back(std::move(f));
    }
    const std::int32_t got_end = p.from.empty()
                                     ? r.first_token
                                     : (p.first_chunk + std::int32_t(p.from.size())) * chunk_tokens;
    st.loaded_tokens = got_end - r.first_token;
    for (std::size_t c = 0; c < p.from.size(); ++c) {
      const std::int32_t skip = std::max(0, p.page0 - (p.first_chunk + std::int32_t(c)) * ppc);
      const std::int32_t tokens = (ppc - skip) * opts.model.page_tokens;
      if (p.from[c].source != nullptr) {
        st.shared_tokens += tokens;
        ++p.shared_chunks;
        batch->reads_sources = true;
      } else {
        p.host_bytes += std::uint64_t(tokens) * opts.model.kv_bytes_per_token();
      }
    }
    if (st.loaded_tokens == 0) {
      st.layer_done.clear();
      continue;
    }
    // Offer this load's whole chunks to the loads after it (this batch's included).
    auto src = std::make_shared<LoadSource>();
    src->k.assign(r.dst.k_layers.begin(), r.dst.k_layers.end());
    src->v.assign(r.dst.v_layers.begin(), r.dst.v_layers.end());
    src->view = r.dst;
    src->view.k_layers = src->k;
    src->view.v_layers = src->v;
    for (std::size_t c = 0; c < p.from.size(); ++c) {
      const std::int32_t chunk_page0 = (p.first_chunk + std::int32_t(c)) * ppc;
      if (chunk_page0 < p.page0) continue;  // entered mid-way: not whole here
      const auto pages = r.dst_pages.subspan(std::size_t(chunk_page0 - p.page0), std::size_t(ppc));
      src->pages.insert(src->pages.end(), pages.begin(), pages.end());
      src->chunks.push_back(r.keys->chunk_key(p.first_chunk + std::int32_t(c)));
    }
    if (!src->chunks.empty()) {
      std::lock_guard share(share_mu);
      for (std::size_t c = 0; c < src->chunks.size(); ++c)
        offers[src->chunks[c]] = Offer{src, std::int32_t(c)};
      st.source = src;
      batch->offered.push_back(std::move(src));
    }
    // The batch keeps what the copies of the later layers need: the request's spans may not
    // outlive load_many().
    LoadBatch::Entry& e = batch->entries.emplace_back();
    e.k.assign(r.dst.k_layers.begin(), r.dst.k_layers.end());
    e.v.assign(r.dst.v_layers.begin(), r.dst.v_layers.end());
    e.dst = r.dst;
    e.dst.k_layers = e.k;
    e.dst.v_layers = e.v;
    e.pages.assign(r.dst_pages.begin(),
                   r.dst_pages.begin() + st.loaded_tokens / opts.model.page_tokens);
    e.from = std::move(p.from);
    e.first_chunk = p.first_chunk;
    e.page0 = p.page0;
    e.compute_beside = r.compute_beside;
    for (const auto& ev : st.layer_done)
      e.layer_done.push_back(ev.get());
    e.path = &st.path;
    if (p.host_bytes > 0) {
      e.load = std::make_shared<QueuedLoad>();
      e.load->bytes = p.host_bytes;
      st.queued = e.load;
    }
  }

  if (Status q = queue_layers_locked(*batch, queue_now - 1); !q.ok()) {
    drain(backend, *load_stream);  // nothing of these loads may land after we return
    {
      std::lock_guard share(share_mu);
      for (const auto& src : batch->offered)
        withdraw_locked(src);
    }
    for (Planned& p : plan) {
      p.st->pins.clear();
      p.st->layer_done.clear();
      p.st->finished = true;
    }
    add(counters.load_errors, 1);
    return q;
  }
  const bool open = batch->queued.load(std::memory_order_relaxed) < layers;
  if (open) {
    open_batch = batch;
    queue_cv.notify_one();  // the queueing thread takes the rest
  }

  std::vector<Load> loads;
  loads.reserve(plan.size());
  for (Planned& p : plan) {
    Load::State& st = *p.st;
    st.cache = self;
    add(counters.loads, 1);
    add(counters.loaded_tokens, std::uint64_t(st.loaded_tokens));
    add(counters.missing_tokens, std::uint64_t(st.requested_tokens - st.loaded_tokens));
    add(counters.bytes_loaded, p.host_bytes);
    add(counters.bytes_shared, std::uint64_t(st.shared_tokens) * opts.model.kv_bytes_per_token());
    add(counters.shared_chunks, p.shared_chunks);
    if (st.loaded_tokens == 0) {
      st.finished = true;
    } else {
      if (open) st.batch = batch;
      if (st.queued != nullptr) track_load(st.queued);
    }
    loads.push_back(Load(std::move(p.st)));
  }
  return loads;
}

Status Cache::State::queue_layers_locked(LoadBatch& b, std::int32_t through) {
  const std::int32_t ppc = geo.pages_per_chunk;
  through = std::min(through, b.layers - 1);
  std::vector<CopyRun> host_runs, device_runs;
  for (std::int32_t l = b.queued.load(std::memory_order_relaxed); l <= through; ++l) {
    host_runs.clear();
    device_runs.clear();
    bool compute_beside = false;
    for (const LoadBatch::Entry& e : b.entries) {
      compute_beside = compute_beside || e.compute_beside;
      for (std::size_t c = 0; c < e.from.size(); ++c) {
        // Page p of the prompt goes to pages[p - page0]; the chunk's pages before page0 (first
        // chunk only) are not copied.
        const std::int32_t chunk_page0 = (e.first_chunk + std::int32_t(c)) * ppc;
        const std::int32_t skip = std::max(0, e.page0 - chunk_page0);
        const auto pages = std::span<const std::int32_t>(e.pages).subspan(
            std::size_t(chunk_page0 + skip - e.page0), std::size_t(ppc - skip));
        const LoadBatch::ChunkFrom& f = e.from[c];
        if (f.source == nullptr) {
          geo.append_runs(e.dst, l, pages, skip, f.slot, Direction::kToDevice, host_runs);
        } else {
          const auto src_pages = std::span<const std::int32_t>(f.source->pages)
                                     .subspan(std::size_t(f.source_chunk) * ppc + std::size_t(skip),
                                              std::size_t(ppc - skip));
          geo.append_device_runs(f.source->view, src_pages, e.dst, pages, l, device_runs);
        }
      }
    }
    const auto failed = [l](const Status& why) {
      return why.with_context("load: queueing layer " + std::to_string(l));
    };
    std::optional<CopyPath> path;
    if (!host_runs.empty()) {
      auto copied = transfer->copy(host_runs, compute_beside, *load_stream);
      if (!copied.ok()) return failed(copied.status());
      path = *copied;
    }
    // After the host copies of this layer: a source of this batch lands its layer first.
    if (!device_runs.empty()) {
      if (Status d = backend.copy_runs(device_runs, CopyPath::kCopyEngine, 1, *load_stream);
          !d.ok()) {
        return failed(d);
      }
    }
    for (LoadBatch::Entry& e : b.entries) {
      if (path && l == 0) *e.path = *path;  // later layers may run beside another thread's use
      if (Status rec = load_stream->record(*e.layer_done[std::size_t(l)]); !rec.ok())
        return failed(rec);
    }
    b.queued.store(l + 1, std::memory_order_release);
  }
  if (through + 1 < b.layers) return Status::Ok();

  if (b.reads_sources) {
    // One event per source read, after the last copy out of it: its Load waits for it.
    std::vector<const LoadSource*> seen;
    for (const LoadBatch::Entry& e : b.entries) {
      for (const LoadBatch::ChunkFrom& f : e.from) {
        if (f.source == nullptr ||
            std::find(seen.begin(), seen.end(), f.source.get()) != seen.end()) {
          continue;
        }
        seen.push_back(f.source.get());
        auto ev = backend.create_event();
        if (!ev.ok()) return ev.status().with_context("load: after the last layer");
        std::shared_ptr<Event> done(std::move(ev).value());
        if (Status rec = load_stream->record(*done); !rec.ok())
          return rec.with_context("load: after the last layer");
        std::lock_guard share(share_mu);
        f.source->readers.push_back(std::move(done));
      }
    }
    b.reads_sources = false;  // recorded: not again
  }
  for (LoadBatch::Entry& e : b.entries) {
    if (e.load == nullptr) continue;
    std::lock_guard event(e.load->mu);
    if (!e.load->finished) e.load->last = e.layer_done.back();
  }
  return Status::Ok();
}

void Cache::State::fail_batch_locked(LoadBatch& b, const Status& why) {
  drain(backend, *load_stream);  // nothing of the batch lands after this
  {
    std::lock_guard share(share_mu);
    for (const auto& src : b.offered)
      withdraw_locked(src);
  }
  for (LoadBatch::Entry& e : b.entries) {
    if (e.load == nullptr) continue;
    std::lock_guard event(e.load->mu);
    e.load->last = nullptr;
    e.load->finished = true;  // drained: its copies are over
  }
  b.error = why;
  if (open_batch.lock().get() == &b) open_batch.reset();
}

Status Cache::State::advance_locked(LoadBatch& b, std::int32_t through) {
  through = std::min(through, b.layers - 1);
  if (!b.error.ok()) return b.error;
  if (through < b.queued.load(std::memory_order_relaxed)) return Status::Ok();
  if (Status q = queue_layers_locked(b, through); !q.ok()) {
    fail_batch_locked(b, q);
    return b.error;
  }
  if (b.queued.load(std::memory_order_relaxed) == b.layers && open_batch.lock().get() == &b)
    open_batch.reset();
  return Status::Ok();
}

Status Cache::State::queue_through(LoadBatch& b, std::int32_t through) {
  if (std::min(through, b.layers - 1) < b.queued.load(std::memory_order_acquire))
    return Status::Ok();
  std::lock_guard lock(load_mu);
  return advance_locked(b, through);
}

void Cache::State::complete_open_batch_locked() {
  if (const std::shared_ptr<LoadBatch> b = open_batch.lock())
    advance_locked(*b, b->layers - 1).ignore();
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
      if (q.last == nullptr) break;   // its last layer is not queued yet
      const Result<bool> landed = q.last->done();
      if (landed.ok() && !*landed) break;  // an error also means its copies are over
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
  TIERKV_RETURN_IF_ERROR(
      s.geo.check_view(r.src, r.src_pages, std::int64_t{chunks} * s.geo.pages_per_chunk, "save"));
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

Status Cache::wait_host_tier(std::chrono::steady_clock::time_point deadline) const {
  const State& s = *state_;
  return s.host != nullptr ? s.host->wait_pinned(deadline) : Status::Ok();
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
  st.shared_chunks = c.shared_chunks.load();
  st.bytes_shared = c.bytes_shared.load();
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

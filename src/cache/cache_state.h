// The state behind a Cache, shared by the Cache and by every Load and Promotion it returned (each
// holds it, so that the host tier and the load stream outlive them). cache.cc runs loads and saves
// over it; promotion.cc and the lower tiers (lower_tiers.h) the rest.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache/geometry.h"
#include "cache/lower_tiers.h"
#include "tierkv/cache.h"
#include "tiers/host/host_tier.h"
#include "transfer/transfer_engine.h"

namespace tierkv {

struct SaveState {
  std::int32_t queued = 0, present = 0, dropped = 0;
  mutable std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // GUARDED_BY(mu)
  Status status;      // GUARDED_BY(mu)
};

// A save whose copies are queued; the completion thread publishes it once they landed.
struct PendingSave {
  std::shared_ptr<SaveState> save;
  std::unique_ptr<Event> landed;
  std::vector<HostTier::Pin> reserved;
  // For the write-down, one per reserved slot: its chunk's key and sightings (LowerTiers::sight).
  std::vector<Key> chunk_keys;
  std::vector<std::uint32_t> sightings;
  Digest salt_tag{};
};

// One load queued on the load stream, as queued_load_bytes() sees it: its bytes until its last
// layer landed. The Load and the cache both ask the last layer's event; `mu` keeps them from
// using it at the same time (an Event is used by one thread at a time).
struct QueuedLoad {
  std::uint64_t bytes = 0;
  std::atomic<bool> finished{false};  // the Load saw its copies end
  std::mutex mu;
  // GUARDED_BY(mu): the last layer's event, once it is recorded; null before (the load's later
  // layers are not queued yet) and once the Load finished.
  Event* last = nullptr;
};

// The GPU pages of a load in flight, offered to later loads of the same chunks from its queueing
// until its Load is waited for or destroyed: those copy device to device from here, layer by
// layer, instead of crossing PCIe again. Their copies run on the load stream after the source's
// own (stream order: each layer is read after it landed), and the source's Load waits for them
// (`readers`) before the engine may reuse its pages. A failure of the source's copies is the
// stream's pending error, so the events of the copies queued after it carry it too.
struct LoadSource {
  std::vector<const void*> k, v;    // per layer, the engine's K and V base pointers
  PagedKvView view;                 // the source's view, its layer spans over k and v
  std::vector<std::int32_t> pages;  // the offered chunks' pages, pages_per_chunk each
  std::vector<Key> chunks;          // the offered chunks' keys, in that order
  bool open = true;                 // GUARDED_BY(Cache::State::share_mu)
  // Events recorded after the last copy out of these pages, one per batch of loads that read
  // them; each is used only by the source's Load. GUARDED_BY(Cache::State::share_mu).
  std::vector<std::shared_ptr<Event>> readers;
};

// The copies of one load_many() batch, queued layer-major: layer l of every request before layer
// l + 1 of any, one event per request and layer. load_many() queues the first layers (all of them
// unless LoadRequest::queue_layers says fewer); the rest are queued as the engine reaches them
// (Load::queue_through, Load::wait_layer) or when a Load is waited for or destroyed, and all of
// them before a later batch queues anything, so the load stream still runs loads in the order
// they were asked for. Everything but `queued` is GUARDED_BY(Cache::State::load_mu).
struct LoadBatch {
  // Where one chunk of a load comes from: a pinned host slot, or the pages of a load in flight.
  struct ChunkFrom {
    std::uint8_t* slot = nullptr;        // from the host tier (pinned by the Load)
    std::shared_ptr<LoadSource> source;  // else from these pages
    std::int32_t source_chunk = 0;
  };
  struct Entry {
    std::vector<const void*> k, v;    // the destination's K and V base pointers, per layer
    PagedKvView dst;                  // the request's view, its layer spans over k and v
    std::vector<std::int32_t> pages;  // the request's dst_pages
    std::vector<ChunkFrom> from;      // one per chunk, from the load's first chunk on
    std::int32_t first_chunk = 0, page0 = 0;
    bool compute_beside = true;
    std::vector<Event*> layer_done;    // the Load's events, one per layer
    std::shared_ptr<QueuedLoad> load;  // what queued_load_bytes() sees of it; null when none
    CopyPath* path = nullptr;          // the Load's path, set by each layer's host copies
  };
  std::vector<Entry> entries;                        // those that load anything
  std::vector<std::shared_ptr<LoadSource>> offered;  // this batch's sources
  std::int32_t layers = 0;
  // Layers whose copies and events are queued; read without the lock (release / acquire).
  std::atomic<std::int32_t> queued{0};
  bool reads_sources = false;  // copies out of a load in flight: readers' events at the end
  Status error;                // why layer `queued` could not be queued; nothing after it is
};

struct KeyHash {
  std::size_t operator()(const Key& k) const { return std::size_t(k.hash()); }
};

struct CacheCounters {  // statistics only: relaxed atomics
  std::atomic<std::uint64_t> matches{0}, loads{0}, loaded_tokens{0}, missing_tokens{0};
  std::atomic<std::uint64_t> saves{0}, saved_chunks{0}, present_chunks{0}, dropped_chunks{0},
      failed_chunks{0};
  std::atomic<std::uint64_t> load_errors{0}, save_errors{0};
  std::atomic<std::uint64_t> bytes_loaded{0}, bytes_saved{0};
  std::atomic<std::uint64_t> shared_chunks{0}, bytes_shared{0};
};

inline void add(std::atomic<std::uint64_t>& c, std::uint64_t v) {
  c.fetch_add(v, std::memory_order_relaxed);
}

struct Cache::State {
  Backend& backend;
  CacheOptions opts;
  Digest identity;
  ChunkGeometry geo;
  std::unique_ptr<HostTier> host;
  std::unique_ptr<LowerTiers> lower;  // null without lower tiers; stopped by ~Cache
  std::unique_ptr<TransferEngine> transfer;
  std::unique_ptr<Stream> load_stream, save_stream;
  std::mutex load_mu, save_mu;  // one thread at a time on each stream
  CacheCounters counters;

  // The chunks of loads in flight that later loads copy from (LoadSource), by chunk key.
  // Lock order: load_mu, then share_mu.
  struct Offer {
    std::shared_ptr<LoadSource> source;
    std::int32_t chunk = 0;  // index into the source's chunks
  };
  std::mutex share_mu;
  std::unordered_map<Key, Offer, KeyHash> offers;  // GUARDED_BY(share_mu)

  // The last batch with layers not queued yet (at most one: a new batch queues the rest of the
  // previous one first). GUARDED_BY(load_mu).
  std::weak_ptr<LoadBatch> open_batch;
  // The queueing thread (CacheOptions::queue_in_background) waits on queue_cv with load_mu.
  std::condition_variable queue_cv;
  bool queuer_stop = false;  // GUARDED_BY(load_mu)
  std::thread queuer;

  // Loads queued on load_stream, in queue order (so finished ones leave from the front).
  std::mutex queued_mu;                                  // after load_mu when both are held
  std::deque<std::shared_ptr<QueuedLoad>> queued_loads;  // GUARDED_BY(queued_mu)

  // Saves in flight, published by the completion thread once their bytes landed.
  std::mutex pending_mu;
  std::condition_variable pending_cv;
  std::deque<PendingSave> pending;  // GUARDED_BY(pending_mu)
  std::size_t in_flight = 0;        // GUARDED_BY(pending_mu): queued plus the one being finished
  Status flush_error;               // GUARDED_BY(pending_mu): first failure since the last flush
  bool stopping = false;            // GUARDED_BY(pending_mu)
  std::thread completer;

  State(Backend& b, const CacheOptions& o);
  ~State();

  void complete_saves();
  // Queues the open batch's later layers as they come (the queueing thread's body).
  void queue_in_background();
  // Stops and joins the completion and queueing threads (those that were started).
  void stop_threads();
  void finish(PendingSave& p);
  void report(const Status& s) const {
    if (opts.on_async_error) opts.on_async_error(s);
  }
  Status check_cache_keys(const PromptKeys* keys) const { return geo.check_keys(keys, identity); }
  // After an asynchronous failure on one of the cache's streams: waits for what is queued there
  // and clears the stream's error, so that a transient failure does not fail the loads or saves
  // queued after it is handled (those already queued fail with it).
  static void clear_stream_error(std::mutex& mu, Stream& stream) {
    std::lock_guard lock(mu);
    stream.synchronize().ignore();
  }
  // Pins (or finds in flight) and queues the chunks of checked requests, layer-major.
  Result<std::vector<Load>> queue_loads(const std::shared_ptr<State>& self,
                                        std::span<const LoadRequest> requests);
  // Queues the batch's layers up to `through` (clamped to the last) that are not queued yet.
  // Returns the batch's error when it failed at or before `through`; a failure here drains the
  // load stream (nothing of the batch lands after it) and withdraws the batch's offers.
  // REQUIRES: load_mu not held.
  Status queue_through(LoadBatch& b, std::int32_t through);
  // The copies of layers [b.queued, through]. On a failure, returns it with b.queued at the layer
  // that failed; the caller cleans up. REQUIRES: load_mu held.
  Status queue_layers_locked(LoadBatch& b, std::int32_t through);
  // queue_through() with load_mu held: queues, fails the batch on an error (returning it), and
  // closes the batch (open_batch) once every layer is queued.
  Status advance_locked(LoadBatch& b, std::int32_t through);
  // Queues what is left of the open batch, if any. REQUIRES: load_mu held.
  void complete_open_batch_locked();
  // After queue_layers_locked failed outside load_many(): the batch's loads end at b.queued.
  // REQUIRES: load_mu held.
  void fail_batch_locked(LoadBatch& b, const Status& why);
  // Withdraws a source's offers; returns once no load can add a reader to it any more.
  void close_source(const std::shared_ptr<LoadSource>& source);
  // Marks a source closed and erases its offers. REQUIRES: share_mu held.
  void withdraw_locked(const std::shared_ptr<LoadSource>& source);
  // Blocks until every save queued so far has been finished by the completion thread.
  void wait_saves();
  // Remembers a load just queued on load_stream. REQUIRES: load_mu held.
  void track_load(std::shared_ptr<QueuedLoad> q);
  std::uint64_t queued_load_bytes();
};

}  // namespace tierkv

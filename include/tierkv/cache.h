// tierkv's cache: what an inference engine holds.
//
// A prompt's KV, once computed, is saved chunk by chunk from the engine's GPU pages into pinned
// host memory; when the prefix returns, match() says how much of it each tier holds and load()
// brings it back into the engine's pages layer by layer, so that layer l's attention can start as
// soon as layer l has landed (wait_layer) while later layers still stream.
//
// Typical use, per request (tests/cache_test.cc runs exactly this):
//
//   auto keys = cache->keys(tokens, {.salt = tenant});     // hashes once per request
//   auto m = cache->match(*keys);                          // tokens per tier
//   ... the engine keeps the m->gpu_tokens GPU-resident tokens (page-aligned), allocates pages for
//   ... the rest, and loads what the host tier holds beyond them:
//   auto load = cache->load({&*keys, m->gpu_tokens, m->host_tokens - m->gpu_tokens, view, pages});
//   for each layer l: load->wait_layer(l, compute_stream); attention(l); ...
//   ... tokens [load->first_token() + load->loaded_tokens(), ...) are computed, not loaded ...
//   auto save = cache->save({&*keys, prompt_tokens, view, all_pages, &compute_stream});
//
// With lower tiers (CacheOptions::lower_tiers: disk, Redis, ...), match() also says how far they
// reach (lower_tokens); their chunks come up into host slots first (tests/cache_tiers_test.cc):
//
//   auto p = cache->promote(*keys, m->host_tokens / chunk * chunk, m->lower_tokens);
//   std::int32_t n = p->wait_for(wanted_chunks, deadline);   // what arrived in time, pinned
//   ... load() the promoted chunks as above; recompute the rest; destroy p after the load ...
//
// Saves flow down to the lower tiers by themselves (WriteDownOptions).
//
// Ownership: the Cache borrows the Backend (which must outlive the Cache and every Load, Save and
// Promotion it returned), shares the lower tiers' stores, and owns its host tier, its transfer
// streams, its page keys index and its threads (save completion, lower-tier writers and readers).
// A Load, Save or Promotion may outlive its Cache: it keeps what it uses (the host slots it reads
// or pins, the load stream) alive until it is destroyed. Views passed to load/save are the
// engine's; the pages they name must stay allocated (and, for save, unchanged) until the Load /
// Save completes.
//
// Thread safety: every method may be called from any thread at the same time. Load and Save
// handles are used by one thread at a time.
//
// Correctness rule: nothing wrong is ever served. Keys cover the model identity (its weights
// included), the page layout, the chunk size, the tenant salt, the adapter and any extra inputs
// (tierkv/key.h); a chunk becomes visible to match() only after its bytes have landed; a chunk
// being read is pinned and cannot be evicted, and stays pinned until every copy that reads it has
// finished, even when the load failed; a load that cannot get a chunk says which tokens are
// missing so the engine recomputes them; a load that fails returns only after nothing it queued
// can still write into the engine's pages.
//
// Every entry validates its arguments completely before it queues any work: a refused call
// changes nothing. No exception leaves the library.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/key.h"
#include "tierkv/model_spec.h"
#include "tierkv/page_pool.h"
#include "tierkv/paged_kv.h"
#include "tierkv/profile.h"
#include "tierkv/status.h"
#include "tierkv/store.h"

namespace tierkv {

// How host<->device transfers choose between the copy engines and the SM gather/scatter kernel.
enum class TransferMode : std::uint8_t {
  kAuto = 0,        // per transfer, the path with the lower measured cost
  kCopyEngine = 1,  // always the DMA engines
  kSmKernel = 2,    // always the SM kernel
};

struct TransferOptions {
  TransferMode mode = TransferMode::kAuto;
  // Blocks of the SM kernel. Fewer blocks take fewer SMs from compute running beside it.
  int sm_blocks = 16;
  // The machine's measured costs (tierkv calibrate writes them; tierkv/profile.h): when set, both
  // paths' curves and compute slowdowns come from it and nothing is measured at creation.
  std::shared_ptr<const CostProfile> profile;
  // Without a profile: measure both paths' fixed cost and bandwidth by run size when the cache is
  // created (batches of 64 MiB at six run sizes on each path: 355 ms on the H100 test machine, with
  // its allocations). Without either, the defaults below are used.
  bool calibrate = true;
  // Fraction of its speed that compute running beside a transfer loses, per path. The defaults are
  // tierkv-transfer-bench's measurement on the H100 test machine for a prefill-size GEMM beside a
  // load (copy engines: 1.5-2.3%; SM kernel of 16 blocks: 49-52%); measure other machines the same
  // way and set them here.
  double copy_engine_compute_slowdown = 0.023;
  double sm_kernel_compute_slowdown = 0.50;
  // The SM kernel is chosen only when its cost is lower than the copy engines' by more than this
  // fraction: it takes SMs from whatever the caller runs next without saying so, and near a tie
  // the measured curves are within their own noise (on the H100 test machine, 128 KiB runs
  // calibrate at 49.9 vs 50.0 GB/s).
  double sm_kernel_min_gain = 0.05;
};

// Largest chunk: a chunk's bytes must be one host slot and one record.
inline constexpr std::int32_t kMaxChunkTokens = 1 << 16;
// Longest prompt Cache::keys() takes.
inline constexpr std::int64_t kMaxPromptTokens = std::int64_t{1} << 24;

// How saves flow down from the host tier into the lower tiers, and how lower-tier hits come up.
//
// Policy: write-through below the host tier, asynchronous and lossy by design.
//  - When a save's chunks are committed to the host tier, each is offered to every lower tier. A
//    chunk a save finds present in the host tier was offered when it came in and is not offered
//    again (except to persistent tiers at the sighting that admits it, below).
//  - Admission: a persistent tier (StoreCapabilities::persistent: disk, Redis) takes a chunk only
//    from its persistent_admit_sightings-th sighting on. A sighting is the chunk appearing in a
//    save, whether the host tier had it or not; the cache remembers the sightings of the last
//    sighting_memory chunks (LRU). A chunk seen too few times is counted
//    (TierStats::write_not_admitted) and kept in the host tier only. Other tiers take every chunk.
//  - Each tier has a queue of queue_chunks chunks served by threads_per_tier writer threads. A
//    chunk that finds the queue full is dropped and counted (TierStats::write_dropped): saves
//    never wait for a lower tier, and nothing is retried: a dropped chunk is offered again only
//    when a later save brings it back into the host tier. A writer pins the chunk's host slot for
//    the write (a chunk the host tier evicted before its turn is counted write_evicted), skips a
//    chunk the tier already holds (contains(): write_present), and counts a failed write
//    (write_failures; the error goes to flush_lower_tiers()). A slot pinned by a writer cannot be
//    evicted meanwhile: with a host tier of a few chunks, saves that come while writes run may
//    find no free slot (Save::dropped_chunks).
//  - Chunks promoted from a lower tier are not written to the other lower tiers.
//  - Promotion reads run on promote_threads reader threads owned by the cache. One promotion has
//    up to promote_threads chunks in flight (its chunks are handed out in order; they may land out
//    of order and count in order), and promotions in flight share the readers chunk by chunk.
struct WriteDownOptions {
  std::int32_t queue_chunks = 32;  // chunks waiting per lower tier, in [1, 2^20]
  // In [1, 2^20]. 2 keeps one-off prompts off the disk; 1 writes every chunk.
  std::int32_t persistent_admit_sightings = 2;
  std::int32_t sighting_memory = 1 << 16;  // chunks whose sightings are remembered, in [1, 2^26]
  std::int32_t threads_per_tier = 1;       // writer threads per lower tier, in [1, 64]
  std::int32_t promote_threads = 2;        // reader threads promoting into host slots, in [1, 64]
};

struct CacheOptions {
  // KV shape and identity; model.page_tokens per page. identity.weights must name the weights
  // (tierkv/model_spec.h): an empty one is refused.
  ModelSpec model;
  KvLayout page_layout = KvLayout::kNHD;  // layout inside the engine's pages (part of the identity)
  // Unit of the tiers below the GPU: a multiple of page_tokens, at most kMaxChunkTokens.
  std::int32_t chunk_tokens = 256;
  // Pinned host tier budget, never exceeded; 0: no host tier. Refused (ResourceExhausted) when it
  // does not fit in the machine's available memory or the container's memory limit, less a
  // margin of 1/16 of that figure, at least 256 MiB (src/tiers/host/host_memory.h). A large budget
  // is pinned in pieces of 256 MiB: create() pins the first and returns, a background thread the
  // rest, and the host tier grows as pieces are ready (CacheStats::host_usable_bytes;
  // wait_host_tier() waits for the whole); a piece that cannot be pinned stops the growth and goes
  // to on_async_error.
  std::size_t host_bytes = 0;
  PagePool* gpu_pool = nullptr;  // optional tierkv page pool whose hits match() reports
  TransferOptions transfer;
  // Tiers below the host tier, fastest first (tierkv/store.h: disk, Redis, the experiment tier).
  // A lower-tier hit reaches the GPU through a host slot: promote() reads it there and verifies it
  // before anything can load it. Saves flow down from the host tier (write_down). Requires a host
  // tier (host_bytes > 0). The cache shares the stores: another cache (another engine process,
  // through a shared disk directory or Redis) may use the same records. A chunk's record is named
  // by identity() (so only a cache of the same model, weights, layout and chunk size reads it), the
  // prompt's salt tag and the chunk key; its payload is the host slot as it is.
  std::vector<std::shared_ptr<Store>> lower_tiers;
  WriteDownOptions write_down;
  // Optional. Called with an asynchronous error that the caller may not otherwise see: a save
  // whose copies failed (its chunks are not published), a Load destroyed before wait() returned
  // its copy error, a piece of the host tier that could not be pinned (the tier stays smaller).
  // Called from the thread that finds the error (the cache's completion thread, the one destroying
  // the Load, the host tier's pinning thread); must be thread-safe and must not call into the
  // cache.
  std::function<void(const Status&)> on_async_error;
  // A load's layers past those load() queues (LoadRequest::queue_layers) are queued by a cache
  // thread right after load() returns, in order, while the engine queues its compute; the engine's
  // own wait_layer() queues a layer the thread has not reached yet. false: only wait_layer(),
  // queue_through(), wait(), destroying the Load and the next load() queue them (an engine that
  // paces them itself; deterministic tests).
  bool queue_in_background = true;
};

struct MatchResult {
  std::int32_t gpu_tokens = 0;  // leading tokens cached in gpu_pool (0 without a pool): whole
                                // pages, so a multiple of page_tokens
  // Leading tokens the GPU pool and the host tier hold together (>= gpu_tokens); beyond
  // gpu_tokens, whole chunks of the host tier.
  std::int32_t host_tokens = 0;
  // Leading tokens all tiers hold together (>= host_tokens; == host_tokens without lower tiers):
  // beyond host_tokens, whole chunks that the host tier or a lower tier holds, asked chunk by
  // chunk (Store::contains, which for a remote tier is a round trip; a tier that errors holds
  // nothing), up to the first chunk that no tier holds. A lower-tier chunk must be promoted
  // (Cache::promote) before it can be loaded.
  std::int32_t lower_tokens = 0;
  // Per lower tier, in CacheOptions::lower_tiers order: the tokens of [host_tokens, lower_tokens)
  // that it is the fastest tier to hold. Tokens of chunks the host tier holds beyond host_tokens
  // count for no lower tier. Empty without lower tiers.
  std::vector<std::int32_t> lower_tier_tokens;
};

struct LoadRequest {
  const PromptKeys* keys = nullptr;
  // Where the load starts: a multiple of page_tokens (match()'s gpu_tokens is one). The load may
  // start inside a chunk: only that chunk's pages from first_token on are copied.
  std::int32_t first_token = 0;
  // Tokens to load; first_token + num_tokens must end on a chunk boundary inside the prompt's
  // full chunks (match()'s host_tokens does), or num_tokens is 0.
  std::int32_t num_tokens = 0;
  PagedKvView dst;  // the engine's KV (block_table, seq_lens, batch unused; num_pages required)
  // Page ids receiving tokens [first_token, first_token + num_tokens), one per page, each in
  // [0, dst.num_pages).
  std::span<const std::int32_t> dst_pages;
  // Compute (prefill) will run while this streams: weigh the SMs a path takes from it.
  bool compute_beside = true;
  // Layers whose copies load() queues before it returns; -1 (the default): all of them. The
  // others are queued in layer order right after, by the cache's queueing thread
  // (CacheOptions::queue_in_background), or first by whichever of these gets there before it:
  // Load::wait_layer(l) (through layer l + Load::kQueueAhead), Load::queue_through(l), wait() or
  // destroying the Load (all), a later load() (all, before its own). Queuing thousands of copies
  // takes the host milliseconds, which an engine that queues its prefill after load() returned
  // adds to the time to first token; with a few layers up front its compute starts at once while
  // the rest of the copies are queued beside it. In load_many(), the most any request asks.
  std::int32_t queue_layers = -1;
};

// A load in flight. Move-only. Destroying it waits for its copies (the host slots it reads stay
// pinned until then); a copy error that wait() did not return is then counted in
// CacheStats::load_errors and passed to CacheOptions::on_async_error. A moved-from Load is empty:
// its counts are 0 and wait_layer()/wait() return FailedPrecondition.
class Load {
 public:
  Load(Load&&) noexcept;
  Load& operator=(Load&&) noexcept;
  ~Load();

  std::int32_t first_token() const;
  // Tokens that will arrive, from first_token(). Fewer than requested when a chunk left the host
  // tier between match() and load(): the engine recomputes [first + loaded, first + requested).
  std::int32_t loaded_tokens() const;
  std::int32_t requested_tokens() const;
  // Of loaded_tokens(), those copied device to device from the pages of a load in flight
  // (Cache::load) rather than from the host tier.
  std::int32_t shared_tokens() const;
  // Makes `stream` wait until layer `layer` of every loaded chunk has landed. Does not block.
  // Returns the copies' error when they have failed already (then the engine must not use the
  // layer and recomputes the loaded tokens); an error found later reaches `stream` itself: its
  // synchronize() and the events recorded on it after this call report it. InvalidArgument for a
  // layer outside [0, num_layers).
  // First queues the copies through layer + kQueueAhead where they are not queued yet
  // (LoadRequest::queue_layers); a failure to queue them turns into this error for the layers it
  // reached.
  Status wait_layer(std::int32_t layer, Stream& stream) const;
  // Queues the copies of every layer up to `layer` (clamped to the last) not queued yet, in layer
  // order, with those of the other requests of its load_many() batch. Does not block on the
  // copies. Returns the error that stopped the queueing at or before `layer` (its layers from there
  // on never land: the engine recomputes them); InvalidArgument for a negative layer.
  Status queue_through(std::int32_t layer) const;
  // Layers whose copies are queued so far (from layer 0 on): all of them once wait() returned, or
  // up to where a failure to queue stopped them.
  std::int32_t queued_layers() const;
  // How many layers past the one waited for wait_layer() has queued.
  static constexpr std::int32_t kQueueAhead = 2;
  // Blocks until everything landed; the first asynchronous error of the copies, if any (then the
  // loaded pages hold unspecified bytes and must be recomputed). Releases the pins. Calling it
  // again returns the same status.
  Status wait();
  // Which path served the copies.
  CopyPath path() const;

 private:
  friend class Cache;
  struct State;
  explicit Load(std::unique_ptr<State> s);
  std::unique_ptr<State> state_;
};

struct SaveRequest {
  const PromptKeys* keys = nullptr;
  std::int32_t num_tokens = 0;  // tokens whose KV is final; the full chunks among them are saved
  PagedKvView src;              // the engine's KV (num_pages required)
  // Page ids of tokens [0, num_tokens), one per page (at least the full chunks' pages), each in
  // [0, src.num_pages).
  std::span<const std::int32_t> src_pages;
  // The stream that wrote the KV: the save starts after the work queued on it so far. If that
  // work failed, the save fails too and publishes nothing.
  Stream* producer = nullptr;
  bool compute_beside = true;
};

struct SaveState;  // shared by a Save and the cache thread that completes it

// A save in flight. Copies are queued when save() returns; chunks become visible to match() once
// their bytes landed. Move-only; destroying it does not wait (the cache finishes the save). A
// moved-from Save is empty: its counts are 0, done() is true and wait() returns
// FailedPrecondition. A Save may outlive its Cache (the Cache's destruction finishes every save).
//
// Chunks that find no host slot are dropped, not waited for: every slot may be pinned by loads,
// promotions, lower-tier writes or saves in flight -- this save's own chunks included, so a save of
// more chunks than the host budget holds drops the chunks past what fits.
class Save {
 public:
  Save(Save&&) noexcept;
  Save& operator=(Save&&) noexcept;
  ~Save();

  std::int32_t queued_chunks() const;   // chunks being written
  std::int32_t present_chunks() const;  // chunks that were in the host tier already
  std::int32_t dropped_chunks() const;  // chunks that found no slot (every slot pinned)
  bool done() const;                    // all queued chunks landed (or failed)
  // Blocks until done; the copies' error, if any (the affected chunks are then not published).
  Status wait();

 private:
  friend class Cache;
  explicit Save(std::shared_ptr<SaveState> s);
  std::shared_ptr<SaveState> state_;
};

// Chunks of lower tiers being read into host slots (Cache::promote). Move-only. The chunks it
// promoted stay pinned in the host tier until it is destroyed, so a load() after it finds them;
// destroying it cancels what is not yet read and waits for the chunk being read. A moved-from
// Promotion is empty (counts 0, wait() returns FailedPrecondition). A Promotion may outlive its
// Cache: it keeps the host tier (and its pins) alive; the Cache's destruction ends it after the
// chunk being read (wait() then returns FailedPrecondition) unless it ended already.
class Promotion {
 public:
  Promotion(Promotion&&) noexcept;
  Promotion& operator=(Promotion&&) noexcept;
  ~Promotion();

  std::int32_t first_token() const;
  std::int32_t requested_chunks() const;
  // Leading chunks of the range in the host tier now (verified, published and pinned).
  std::int32_t promoted_chunks() const;
  bool done() const;  // ended: every chunk promoted, or stopped at a miss, failure or cancel()
  // Blocks until `chunks` leading chunks are promoted, the promotion ended, or `deadline` passed;
  // returns promoted_chunks().
  std::int32_t wait_for(std::int32_t chunks, std::chrono::steady_clock::time_point deadline);
  // Blocks until it ended. OK when every chunk was promoted; else why it stopped: NotFound for a
  // chunk no tier holds any more, DataLoss for one that failed verification (removed from its
  // tier), the tier's error (Unavailable, DeadlineExceeded, IoError), ResourceExhausted when
  // every host slot was pinned, and FailedPrecondition after cancel() or the Cache's destruction.
  Status wait();
  // Stops after the chunk being read; what is promoted stays.
  void cancel();

 private:
  friend class Cache;
  struct State;
  explicit Promotion(std::shared_ptr<State> s);
  std::shared_ptr<State> state_;
};

// One lower tier, as the cache sees it.
struct TierStats {
  std::string name;         // StoreCapabilities::name
  bool experiment = false;  // the bandwidth-limited stand-in, not a real tier
  bool persistent = false;  // StoreCapabilities::persistent: admission by sightings applies
  // The store's own counters (hits, misses by reason, bytes, latency). misses[kDropped] is the
  // cache's write_dropped: chunks this tier lacks because their write was dropped.
  StoreStats store;
  // Chunks this tier served to promotions (verified and published), and its reads that failed
  // (DataLoss, IoError, timeouts: each ended a promotion).
  std::uint64_t promoted_chunks = 0, promote_failures = 0;
  std::uint64_t write_queued = 0;        // chunks handed to its writer queue
  std::uint64_t write_dropped = 0;       // chunks dropped because the queue was full
  std::uint64_t write_not_admitted = 0;  // persistent tier: chunks seen fewer times than required
  std::uint64_t write_present = 0;       // queued chunks the tier held already (not rewritten)
  std::uint64_t write_evicted = 0;       // queued chunks the host tier lost before their write
  std::uint64_t written_chunks = 0, write_failures = 0;
  std::int32_t queue_depth = 0;  // chunks waiting now
};

struct CacheStats {
  std::uint64_t matches = 0;
  std::uint64_t loads = 0, loaded_tokens = 0, missing_tokens = 0;
  std::uint64_t saves = 0, saved_chunks = 0, present_chunks = 0, dropped_chunks = 0,
                failed_chunks = 0;
  std::uint64_t load_errors = 0;  // loads whose copies failed (at queueing or asynchronously)
  std::uint64_t save_errors = 0;  // saves whose copies failed
  std::uint64_t copy_engine_transfers = 0, sm_kernel_transfers = 0;
  std::uint64_t bytes_loaded = 0, bytes_saved = 0;  // host tier <-> GPU pages
  // Chunks (and their bytes) that loads copied device to device from a load in flight.
  std::uint64_t shared_chunks = 0, bytes_shared = 0;
  std::size_t host_budget_bytes = 0, host_allocated_bytes = 0;
  std::size_t host_usable_bytes = 0;  // of host_allocated_bytes, pinned and in use so far
  std::int32_t host_slots = 0, host_ready_slots = 0, host_pinned_slots = 0;
  std::vector<TierStats> lower_tiers;  // in CacheOptions::lower_tiers order
  // Bytes written to persistent lower tiers per byte that saves committed to the host tier
  // (saved_chunks); 0 before any save.
  double write_amplification = 0;
};

class Cache {
 public:
  // InvalidArgument for a bad model or options (a model without a weights digest, chunk size not
  // a multiple of the page size or past kMaxChunkTokens, a host budget smaller than one chunk, a
  // page pool of another identity, lower tiers without a host tier, a null store, write-down
  // options out of range, ...); ResourceExhausted when the host budget does not fit in the
  // machine's or container's memory, or pinned memory is short.
  static Result<std::unique_ptr<Cache>> create(Backend& backend, const CacheOptions& options);
  // Finishes every save (flush), ends the promotions in flight after their chunk being read,
  // writes what the lower tiers' queues hold (at most queue_chunks per tier), then releases what
  // no Load or Promotion still holds.
  ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // The page keys of `tokens` under this cache's identity and `scope` (tenant salt, adapter,
  // extra inputs: tierkv/key.h), stamped with identity(). InvalidArgument for negative token ids,
  // ids at or past the model's vocab (when the spec has one), or more than kMaxPromptTokens tokens.
  Result<PromptKeys> keys(std::span<const std::int32_t> tokens, const KeyScope& scope) const;
  // keys(tokens, {.salt = salt}).
  Result<PromptKeys> keys(std::span<const std::int32_t> tokens, std::string_view salt) const;

  // How many leading tokens each tier holds. The answer can change before load(): load() and
  // promote() pin. With lower tiers it asks them (may block for their contains() calls).
  // InvalidArgument for keys of another cache identity or with fields that disagree.
  Result<MatchResult> match(const PromptKeys& keys);

  // Starts loading chunks from the host tier into the engine's pages. Pins every chunk it loads
  // (stopping at the first one no longer present) and queues the copies layer by layer, one event
  // per layer. InvalidArgument for keys of another cache, ranges that are not page-aligned at the
  // start or chunk-aligned at the end, past the prompt's full chunks, page ids outside the view or
  // too few of them, or a view of another shape. When queueing fails midway it returns the error
  // only after every copy it queued has finished (nothing lands later), and releases its pins.
  //
  // Loads in flight share: a chunk that an earlier load is still bringing into GPU pages (from
  // its queueing until its Load is waited for or destroyed) is copied from those pages, device to
  // device after each layer landed, instead of crossing PCIe again (Load::shared_tokens(),
  // CacheStats::shared_chunks). The earlier Load then also waits, in wait() and when destroyed,
  // for the copies out of its pages, so its pages stay the engine's until both are done. Such a
  // chunk need not be in the host tier any more. When the earlier load's copies fail, so do the
  // copies queued after them (their events carry the error): the later load reports it too.
  Result<Load> load(const LoadRequest& request);

  // Starts several loads at once, as load() each, with their copies issued layer-major: layer l
  // of every request is queued before layer l + 1 of any, so that each request's first layers
  // land early instead of behind another request's whole prefix. A later request may share an
  // earlier one's chunks (as above). Every request is checked before anything is queued; the
  // first invalid one fails the call (InvalidArgument naming its index). On a failure while
  // queueing, none of the loads lands anything and the error is returned, as for load().
  Result<std::vector<Load>> load_many(std::span<const LoadRequest> requests);

  // Starts saving the full chunks of [0, num_tokens) that the host tier lacks. The same argument
  // checks as load(); a producer stream is required.
  Result<Save> save(const SaveRequest& request);

  // Blocks until every save queued so far has finished. Returns the first error of the saves
  // that finished since the last flush() (their chunks were not published), else OK. Writes to
  // lower tiers are not waited for (flush_lower_tiers()).
  Status flush();

  // Starts promoting chunks [first_token, end_token) of the prompt (chunk-aligned, inside its full
  // chunks) into the host tier: chunks the host tier has are pinned as they are (the leading ones
  // before promote() returns); the others are read, in order, from the fastest lower tier holding
  // each, on the cache's reader threads, into reserved host slots, verified (tierkv/store.h),
  // published and pinned. A chunk being written into the host tier by a save or another
  // promotion is waited for, not read twice. A tier whose record vanished since contains() (its
  // read() is NotFound) hands over to the next tier holding it. Stops at the first chunk no tier
  // holds or whose read fails; the failed chunk's slot is never published. Promotions in flight
  // share the reader threads chunk by chunk. InvalidArgument for keys of another cache or a range
  // that is not chunk-aligned or exceeds the prompt's full chunks; FailedPrecondition without a
  // host tier. The range may be empty (the Promotion is done at once).
  Result<Promotion> promote(const PromptKeys& keys, std::int32_t first_token,
                            std::int32_t end_token);

  // Waits for the saves queued so far to land (as flush(), without taking its error: their chunks
  // are offered to the lower tiers then), then until every writer queue is empty and no write
  // runs (while saves keep coming, until such a moment). Returns the first write error since the
  // last flush_lower_tiers(), else OK; a failed write loses nothing the host tier holds.
  Status flush_lower_tiers();

  // Blocks until the host tier is pinned whole (OK; at once without a host tier or when create()
  // pinned it whole), or its background pinning stopped at a piece that could not be pinned (that
  // error; the tier goes on with the slots it has), or `deadline` passed (DeadlineExceeded). For
  // an engine that would rather not serve while pieces are being pinned: each piece's pinning
  // holds the device driver while it runs, delaying the engine's own calls.
  Status wait_host_tier(std::chrono::steady_clock::time_point deadline) const;

  // Bytes of loads queued on the cache's load stream whose copies have not finished yet: what a
  // load queued now waits behind. Each queued load counts until its last layer's event completes
  // (or its Load waited for it); a load whose Load is blocked in wait() counts until wait()
  // returns.
  std::uint64_t queued_load_bytes() const;

  // The digest every key of this cache derives from: model identity (weights included), page
  // layout, chunk size.
  const Digest& identity() const;
  const CacheOptions& options() const;
  CacheStats stats() const;

 private:
  friend class Load;
  struct State;
  explicit Cache(std::shared_ptr<State> s);
  std::shared_ptr<State> state_;
};

}  // namespace tierkv

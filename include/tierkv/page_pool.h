// The GPU page pool: tierkv-owned paged KV storage with a prefix index.
//
// The pool owns, for every layer, a K and a V array of `num_pages` pages on the backend's device.
// Pages carry reference counts. A page whose KV is final can be named by its page key (publish);
// when its last reference goes, a named page stays cached (in an LRU) instead of being freed, so a
// returning prefix reuses it with no copy (acquire_cached). Only unreferenced pages are evicted,
// least recently released first, and only when allocate() needs room.
//
// Allocation hands out pages in runs aligned to `pages_per_run` (one chunk) where it can: then one
// chunk's layer is one contiguous run of memory on the device, which one DMA fills.
//
// An engine with its own page pool does not need this class: it hands tierkv a PagedKvView of its
// own layout instead.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/key.h"
#include "tierkv/model_spec.h"
#include "tierkv/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv {

// Largest pool: page ids are int32 and a pool's bookkeeping must fit the host.
inline constexpr std::int32_t kMaxPoolPages = 1 << 28;

struct PagePoolOptions {
  ModelSpec model;                   // KV shape; model.page_tokens tokens per page
  std::int32_t num_pages = 0;        // pages per layer (K and V each)
  std::int32_t pages_per_run = 16;   // allocation alignment: pages of one chunk
  KvLayout layout = KvLayout::kNHD;  // layout inside a page
};

struct PagePoolStats {
  std::int32_t num_pages = 0;
  std::int32_t free_pages = 0;        // unnamed and unreferenced
  std::int32_t cached_pages = 0;      // named, unreferenced: reusable on a hit, evictable
  std::int32_t referenced_pages = 0;  // held by at least one sequence
  std::uint64_t hit_pages = 0;        // pages handed out by acquire_cached
  std::uint64_t evicted_pages = 0;
};

class PagePool {
 public:
  // Allocates the storage. InvalidArgument for a bad model or sizes (num_pages in
  // [1, kMaxPoolPages], pages_per_run in [1, num_pages]); ResourceExhausted when the device lacks
  // the memory (checked against Backend::free_memory() before anything is allocated) or the host
  // lacks it for the bookkeeping. The model's identity is the pool's: a Cache that uses the pool
  // must have the same one.
  static Result<std::unique_ptr<PagePool>> create(Backend& backend, const PagePoolOptions& options);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // The storage as a view: per-layer K/V pointers, strides, page size, num_pages. block_table,
  // seq_lens and batch are left unset for the caller. Valid as long as the pool lives.
  PagedKvView view() const;
  const PagePoolOptions& options() const;

  // Number of leading keys whose pages are cached or referenced here. Takes no reference.
  std::int32_t count_cached(std::span<const Key> keys) const;

  // The pages of the leading cached keys, one reference taken on each (release them later).
  std::vector<std::int32_t> acquire_cached(std::span<const Key> keys);

  // `n` fresh, unnamed pages with one reference each, in chunk-aligned contiguous runs where it
  // can. Evicts cached unreferenced pages (least recently released first) to make room.
  // InvalidArgument for n < 0; ResourceExhausted when fewer than `n` pages are free or evictable;
  // then nothing changes.
  Result<std::vector<std::int32_t>> allocate(std::int32_t n);

  // Names `page` (which the caller references) by `key` once its KV is final. Returns false and
  // changes nothing when another page already holds `key` or `page` is already named.
  bool publish(std::int32_t page, const Key& key);

  // Drops one reference from each page, last page first, so that a sequence's tail is evicted
  // before its head. All or nothing: InvalidArgument for an id outside [0, num_pages) and
  // FailedPrecondition for a page listed more often than it is referenced; then nothing changes.
  Status release(std::span<const std::int32_t> pages);

  PagePoolStats stats() const;

 private:
  struct State;
  PagePool(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace tierkv

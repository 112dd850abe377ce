// Where a chunk's bytes live: in a host slot (layer-major: for each layer, the chunk's K pages then
// its V pages, each page byte-for-byte as in the engine's layout) and in the engine's GPU pages.
// Turns a chunk's pages into the fewest contiguous copy runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/cache.h"
#include "tierkv/key.h"
#include "tierkv/paged_kv.h"

namespace tierkv {

enum class Direction : std::uint8_t { kToDevice, kToHost };

struct ChunkGeometry {
  explicit ChunkGeometry(const CacheOptions& o);

  CacheOptions opts;
  std::int32_t pages_per_chunk = 0;
  std::size_t page_bytes = 0;         // one page of K (or V): page_tokens * kv_heads * head_dim
  std::size_t chunk_layer_bytes = 0;  // one chunk's K (or V) in one layer

  std::size_t chunk_bytes() const {
    return 2 * chunk_layer_bytes * std::size_t(opts.model.num_layers);
  }

  // `keys` is non-null, was made by the cache of `identity` (stamped), and its fields agree with
  // each other and with this geometry.
  Status check_keys(const PromptKeys* keys, const Digest& identity) const;
  // [first, first + num) starts on a page, ends on a chunk boundary (or is empty), and lies inside
  // the prompt's full chunks. 64-bit arithmetic: no sum wraps.
  Status check_load_range(const PromptKeys& keys, std::int32_t first, std::int32_t num) const;
  // The view has this cache's shape and in-page layout, a page count, and `pages` holds at least
  // `num_pages` ids, each in [0, view.num_pages).
  Status check_view(const PagedKvView& view, std::span<const std::int32_t> pages,
                    std::int64_t num_pages, const char* what) const;

  // Appends the runs that move layer `layer` of one chunk between `slot` (the chunk's host slot)
  // and the engine's `pages`: the ids of the chunk's pages [first_page, pages_per_chunk), so
  // pages.size() == pages_per_chunk - first_page. Consecutive page ids become one run when pages
  // are packed back to back.
  void append_runs(const PagedKvView& view, std::int32_t layer, std::span<const std::int32_t> pages,
                   std::int32_t first_page, std::uint8_t* slot, Direction dir,
                   std::vector<CopyRun>& runs) const;
  // Appends the runs that copy layer `layer` of pages `src_pages` of `src` into `dst_pages` of
  // `dst` (device to device, same count), skipping any page that is its own destination.
  void append_device_runs(const PagedKvView& src, std::span<const std::int32_t> src_pages,
                          const PagedKvView& dst, std::span<const std::int32_t> dst_pages,
                          std::int32_t layer, std::vector<CopyRun>& runs) const;
};

}  // namespace tierkv

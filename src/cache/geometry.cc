#include "cache/geometry.h"

#include <algorithm>
#include <string>

namespace tierkv {

ChunkGeometry::ChunkGeometry(const CacheOptions& o)
    : opts(o),
      pages_per_chunk(o.model.page_tokens > 0 ? o.chunk_tokens / o.model.page_tokens : 0),
      page_bytes(std::size_t(o.model.page_tokens) * o.model.num_kv_heads * o.model.head_dim *
                 dtype_size(o.model.kv_dtype)),
      chunk_layer_bytes(page_bytes * std::size_t(pages_per_chunk)) {}

Status ChunkGeometry::check_keys(const PromptKeys* keys, const Digest& identity) const {
  if (keys == nullptr) return invalid_argument("keys are required");
  if (keys->identity != identity) {
    return invalid_argument(
        "keys were made by another cache (another model, weights, epoch, layout or chunk size): "
        "compute them with this cache's keys()");
  }
  if (keys->page_tokens != opts.model.page_tokens || keys->chunk_tokens != opts.chunk_tokens) {
    return invalid_argument("keys were made by a cache with another page or chunk size");
  }
  if (keys->tokens < 0 ||
      keys->pages.size() != std::size_t(keys->tokens / keys->page_tokens)) {
    return invalid_argument("keys are malformed: " + std::to_string(keys->pages.size()) +
                            " page keys for " + std::to_string(keys->tokens) + " tokens");
  }
  return Status::Ok();
}

Status ChunkGeometry::check_load_range(const PromptKeys& keys, std::int32_t first,
                                       std::int32_t num) const {
  const std::int64_t c = opts.chunk_tokens, p = opts.model.page_tokens;
  const std::int64_t end = std::int64_t{first} + num;
  const auto range = [&] {
    return "load: tokens [" + std::to_string(first) + ", " + std::to_string(end) + ")";
  };
  if (first < 0 || num < 0) return invalid_argument(range() + " is negative");
  if (first % p != 0) {
    return invalid_argument(range() + " does not start on a page of " + std::to_string(p));
  }
  if (num > 0 && end % c != 0) {
    return invalid_argument(range() + " does not end on a chunk boundary (chunks of " +
                            std::to_string(c) + ")");
  }
  if (end > std::int64_t{keys.full_chunks()} * c) {
    return invalid_argument(range() + " exceeds the prompt's full chunks (" +
                            std::to_string(std::int64_t{keys.full_chunks()} * c) + " tokens)");
  }
  return Status::Ok();
}

Status ChunkGeometry::check_view(const PagedKvView& v, std::span<const std::int32_t> pages,
                                 std::int64_t num_pages, const char* what) const {
  const ModelSpec& m = opts.model;
  const std::string w(what);
  if (v.num_layers() != m.num_layers || std::ssize(v.v_layers) != m.num_layers) {
    return invalid_argument(w + ": the view has " + std::to_string(v.num_layers()) +
                            " layers, the model " + std::to_string(m.num_layers));
  }
  if (v.num_kv_heads != m.num_kv_heads || v.head_dim != m.head_dim ||
      v.page_tokens != m.page_tokens || v.dtype != m.kv_dtype) {
    return invalid_argument(
        w + ": the view's KV shape (heads, head_dim, page size, dtype) is not the model's");
  }
  const KvStrides packed =
      packed_strides(opts.page_layout, m.page_tokens, m.num_kv_heads, m.head_dim);
  if (v.strides.token != packed.token || v.strides.head != packed.head ||
      v.strides.page < packed.page) {
    return invalid_argument(w + ": the view's in-page layout is not the cache's (" +
                            std::string(opts.page_layout == KvLayout::kNHD ? "NHD" : "HND") +
                            ", packed)");
  }
  if (v.num_pages <= 0) {
    return invalid_argument(w + ": the view does not say how many pages it has (num_pages)");
  }
  for (std::int32_t l = 0; l < m.num_layers; ++l) {
    if (v.k_layers[std::size_t(l)] == nullptr || v.v_layers[std::size_t(l)] == nullptr) {
      return invalid_argument(w + ": layer " + std::to_string(l) + " has no K or V pointer");
    }
  }
  if (num_pages < 0 || std::int64_t(pages.size()) < num_pages) {
    return invalid_argument(w + ": " + std::to_string(pages.size()) + " page ids for " +
                            std::to_string(num_pages) + " pages");
  }
  for (std::size_t i = 0; i < std::size_t(num_pages); ++i) {
    if (pages[i] < 0 || pages[i] >= v.num_pages) {
      return invalid_argument(w + ": page id " + std::to_string(pages[i]) + " outside [0, " +
                              std::to_string(v.num_pages) + ")");
    }
  }
  return Status::Ok();
}

void ChunkGeometry::append_runs(const PagedKvView& v, std::int32_t layer,
                                std::span<const std::int32_t> pages, std::int32_t first_page,
                                std::uint8_t* slot, Direction dir,
                                std::vector<CopyRun>& runs) const {
  const std::size_t page_stride = std::size_t(v.strides.page) * dtype_size(v.dtype);
  const bool packed = page_stride == page_bytes;
  std::uint8_t* slot_layer = slot + std::size_t(layer) * 2 * chunk_layer_bytes;
  for (int kv = 0; kv < 2; ++kv) {
    // The engine's pages are written by a load and only read by a save.
    auto* base = static_cast<std::uint8_t*>(
        const_cast<void*>((kv == 0 ? v.k_layers : v.v_layers)[std::size_t(layer)]));
    std::uint8_t* host =
        slot_layer + std::size_t(kv) * chunk_layer_bytes + std::size_t(first_page) * page_bytes;
    for (std::size_t j = 0; j < pages.size();) {
      std::size_t n = 1;
      while (packed && j + n < pages.size() && pages[j + n] == pages[j] + std::int32_t(n))
        ++n;
      std::uint8_t* dev = base + std::size_t(pages[j]) * page_stride;
      std::uint8_t* hst = host + j * page_bytes;
      if (dir == Direction::kToDevice) {
        runs.push_back({dev, hst, n * page_bytes});
      } else {
        runs.push_back({hst, dev, n * page_bytes});
      }
      j += n;
    }
  }
}

void ChunkGeometry::append_device_runs(const PagedKvView& src,
                                       std::span<const std::int32_t> src_pages,
                                       const PagedKvView& dst,
                                       std::span<const std::int32_t> dst_pages,
                                       std::int32_t layer, std::vector<CopyRun>& runs) const {
  const std::size_t src_stride = std::size_t(src.strides.page) * dtype_size(src.dtype);
  const std::size_t dst_stride = std::size_t(dst.strides.page) * dtype_size(dst.dtype);
  const bool packed = src_stride == page_bytes && dst_stride == page_bytes;
  const std::size_t n_pages = std::min(src_pages.size(), dst_pages.size());
  for (int kv = 0; kv < 2; ++kv) {
    const auto* from = static_cast<const std::uint8_t*>((kv == 0 ? src.k_layers : src.v_layers)[std::size_t(layer)]);
    auto* to = static_cast<std::uint8_t*>(
        const_cast<void*>((kv == 0 ? dst.k_layers : dst.v_layers)[std::size_t(layer)]));
    for (std::size_t j = 0; j < n_pages;) {
      std::size_t n = 1;
      while (packed && j + n < n_pages && src_pages[j + n] == src_pages[j] + std::int32_t(n) &&
             dst_pages[j + n] == dst_pages[j] + std::int32_t(n))
        ++n;
      const std::uint8_t* s = from + std::size_t(src_pages[j]) * src_stride;
      std::uint8_t* d = to + std::size_t(dst_pages[j]) * dst_stride;
      if (s != d) runs.push_back({d, s, n * page_bytes});
      j += n;
    }
  }
}

}  // namespace tierkv

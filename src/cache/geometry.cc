#include "cache/geometry.h"

#include <string>

namespace tierkv {

ChunkGeometry::ChunkGeometry(const CacheOptions& o)
    : opts(o),
      pages_per_chunk(o.model.page_tokens > 0 ? o.chunk_tokens / o.model.page_tokens : 0),
      page_bytes(std::size_t(o.model.page_tokens) * o.model.num_kv_heads * o.model.head_dim *
                 dtype_size(o.model.kv_dtype)),
      chunk_layer_bytes(page_bytes * std::size_t(pages_per_chunk)) {}

Status ChunkGeometry::check_keys(const PromptKeys* keys) const {
  if (keys == nullptr) return invalid_argument("keys are required");
  if (keys->page_tokens != opts.model.page_tokens || keys->chunk_tokens != opts.chunk_tokens) {
    return invalid_argument("keys were made by a cache with another page or chunk size");
  }
  return Status::Ok();
}

Status ChunkGeometry::check_range(const PromptKeys& keys, std::int32_t first, std::int32_t num,
                                  const char* what) const {
  const std::int32_t c = opts.chunk_tokens;
  if (first < 0 || num < 0 || first % c != 0 || num % c != 0) {
    return invalid_argument(std::string(what) + ": tokens [" + std::to_string(first) + ", +" +
                            std::to_string(num) + ") are not aligned to chunks of " +
                            std::to_string(c));
  }
  if (first + num > keys.full_chunks() * c) {
    return invalid_argument(std::string(what) + ": tokens up to " + std::to_string(first + num) +
                            " exceed the prompt's full chunks (" +
                            std::to_string(keys.full_chunks() * c) + ")");
  }
  return Status::Ok();
}

Status ChunkGeometry::check_view(const PagedKvView& v, std::span<const std::int32_t> pages,
                                 std::int32_t tokens, const char* what) const {
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
  for (std::int32_t l = 0; l < m.num_layers; ++l) {
    if (v.k_layers[std::size_t(l)] == nullptr || v.v_layers[std::size_t(l)] == nullptr) {
      return invalid_argument(w + ": layer " + std::to_string(l) + " has no K or V pointer");
    }
  }
  const std::size_t needed = std::size_t(tokens / m.page_tokens);
  if (pages.size() < needed) {
    return invalid_argument(w + ": " + std::to_string(pages.size()) + " page ids for " +
                            std::to_string(needed) + " pages");
  }
  for (std::size_t i = 0; i < needed; ++i) {
    if (pages[i] < 0) return invalid_argument(w + ": negative page id");
  }
  return Status::Ok();
}

void ChunkGeometry::append_runs(const PagedKvView& v, std::int32_t layer,
                                std::span<const std::int32_t> pages, std::uint8_t* slot,
                                Direction dir, std::vector<CopyRun>& runs) const {
  const std::size_t page_stride = std::size_t(v.strides.page) * dtype_size(v.dtype);
  const bool packed = page_stride == page_bytes;
  std::uint8_t* slot_layer = slot + std::size_t(layer) * 2 * chunk_layer_bytes;
  for (int kv = 0; kv < 2; ++kv) {
    // The engine's pages are written by a load and only read by a save.
    auto* base = static_cast<std::uint8_t*>(
        const_cast<void*>((kv == 0 ? v.k_layers : v.v_layers)[std::size_t(layer)]));
    std::uint8_t* host = slot_layer + std::size_t(kv) * chunk_layer_bytes;
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

}  // namespace tierkv

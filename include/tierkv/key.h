// Prefix keys. A key is a chained SHA-256 digest that names a whole token prefix: the key of page
// i covers the identity, the tenant salt and every token of pages 0..i. One hash-map probe per
// page therefore answers "is this prefix cached". A chunk's key is the key of its last page.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace tierkv {

// Trivially copyable, 32 bytes.
struct Key {
  std::array<std::uint8_t, 32> bytes{};

  friend bool operator==(const Key&, const Key&) = default;

  // The first 8 bytes read as a little-endian integer. SHA-256 output is uniform already, so this
  // is a good hash-table hash as it is; it is not a substitute for comparing whole keys.
  std::uint64_t hash() const {
    std::uint64_t h = 0;
    for (int i = 7; i >= 0; --i)
      h = (h << 8) | bytes[static_cast<std::size_t>(i)];
    return h;
  }

  // 64 lowercase hex digits.
  std::string hex() const;
};
static_assert(sizeof(Key) == 32 && std::is_trivially_copyable_v<Key>);

// The page keys of one prompt under one cache identity and salt: computed once, then used by
// match, load and save. Only full pages have keys; only full chunks go below the GPU.
struct PromptKeys {
  std::vector<Key> pages;   // key of each full page
  std::int32_t tokens = 0;  // prompt length
  std::int32_t page_tokens = 0;
  std::int32_t chunk_tokens = 0;

  std::int32_t pages_per_chunk() const { return chunk_tokens / page_tokens; }
  std::int32_t full_chunks() const { return tokens / chunk_tokens; }
  // REQUIRES: c < full_chunks().
  const Key& chunk_key(std::int32_t c) const {
    return pages[std::size_t(c + 1) * pages_per_chunk() - 1];
  }
};

}  // namespace tierkv

// Prefix keys. A key is a chained SHA-256 digest that names a whole token prefix: the key of page
// i covers the identity, the tenant salt and every token of pages 0..i. One hash-map probe per
// page therefore answers "is this prefix cached". A chunk's key is the key of its last page.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
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

// What, besides the tokens, decides a prompt's KV: everything here goes into its keys. Two
// requests share cache entries only when all of it is equal.
//
// What the keys of a prompt cover, and why:
//   - the cache identity (Cache::identity()): the model's shape and name, the digest of its
//     weights and their epoch, the tokenizer, the tensor-parallel slice, the KV dtype, the page
//     size and in-page layout, the chunk size and the layout version. Any of these changes the
//     bytes of the KV or where they live, so KV made under another identity is never served.
//   - the tenant salt: tenants never share entries (one tenant cannot learn, by timing a hit,
//     what another one sent). Chosen by the caller, never derived from the tokens.
//   - the adapter (a LoRA id and its version): an adapter changes the K and V projections of
//     every layer, so the same tokens give other KV under another adapter or version.
//   - extra inputs: digests of anything else that changes the KV of the prompt's tokens without
//     being a token id (the pixels of an image whose embedding replaces placeholder tokens, audio,
//     a soft prompt). They apply to the whole prompt: conservative (two prompts that differ only
//     in an image after their common text share nothing) but never wrong.
//   - the token ids, in order, page by page (the chain below).
// What they do not cover: sampling settings (they do not change KV) and anything the caller does
// not tell: an input that changes KV and is not named here will be served from another request's
// entries. That is the caller's contract.
struct KeyScope {
  std::string_view salt;                  // tenant; "" for none
  std::string_view adapter;               // LoRA (or other adapter) id; "" for the base weights
  std::uint64_t adapter_version = 0;      // bumped when the adapter's weights change
  std::span<const std::array<std::uint8_t, 32>> extra;  // digests of other KV-changing inputs
};

// The page keys of one prompt under one cache identity and scope: computed once by Cache::keys(),
// then used by match, load and save, which refuse keys made by another cache identity or keys
// whose fields disagree with each other (InvalidArgument). Only full pages have keys; only full
// chunks go below the GPU.
struct PromptKeys {
  std::vector<Key> pages;   // key of each full page: pages.size() == tokens / page_tokens
  std::int32_t tokens = 0;  // prompt length
  std::int32_t page_tokens = 0;
  std::int32_t chunk_tokens = 0;
  std::array<std::uint8_t, 32> identity{};  // Cache::identity() of the cache that made them
  std::array<std::uint8_t, 32> salt_tag{};  // SHA-256 of the salt (stored records carry it)

  std::int32_t pages_per_chunk() const { return chunk_tokens / page_tokens; }
  std::int32_t full_chunks() const { return tokens / chunk_tokens; }
  // REQUIRES: c < full_chunks().
  const Key& chunk_key(std::int32_t c) const {
    return pages[std::size_t(c + 1) * pages_per_chunk() - 1];
  }
};

}  // namespace tierkv

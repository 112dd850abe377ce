// Prefix keys (DESIGN.md section 2, "Key").
//
// A page key is a chained SHA-256 digest that names a whole token prefix, not just one page:
// key[i] covers the identity, the salt, the page size and every token of pages 0..i. One hash-map
// probe per page therefore answers "is this prefix cached", and two requests share key[i] exactly
// when they share the identity, salt, page size and first (i+1)*page_tokens tokens.
//
// Version-1 encoding; every integer is little-endian and fixed width:
//   key[0] = SHA-256( u64 18, "tierkv.page-key.v1", identity (32 bytes),
//                     u64 len(salt), salt bytes, u32 page_tokens, u32 tokens of page 0 )
//   key[i] = SHA-256( key[i-1] (32 bytes), u32 tokens of page i )
// Every variable-length field is length-prefixed, so salt "ab" followed by some tokens never
// encodes like salt "a" followed by other tokens. Changing this encoding changes every key: give
// it a new domain string ("...v2") rather than editing v1.
//
// The salt isolates tenants: two tenants with different salts never share a key. It is chosen by
// the caller and never derived from the tokens.
//
// Thread safety: the functions keep no state and may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/key.h"
#include "tierkv/model_spec.h"
#include "tierkv/status.h"

namespace tierkv {

// The domain string of the version-1 encoding above.
inline constexpr std::string_view kPageKeyDomain = "tierkv.page-key.v1";

// Key (the chained page key) is declared in tierkv/key.h.

// Clears `out`, then appends one key per FULL page of `tokens`: out.size() becomes
// tokens.size() / page_tokens, and out[i] is key[i] above. Tokens of a partial last page get no
// key (they are not cacheable as pages). On error `out` is left empty.
// Errors: InvalidArgument for page_tokens < 1 or a negative id anywhere in `tokens`.
// Allocates at most once (to grow `out`); reuse `out` across calls to allocate nothing.
Status compute_page_keys(const Digest& identity, std::string_view salt,
                         std::span<const std::int32_t> tokens, std::int32_t page_tokens,
                         std::vector<Key>& out);

// Extends a chain by one page (incremental decode): the key of the page after `prev`, i.e.
// key[i] from key[i-1] = `prev` and the ids of page i.
// REQUIRES: page_tokens_ids.size() is the chain's page_tokens, and the ids are non-negative (as
// compute_page_keys checks). Neither can be checked here, since a key does not record them; a
// negative id is hashed as its two's-complement u32, so it never aliases a valid id.
Key next_page_key(const Key& prev, std::span<const std::int32_t> page_tokens_ids);

// How key[1..] are hashed. A key chain is serial, so its cost is the latency of SHA-256 on short
// (two-block) messages, to which OpenSSL's buffered interface adds about a third. kShaNi is
// tierkv's own SHA-256 on the x86 SHA extensions, used when CPUID reports them (SHA, SSSE3,
// SSE4.1); kOpenSsl is OpenSSL's SHA-256, which picks its own block function. Both give identical
// keys; key[0] is always hashed by OpenSSL.
enum class PageKeyHasher : std::uint8_t { kOpenSsl, kShaNi };

// The hasher compute_page_keys and next_page_key use on this CPU, chosen once.
PageKeyHasher page_key_hasher();
// "openssl" or "sha-ni".
std::string_view page_key_hasher_name(PageKeyHasher hasher);

// next_page_key with a chosen hasher, to verify and measure one against the other.
// REQUIRES: hasher is kOpenSsl, or page_key_hasher() is kShaNi.
Key next_page_key(PageKeyHasher hasher, const Key& prev,
                  std::span<const std::int32_t> page_tokens_ids);

}  // namespace tierkv

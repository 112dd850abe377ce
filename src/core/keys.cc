#include "core/keys.h"

// The one-context SHA256_* calls are deprecated in OpenSSL 3 in favour of EVP, but EVP's
// per-message setup costs about three times as much as hashing a 96-byte page message.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <bit>
#include <cstring>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TIERKV_HAVE_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace tierkv {
namespace {

// Token ids are hashed straight from memory: on a little-endian host an int32's bytes are its
// u32 little-endian encoding.
static_assert(std::endian::native == std::endian::little,
              "page keys hash token ids in memory order, which must be little-endian");
static_assert(sizeof(Key{}.bytes) == SHA256_DIGEST_LENGTH);

template <typename T>
void update_le(SHA256_CTX& ctx, T v) {
  unsigned char b[sizeof(T)];
  for (std::size_t i = 0; i < sizeof(T); ++i)
    b[i] = static_cast<unsigned char>(v >> (8 * i));
  SHA256_Update(&ctx, b, sizeof(T));
}

Key first_page_key(const Digest& identity, std::string_view salt, std::uint32_t page_tokens,
                   std::span<const std::int32_t> ids) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  update_le<std::uint64_t>(ctx, kPageKeyDomain.size());
  SHA256_Update(&ctx, kPageKeyDomain.data(), kPageKeyDomain.size());
  SHA256_Update(&ctx, identity.data(), identity.size());
  update_le<std::uint64_t>(ctx, salt.size());
  SHA256_Update(&ctx, salt.data(), salt.size());
  update_le<std::uint32_t>(ctx, page_tokens);
  SHA256_Update(&ctx, ids.data(), ids.size_bytes());
  Key k;
  SHA256_Final(k.bytes.data(), &ctx);
  return k;
}

Key next_page_key_openssl(const Key& prev, std::span<const std::int32_t> ids) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, prev.bytes.data(), prev.bytes.size());
  SHA256_Update(&ctx, ids.data(), ids.size_bytes());
  Key k;
  SHA256_Final(k.bytes.data(), &ctx);
  return k;
}

#ifdef TIERKV_HAVE_SHA_NI
// SHA-256 on the x86 SHA extensions. A key chain is a serial chain of SHA-256 compressions (two
// per 16-token page), so its cost is the latency of sha256rnds2. This path keeps everything else
// off that chain: padding is built in place without OpenSSL's buffering, and a key is passed to
// the next page in registers: the big-endian message words of a digest's bytes are the digest's
// state words themselves.
//
// State layout inside compress(): abef = {f, e, b, a} and cdgh = {h, g, d, c} (lane 0 first), as
// sha256rnds2 wants.

#define TIERKV_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

alignas(16) constexpr std::uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

bool cpu_has_sha_ni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const bool ssse3_sse41 = (c & bit_SSSE3) != 0 && (c & bit_SSE4_1) != 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  return ssse3_sse41 && (b & bit_SHA) != 0;
}

// Eight 32-bit words, lane 0 first: a digest's h0..h7, or eight message words.
struct Words {
  __m128i lo, hi;
};

TIERKV_SHA_TARGET inline __m128i bswap32(__m128i v) {
  return _mm_shuffle_epi8(v, _mm_set_epi64x(0x0c0d0e0f08090a0bull, 0x0405060700010203ull));
}
TIERKV_SHA_TARGET inline __m128i load_be(const std::uint8_t* p) {
  return bswap32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
TIERKV_SHA_TARGET inline Words words_of(const Key& k) {
  return {load_be(k.bytes.data()), load_be(k.bytes.data() + 16)};
}
TIERKV_SHA_TARGET inline Key key_of(Words w) {
  Key k;
  _mm_storeu_si128(reinterpret_cast<__m128i*>(k.bytes.data()), bswap32(w.lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(k.bytes.data() + 16), bswap32(w.hi));
  return k;
}

// One block, given as its 16 message words (w0 = words 0..3, ...).
TIERKV_SHA_TARGET inline void compress(__m128i& abef, __m128i& cdgh, __m128i w0, __m128i w1,
                                       __m128i w2, __m128i w3) {
  const __m128i abef_in = abef;
  const __m128i cdgh_in = cdgh;
  __m128i w[4] = {w0, w1, w2, w3};  // the last 16 schedule words: w[g % 4] = words 4g..4g+3
#pragma GCC unroll 16
  for (int g = 0; g < 16; ++g) {
    __m128i& cur = w[g % 4];
    if (g >= 4) {  // cur, w[(g+1)%4], w[(g+2)%4], w[(g+3)%4] hold groups g-4 .. g-1
      const __m128i& prev1 = w[(g + 3) % 4];
      const __m128i& prev2 = w[(g + 2) % 4];
      cur = _mm_add_epi32(_mm_sha256msg1_epu32(cur, w[(g + 1) % 4]),
                          _mm_alignr_epi8(prev1, prev2, 4));
      cur = _mm_sha256msg2_epu32(cur, prev1);
    }
    const __m128i wk = _mm_add_epi32(
        cur, _mm_load_si128(reinterpret_cast<const __m128i*>(kRoundConstants + 4 * g)));
    cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
    abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0e));
  }
  abef = _mm_add_epi32(abef, abef_in);
  cdgh = _mm_add_epi32(cdgh, cdgh_in);
}

// The digest of prev's 32 bytes || data[0, n).
// The message after prev, R = data || 0x80 || zeros || u64 big-endian bit length, is 32 + 64m
// bytes: R[0, 32) completes the first block, then whole blocks follow. R's first `direct` bytes
// are read in place and the rest is built in `tail`; `direct` is 0 or 32 + 64j, so no block
// straddles the two.
TIERKV_SHA_TARGET inline Words hash_after(Words prev, const std::uint8_t* data, std::size_t n) {
  const std::size_t r_len = (n + 9 + 32 + 63) / 64 * 64 - 32;
  const std::size_t direct = n < 32 ? 0 : 32 + (n - 32) / 64 * 64;
  const std::size_t built = r_len - direct;  // 32, 64, 96 or 128
  alignas(16) std::uint8_t tail[128];
  if (n > direct) std::memcpy(tail, data + direct, n - direct);  // data may be null when n == 0
  tail[n - direct] = 0x80;
  std::memset(tail + (n - direct) + 1, 0, built - (n - direct) - 9);
  const std::uint64_t bits = 8 * (32 + static_cast<std::uint64_t>(n));
  for (std::size_t i = 0; i < 8; ++i)
    tail[built - 1 - i] = static_cast<std::uint8_t>(bits >> (8 * i));
  const auto r = [&](std::size_t o) { return o < direct ? data + o : tail + (o - direct); };

  // The initial hash value in abef / cdgh order.
  __m128i abef = _mm_set_epi32(0x6a09e667, 0xbb67ae85, 0x510e527f, 0x9b05688c);
  __m128i cdgh = _mm_set_epi32(0x3c6ef372, 0xa54ff53a, 0x1f83d9ab, 0x5be0cd19);
  compress(abef, cdgh, prev.lo, prev.hi, load_be(r(0)), load_be(r(16)));
  for (std::size_t o = 32; o < r_len; o += 64) {
    const std::uint8_t* b = r(o);
    compress(abef, cdgh, load_be(b), load_be(b + 16), load_be(b + 32), load_be(b + 48));
  }
  const __m128i feba = _mm_shuffle_epi32(abef, 0x1b);
  const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xb1);
  return {_mm_blend_epi16(feba, dchg, 0xf0), _mm_alignr_epi8(dchg, feba, 8)};
}

TIERKV_SHA_TARGET inline Words hash_page(Words prev, std::span<const std::int32_t> ids) {
  return hash_after(prev, reinterpret_cast<const std::uint8_t*>(ids.data()), ids.size_bytes());
}

TIERKV_SHA_TARGET Key next_page_key_sha_ni(const Key& prev, std::span<const std::int32_t> ids) {
  return key_of(hash_page(words_of(prev), ids));
}

// See extend_chain().
TIERKV_SHA_TARGET void extend_chain_sha_ni(std::span<const std::int32_t> tokens, std::size_t page,
                                           std::size_t pages, std::vector<Key>& out) {
  Words w = words_of(out.back());
  for (std::size_t i = 1; i < pages; ++i) {
    w = hash_page(w, tokens.subspan(i * page, page));
    out.push_back(key_of(w));
  }
}

PageKeyHasher detect_hasher() {
  return cpu_has_sha_ni() ? PageKeyHasher::kShaNi : PageKeyHasher::kOpenSsl;
}
#else
PageKeyHasher detect_hasher() {
  return PageKeyHasher::kOpenSsl;
}
#endif

// Appends key[1..pages) to `out`, which holds key[0].
void extend_chain(PageKeyHasher hasher, std::span<const std::int32_t> tokens, std::size_t page,
                  std::size_t pages, std::vector<Key>& out) {
#ifdef TIERKV_HAVE_SHA_NI
  if (hasher == PageKeyHasher::kShaNi) return extend_chain_sha_ni(tokens, page, pages, out);
#endif
  for (std::size_t i = 1; i < pages; ++i) {
    out.push_back(next_page_key_openssl(out.back(), tokens.subspan(i * page, page)));
  }
}

// OK, or InvalidArgument naming the first negative id. The common (valid) case is a branch-free
// OR of all ids, which vectorizes; a scan with an early exit would not.
Status check_token_ids(std::span<const std::int32_t> tokens) {
  std::int32_t all = 0;
  for (std::int32_t t : tokens)
    all |= t;
  if (all >= 0) return Status::Ok();
  for (std::size_t i = 0;; ++i) {
    if (tokens[i] < 0) {
      return invalid_argument("token id " + std::to_string(tokens[i]) + " at position " +
                              std::to_string(i) + " is negative; token ids must be >= 0");
    }
  }
}

}  // namespace

std::string Key::hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * bytes.size(), '0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return s;
}

PageKeyHasher page_key_hasher() {
  static const PageKeyHasher hasher = detect_hasher();
  return hasher;
}

std::string_view page_key_hasher_name(PageKeyHasher h) {
  return h == PageKeyHasher::kShaNi ? "sha-ni" : "openssl";
}

Key next_page_key(PageKeyHasher hasher, const Key& prev,
                  std::span<const std::int32_t> page_tokens_ids) {
#ifdef TIERKV_HAVE_SHA_NI
  if (hasher == PageKeyHasher::kShaNi) return next_page_key_sha_ni(prev, page_tokens_ids);
#endif
  return next_page_key_openssl(prev, page_tokens_ids);
}

Key next_page_key(const Key& prev, std::span<const std::int32_t> page_tokens_ids) {
  return next_page_key(page_key_hasher(), prev, page_tokens_ids);
}

Status compute_page_keys(const Digest& identity, std::string_view salt,
                         std::span<const std::int32_t> tokens, std::int32_t page_tokens,
                         std::vector<Key>& out) {
  out.clear();
  if (page_tokens < 1) {
    return invalid_argument("page_tokens must be at least 1, got " + std::to_string(page_tokens));
  }
  TIERKV_RETURN_IF_ERROR(check_token_ids(tokens));
  const auto page = static_cast<std::size_t>(page_tokens);
  const std::size_t pages = tokens.size() / page;
  if (pages == 0) return Status::Ok();
  out.reserve(pages);
  out.push_back(
      first_page_key(identity, salt, static_cast<std::uint32_t>(page_tokens), tokens.first(page)));
  extend_chain(page_key_hasher(), tokens, page, pages, out);
  return Status::Ok();
}

}  // namespace tierkv

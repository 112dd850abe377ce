#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/key_map.h"
#include "core/keys.h"
#include "core/sha256.h"

namespace tierkv {
namespace {

// Known answers, computed independently of tierkv from the encoding in core/keys.h:
//
//   import hashlib, struct
//   def keys(identity, salt, tokens, page_tokens):
//       out, prev = [], None
//       for i in range(len(tokens) // page_tokens):
//           ids = struct.pack('<%dI' % page_tokens, *tokens[i*page_tokens:(i+1)*page_tokens])
//           if prev is None:
//               d = b'tierkv.page-key.v1'
//               m = (struct.pack('<Q', len(d)) + d + identity + struct.pack('<Q', len(salt)) +
//                    salt + struct.pack('<I', page_tokens) + ids)
//           else:
//               m = prev + ids
//           prev = hashlib.sha256(m).digest()
//           out.append(prev.hex())
//       return out
//   identity = bytes(range(32))
//   print(keys(identity, b'tenant-a', [(1000003 * i + 12345) % 128256 for i in range(72)], 16))
//   print(keys(identity, b'', [7, 0, 128255, 42, 5], 1))
const std::vector<std::string> kKnownTenantA = {
    "3ee4d67e336b1762b27dbf7e52b625053951edbf7d102f8ac89073f4fc99e1bc",
    "f9819fa8266e991897c3f911a2a9b594fb63d12159fbfcac897ff77c1aed776d",
    "db35821dc470ed8a5fc1f157b49b19ef03ef8493b18bf9a7cccc65befe3852d1",
    "99cbb1a5f368de7698e2040640d49472532fc0b62bd07f8782a0f7a62d9dc6e6",
};
const std::vector<std::string> kKnownNoSaltPage1 = {
    "a5e2f5bba518fd636580c5349477308e5e9aa8ddcf2671df6c48a29b43ddecf5",
    "b9e4cdc18cdcc7208228b1c87cdebf3002a2a4ab8559436e3d2f8169a9ab467a",
    "d3148627bd88a2087849ec6cdb58ee7139307041bb25dfad9df547d76b3597da",
    "342075a5e24702554ba4dca033226746b5178148d4b1c482c305de17ab61c091",
    "70c17ca7792e841e6ff6c22dbf9f3f6feeb4a0a3d2fff67edc8cb69dd090d56a",
};

Digest test_identity() {
  Digest d;
  for (std::size_t i = 0; i < d.size(); ++i)
    d[i] = static_cast<std::uint8_t>(i);
  return d;
}

std::vector<std::int32_t> tenant_a_tokens() {
  std::vector<std::int32_t> t(72);
  for (std::size_t i = 0; i < t.size(); ++i) {
    t[i] = static_cast<std::int32_t>((1000003ull * i + 12345) % 128256);
  }
  return t;
}

std::vector<std::int32_t> random_tokens(std::mt19937_64& rng, std::size_t n) {
  std::uniform_int_distribution<std::int32_t> id(0, INT32_MAX);
  std::vector<std::int32_t> t(n);
  for (auto& x : t)
    x = id(rng);
  return t;
}

Key random_key(std::mt19937_64& rng) {
  Key k;
  for (auto& b : k.bytes)
    b = static_cast<std::uint8_t>(rng());
  return k;
}

std::vector<Key> keys_of(const Digest& identity, std::string_view salt,
                         const std::vector<std::int32_t>& tokens, std::int32_t page_tokens) {
  std::vector<Key> out;
  const Status s = compute_page_keys(identity, salt, tokens, page_tokens, out);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return out;
}

std::vector<std::string> hex_of(const std::vector<Key>& keys) {
  std::vector<std::string> h;
  for (const Key& k : keys)
    h.push_back(k.hex());
  return h;
}

std::vector<PageKeyHasher> available_hashers() {
  std::vector<PageKeyHasher> h = {PageKeyHasher::kOpenSsl};
  if (page_key_hasher() == PageKeyHasher::kShaNi) h.push_back(PageKeyHasher::kShaNi);
  return h;
}

// The encoding of core/keys.h, spelled with the EVP-backed Sha256 of core/sha256.h.
Key reference_next(const Key& prev, std::span<const std::int32_t> ids) {
  Sha256 h;
  h.bytes(prev.bytes.data(), prev.bytes.size());
  for (std::int32_t id : ids)
    h.u32(static_cast<std::uint32_t>(id));
  return Key{h.finish()};
}

Key reference_first(const Digest& identity, std::string_view salt, std::int32_t page_tokens,
                    std::span<const std::int32_t> ids) {
  Sha256 h;
  h.str(kPageKeyDomain).bytes(identity.data(), identity.size()).str(salt);
  h.u32(static_cast<std::uint32_t>(page_tokens));
  for (std::int32_t id : ids)
    h.u32(static_cast<std::uint32_t>(id));
  return Key{h.finish()};
}

TEST(PageKeys, KnownAnswers) {
  EXPECT_EQ(hex_of(keys_of(test_identity(), "tenant-a", tenant_a_tokens(), 16)), kKnownTenantA);
  EXPECT_EQ(hex_of(keys_of(test_identity(), "", {7, 0, 128255, 42, 5}, 1)), kKnownNoSaltPage1);
}

TEST(PageKeys, EveryHasherGivesTheKnownChain) {
  const std::vector<std::int32_t> tokens = tenant_a_tokens();
  const std::vector<Key> keys = keys_of(test_identity(), "tenant-a", tokens, 16);
  ASSERT_EQ(keys.size(), 4u);
  for (PageKeyHasher h : available_hashers()) {
    Key k = keys[0];
    for (std::size_t i = 1; i < keys.size(); ++i) {
      k = next_page_key(h, k, std::span(tokens).subspan(16 * i, 16));
      EXPECT_EQ(k.hex(), kKnownTenantA[i]) << page_key_hasher_name(h) << " page " << i;
    }
  }
}

// Every hasher against OpenSSL's EVP SHA-256 over random keys and page sizes 0..80 tokens: the
// message lengths cover every residue mod 64 that a 32-byte key plus u32 ids can have, so every
// padding case (length field in the same block or the next) and multi-block pages are exercised;
// the ids start at arbitrary (unaligned to 16) addresses.
TEST(PageKeys, HashersAgreeWithEvpOnRandomInputs) {
  std::mt19937_64 rng(1);
  const std::vector<std::int32_t> pool = random_tokens(rng, 4096);
  for (int trial = 0; trial < 20000; ++trial) {
    const Key prev = random_key(rng);
    const std::size_t n = trial % 81;
    const std::size_t offset = rng() % (pool.size() - n);
    const auto ids = std::span(pool).subspan(offset, n);
    const Key want = reference_next(prev, ids);
    for (PageKeyHasher h : available_hashers()) {
      ASSERT_EQ(next_page_key(h, prev, ids), want)
          << page_key_hasher_name(h) << " trial " << trial << " ids " << n;
    }
  }
}

TEST(PageKeys, ComputeMatchesTheEncodingOnRandomInputs) {
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 300; ++trial) {
    const auto page = static_cast<std::int32_t>(1 + rng() % 40);
    const std::vector<std::int32_t> tokens = random_tokens(rng, rng() % 400);
    std::string salt(rng() % 70, '\0');
    for (char& c : salt)
      c = static_cast<char>(rng());
    Digest identity;
    for (auto& b : identity)
      b = static_cast<std::uint8_t>(rng());

    const std::vector<Key> got = keys_of(identity, salt, tokens, page);
    ASSERT_EQ(got.size(), tokens.size() / static_cast<std::size_t>(page));
    const auto pages = std::span(tokens);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const auto ids = pages.subspan(i * page, page);
      const Key want =
          i == 0 ? reference_first(identity, salt, page, ids) : reference_next(got[i - 1], ids);
      ASSERT_EQ(got[i], want) << "trial " << trial << " page " << i;
    }
  }
}

TEST(PageKeys, SaltIsLengthPrefixed) {
  // Without the length prefix, "ab" followed by tokens and "a" followed by 'b'-led bytes could
  // encode alike; with it they never do.
  const std::vector<std::int32_t> tokens = tenant_a_tokens();
  const std::vector<Key> ab = keys_of(test_identity(), "ab", tokens, 16);
  const std::vector<Key> a = keys_of(test_identity(), "a", tokens, 16);
  std::vector<std::int32_t> shifted = tokens;
  shifted[0] = 'b';
  const std::vector<Key> a_b = keys_of(test_identity(), "a", shifted, 16);
  for (std::size_t i = 0; i < ab.size(); ++i) {
    EXPECT_NE(ab[i], a[i]) << i;
    EXPECT_NE(ab[i], a_b[i]) << i;
  }
}

TEST(PageKeys, KeysDependOnIdentitySaltAndPageSize) {
  const std::vector<std::int32_t> tokens = tenant_a_tokens();
  const std::vector<Key> base = keys_of(test_identity(), "tenant-a", tokens, 16);

  Digest other_identity = test_identity();
  other_identity[31] ^= 1;
  const std::vector<Key> by_identity = keys_of(other_identity, "tenant-a", tokens, 16);
  const std::vector<Key> by_salt = keys_of(test_identity(), "tenant-b", tokens, 16);
  for (std::size_t i = 0; i < base.size(); ++i) {
    EXPECT_NE(base[i], by_identity[i]) << i;
    EXPECT_NE(base[i], by_salt[i]) << i;
  }
  // The same 32 tokens as one page of 32 or two pages of 16 are different prefixes' keys.
  const std::vector<Key> page32 = keys_of(test_identity(), "tenant-a", tokens, 32);
  const std::vector<Key> page8 = keys_of(test_identity(), "tenant-a", tokens, 8);
  EXPECT_NE(page32[0], base[1]);
  EXPECT_NE(page8[1], base[0]);
}

TEST(PageKeys, AKeyNamesItsWholePrefix) {
  const std::vector<std::int32_t> tokens = tenant_a_tokens();  // 4 full pages of 16, then 8 more
  const std::vector<Key> base = keys_of(test_identity(), "tenant-a", tokens, 16);
  ASSERT_EQ(base.size(), 4u);
  for (std::size_t pos = 0; pos < 64; ++pos) {
    std::vector<std::int32_t> changed = tokens;
    changed[pos] += 1;
    const std::vector<Key> keys = keys_of(test_identity(), "tenant-a", changed, 16);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (i < pos / 16) {
        EXPECT_EQ(keys[i], base[i]) << "token " << pos << " key " << i;
      } else {
        EXPECT_NE(keys[i], base[i]) << "token " << pos << " key " << i;
      }
    }
  }
  // Tokens of the partial page change nothing.
  std::vector<std::int32_t> tail_changed = tokens;
  tail_changed[70] += 1;
  EXPECT_EQ(keys_of(test_identity(), "tenant-a", tail_changed, 16), base);
}

TEST(PageKeys, OnlyFullPagesGetKeys) {
  const std::vector<std::int32_t> tokens = tenant_a_tokens();
  const std::vector<Key> base = keys_of(test_identity(), "tenant-a", tokens, 16);
  for (std::size_t n : {0, 1, 15, 16, 17, 31, 32, 63, 64, 72}) {
    const std::vector<std::int32_t> prefix(tokens.begin(), tokens.begin() + n);
    const std::vector<Key> keys = keys_of(test_identity(), "tenant-a", prefix, 16);
    ASSERT_EQ(keys.size(), n / 16) << n;
    for (std::size_t i = 0; i < keys.size(); ++i)
      EXPECT_EQ(keys[i], base[i]) << n;
  }
}

TEST(PageKeys, NextPageKeyContinuesTheChain) {
  std::mt19937_64 rng(3);
  const std::vector<std::int32_t> tokens = random_tokens(rng, 16 * 9);
  const std::vector<Key> all = keys_of(test_identity(), "t", tokens, 16);
  const std::vector<std::int32_t> first(tokens.begin(), tokens.begin() + 16);
  Key k = keys_of(test_identity(), "t", first, 16).at(0);
  for (std::size_t i = 1; i < all.size(); ++i) {
    k = next_page_key(k, std::span(tokens).subspan(16 * i, 16));
    EXPECT_EQ(k, all[i]) << i;
  }
}

TEST(PageKeys, BadInputIsInvalidArgumentAndLeavesOutEmpty) {
  std::vector<Key> out(3);
  const std::vector<std::int32_t> tokens = {1, 2, 3, -4, 5, 6};
  for (std::int32_t page : {0, -1}) {
    const Status s = compute_page_keys(test_identity(), "", tokens, page, out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("page_tokens"), std::string::npos) << s.message();
    EXPECT_TRUE(out.empty());
  }
  out.resize(3);
  const Status s = compute_page_keys(test_identity(), "", tokens, 2, out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("-4 at position 3"), std::string::npos) << s.message();
  EXPECT_TRUE(out.empty());
}

TEST(Key, HashIsTheFirstEightBytesLittleEndian) {
  Key k;
  for (std::size_t i = 0; i < k.bytes.size(); ++i)
    k.bytes[i] = static_cast<std::uint8_t>(i + 1);
  EXPECT_EQ(k.hash(), 0x0807060504030201ull);
  EXPECT_EQ(k.hex(), "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");
}

// ---- KeyMap ----------------------------------------------------------------------------------

struct KeyHash {
  std::size_t operator()(const Key& k) const { return k.hash(); }
};

// A key whose hash is `h` and whose remaining bytes are random.
Key key_with_hash(std::mt19937_64& rng, std::uint64_t h) {
  Key k = random_key(rng);
  for (std::size_t i = 0; i < 8; ++i)
    k.bytes[i] = static_cast<std::uint8_t>(h >> (8 * i));
  return k;
}

// Keys that collide on purpose: many share a home slot at every capacity up to 2^16 (including
// the last slot, so runs wrap around the end of the table), some share the whole 64-bit hash, the
// rest are random.
std::vector<Key> colliding_key_pool(std::mt19937_64& rng, std::size_t n) {
  const std::uint64_t homes[] = {0x0000, 0xffff, 0x7ff3};
  const std::uint64_t shared_hash = rng();
  std::vector<Key> pool;
  for (std::size_t i = 0; i < n; ++i) {
    switch (i % 4) {
      case 0:
        pool.push_back(key_with_hash(rng, (rng() << 16) | homes[rng() % 3]));
        break;
      case 1:
        pool.push_back(key_with_hash(rng, shared_hash));
        break;
      default:
        pool.push_back(random_key(rng));
    }
  }
  return pool;
}

void expect_same_contents(const KeyMap<std::int32_t>& map,
                          const std::unordered_map<Key, std::int32_t, KeyHash>& want) {
  ASSERT_EQ(map.size(), want.size());
  std::size_t visited = 0;
  map.for_each([&](const Key& k, std::int32_t v) {
    ++visited;
    auto it = want.find(k);
    ASSERT_NE(it, want.end()) << k.hex();
    EXPECT_EQ(it->second, v);
  });
  EXPECT_EQ(visited, want.size());
}

// Mixed insert / find / erase against std::unordered_map, with growth from the smallest table
// and periodic clears.
void differential(KeyMap<std::int32_t> map, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::vector<Key> pool = colliding_key_pool(rng, 6000);
  std::unordered_map<Key, std::int32_t, KeyHash> want;
  for (int op = 0; op < 100000; ++op) {
    const Key& k = pool[rng() % pool.size()];
    const unsigned kind = rng() % 10;
    if (kind < 5) {
      const auto v = static_cast<std::int32_t>(rng());
      ASSERT_EQ(map.insert(k, v), want.emplace(k, v).second) << "op " << op;
    } else if (kind < 8) {
      const std::int32_t* got = map.find(k);
      auto it = want.find(k);
      ASSERT_EQ(got != nullptr, it != want.end()) << "op " << op;
      if (got != nullptr) {
        ASSERT_EQ(*got, it->second) << "op " << op;
      }
    } else {
      ASSERT_EQ(map.erase(k), want.erase(k) == 1) << "op " << op;
    }
    ASSERT_EQ(map.size(), want.size());
    ASSERT_LE(map.size() * 8, map.capacity() * 7);
    if (op % 10000 == 9999) expect_same_contents(map, want);
    if (op % 40000 == 39999) {
      map.clear();
      want.clear();
    }
  }
  expect_same_contents(map, want);
}

TEST(KeyMap, DifferentialAgainstUnorderedMap) {
  differential(KeyMap<std::int32_t>(), 11);
}

TEST(KeyMap, DifferentialPresized) {
  differential(KeyMap<std::int32_t>(5000), 12);
}

TEST(KeyMap, InsertFindEraseBasics) {
  std::mt19937_64 rng(4);
  const Key a = random_key(rng);
  const Key b = random_key(rng);
  KeyMap<std::int32_t> map;
  EXPECT_TRUE(map.empty());
  EXPECT_EQ(map.find(a), nullptr);
  EXPECT_TRUE(map.insert(a, 1));
  EXPECT_FALSE(map.insert(a, 2));  // present: unchanged
  ASSERT_NE(map.find(a), nullptr);
  EXPECT_EQ(*map.find(a), 1);
  *map.find(a) = 3;
  EXPECT_EQ(*std::as_const(map).find(a), 3);
  EXPECT_FALSE(map.erase(b));
  EXPECT_TRUE(map.erase(a));
  EXPECT_FALSE(map.erase(a));
  EXPECT_EQ(map.size(), 0u);
}

TEST(KeyMap, EraseShiftsBackAcrossTheTableEnd) {
  std::mt19937_64 rng(5);
  KeyMap<std::int32_t> map;  // 16 slots
  ASSERT_EQ(map.capacity(), 16u);
  // Five keys homed at the last slot occupy slots 15, 0, 1, 2, 3; one homed at slot 1 follows.
  std::vector<Key> keys;
  for (int i = 0; i < 5; ++i)
    keys.push_back(key_with_hash(rng, 15 + 16 * rng()));
  keys.push_back(key_with_hash(rng, 1 + 16 * rng()));
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(map.insert(keys[i], static_cast<std::int32_t>(i)));
  }
  for (std::size_t gone = 0; gone < keys.size(); ++gone) {
    ASSERT_TRUE(map.erase(keys[gone]));
    for (std::size_t i = gone + 1; i < keys.size(); ++i) {
      ASSERT_NE(map.find(keys[i]), nullptr) << "erased " << gone << ", lost " << i;
      EXPECT_EQ(*map.find(keys[i]), static_cast<std::int32_t>(i));
    }
  }
  EXPECT_TRUE(map.empty());
}

TEST(KeyMap, GrowsAtSevenEighthsAndPresizingAvoidsGrowth) {
  std::mt19937_64 rng(6);
  KeyMap<std::int32_t> grown;
  std::vector<Key> keys;
  for (int i = 0; i < 100000; ++i)
    keys.push_back(random_key(rng));
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(grown.insert(keys[i], static_cast<std::int32_t>(i)));
    ASSERT_LE(grown.size() * 8, grown.capacity() * 7);
  }
  EXPECT_EQ(grown.capacity(), 131072u);  // 100000 > 7/8 of 65536
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_NE(grown.find(keys[i]), nullptr);
    EXPECT_EQ(*grown.find(keys[i]), static_cast<std::int32_t>(i));
  }

  KeyMap<std::int32_t> presized(7168);  // exactly 7/8 of 8192
  EXPECT_EQ(presized.capacity(), 8192u);
  for (std::size_t i = 0; i < 7168; ++i)
    presized.insert(keys[i], 0);
  EXPECT_EQ(presized.capacity(), 8192u);
  presized.insert(keys[7168], 0);
  EXPECT_EQ(presized.capacity(), 16384u);
}

TEST(KeyMap, ClearKeepsCapacity) {
  std::mt19937_64 rng(7);
  KeyMap<std::int32_t> map(1000);
  const std::size_t capacity = map.capacity();
  std::vector<Key> keys;
  for (int i = 0; i < 1000; ++i) {
    keys.push_back(random_key(rng));
    map.insert(keys.back(), i);
  }
  map.clear();
  EXPECT_EQ(map.size(), 0u);
  EXPECT_EQ(map.capacity(), capacity);
  for (const Key& k : keys)
    EXPECT_EQ(map.find(k), nullptr);
  EXPECT_TRUE(map.insert(keys[0], 9));
  EXPECT_EQ(*map.find(keys[0]), 9);
}

}  // namespace
}  // namespace tierkv

#include "tiers/host/host_tier.h"

#include <gtest/gtest.h>

#include <cstring>

#include "backends.h"

namespace tierkv {
namespace {

using test::BackendTest;

Key key_of(int i) {
  Key k;
  k.bytes[0] = static_cast<std::uint8_t>(i);
  k.bytes[1] = static_cast<std::uint8_t>(i >> 8);
  k.bytes[9] = 0xa5;
  return k;
}

class HostTierTest : public BackendTest {
 protected:
  static constexpr std::size_t kChunk = 64 << 10;
  std::unique_ptr<HostTier> make(std::size_t budget) {
    auto t = HostTier::create(backend(), budget, kChunk);
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? std::move(t).value() : nullptr;
  }
  // Writes `i` into a fresh slot and publishes it.
  void put(HostTier& t, int i) {
    ASSERT_OK_AND_ASSIGN(HostTier::Pin pin, t.reserve(key_of(i)));
    std::memset(pin.data(), i, kChunk);
    t.commit(std::move(pin));
  }
};

TEST_P(HostTierTest, BudgetIsNeverExceeded) {
  auto t = make(3 * kChunk + kChunk / 2);
  EXPECT_EQ(t->stats().slots, 3);
  EXPECT_EQ(t->stats().allocated_bytes, 3 * kChunk);
  for (int i = 0; i < 10; ++i)
    put(*t, i);
  const HostTierStats s = t->stats();
  EXPECT_LE(s.allocated_bytes, s.budget_bytes);
  EXPECT_EQ(s.ready_slots, 3);
  EXPECT_EQ(s.evictions, 7u);
  for (int i = 0; i < 7; ++i)
    EXPECT_FALSE(t->contains(key_of(i))) << i;
  for (int i = 7; i < 10; ++i)
    EXPECT_TRUE(t->contains(key_of(i))) << i;
}

TEST_P(HostTierTest, ReservedChunksAreInvisibleUntilCommitted) {
  auto t = make(2 * kChunk);
  ASSERT_OK_AND_ASSIGN(HostTier::Pin w, t->reserve(key_of(1)));
  EXPECT_FALSE(t->contains(key_of(1)));
  EXPECT_FALSE(t->pin(key_of(1)));
  EXPECT_EQ(t->reserve(key_of(1)).status().code(), StatusCode::kAlreadyExists)
      << "one writer per chunk";
  std::memset(w.data(), 7, kChunk);
  t->commit(std::move(w));
  HostTier::Pin r = t->pin(key_of(1));
  ASSERT_TRUE(r);
  EXPECT_EQ(r.data()[kChunk - 1], 7);
  EXPECT_EQ(t->reserve(key_of(1)).status().code(), StatusCode::kAlreadyExists);
}

TEST_P(HostTierTest, DroppedReservationFreesItsSlot) {
  auto t = make(kChunk);
  {
    ASSERT_OK_AND_ASSIGN(HostTier::Pin w, t->reserve(key_of(1)));
  }  // never committed: the bytes are not trusted
  EXPECT_FALSE(t->contains(key_of(1)));
  EXPECT_EQ(t->stats().aborts, 1u);
  put(*t, 2);
  EXPECT_TRUE(t->contains(key_of(2)));
}

TEST_P(HostTierTest, PinnedChunksAreNotEvicted) {
  auto t = make(2 * kChunk);
  put(*t, 1);
  put(*t, 2);
  HostTier::Pin held = t->pin(key_of(1));  // also makes 1 the most recently used
  ASSERT_TRUE(held);
  put(*t, 3);  // evicts 2, the only unpinned one
  EXPECT_TRUE(t->contains(key_of(1)));
  EXPECT_FALSE(t->contains(key_of(2)));
  HostTier::Pin held3 = t->pin(key_of(3));
  const auto full = t->reserve(key_of(4));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(held.data()[0], 1) << "the pinned bytes are intact";
  EXPECT_FALSE(t->erase(key_of(1))) << "pinned";
  held.reset();
  EXPECT_TRUE(t->erase(key_of(1)));
  put(*t, 4);
  EXPECT_TRUE(t->contains(key_of(4)));
}

TEST_P(HostTierTest, LeastRecentlyUsedGoesFirst) {
  auto t = make(3 * kChunk);
  put(*t, 1);
  put(*t, 2);
  put(*t, 3);
  t->pin(key_of(1)).reset();  // 1 is now the most recent
  put(*t, 4);
  EXPECT_TRUE(t->contains(key_of(1)));
  EXPECT_FALSE(t->contains(key_of(2)));
}

TEST_P(HostTierTest, BudgetTooSmallIsAnError) {
  const auto t = HostTier::create(backend(), kChunk - 1, kChunk);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
}

TIERKV_INSTANTIATE_BACKENDS(HostTierTest);

}  // namespace
}  // namespace tierkv

#include "tierkv/page_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "backends.h"

namespace tierkv {
namespace {

using test::BackendTest;

Key key_of(int i) {
  Key k;
  for (int b = 0; b < 4; ++b)
    k.bytes[std::size_t(b)] = static_cast<std::uint8_t>(i >> (8 * b));
  k.bytes[31] = 0x5a;
  return k;
}

class PagePoolTest : public BackendTest {
 protected:
  std::unique_ptr<PagePool> make(std::int32_t pages, std::int32_t run = 4) {
    PagePoolOptions o;
    o.model = *model_preset("tiny");
    o.num_pages = pages;
    o.pages_per_run = run;
    auto p = PagePool::create(backend(), o);
    EXPECT_TRUE(p.ok()) << p.status().to_string();
    return p.ok() ? std::move(p).value() : nullptr;
  }
};

TEST_P(PagePoolTest, HandsOutWholeAlignedRunsFirst) {
  auto pool = make(32, 4);
  ASSERT_OK_AND_ASSIGN(auto a, pool->allocate(2));  // breaks one run
  ASSERT_OK_AND_ASSIGN(auto b, pool->allocate(8));  // two whole runs, contiguous and aligned
  ASSERT_EQ(b.size(), 8u);
  for (std::size_t i = 0; i < 8; i += 4) {
    EXPECT_EQ(b[i] % 4, 0);
    for (std::size_t j = 1; j < 4; ++j)
      EXPECT_EQ(b[i + j], b[i] + std::int32_t(j));
  }
  ASSERT_OK_AND_ASSIGN(auto c, pool->allocate(2));  // fills the broken run before breaking another
  EXPECT_EQ(c[0] / 4, a[0] / 4);
  std::set<std::int32_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  all.insert(c.begin(), c.end());
  EXPECT_EQ(all.size(), 12u) << "no page handed out twice";
  EXPECT_EQ(pool->stats().referenced_pages, 12);
}

TEST_P(PagePoolTest, CachedPagesAreReusedWithoutCopy) {
  auto pool = make(16);
  ASSERT_OK_AND_ASSIGN(auto pages, pool->allocate(3));
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(pool->publish(pages[std::size_t(i)], key_of(i)));
  EXPECT_FALSE(pool->publish(pages[0], key_of(7))) << "a page is named once";
  EXPECT_OK(pool->release(pages));
  const std::vector<Key> keys = {key_of(0), key_of(1), key_of(2), key_of(3)};
  EXPECT_EQ(pool->count_cached(keys), 3);
  EXPECT_EQ(pool->stats().cached_pages, 3);
  const auto hit = pool->acquire_cached(keys);
  EXPECT_EQ(hit, pages) << "the same pages come back";
  EXPECT_EQ(pool->stats().referenced_pages, 3);
  EXPECT_OK(pool->release(hit));
}

TEST_P(PagePoolTest, PrefixStopsAtTheFirstMiss) {
  auto pool = make(16);
  ASSERT_OK_AND_ASSIGN(auto pages, pool->allocate(3));
  EXPECT_TRUE(pool->publish(pages[0], key_of(0)));
  EXPECT_TRUE(pool->publish(pages[2], key_of(2)));
  const std::vector<Key> keys = {key_of(0), key_of(1), key_of(2)};
  EXPECT_EQ(pool->count_cached(keys), 1);
  EXPECT_OK(pool->release(pages));
}

TEST_P(PagePoolTest, EvictsOnlyUnreferencedPagesTailFirst) {
  auto pool = make(8, 4);
  ASSERT_OK_AND_ASSIGN(auto seq, pool->allocate(4));
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(pool->publish(seq[std::size_t(i)], key_of(i)));
  ASSERT_OK(pool->release(seq));  // cached; tail released first, so it is evicted first
  ASSERT_OK_AND_ASSIGN(auto held, pool->allocate(4));  // the free run
  ASSERT_OK_AND_ASSIGN(auto more, pool->allocate(2));  // must evict two cached pages
  const std::vector<Key> keys = {key_of(0), key_of(1), key_of(2), key_of(3)};
  EXPECT_EQ(pool->count_cached(keys), 2) << "the sequence's head survives";
  EXPECT_EQ(pool->stats().evicted_pages, 2u);
  // Everything is referenced or cached-and-needed: asking for more than evictable fails cleanly.
  const auto too_many = pool->allocate(3);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->count_cached(keys), 2) << "a failed allocation changes nothing";
  EXPECT_OK(pool->release(held));
  EXPECT_OK(pool->release(more));
}

TEST_P(PagePoolTest, ViewCoversTheStorage) {
  auto pool = make(8);
  const PagedKvView v = pool->view();
  const ModelSpec m = *model_preset("tiny");
  EXPECT_EQ(v.num_layers(), m.num_layers);
  EXPECT_EQ(v.num_kv_heads, m.num_kv_heads);
  EXPECT_EQ(v.strides.page, std::int64_t(m.page_tokens) * m.num_kv_heads * m.head_dim);
  for (std::int32_t l = 0; l < v.num_layers(); ++l) {
    EXPECT_NE(v.k_layers[std::size_t(l)], nullptr);
    EXPECT_NE(v.k_layers[std::size_t(l)], v.v_layers[std::size_t(l)]);
  }
}

TEST_P(PagePoolTest, RejectsBadOptions) {
  PagePoolOptions o;
  o.model = *model_preset("tiny");
  o.num_pages = 0;
  EXPECT_EQ(PagePool::create(backend(), o).status().code(), StatusCode::kInvalidArgument);
  o.num_pages = 4;
  o.model.num_layers = 0;
  EXPECT_EQ(PagePool::create(backend(), o).status().code(), StatusCode::kInvalidArgument);
}

TIERKV_INSTANTIATE_BACKENDS(PagePoolTest);

}  // namespace
}  // namespace tierkv

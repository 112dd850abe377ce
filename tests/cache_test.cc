// The cache's scenarios on every backend: save -> evict from the GPU -> match -> load gives the
// same bytes back; tenants and identities never cross; budgets hold; pins protect reads; a load
// that loses a chunk says which tokens are missing; all of it from several threads at once.
//
// Every page's KV is a pure function of its page key and layer (written with fill_uniform), so
// any page can be checked anywhere without keeping a copy: the key names the whole prefix, and a
// correct cache returns exactly that content.
#include "tierkv/cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "backends.h"
#include "cache_harness.h"

namespace tierkv {
namespace {

using test::BackendTest;
using test::CacheHarness;
using test::random_tokens;

constexpr std::int32_t kChunk = CacheHarness::kChunk;

class CacheTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    h_ = std::make_unique<CacheHarness>(backend());
    model_ = h_->model();
    pool_ = &h_->pool();
  }

  void TearDown() override {
    h_.reset();  // the pool goes before the backend that owns its memory
    BackendTest::TearDown();
  }

  std::unique_ptr<Cache> make_cache(std::int32_t host_chunks,
                                    TransferMode mode = TransferMode::kAuto,
                                    const ModelSpec* model = nullptr,
                                    KvLayout layout = KvLayout::kNHD,
                                    PagePool* gpu_pool = nullptr) {
    CacheOptions o = h_->options(host_chunks, mode);
    if (model != nullptr) o.model = *model;
    o.page_layout = layout;
    o.gpu_pool = gpu_pool;
    auto c = Cache::create(backend(), o);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? std::move(c).value() : nullptr;
  }

  std::size_t chunk_bytes() const { return h_->chunk_bytes(); }
  void write_kv(Stream& s, const PromptKeys& keys, std::span<const std::int32_t> pages,
                std::size_t n) {
    h_->write_kv(s, keys, pages, n);
  }
  void clobber(Stream& s, std::span<const std::int32_t> pages) { h_->clobber(s, pages); }
  std::size_t wrong_elements(Stream& s, const PromptKeys& keys, std::span<const std::int32_t> pages,
                             std::size_t first, std::size_t n) {
    return h_->wrong_elements(s, keys, pages.subspan(first), first, n);
  }
  LoadRequest load_request(const PromptKeys& keys, std::int32_t first, std::int32_t num,
                           std::span<const std::int32_t> pages) {
    return h_->load_request(keys, first, num, pages);
  }
  SaveRequest save_request(const PromptKeys& keys, std::span<const std::int32_t> pages,
                           Stream& producer) {
    return h_->save_request(keys, pages, producer);
  }
  PromptKeys save_prompt(Cache& cache, std::mt19937_64& rng, std::int32_t chunks,
                         std::string_view salt = "") {
    return h_->save_prompt(cache, stream(), rng, chunks, salt);
  }

  std::unique_ptr<CacheHarness> h_;
  ModelSpec model_;
  PagePool* pool_ = nullptr;
};

TEST_P(CacheTest, SaveEvictMatchLoadGivesTheSameBytes) {
  for (TransferMode mode :
       {TransferMode::kAuto, TransferMode::kCopyEngine, TransferMode::kSmKernel}) {
    SCOPED_TRACE(static_cast<int>(mode));
    auto cache = make_cache(16, mode);
    std::mt19937_64 rng(std::random_device{}());
    const auto tokens = random_tokens(4 * kChunk + 44, rng);  // 4 full chunks and a partial one
    ASSERT_OK_AND_ASSIGN(const PromptKeys keys, cache->keys(tokens, "tenant"));
    ASSERT_EQ(keys.full_chunks(), 4);
    ASSERT_OK_AND_ASSIGN(auto pages, pool_->allocate(std::int32_t(keys.pages.size()) + 1));
    write_kv(stream(), keys, pages, keys.pages.size());
    ASSERT_OK_AND_ASSIGN(Save save, cache->save(save_request(keys, pages, stream())));
    EXPECT_EQ(save.queued_chunks(), 4);
    ASSERT_OK(save.wait());
    clobber(stream(), pages);  // the GPU copy is gone
    ASSERT_OK(stream().synchronize());
    EXPECT_OK(pool_->release(pages));

    ASSERT_OK_AND_ASSIGN(const MatchResult m, cache->match(keys));
    EXPECT_EQ(m.host_tokens, 4 * kChunk);
    ASSERT_OK_AND_ASSIGN(auto odd, pool_->allocate(1));  // make the new pages start off-run
    ASSERT_OK_AND_ASSIGN(auto fresh, pool_->allocate(4 * kChunk / model_.page_tokens));
    ASSERT_OK_AND_ASSIGN(Load load, cache->load(load_request(keys, 0, m.host_tokens, fresh)));
    EXPECT_EQ(load.loaded_tokens(), 4 * kChunk);
    ASSERT_OK_AND_ASSIGN(auto compute, backend().create_stream());
    for (std::int32_t l = 0; l < model_.num_layers; ++l)
      ASSERT_OK(load.wait_layer(l, *compute));
    ASSERT_OK(compute->synchronize());
    EXPECT_EQ(wrong_elements(*compute, keys, fresh, 0, fresh.size()), 0u);
    ASSERT_OK(load.wait());
    EXPECT_OK(pool_->release(fresh));
    EXPECT_OK(pool_->release(odd));
    const CacheStats st = cache->stats();
    EXPECT_EQ(st.saved_chunks, 4u);
    EXPECT_EQ(st.loaded_tokens, std::uint64_t(4 * kChunk));
    if (mode == TransferMode::kSmKernel) {
      EXPECT_GT(st.sm_kernel_transfers, 0u);
    } else if (mode == TransferMode::kCopyEngine) {
      EXPECT_EQ(st.sm_kernel_transfers, 0u);
    }
  }
}

// The usage example at the top of tierkv/cache.h, step for step, with the GPU pool holding a prefix
// that ends inside a chunk (5 pages: 80 tokens of chunks of 64): the load starts mid-chunk.
TEST_P(CacheTest, TheHeaderUsageExampleWorksAsWritten) {
  auto cache = make_cache(8, TransferMode::kAuto, nullptr, KvLayout::kNHD, pool_);
  std::mt19937_64 rng(std::random_device{}());
  const auto tokens = random_tokens(3 * kChunk + 10, rng);
  const std::string tenant = "tenant-7";
  {  // An earlier request computed the prompt, saved its chunks and left 5 pages in the pool.
    ASSERT_OK_AND_ASSIGN(const PromptKeys k, cache->keys(tokens, {.salt = tenant}));
    ASSERT_OK_AND_ASSIGN(auto pages, pool_->allocate(std::int32_t(k.pages.size())));
    write_kv(stream(), k, pages, k.pages.size());
    ASSERT_OK_AND_ASSIGN(Save s, cache->save(save_request(k, pages, stream())));
    ASSERT_OK(s.wait());
    ASSERT_OK(stream().synchronize());
    for (std::size_t i = 0; i < 5; ++i)
      ASSERT_TRUE(pool_->publish(pages[i], k.pages[i]));
    ASSERT_OK(pool_->release(pages));
  }
  // The example, as written.
  auto keys = cache->keys(tokens, {.salt = tenant});
  ASSERT_TRUE(keys.ok());
  auto m = cache->match(*keys);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->gpu_tokens, 5 * model_.page_tokens);
  ASSERT_EQ(m->host_tokens, 3 * kChunk);
  std::vector<std::int32_t> resident = pool_->acquire_cached(keys->pages);
  resident.resize(std::size_t(m->gpu_tokens / model_.page_tokens));
  ASSERT_OK_AND_ASSIGN(auto pages,
                       pool_->allocate((m->host_tokens - m->gpu_tokens) / model_.page_tokens));
  const PagedKvView view = pool_->view();
  auto load = cache->load({&*keys, m->gpu_tokens, m->host_tokens - m->gpu_tokens, view, pages});
  ASSERT_TRUE(load.ok()) << load.status().to_string();
  ASSERT_OK_AND_ASSIGN(auto compute_stream, backend().create_stream());
  for (std::int32_t l = 0; l < model_.num_layers; ++l)
    ASSERT_OK(load->wait_layer(l, *compute_stream));
  ASSERT_OK(compute_stream->synchronize());
  EXPECT_EQ(load->first_token() + load->loaded_tokens(), 3 * kChunk);
  // Every page of the prompt's full chunks now holds its KV: the resident ones and the loaded.
  EXPECT_EQ(h_->wrong_elements(*compute_stream, *keys, resident, 0, resident.size()), 0u);
  EXPECT_EQ(h_->wrong_elements(*compute_stream, *keys, pages, resident.size(), pages.size()), 0u);
  ASSERT_OK(load->wait());
  ASSERT_OK(pool_->release(pages));
  ASSERT_OK(pool_->release(resident));
}

TEST_P(CacheTest, IdentitiesNeverCross) {
  // Same tokens, same salt, other model revision or page layout: other keys.
  std::vector<std::int32_t> tokens(2 * kChunk);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = std::int32_t(i * 7 % 512);
  ModelSpec rev = model_;
  rev.identity.revision = "other-weights";
  auto base = make_cache(2);
  auto other_rev = make_cache(2, TransferMode::kAuto, &rev);
  auto other_layout = make_cache(2, TransferMode::kAuto, nullptr, KvLayout::kHND);
  const Key k0 = base->keys(tokens, "s")->pages.back();
  EXPECT_NE(other_rev->keys(tokens, "s")->pages.back(), k0);
  EXPECT_NE(other_layout->keys(tokens, "s")->pages.back(), k0);
  EXPECT_NE(base->keys(tokens, "t")->pages.back(), k0);
  EXPECT_NE(base->identity(), other_rev->identity());
}

TEST_P(CacheTest, OtherTenantsSeeNothing) {
  auto cache = make_cache(8);
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::int32_t> tokens = random_tokens(2 * kChunk, rng);
  ASSERT_OK_AND_ASSIGN(const PromptKeys mine, cache->keys(tokens, "tenant-a"));
  ASSERT_OK_AND_ASSIGN(auto pages, pool_->allocate(std::int32_t(mine.pages.size())));
  write_kv(stream(), mine, pages, mine.pages.size());
  ASSERT_OK_AND_ASSIGN(Save save, cache->save(save_request(mine, pages, stream())));
  ASSERT_OK(save.wait());
  EXPECT_OK(pool_->release(pages));
  EXPECT_EQ(cache->match(mine)->host_tokens, 2 * kChunk);
  for (std::string_view salt : {"tenant-b", "", "tenant-"}) {
    ASSERT_OK_AND_ASSIGN(const PromptKeys theirs, cache->keys(tokens, salt));
    EXPECT_EQ(cache->match(theirs)->host_tokens, 0) << "salt '" << salt << "'";
  }
}

TEST_P(CacheTest, HostBudgetHoldsUnderPressure) {
  auto cache = make_cache(3);
  std::mt19937_64 rng(std::random_device{}());
  std::vector<PromptKeys> saved;
  for (int i = 0; i < 6; ++i)
    saved.push_back(save_prompt(*cache, rng, 1));
  const CacheStats st = cache->stats();
  EXPECT_LE(st.host_allocated_bytes, st.host_budget_bytes);
  EXPECT_EQ(st.host_ready_slots, 3);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(cache->match(saved[std::size_t(i)])->host_tokens, i < 3 ? 0 : kChunk) << i;
}

TEST_P(CacheTest, PinnedChunksSurviveEvictionPressure) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(std::random_device{}());
  const PromptKeys a = save_prompt(*cache, rng, 4);
  ASSERT_OK_AND_ASSIGN(auto dst, pool_->allocate(16));
  {
    ASSERT_OK_AND_ASSIGN(Load load, cache->load(load_request(a, 0, 4 * kChunk, dst)));
    // While the load holds its pins, a save that needs those slots finds none.
    const auto tokens = random_tokens(4 * kChunk, rng);
    ASSERT_OK_AND_ASSIGN(const PromptKeys b, cache->keys(tokens, ""));
    ASSERT_OK_AND_ASSIGN(auto bp, pool_->allocate(16));
    write_kv(stream(), b, bp, b.pages.size());
    ASSERT_OK_AND_ASSIGN(Save save, cache->save(save_request(b, bp, stream())));
    EXPECT_EQ(save.dropped_chunks(), 4);
    ASSERT_OK(save.wait());
    ASSERT_OK(load.wait());
    ASSERT_OK(stream().synchronize());  // our writes to bp are over before bp goes back
    EXPECT_OK(pool_->release(bp));
    EXPECT_EQ(cache->match(a)->host_tokens, 4 * kChunk);
  }
  EXPECT_EQ(wrong_elements(stream(), a, dst, 0, 16), 0u);
  EXPECT_OK(pool_->release(dst));
  save_prompt(*cache, rng, 4);  // unpinned now: evictable
  EXPECT_EQ(cache->match(a)->host_tokens, 0);
}

TEST_P(CacheTest, LoadThatLosesChunksSaysWhichTokensAreMissing) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(std::random_device{}());
  const PromptKeys a = save_prompt(*cache, rng, 4);
  ASSERT_EQ(cache->match(a)->host_tokens, 4 * kChunk);
  ASSERT_OK_AND_ASSIGN(auto dst, pool_->allocate(16));
  {
    ASSERT_OK_AND_ASSIGN(
        Load warm, cache->load(load_request(a, 0, 2 * kChunk, dst)));  // chunks 0, 1 now recent
  }
  save_prompt(*cache, rng, 2);  // evicts chunks 2 and 3 of `a`
  ASSERT_OK_AND_ASSIGN(Load load, cache->load(load_request(a, 0, 4 * kChunk, dst)));
  EXPECT_EQ(load.requested_tokens(), 4 * kChunk);
  EXPECT_EQ(load.loaded_tokens(), 2 * kChunk) << "tokens [128, 256) must be recomputed";
  ASSERT_OK(load.wait());
  EXPECT_EQ(wrong_elements(stream(), a, dst, 0, 8), 0u);
  EXPECT_OK(pool_->release(dst));
  EXPECT_EQ(cache->stats().missing_tokens, std::uint64_t(2 * kChunk));
}

// Two requests returning to one prefix at once: the second load copies the chunks the first is
// still bringing in from its GPU pages (device to device) instead of over PCIe again, from a chunk
// boundary or from inside a chunk, and every byte is the prefix's. Once the first Load is done, a
// third load goes to the host tier again.
TEST_P(CacheTest, LoadsInFlightShareTheirChunks) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto cache = make_cache(8);
  std::mt19937_64 rng(seed);
  const PromptKeys a = save_prompt(*cache, rng, 4);
  const std::int32_t pages_per_chunk = kChunk / model_.page_tokens;
  ASSERT_OK_AND_ASSIGN(auto first_pages, pool_->allocate(4 * pages_per_chunk));
  ASSERT_OK_AND_ASSIGN(auto second_pages, pool_->allocate(4 * pages_per_chunk));
  ASSERT_OK_AND_ASSIGN(auto third_pages, pool_->allocate(4 * pages_per_chunk - 1));
  ASSERT_OK_AND_ASSIGN(auto compute, backend().create_stream());
  const std::uint64_t all = 4 * std::uint64_t(kChunk) * model_.kv_bytes_per_token();
  {
    ASSERT_OK_AND_ASSIGN(Load first, cache->load(load_request(a, 0, 4 * kChunk, first_pages)));
    EXPECT_EQ(first.shared_tokens(), 0);
    ASSERT_OK_AND_ASSIGN(Load second, cache->load(load_request(a, 0, 4 * kChunk, second_pages)));
    EXPECT_EQ(second.loaded_tokens(), 4 * kChunk);
    EXPECT_EQ(second.shared_tokens(), 4 * kChunk);
    // From the second page on: the first chunk is entered mid-way.
    const std::int32_t from = model_.page_tokens;
    ASSERT_OK_AND_ASSIGN(Load third,
                         cache->load(load_request(a, from, 4 * kChunk - from, third_pages)));
    EXPECT_EQ(third.shared_tokens(), 4 * kChunk - from);
    EXPECT_EQ(cache->stats().bytes_loaded, all) << "the prefix crossed PCIe once";
    EXPECT_EQ(cache->stats().shared_chunks, 8u);
    for (std::int32_t l = 0; l < model_.num_layers; ++l) {
      ASSERT_OK(second.wait_layer(l, *compute));
      ASSERT_OK(third.wait_layer(l, *compute));
    }
    ASSERT_OK(compute->synchronize());
    EXPECT_EQ(wrong_elements(*compute, a, second_pages, 0, second_pages.size()), 0u);
    EXPECT_EQ(h_->wrong_elements(*compute, a, third_pages, 1, third_pages.size()), 0u);
    ASSERT_OK(first.wait());  // withdraws its offer
    ASSERT_OK(second.wait());
    ASSERT_OK(third.wait());
  }
  clobber(stream(), second_pages);
  ASSERT_OK(stream().synchronize());
  ASSERT_OK_AND_ASSIGN(Load again, cache->load(load_request(a, 0, 4 * kChunk, second_pages)));
  EXPECT_EQ(again.shared_tokens(), 0) << "nothing in flight to share";
  ASSERT_OK(again.wait());
  EXPECT_EQ(wrong_elements(stream(), a, second_pages, 0, second_pages.size()), 0u);
  EXPECT_EQ(cache->stats().bytes_loaded, 2 * all);
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  EXPECT_OK(pool_->release(first_pages));
  EXPECT_OK(pool_->release(second_pages));
  EXPECT_OK(pool_->release(third_pages));
}

// load_many: several prompts at once, a repeated one among them (shared within the call), each
// loaded exactly; a bad request anywhere fails the call before anything is queued.
TEST_P(CacheTest, LoadManyLoadsEveryRequest) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto cache = make_cache(8);
  std::mt19937_64 rng(seed);
  const PromptKeys a = save_prompt(*cache, rng, 2), b = save_prompt(*cache, rng, 3);
  const std::int32_t ppc = kChunk / model_.page_tokens;
  ASSERT_OK_AND_ASSIGN(auto pa, pool_->allocate(2 * ppc));
  ASSERT_OK_AND_ASSIGN(auto pb, pool_->allocate(3 * ppc));
  ASSERT_OK_AND_ASSIGN(auto pa2, pool_->allocate(2 * ppc));
  std::vector<LoadRequest> rs = {load_request(a, 0, 2 * kChunk, pa),
                                 load_request(b, 0, 3 * kChunk, pb),
                                 load_request(a, 0, 2 * kChunk, pa2)};
  const CacheStats before = cache->stats();
  auto bad = rs;
  bad[1].num_tokens = 4 * kChunk;  // past b's full chunks
  const Result<std::vector<Load>> refused = cache->load_many(bad);
  ASSERT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("request 1"), std::string::npos)
      << refused.status().to_string();
  EXPECT_EQ(cache->stats().loads, before.loads) << "a refused call queues nothing";
  ASSERT_OK_AND_ASSIGN(std::vector<Load> loads, cache->load_many(rs));
  ASSERT_EQ(loads.size(), 3u);
  EXPECT_EQ(loads[2].shared_tokens(), 2 * kChunk);
  for (Load& l : loads)
    ASSERT_OK(l.wait());
  EXPECT_EQ(wrong_elements(stream(), a, pa, 0, pa.size()), 0u);
  EXPECT_EQ(wrong_elements(stream(), b, pb, 0, pb.size()), 0u);
  EXPECT_EQ(wrong_elements(stream(), a, pa2, 0, pa2.size()), 0u);
  EXPECT_EQ(cache->stats().bytes_loaded - before.bytes_loaded,
            5 * std::uint64_t(kChunk) * model_.kv_bytes_per_token());
  ASSERT_OK_AND_ASSIGN(std::vector<Load> none, cache->load_many({}));
  EXPECT_TRUE(none.empty());
  EXPECT_OK(pool_->release(pa));
  EXPECT_OK(pool_->release(pb));
  EXPECT_OK(pool_->release(pa2));
}

TEST_P(CacheTest, ConcurrentMatchLoadSaveEvict) {
  auto cache = make_cache(10);
  constexpr int kThreads = 4;
  const int iterations = GetParam() == BackendKind::kCpu ? 12 : 25;
  // Prompts share prefixes: a few bases, each extended by random chunks.
  std::mt19937_64 base_rng(std::random_device{}());
  std::vector<std::vector<std::int32_t>> bases;
  for (int b = 0; b < 3; ++b)
    bases.push_back(random_tokens(2 * kChunk, base_rng));
  std::atomic<std::size_t> wrong{0}, verified{0};
  std::atomic<int> failures{0};
  auto worker = [&](unsigned seed) {
    std::mt19937_64 rng(seed);
    auto s = backend().create_stream();
    if (!s.ok()) return (void)++failures;
    Stream& st = **s;
    for (int it = 0; it < iterations; ++it) {
      std::vector<std::int32_t> tokens = bases[rng() % bases.size()];
      const auto tail = random_tokens(std::size_t(rng() % 3) * kChunk, rng);
      tokens.insert(tokens.end(), tail.begin(), tail.end());
      auto keys = cache->keys(tokens, "shared");
      auto src = pool_->allocate(std::int32_t(keys->pages.size()));
      auto dst = pool_->allocate(std::int32_t(keys->pages.size()));
      if (!keys.ok() || !src.ok() || !dst.ok()) return (void)++failures;
      auto matched = cache->match(*keys);
      if (!matched.ok()) return (void)++failures;
      const MatchResult m = *matched;
      if (m.host_tokens > 0) {  // load what is there and check every byte that arrives
        auto load = cache->load(load_request(*keys, 0, m.host_tokens, *dst));
        if (!load.ok() || !load->wait().ok()) return (void)++failures;
        const std::size_t pages = std::size_t(load->loaded_tokens() / model_.page_tokens);
        wrong += wrong_elements(st, *keys, *dst, 0, pages);
        verified += pages;
      }
      write_kv(st, *keys, *src, keys->pages.size());
      auto save = cache->save(save_request(*keys, *src, st));
      if (!save.ok()) return (void)++failures;
      if (rng() % 2 == 0 && !save->wait().ok()) return (void)++failures;
      if (!save->wait().ok()) return (void)++failures;
      // The pages go back to the pool: our own writes to them must be over too (a save that
      // found every chunk present never waited for them).
      if (!st.synchronize().ok()) return (void)++failures;
      EXPECT_OK(pool_->release(*src));
      EXPECT_OK(pool_->release(*dst));
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back(worker, 1000u + unsigned(t));
  for (auto& t : threads)
    t.join();
  ASSERT_OK(cache->flush());
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(wrong.load(), 0u) << "wrong KV served";
  EXPECT_GT(verified.load(), 0u) << "the scenario never hit the cache";
  const CacheStats st = cache->stats();
  EXPECT_LE(st.host_allocated_bytes, st.host_budget_bytes);
  EXPECT_EQ(st.host_pinned_slots, 0) << "every pin was released";
}

TEST_P(CacheTest, BadRequestsAreErrors) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(1);
  const auto tokens = random_tokens(2 * kChunk + 5, rng);
  ASSERT_OK_AND_ASSIGN(const PromptKeys keys, cache->keys(tokens, ""));
  ASSERT_OK_AND_ASSIGN(auto pages, pool_->allocate(8));
  const auto code = [&](const LoadRequest& r) { return cache->load(r).status().code(); };
  EXPECT_EQ(code(load_request(keys, 16, kChunk, pages)), StatusCode::kInvalidArgument)
      << "misaligned";
  EXPECT_EQ(code(load_request(keys, 0, 3 * kChunk, pages)), StatusCode::kInvalidArgument)
      << "past the prompt";
  EXPECT_EQ(code(load_request(keys, 0, 2 * kChunk, std::span(pages).first(3))),
            StatusCode::kInvalidArgument);
  LoadRequest wrong_view = load_request(keys, 0, kChunk, pages);
  wrong_view.dst.head_dim = 128;
  EXPECT_EQ(code(wrong_view), StatusCode::kInvalidArgument);
  LoadRequest other_layout = load_request(keys, 0, kChunk, pages);
  other_layout.dst.strides =
      packed_strides(KvLayout::kHND, model_.page_tokens, model_.num_kv_heads, model_.head_dim);
  EXPECT_EQ(code(other_layout), StatusCode::kInvalidArgument) << "in-page layout differs";
  EXPECT_EQ(code(LoadRequest{}), StatusCode::kInvalidArgument) << "no keys";
  LoadRequest negative_layers = load_request(keys, 0, kChunk, pages);
  negative_layers.queue_layers = -2;
  EXPECT_EQ(code(negative_layers), StatusCode::kInvalidArgument) << "queue_layers below -1";
  SaveRequest no_producer = save_request(keys, pages, stream());
  no_producer.producer = nullptr;
  EXPECT_EQ(cache->save(no_producer).status().code(), StatusCode::kInvalidArgument);
  const std::vector<std::int32_t> negative = {1, -2, 3};
  EXPECT_EQ(cache->keys(negative, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_OK(pool_->release(pages));

  CacheOptions o;
  o.model = model_;
  o.chunk_tokens = 24;  // not a multiple of 16
  EXPECT_EQ(Cache::create(backend(), o).status().code(), StatusCode::kInvalidArgument);
  o.chunk_tokens = kChunk;
  o.host_bytes = chunk_bytes() - 1;  // holds no chunk
  EXPECT_EQ(Cache::create(backend(), o).status().code(), StatusCode::kInvalidArgument);
}

TIERKV_INSTANTIATE_BACKENDS(CacheTest);

}  // namespace
}  // namespace tierkv

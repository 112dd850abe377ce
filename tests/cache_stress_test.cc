// The cache under concurrent save / match / load from several threads and tenants over a host
// budget of a few chunks, so that eviction, pins and slot reuse race all the time. Every byte of
// every load that reports success is checked against the KV its key names; a load may come up
// short or fail, never wrong. Loads queue all their layers up front or the later ones as they are
// waited for (or as another thread's load queues them first). A second run adds chaos: copies land
// late and random copies, records and waits fail, at queueing or after running. Each run is bounded
// in time and prints what it verified.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/fault/fault_backend.h"
#include "cache_harness.h"

namespace tierkv {
namespace {

using test::CacheHarness;
using test::random_tokens;

constexpr std::int32_t kChunk = CacheHarness::kChunk;
constexpr int kThreads = 4;
constexpr auto kDuration = std::chrono::seconds(4);

struct Tally {
  std::atomic<std::uint64_t> loads{0}, verified_loads{0}, failed_loads{0}, short_loads{0};
  std::atomic<std::uint64_t> saves{0}, failed_saves{0}, bytes_checked{0}, wrong_bytes{0};
  std::atomic<int> broken{0};  // an operation failed where nothing was injected
};

// One worker: prompts are shared prefixes (a few bases) plus random tails, under one of three
// tenants; loads start at any page of what is cached.
// `checker` is a backend without faults, for reading back what landed.
void work(CacheHarness& h, Backend& checker, Cache& cache, Tally& t, unsigned seed, bool chaos,
          std::chrono::steady_clock::time_point until) {
  std::mt19937_64 rng(seed);
  std::mt19937_64 base_rng(7);  // the same bases in every thread
  std::vector<std::vector<std::int32_t>> bases;
  for (int b = 0; b < 3; ++b)
    bases.push_back(random_tokens(2 * kChunk, base_rng));
  const std::string tenants[] = {"a", "b", "c"};
  auto s = h.backend().create_stream();
  auto compute = h.backend().create_stream();
  auto check = checker.create_stream();
  if (!s.ok() || !compute.ok() || !check.ok()) return (void)++t.broken;
  while (std::chrono::steady_clock::now() < until) {
    std::vector<std::int32_t> tokens = bases[rng() % bases.size()];
    const auto tail = random_tokens(std::size_t(rng() % (2 * kChunk)), rng);
    tokens.insert(tokens.end(), tail.begin(), tail.end());
    auto keys = cache.keys(tokens, tenants[rng() % 3]);
    if (!keys.ok()) return (void)++t.broken;
    const auto n = std::int32_t(keys->pages.size());
    auto src = h.pool().allocate(n);
    auto dst = h.pool().allocate(n);
    if (!src.ok() || !dst.ok()) return (void)++t.broken;
    auto m = cache.match(*keys);
    if (!m.ok()) return (void)++t.broken;
    if (m->host_tokens > 0) {
      const std::int32_t page = h.model().page_tokens;
      const std::int32_t first = std::int32_t(rng() % std::uint64_t(m->host_tokens / page)) * page;
      const auto dst_pages = std::span(*dst).subspan(std::size_t(first / page));
      LoadRequest lr = h.load_request(*keys, first, m->host_tokens - first, dst_pages);
      // All layers queued by load(), or the first ones and the rest by wait_layer(), wait(), or
      // another thread's next load().
      const std::int32_t queue_layers[] = {-1, 1, 2};
      lr.queue_layers = queue_layers[rng() % 3];
      auto load = cache.load(lr);
      ++t.loads;
      if (!load.ok()) {
        if (!chaos) return (void)++t.broken;
        ++t.failed_loads;
      } else {
        Status landed;
        if (rng() % 2 == 0) {  // as an engine does: the compute stream waits per layer
          for (std::int32_t l = 0; l < h.model().num_layers && landed.ok(); ++l)
            landed = load->wait_layer(l, **compute);
          if (landed.ok()) landed = (*compute)->synchronize();
          (*compute)->synchronize().ignore();
        }
        const Status waited = load->wait();
        if (landed.ok()) landed = waited;
        if (!landed.ok()) {
          if (!chaos) return (void)++t.broken;
          ++t.failed_loads;
        } else {
          const std::size_t pages = std::size_t(load->loaded_tokens() / page);
          if (load->loaded_tokens() < load->requested_tokens()) ++t.short_loads;
          t.wrong_bytes +=
              2 * h.wrong_elements(**check, *keys, dst_pages, std::size_t(first / page), pages);
          t.bytes_checked += h.page_bytes_checked(pages);
          ++t.verified_loads;
        }
      }
    }
    h.write_kv(**s, *keys, *src, keys->pages.size());
    auto save = cache.save(h.save_request(*keys, *src, **s));
    ++t.saves;
    const Status saved = save.ok() ? save->wait() : save.status();
    if (!saved.ok()) {
      if (!chaos) return (void)++t.broken;
      ++t.failed_saves;
    }
    (*s)->synchronize().ignore();  // our writes to src are over (or failed) before it goes back
    if (!h.pool().release(*src).ok() || !h.pool().release(*dst).ok()) return (void)++t.broken;
  }
}

void run(bool chaos) {
  auto inner = create_backend(BackendKind::kCpu);
  ASSERT_TRUE(inner.ok());
  fault::FaultBackend fb(**inner);
  CacheHarness h(fb, 1024, 4);    // 4 layers: loads queue some of them later
  CacheOptions o = h.options(6);  // a tiny budget: 6 chunks for many prompts
  std::atomic<int> reported{0};
  o.on_async_error = [&](const Status&) { ++reported; };
  auto cache = Cache::create(fb, o);
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  Tally t;
  const auto until = std::chrono::steady_clock::now() + kDuration;
  std::atomic<bool> stop{false};
  std::thread chaos_thread;
  if (chaos) {
    chaos_thread = std::thread([&] {
      std::mt19937_64 rng(99);
      while (!stop) {
        fault::FaultPlan plan;
        plan.copy_delay = std::chrono::microseconds(rng() % 800);
        switch (rng() % 5) {
          case 0:
            plan.fail_copy_async = 1 + rng() % 40;
            break;
          case 1:
            plan.fail_copy_at_enqueue = 1 + rng() % 40;
            break;
          case 2:
            plan.fail_record = 1 + rng() % 40;
            break;
          case 3:
            plan.fail_wait = 1 + rng() % 40;
            break;
          default:
            break;
        }
        EXPECT_OK(fb.set_plan(plan));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      fb.clear_plan();
    });
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back(work, std::ref(h), std::ref(**inner), std::ref(**cache), std::ref(t),
                         100u + unsigned(i), chaos, until);
  for (auto& th : threads)
    th.join();
  stop = true;
  if (chaos_thread.joinable()) chaos_thread.join();
  (*cache)->flush().ignore();
  const CacheStats st = (*cache)->stats();
  std::cout << "stress" << (chaos ? " (chaos)" : "") << ": " << t.loads << " loads, "
            << t.verified_loads << " verified (" << t.short_loads << " short), " << t.failed_loads
            << " failed; " << t.saves << " saves, " << t.failed_saves << " failed; "
            << t.bytes_checked << " bytes checked, " << t.wrong_bytes << " wrong bytes\n";
  EXPECT_EQ(t.broken.load(), 0) << "an operation failed with no fault injected";
  EXPECT_EQ(t.wrong_bytes.load(), 0u) << "wrong KV served";
  EXPECT_GT(t.verified_loads.load(), 20u) << "the scenario did not exercise loads";
  EXPECT_EQ(st.host_pinned_slots, 0) << "a pin outlived its load";
  EXPECT_LE(st.host_allocated_bytes, st.host_budget_bytes);
  if (!chaos) {
    EXPECT_EQ(reported.load(), 0);
    EXPECT_GT(st.missing_tokens + st.dropped_chunks, 0u) << "the budget never ran short";
  }
}

TEST(CacheStress, ConcurrentTenantsOverATinyBudget) {
  run(false);
}
TEST(CacheStress, ConcurrentTenantsUnderChaos) {
  run(true);
}

}  // namespace
}  // namespace tierkv

// Two caches (two engines) over the same two lower tiers -- a memory store with a small budget
// above a disk store -- with host budgets far smaller than the working set, so that chunks are
// evicted from the host tier, written down, promoted back and loaded all the time, from several
// threads and tenants at once. Every byte of every load is checked against the KV its key names;
// a promotion may stop early and a load may come up short, never wrong. A load of chunks its
// promotion holds must get all of them. The second run makes the memory tier misbehave (failed,
// corrupt, slow and refused reads, failed writes, failed contains). Each run is bounded in time
// and prints what it verified.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache_harness.h"
#include "store_checks.h"
#include "tierkv/disk_store.h"
#include "tiers/fault/fault_store.h"
#include "tiers/memory/memory_store.h"

namespace tierkv {
namespace {

using Clock = std::chrono::steady_clock;
using test::CacheHarness;
using test::random_tokens;

constexpr std::int32_t kChunk = CacheHarness::kChunk;
constexpr int kThreadsPerCache = 2;
constexpr auto kDuration = std::chrono::seconds(4);

struct Tally {
  std::atomic<std::uint64_t> loads{0}, verified_loads{0}, short_loads{0}, bytes_checked{0},
      wrong_bytes{0};
  std::atomic<std::uint64_t> promotions{0}, full_promotions{0}, partial_promotions{0},
      stopped_promotions{0};
  std::atomic<std::uint64_t> saves{0};
  std::atomic<int> broken{0};  // an operation failed that must not fail
};

void work(CacheHarness& h, Cache& cache, Tally& t, unsigned seed, Clock::time_point until) {
  std::mt19937_64 rng(seed);
  std::mt19937_64 base_rng(7);  // the same bases in every thread
  std::vector<std::vector<std::int32_t>> bases;
  for (int b = 0; b < 3; ++b)
    bases.push_back(random_tokens(2 * kChunk, base_rng));
  const std::string tenants[] = {"a", "b", "c"};
  const std::int32_t page = h.model().page_tokens;
  auto s = h.backend().create_stream();
  if (!s.ok()) return (void)++t.broken;
  while (Clock::now() < until) {
    std::vector<std::int32_t> tokens = bases[rng() % bases.size()];
    const auto tail = random_tokens(std::size_t(rng() % (2 * kChunk + 1)), rng);
    tokens.insert(tokens.end(), tail.begin(), tail.end());
    auto keys = cache.keys(tokens, tenants[rng() % 3]);
    if (!keys.ok()) return (void)++t.broken;
    const auto n = std::int32_t(keys->pages.size());
    auto src = h.pool().allocate(n);
    auto dst = h.pool().allocate(n);
    if (!src.ok() || !dst.ok()) return (void)++t.broken;
    auto m = cache.match(*keys);
    if (!m.ok()) return (void)++t.broken;
    if (m->lower_tokens > 0) {
      auto p = cache.promote(*keys, 0, m->lower_tokens);
      if (!p.ok()) return (void)++t.broken;
      ++t.promotions;
      const std::int32_t want = m->lower_tokens / kChunk;
      std::int32_t got = 0;
      if (rng() % 3 == 0) {  // as a planner with a deadline would
        got = p->wait_for(want, Clock::now() + std::chrono::microseconds(rng() % 3000));
      } else {
        if (!p->wait().ok()) ++t.stopped_promotions;
        got = p->promoted_chunks();
      }
      (got == want ? t.full_promotions : t.partial_promotions) += 1;
      if (got > 0) {
        const std::int32_t end = got * kChunk;
        const std::int32_t first = std::int32_t(rng() % std::uint64_t(end / page)) * page;
        const auto dst_pages = std::span(*dst).subspan(std::size_t(first / page));
        auto load = cache.load(h.load_request(*keys, first, end - first, dst_pages));
        ++t.loads;
        if (!load.ok() || !load->wait().ok()) return (void)++t.broken;
        if (load->loaded_tokens() != end - first) {
          ++t.short_loads;
          ++t.broken;  // the promotion pins these chunks: none may be missing
        }
        const std::size_t pages = std::size_t(load->loaded_tokens() / page);
        t.wrong_bytes +=
            2 * h.wrong_elements(**s, *keys, dst_pages, std::size_t(first / page), pages);
        t.bytes_checked += h.page_bytes_checked(pages);
        ++t.verified_loads;
      }
    }  // the promotion ends here and unpins
    h.write_kv(**s, *keys, *src, keys->pages.size());
    auto save = cache.save(h.save_request(*keys, *src, **s));
    ++t.saves;
    if (!save.ok() || !save->wait().ok()) return (void)++t.broken;
    (*s)->synchronize().ignore();
    if (!h.pool().release(*src).ok() || !h.pool().release(*dst).ok()) return (void)++t.broken;
  }
}

void run(bool chaos) {
  auto backend = create_backend(BackendKind::kCpu);
  ASSERT_TRUE(backend.ok());
  CacheHarness h(**backend, 2048);
  test::TempDir dir;
  auto mem = MemoryStore::create({.budget_bytes = 10 * (h.chunk_bytes() + 8192)});
  ASSERT_TRUE(mem.ok());
  std::shared_ptr<Store> memory(std::move(mem).value());
  auto faulty = std::make_shared<FaultStore>(
      std::make_unique<test::ForwardingStore>(memory));  // a FaultStore owns what it wraps
  auto disk = open_disk_store({.directory = dir.path(),
                               .budget_bytes = 40 * (h.chunk_bytes() + 8192),
                               .sync = DiskSync::kNone});
  ASSERT_TRUE(disk.ok()) << disk.status().to_string();
  const std::vector<std::shared_ptr<Store>> tiers = {
      faulty, std::shared_ptr<Store>(std::move(disk).value())};
  std::atomic<int> reported{0};
  std::vector<std::unique_ptr<Cache>> caches;
  for (int c = 0; c < 2; ++c) {
    CacheOptions o = h.options(8);  // 8 chunks: far less than the tenants' prompts
    o.transfer.calibrate = false;
    o.lower_tiers = tiers;
    o.write_down.queue_chunks = 4;
    o.write_down.persistent_admit_sightings = 2;
    o.on_async_error = [&](const Status&) { ++reported; };
    auto cache = Cache::create(**backend, o);
    ASSERT_TRUE(cache.ok()) << cache.status().to_string();
    caches.push_back(std::move(cache).value());
  }
  Tally t;
  const auto until = Clock::now() + kDuration;
  std::atomic<bool> stop{false};
  std::thread chaos_thread;
  if (chaos) {
    chaos_thread = std::thread([&] {
      std::mt19937_64 rng(98);
      while (!stop) {
        faulty->clear_rules();
        FaultRule r;
        r.first_call = faulty->calls(FaultOp::kRead) + 1 + rng() % 8;
        r.times = 1 + rng() % 4;
        switch (rng() % 6) {
          case 0:
            r.code = StatusCode::kIoError;
            break;
          case 1:
            r.kind = FaultKind::kCorrupt;
            break;
          case 2:
            r.code = StatusCode::kDeadlineExceeded;
            break;
          case 3:
            r.kind = FaultKind::kDelay;
            r.delay = std::chrono::microseconds(rng() % 3000);
            break;
          case 4:
            r.op = FaultOp::kWrite;
            r.first_call = faulty->calls(FaultOp::kWrite) + 1;
            r.code = StatusCode::kUnavailable;
            break;
          default:
            r.op = FaultOp::kContains;
            r.first_call = faulty->calls(FaultOp::kContains) + 1;
            r.code = StatusCode::kUnavailable;
            break;
        }
        EXPECT_OK(faulty->add_rule(r));
        std::this_thread::sleep_for(std::chrono::milliseconds(15));
      }
      faulty->clear_rules();
    });
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 2 * kThreadsPerCache; ++i)
    threads.emplace_back(work, std::ref(h), std::ref(*caches[std::size_t(i % 2)]), std::ref(t),
                         200u + unsigned(i), until);
  for (auto& th : threads)
    th.join();
  stop = true;
  if (chaos_thread.joinable()) chaos_thread.join();
  std::uint64_t promoted[2] = {0, 0}, dropped = 0, written = 0, not_admitted = 0, failures = 0;
  for (auto& cache : caches) {
    EXPECT_OK(cache->flush());
    const Status lower = cache->flush_lower_tiers();
    if (!chaos) EXPECT_OK(lower);
    const CacheStats st = cache->stats();
    EXPECT_EQ(st.host_pinned_slots, 0) << "a pin outlived its load or promotion";
    EXPECT_LE(st.host_allocated_bytes, st.host_budget_bytes);
    EXPECT_EQ(cache->queued_load_bytes(), 0u);
    for (std::size_t i = 0; i < 2; ++i) {
      promoted[i] += st.lower_tiers[i].promoted_chunks;
      dropped += st.lower_tiers[i].write_dropped;
      written += st.lower_tiers[i].written_chunks;
      not_admitted += st.lower_tiers[i].write_not_admitted;
      failures += st.lower_tiers[i].promote_failures;
    }
  }
  std::cout << "tiers stress" << (chaos ? " (chaos)" : "") << ": " << t.loads << " loads, "
            << t.verified_loads << " verified, " << t.bytes_checked << " bytes checked, "
            << t.wrong_bytes << " wrong bytes; " << t.promotions << " promotions ("
            << t.full_promotions << " full, " << t.partial_promotions << " partial, "
            << t.stopped_promotions << " stopped), promoted chunks memory " << promoted[0]
            << " disk " << promoted[1] << ", " << failures << " failed reads; " << t.saves
            << " saves, " << written << " chunks written down, " << dropped << " dropped, "
            << not_admitted << " not admitted\n";
  EXPECT_EQ(t.broken.load(), 0) << "an operation failed that must not";
  EXPECT_EQ(t.wrong_bytes.load(), 0u) << "wrong KV served";
  EXPECT_GT(t.verified_loads.load(), 20u) << "the scenario did not exercise loads";
  EXPECT_GT(promoted[0] + promoted[1], 0u) << "nothing was promoted";
  EXPECT_GT(written, 0u) << "nothing was written down";
  if (chaos) {
    EXPECT_GT(faulty->injected(), 0u);
  }
  caches.clear();
}

TEST(CacheTiersStress, TwoCachesOverSharedTiers) {
  run(false);
}
TEST(CacheTiersStress, TwoCachesOverAMisbehavingTier) {
  run(true);
}

}  // namespace
}  // namespace tierkv

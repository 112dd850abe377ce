// The cache over lower tiers (CacheOptions::lower_tiers): save -> evict from host -> match reports
// the lower tiers' tokens -> promote -> load gives exactly the saved bytes, over the memory store,
// the disk store and both; corruption, read, write and contains failures and timeouts of a tier
// turn into misses and stopped promotions, never wrong KV; a deadline against the throttled
// experiment tier; write-down queues that drop instead of blocking; admission by sightings; write
// amplification; promotions that outlive their cache; two caches sharing one store, and a disk
// directory reopened by a second cache as another engine process would.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "backend/fault/fault_backend.h"
#include "cache_harness.h"
#include "store_checks.h"
#include "tierkv/cache.h"
#include "tierkv/disk_store.h"
#include "tiers/disk/disk_files.h"
#include "tiers/fault/fault_store.h"
#include "tiers/memory/memory_store.h"

namespace tierkv {
namespace {

using Clock = std::chrono::steady_clock;
using test::CacheHarness;
using test::random_tokens;
using test::TempDir;

constexpr std::int32_t kChunk = CacheHarness::kChunk;

std::shared_ptr<MemoryStore> memory_store(const MemoryStoreOptions& o = {}) {
  auto s = MemoryStore::create(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::shared_ptr<MemoryStore>(std::move(s).value()) : nullptr;
}

std::shared_ptr<Store> disk_store(const std::string& dir) {
  DiskStoreOptions o;
  o.directory = dir;
  o.sync = DiskSync::kNone;  // the tests do not lose power
  auto s = open_disk_store(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::shared_ptr<Store>(std::move(s).value()) : nullptr;
}

// A store that forwards to a shared one, with writes that wait until open() is called (a tier that
// has stopped taking writes) unless it is made open.
class GatedStore final : public test::ForwardingStore {
 public:
  explicit GatedStore(std::shared_ptr<Store> inner, bool open = false)
      : ForwardingStore(std::move(inner)), open_(open) {}
  void open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  Status write(const RecordId& id, std::span<const std::uint8_t> p) override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return open_; });
    lock.unlock();
    return inner().write(id, p);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_;
};

// A store that forwards to another, counts the reads running at once (the most seen), holds every
// read for `hold` so that concurrent ones overlap, and fails the reads of one chunk key.
class WatchingStore final : public test::ForwardingStore {
 public:
  WatchingStore(std::shared_ptr<Store> inner, std::chrono::milliseconds hold)
      : ForwardingStore(std::move(inner)), hold_(hold) {}
  void fail_reads_of(const Key& k) {
    std::lock_guard lock(mu_);
    failing_ = k;
  }
  int most_at_once() const {
    std::lock_guard lock(mu_);
    return most_;
  }
  Status read(const RecordId& id, std::span<std::uint8_t> p) override {
    bool fail = false;
    {
      std::lock_guard lock(mu_);
      most_ = std::max(most_, ++now_);
      fail = failing_ && *failing_ == id.chunk_key;
    }
    std::this_thread::sleep_for(hold_);
    const Status r =
        fail ? io_error("watching store: this chunk's reads fail") : inner().read(id, p);
    std::lock_guard lock(mu_);
    --now_;
    return r;
  }

 private:
  const std::chrono::milliseconds hold_;
  mutable std::mutex mu_;
  int now_ = 0, most_ = 0;        // GUARDED_BY(mu_)
  std::optional<Key> failing_;  // GUARDED_BY(mu_)
};

// A fault-injecting store over a shared inner store.
std::shared_ptr<FaultStore> fault_store(std::shared_ptr<Store> inner) {
  return std::make_shared<FaultStore>(std::make_unique<GatedStore>(std::move(inner), true));
}

class CacheTiersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(backend_, create_backend(BackendKind::kCpu));
    h_ = std::make_unique<CacheHarness>(*backend_, 1024);
    ASSERT_OK_AND_ASSIGN(stream_, backend_->create_stream());
  }
  void TearDown() override {
    stream_.reset();
    h_.reset();
    backend_.reset();
  }

  CacheOptions options(std::int32_t host_chunks, std::vector<std::shared_ptr<Store>> tiers,
                       std::int32_t admit = 1) const {
    CacheOptions o = h_->options(host_chunks);
    o.transfer.calibrate = false;
    o.lower_tiers = std::move(tiers);
    o.write_down.persistent_admit_sightings = admit;
    return o;
  }
  std::unique_ptr<Cache> make(std::int32_t host_chunks, std::vector<std::shared_ptr<Store>> tiers,
                              std::int32_t admit = 1, std::int32_t readers = 2) {
    CacheOptions o = options(host_chunks, std::move(tiers), admit);
    o.write_down.promote_threads = readers;
    auto c = Cache::create(*backend_, o);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? std::move(c).value() : nullptr;
  }

  // Saves a prompt of `chunks` full chunks and waits until the lower tiers took it.
  PromptKeys save(Cache& cache, std::mt19937_64& rng, std::int32_t chunks) {
    PromptKeys k = h_->save_prompt(cache, *stream_, rng, chunks);
    EXPECT_OK(cache.flush_lower_tiers());
    return k;
  }
  // Saves the same prompt again (a second sighting).
  void resave(Cache& cache, const PromptKeys& k) {
    auto pages = h_->pool().allocate(std::int32_t(k.pages.size()));
    ASSERT_TRUE(pages.ok());
    h_->write_kv(*stream_, k, *pages, k.pages.size());
    ASSERT_OK_AND_ASSIGN(Save s, cache.save(h_->save_request(k, *pages, *stream_)));
    ASSERT_OK(s.wait());
    ASSERT_OK(stream_->synchronize());
    ASSERT_OK(h_->pool().release(*pages));
    ASSERT_OK(cache.flush_lower_tiers());
  }

  // Loads [first, first + num) into fresh pages; returns the tokens loaded, and adds the
  // elements that differ from the saved KV to `wrong`.
  std::int32_t load_and_check(Cache& cache, const PromptKeys& k, std::int32_t first,
                              std::int32_t num, std::size_t& wrong) {
    const std::int32_t page = h_->model().page_tokens;
    auto pages = h_->pool().allocate(num / page);
    EXPECT_TRUE(pages.ok());
    if (!pages.ok()) return -1;
    h_->clobber(*stream_, *pages);
    EXPECT_OK(stream_->synchronize());
    auto load = cache.load(h_->load_request(k, first, num, *pages));
    EXPECT_TRUE(load.ok()) << load.status().to_string();
    std::int32_t loaded = -1;
    if (load.ok()) {
      EXPECT_OK(load->wait());
      loaded = load->loaded_tokens();
      wrong += h_->wrong_elements(*stream_, k, *pages, std::size_t(first / page),
                                  std::size_t(loaded / page));
    }
    EXPECT_OK(h_->pool().release(*pages));
    return loaded;
  }

  RecordId record(const Cache& cache, const PromptKeys& k, std::int32_t c) const {
    RecordId id;
    id.identity = cache.identity();
    id.salt_tag = k.salt_tag;
    id.chunk_key = k.chunk_key(c);
    id.tokens = kChunk;
    id.num_layers = std::uint32_t(h_->model().num_layers);
    id.layer_bytes = h_->chunk_bytes() / std::size_t(h_->model().num_layers);
    return id;
  }

  // The whole round trip over `tiers`: save 3 chunks, evict them from a host tier of 3 by saving
  // another prompt, match, promote, load, check.
  void round_trip(std::vector<std::shared_ptr<Store>> tiers) {
    auto cache = make(3, tiers);
    std::mt19937_64 rng(21);
    const PromptKeys a = save(*cache, rng, 3);
    save(*cache, rng, 3);  // evicts a's chunks from the host tier
    ASSERT_OK_AND_ASSIGN(const MatchResult m, cache->match(a));
    EXPECT_EQ(m.host_tokens, 0);
    EXPECT_EQ(m.lower_tokens, 3 * kChunk);
    ASSERT_EQ(m.lower_tier_tokens.size(), tiers.size());
    EXPECT_EQ(m.lower_tier_tokens[0], 3 * kChunk) << "the fastest tier holding them";
    ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, m.host_tokens, m.lower_tokens));
    EXPECT_EQ(p.requested_chunks(), 3);
    ASSERT_OK(p.wait());
    EXPECT_EQ(p.promoted_chunks(), 3);
    EXPECT_EQ(cache->match(a)->host_tokens, 3 * kChunk);
    std::size_t wrong = 0;
    EXPECT_EQ(load_and_check(*cache, a, 0, 3 * kChunk, wrong), 3 * kChunk);
    EXPECT_EQ(wrong, 0u) << "wrong KV served";
    const CacheStats st = cache->stats();
    ASSERT_EQ(st.lower_tiers.size(), tiers.size());
    EXPECT_EQ(st.lower_tiers[0].promoted_chunks, 3u);
    EXPECT_EQ(st.lower_tiers[0].written_chunks, 6u);
    EXPECT_EQ(st.host_pinned_slots, 3) << "the promotion holds its chunks";
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<CacheHarness> h_;
  std::unique_ptr<Stream> stream_;
};

TEST_F(CacheTiersTest, RoundTripThroughTheMemoryStore) {
  round_trip({memory_store()});
}

TEST_F(CacheTiersTest, RoundTripThroughTheDiskStore) {
  TempDir dir;
  round_trip({disk_store(dir.path())});
}

// Memory above disk: a chunk the memory tier lost comes from the disk, the others from memory.
TEST_F(CacheTiersTest, TwoTiersServeEachChunkFromTheFastestHolder) {
  TempDir dir;
  auto mem = memory_store();
  auto disk = disk_store(dir.path());
  std::mt19937_64 rng(22);
  PromptKeys a;
  {
    auto writer = make(4, {mem, disk});
    a = save(*writer, rng, 3);
    EXPECT_OK(mem->erase(record(*writer, a, 1)));
  }
  auto cache = make(8, {mem, disk});  // an empty host tier, the same stores
  ASSERT_OK_AND_ASSIGN(const MatchResult m, cache->match(a));
  EXPECT_EQ(m.host_tokens, 0);
  EXPECT_EQ(m.lower_tokens, 3 * kChunk);
  EXPECT_EQ(m.lower_tier_tokens, (std::vector<std::int32_t>{2 * kChunk, kChunk}));
  ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 3 * kChunk));
  ASSERT_OK(p.wait());
  std::size_t wrong = 0;
  EXPECT_EQ(load_and_check(*cache, a, 0, 3 * kChunk, wrong), 3 * kChunk);
  EXPECT_EQ(wrong, 0u);
  const CacheStats st = cache->stats();
  EXPECT_EQ(st.lower_tiers[0].promoted_chunks, 2u);
  EXPECT_EQ(st.lower_tiers[1].promoted_chunks, 1u);
  EXPECT_TRUE(st.lower_tiers[1].persistent);
  // A range that starts in the host tier: its host chunks are pinned as they are.
  const PromptKeys b = save(*cache, rng, 2);
  ASSERT_OK_AND_ASSIGN(Promotion q, cache->promote(b, 0, 2 * kChunk));
  EXPECT_TRUE(q.done());
  EXPECT_EQ(q.promoted_chunks(), 2);
  ASSERT_OK_AND_ASSIGN(Promotion empty, cache->promote(b, kChunk, kChunk));
  EXPECT_TRUE(empty.done());
  EXPECT_OK(empty.wait());
}

// A record whose bytes changed in the tier fails verification: a miss counted as corrupt, removed,
// never published or loaded. The memory store's record is edited; the disk store's file is
// overwritten; the fault store reports corruption it caught.
TEST_F(CacheTiersTest, CorruptRecordsAreMissesNeverLoaded) {
  TempDir dir;
  auto mem = memory_store();
  auto disk = disk_store(dir.path());
  auto faulty = fault_store(memory_store());
  const std::shared_ptr<Store> fault_tier = faulty;
  std::mt19937_64 rng(23);
  for (int which = 0; which < 3; ++which) {
    SCOPED_TRACE(which);
    const std::shared_ptr<Store> tier = which == 0   ? std::shared_ptr<Store>(mem)
                                        : which == 1 ? disk
                                                     : fault_tier;
    PromptKeys a;
    {
      auto writer = make(4, {tier});
      a = save(*writer, rng, 2);
      const RecordId id = record(*writer, a, 1);
      if (which == 0) {
        ASSERT_OK(mem->edit_record(id, [](std::vector<std::uint8_t>& b) { b[b.size() - 7] ^= 1; }));
      } else if (which == 1) {
        std::fstream f(dir.path() + "/" + disk::record_file_name(id),
                       std::ios::in | std::ios::out | std::ios::binary);
        ASSERT_TRUE(f.good());
        f.seekp(-7, std::ios::end);
        f.put(char(0x5a));
      } else {
        // Chunk 1's first read: two readers take chunks 0 and 1 in either order.
        ASSERT_OK(faulty->add_rule({.op = FaultOp::kRead,
                                    .kind = FaultKind::kCorrupt,
                                    .first_call = faulty->calls(FaultOp::kRead) + 1,
                                    .record = id}));
      }
    }
    auto cache = make(4, {tier});
    ASSERT_EQ(cache->match(a)->lower_tokens, 2 * kChunk);
    ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 2 * kChunk));
    const Status s = p.wait();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
    EXPECT_EQ(p.promoted_chunks(), 1) << "chunk 0 came in, chunk 1 stopped the promotion";
    EXPECT_EQ(cache->match(a)->host_tokens, kChunk) << "the corrupt chunk was never published";
    std::size_t wrong = 0;
    EXPECT_EQ(load_and_check(*cache, a, 0, 2 * kChunk, wrong), kChunk);
    EXPECT_EQ(wrong, 0u);
    const CacheStats st = cache->stats();
    EXPECT_EQ(st.lower_tiers[0].promote_failures, 1u);
    if (which < 2) {
      EXPECT_EQ(st.lower_tiers[0].store.misses[std::size_t(MissReason::kCorrupt)], 1u);
      EXPECT_EQ(cache->match(a)->lower_tokens, kChunk) << "the corrupt record was removed";
    }
  }
}

// The fault store failing the k-th read of a promotion (each k), with an I/O error or a timeout:
// the promotion stops there with that error, keeps the chunks before it, and serves no wrong byte.
// One reader thread, so that the k-th read is the k-th chunk.
TEST_F(CacheTiersTest, FailedReadsStopPromotionsAtTheFailingChunk) {
  auto faulty = fault_store(memory_store());
  std::mt19937_64 rng(24);
  PromptKeys a;
  {
    auto writer = make(4, {faulty});
    a = save(*writer, rng, 4);
  }
  int cases = 0;
  for (StatusCode code :
       {StatusCode::kIoError, StatusCode::kDeadlineExceeded, StatusCode::kUnavailable}) {
    for (std::int32_t k = 1; k <= 4; ++k) {
      SCOPED_TRACE(std::to_string(int(code)) + " at read " + std::to_string(k));
      faulty->clear_rules();
      ASSERT_OK(faulty->add_rule(
          {.op = FaultOp::kRead, .code = code, .first_call = faulty->calls(FaultOp::kRead) + k}));
      auto cache = make(4, {faulty}, 1, 1);
      ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 4 * kChunk));
      EXPECT_EQ(p.wait().code(), code);
      EXPECT_EQ(p.promoted_chunks(), k - 1);
      std::size_t wrong = 0;
      if (k > 1) {
        EXPECT_EQ(load_and_check(*cache, a, 0, 4 * kChunk, wrong), (k - 1) * kChunk);
      }
      EXPECT_EQ(wrong, 0u);
      EXPECT_EQ(cache->stats().lower_tiers[0].promote_failures, 1u);
      ++cases;
    }
  }
  // A tier whose contains() fails holds nothing, for match and for promote.
  faulty->clear_rules();
  ASSERT_OK(faulty->add_rule({.op = FaultOp::kContains,
                              .code = StatusCode::kUnavailable,
                              .times = FaultRule::kPersistent}));
  auto cache = make(4, {faulty});
  ASSERT_OK_AND_ASSIGN(const MatchResult m, cache->match(a));
  EXPECT_EQ(m.lower_tokens, 0);
  ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 4 * kChunk));
  EXPECT_EQ(p.wait().code(), StatusCode::kNotFound);
  std::cout << "tiers: " << cases << " failed promotion reads, each stopped at its chunk\n";
}

// One promotion has as many chunks in flight as there are reader threads (a single request reads
// its lower-tier prefix that many chunks at a time); chunks land in any order and count in order.
// A failed chunk ends the promotion once the chunks in flight are back, keeping the ones before it.
TEST_F(CacheTiersTest, OnePromotionReadsAsManyChunksAtOnceAsThereAreReaders) {
  auto shared = memory_store();
  std::mt19937_64 rng(31);
  PromptKeys a;
  {
    auto writer = make(6, {shared});
    a = save(*writer, rng, 6);
  }
  for (const std::int32_t readers : {1, 2, 3}) {
    SCOPED_TRACE(std::to_string(readers) + " readers");
    auto watching = std::make_shared<WatchingStore>(shared, std::chrono::milliseconds(30));
    auto cache = make(6, {watching}, 1, readers);
    ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 6 * kChunk));
    ASSERT_OK(p.wait());
    EXPECT_EQ(p.promoted_chunks(), 6);
    EXPECT_EQ(watching->most_at_once(), readers);
    std::size_t wrong = 0;
    EXPECT_EQ(load_and_check(*cache, a, 0, 6 * kChunk, wrong), 6 * kChunk);
    EXPECT_EQ(wrong, 0u);
  }
  // Chunk 2 of 6 fails with 3 readers: chunks 0 and 1 stay (whatever order the reads ran in), the
  // promotion ends with the error, and nothing after the failure counts.
  auto watching = std::make_shared<WatchingStore>(shared, std::chrono::milliseconds(30));
  watching->fail_reads_of(a.chunk_key(2));
  auto cache = make(6, {watching}, 1, 3);
  ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 6 * kChunk));
  EXPECT_EQ(p.wait().code(), StatusCode::kIoError);
  EXPECT_EQ(p.promoted_chunks(), 2);
  std::size_t wrong = 0;
  EXPECT_EQ(load_and_check(*cache, a, 0, 2 * kChunk, wrong), 2 * kChunk);
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(cache->stats().lower_tiers[0].promote_failures, 1u);
}

// Writes that fail leave nothing visible in the tier; flush_lower_tiers() says so; nothing is lost
// from the host tier.
TEST_F(CacheTiersTest, FailedWritesAreNeverVisible) {
  auto inner = memory_store();
  auto faulty = fault_store(inner);
  ASSERT_OK(faulty->add_rule(
      {.op = FaultOp::kWrite, .code = StatusCode::kIoError, .times = FaultRule::kPersistent}));
  auto cache = make(4, {faulty});
  std::mt19937_64 rng(25);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 3);
  const Status flushed = cache->flush_lower_tiers();
  EXPECT_EQ(flushed.code(), StatusCode::kIoError) << flushed.to_string();
  EXPECT_OK(cache->flush_lower_tiers());  // the error is reported once
  const CacheStats st = cache->stats();
  EXPECT_EQ(st.lower_tiers[0].write_failures, 3u);
  EXPECT_EQ(st.lower_tiers[0].written_chunks, 0u);
  EXPECT_EQ(inner->stats().records, 0u);
  EXPECT_EQ(cache->match(a)->host_tokens, 3 * kChunk);
  auto other = make(4, {faulty});
  EXPECT_EQ(other->match(a)->lower_tokens, 0) << "a failed write is not visible";
}

// Against the throttled experiment tier (about 10 ms a chunk), a promotion waited for with a
// deadline reports partial progress; cancel() stops it after the chunk being read, and what was
// promoted loads correctly.
TEST_F(CacheTiersTest, DeadlineAgainstTheExperimentTierGivesPartialProgress) {
  auto slow = memory_store({.bandwidth_gbps = 0.008, .latency_us = 2000});
  ASSERT_TRUE(slow->capabilities().experiment);
  std::mt19937_64 rng(26);
  PromptKeys a;
  {
    auto writer = make(12, {slow});
    a = save(*writer, rng, 10);
  }
  auto cache = make(12, {slow});
  const auto t0 = Clock::now();
  ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 10 * kChunk));
  EXPECT_GE(p.wait_for(1, t0 + std::chrono::seconds(20)), 1) << "no progress at all";
  const std::int32_t by_deadline = p.wait_for(10, Clock::now() + std::chrono::milliseconds(15));
  EXPECT_LT(by_deadline, 10) << "10 chunks of ~10 ms each cannot all arrive in 15 ms";
  p.cancel();
  const Status s = p.wait();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  const std::int32_t got = p.promoted_chunks();
  EXPECT_GE(got, by_deadline);
  // The chunk in flight at the deadline, and the one a reader may have started before cancel().
  EXPECT_LE(got, by_deadline + 2);
  std::size_t wrong = 0;
  EXPECT_EQ(load_and_check(*cache, a, 0, got * kChunk, wrong), got * kChunk);
  EXPECT_EQ(wrong, 0u);
  std::cout << "tiers: experiment tier, " << by_deadline << " of 10 chunks by the deadline, " << got
            << " after cancel\n";
}

// A tier whose writes hang: the write-down queue fills, further chunks are dropped and counted, and
// saves, flush and loads never wait for it.
TEST_F(CacheTiersTest, FullWriteQueuesDropAndNeverBlock) {
  auto inner = memory_store();
  auto gated = std::make_shared<GatedStore>(inner);
  CacheOptions o = options(16, {gated});
  o.write_down.queue_chunks = 2;
  ASSERT_OK_AND_ASSIGN(auto cache, Cache::create(*backend_, o));
  std::promise<void> finished;
  std::thread safety([g = gated, f = finished.get_future()] {  // fail rather than hang
    if (f.wait_for(std::chrono::seconds(20)) == std::future_status::timeout) g->open();
  });
  std::mt19937_64 rng(27);
  const auto t0 = Clock::now();
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 6);
  ASSERT_OK(cache->flush());
  std::size_t wrong = 0;
  EXPECT_EQ(load_and_check(*cache, a, 0, 6 * kChunk, wrong), 6 * kChunk);
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(waited, 10.0) << "the engine waited for a blocked tier";
  CacheStats st = cache->stats();
  const TierStats t = st.lower_tiers[0];  // a copy: st is read again below
  EXPECT_EQ(t.write_queued + t.write_dropped, 6u);
  EXPECT_GE(t.write_dropped, 3u) << "one chunk in the writer, two queued, the rest dropped";
  EXPECT_LE(t.write_queued, 3u);
  EXPECT_EQ(t.store.misses[std::size_t(MissReason::kDropped)], t.write_dropped);
  gated->open();
  ASSERT_OK(cache->flush_lower_tiers());
  st = cache->stats();
  EXPECT_EQ(st.lower_tiers[0].written_chunks, st.lower_tiers[0].write_queued);
  EXPECT_EQ(st.lower_tiers[0].queue_depth, 0);
  std::cout << "tiers: blocked tier, " << t.write_queued << " chunks queued, " << t.write_dropped
            << " dropped, save + load took " << waited * 1e3 << " ms\n";
  finished.set_value();
  safety.join();
}

// A persistent tier takes a chunk at its second sighting; the memory tier at its first. Write
// amplification counts the bytes written to persistent tiers per byte saved into the host tier.
TEST_F(CacheTiersTest, PersistentTiersAdmitOnTheSecondSighting) {
  TempDir dir;
  auto mem = memory_store();
  auto disk = disk_store(dir.path());
  auto cache = make(8, {mem, disk}, /*admit=*/2);
  std::mt19937_64 rng(28);
  const PromptKeys a = save(*cache, rng, 3);
  CacheStats st = cache->stats();
  EXPECT_EQ(st.lower_tiers[0].written_chunks, 3u) << "memory: every chunk";
  EXPECT_EQ(st.lower_tiers[1].written_chunks, 0u) << "disk: not on a first sighting";
  EXPECT_EQ(st.lower_tiers[1].write_not_admitted, 3u);
  EXPECT_EQ(st.write_amplification, 0.0);
  resave(*cache, a);  // present in the host tier: the second sighting admits it
  st = cache->stats();
  EXPECT_EQ(st.lower_tiers[1].written_chunks, 3u);
  EXPECT_EQ(st.lower_tiers[0].write_queued, 3u) << "present chunks are not offered again";
  EXPECT_DOUBLE_EQ(st.write_amplification, 1.0);
  resave(*cache, a);  // third sighting: nothing more to write
  st = cache->stats();
  EXPECT_EQ(st.lower_tiers[1].write_queued, 3u);
  EXPECT_DOUBLE_EQ(st.write_amplification, 1.0);
  // A one-off prompt stays off the disk.
  const PromptKeys b = save(*cache, rng, 2);
  st = cache->stats();
  EXPECT_EQ(st.lower_tiers[1].written_chunks, 3u);
  EXPECT_DOUBLE_EQ(st.write_amplification, 3.0 / 5.0);
  EXPECT_EQ(disk->stats().records, 3u);
  std::cout << "tiers: admission on the second sighting, write amplification "
            << st.write_amplification << "\n";
}

// A Promotion outlives its Cache: one that ended keeps its pins valid until it is destroyed; one in
// flight is ended by the Cache's destruction after the chunk being read.
TEST_F(CacheTiersTest, PromotionsOutliveTheirCache) {
  auto slow = memory_store({.bandwidth_gbps = 0.008, .latency_us = 1000});
  std::mt19937_64 rng(29);
  PromptKeys a;
  {
    auto writer = make(8, {slow});
    a = save(*writer, rng, 6);
  }
  std::optional<Promotion> finished, running;
  {
    auto cache = make(8, {slow});
    ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, kChunk));
    ASSERT_OK(p.wait());
    finished.emplace(std::move(p));
    ASSERT_OK_AND_ASSIGN(Promotion q, cache->promote(a, kChunk, 6 * kChunk));
    q.wait_for(1, Clock::now() + std::chrono::seconds(20));
    running.emplace(std::move(q));
  }  // the cache goes while `running` reads
  EXPECT_TRUE(running->done());
  const Status s = running->wait();
  if (s.ok()) {
    EXPECT_EQ(running->promoted_chunks(), 5);
  } else {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
    EXPECT_LT(running->promoted_chunks(), 5);
  }
  EXPECT_EQ(finished->promoted_chunks(), 1);
  EXPECT_OK(finished->wait());
  running.reset();
  finished.reset();  // unpins into the host tier it kept alive
}

// Two caches of the same model as two engine processes: what one saves and writes down, the other
// promotes and loads, through one shared memory store and through one disk directory (opened again
// after the first process is gone, as a restarted engine would).
TEST_F(CacheTiersTest, TwoCachesShareOneStore) {
  std::mt19937_64 rng(30);
  {
    auto shared = memory_store();
    auto one = make(4, {shared});
    auto two = make(4, {shared});
    const PromptKeys a = save(*one, rng, 3);
    EXPECT_EQ(one->identity(), two->identity());
    ASSERT_OK_AND_ASSIGN(const MatchResult m, two->match(a));
    EXPECT_EQ(m.host_tokens, 0);
    EXPECT_EQ(m.lower_tokens, 3 * kChunk);
    ASSERT_OK_AND_ASSIGN(Promotion p, two->promote(a, 0, 3 * kChunk));
    ASSERT_OK(p.wait());
    std::size_t wrong = 0;
    EXPECT_EQ(load_and_check(*two, a, 0, 3 * kChunk, wrong), 3 * kChunk);
    EXPECT_EQ(wrong, 0u);
  }
  TempDir dir;
  PromptKeys b;
  {
    auto one = make(4, {disk_store(dir.path())});
    b = save(*one, rng, 3);
  }  // the first engine exits: its store (and the directory's lock) go with it
  auto two = make(4, {disk_store(dir.path())});  // the index is rebuilt from the directory
  ASSERT_OK_AND_ASSIGN(const MatchResult m, two->match(b));
  EXPECT_EQ(m.lower_tokens, 3 * kChunk);
  ASSERT_OK_AND_ASSIGN(Promotion p, two->promote(b, 0, 3 * kChunk));
  ASSERT_OK(p.wait());
  std::size_t wrong = 0;
  EXPECT_EQ(load_and_check(*two, b, 0, 3 * kChunk, wrong), 3 * kChunk);
  EXPECT_EQ(wrong, 0u);
}

// queued_load_bytes(): what loads queued on the load stream still have to copy.
TEST_F(CacheTiersTest, QueuedLoadBytesFollowTheLoadStream) {
  fault::FaultBackend fb(*backend_);
  CacheHarness h(fb, 256);
  CacheOptions o = h.options(8);
  o.transfer.calibrate = false;
  ASSERT_OK_AND_ASSIGN(auto cache, Cache::create(fb, o));
  ASSERT_OK_AND_ASSIGN(auto s, fb.create_stream());
  std::mt19937_64 rng(31);
  const PromptKeys a = h.save_prompt(*cache, *s, rng, 2);
  const PromptKeys b = h.save_prompt(*cache, *s, rng, 2);  // another prompt: nothing to share
  EXPECT_EQ(cache->queued_load_bytes(), 0u);
  ASSERT_OK(fb.set_plan({.copy_delay = std::chrono::milliseconds(100)}));
  ASSERT_OK_AND_ASSIGN(auto pages, h.pool().allocate(3 * kChunk / h.model().page_tokens));
  ASSERT_OK_AND_ASSIGN(Load one, cache->load(h.load_request(a, 0, 2 * kChunk, pages)));
  ASSERT_OK_AND_ASSIGN(Load two,
                       cache->load(h.load_request(b, kChunk, kChunk, std::span(pages).subspan(8))));
  EXPECT_EQ(cache->queued_load_bytes(), 3 * h.chunk_bytes());
  ASSERT_OK(one.wait());
  EXPECT_LE(cache->queued_load_bytes(), h.chunk_bytes());
  ASSERT_OK(two.wait());
  EXPECT_EQ(cache->queued_load_bytes(), 0u);
  fb.clear_plan();
  ASSERT_OK(h.pool().release(pages));
}

TEST_F(CacheTiersTest, BadTierOptionsAndRangesAreRefused) {
  auto mem = memory_store();
  CacheOptions o = options(4, {mem});
  o.host_bytes = 0;
  EXPECT_EQ(Cache::create(*backend_, o).status().code(), StatusCode::kInvalidArgument)
      << "lower tiers need a host tier";
  o = options(4, {nullptr});
  EXPECT_EQ(Cache::create(*backend_, o).status().code(), StatusCode::kInvalidArgument);
  for (auto change : {+[](WriteDownOptions& w) { w.queue_chunks = 0; },
                      +[](WriteDownOptions& w) { w.threads_per_tier = 0; },
                      +[](WriteDownOptions& w) { w.promote_threads = 1000; },
                      +[](WriteDownOptions& w) { w.persistent_admit_sightings = 0; },
                      +[](WriteDownOptions& w) { w.sighting_memory = 0; }}) {
    o = options(4, {mem});
    change(o.write_down);
    EXPECT_EQ(Cache::create(*backend_, o).status().code(), StatusCode::kInvalidArgument);
  }
  auto cache = make(4, {mem});
  std::mt19937_64 rng(32);
  const PromptKeys a = save(*cache, rng, 2);
  for (auto [first, end] : {std::pair{16, 2 * kChunk}, std::pair{0, 3 * kChunk},
                            std::pair{kChunk, 0}, std::pair{-kChunk, kChunk}}) {
    EXPECT_EQ(cache->promote(a, first, end).status().code(), StatusCode::kInvalidArgument)
        << first << ".." << end;
  }
  auto no_host = Cache::create(*backend_, options(0, {}));
  ASSERT_TRUE(no_host.ok());
  ASSERT_OK_AND_ASSIGN(const PromptKeys k, (*no_host)->keys(random_tokens(kChunk, rng), ""));
  EXPECT_EQ((*no_host)->promote(k, 0, kChunk).status().code(), StatusCode::kFailedPrecondition);
  Promotion moved = std::move(cache->promote(a, 0, kChunk).value());
  Promotion taken = std::move(moved);
  EXPECT_EQ(moved.wait().code(), StatusCode::kFailedPrecondition);  // NOLINT: moved from
  EXPECT_EQ(moved.promoted_chunks(), 0);                            // NOLINT
  EXPECT_OK(taken.wait());
}

}  // namespace
}  // namespace tierkv

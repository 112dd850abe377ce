// Warm prefill end to end on the CPU backend with the tiny model: every policy gives the same next
// token and bit-identical KV as computing the prompt cold (the CPU backend computes each token's
// row the same way whatever the chunking, so equality is exact); a load that fails at any copy
// (at queueing or after running), at any layer, or comes up short because chunks were evicted
// after match() turns into recompute with the same answer; the planner's ranges are honoured; a
// timeline is recorded.
#include "tierkv/warm_prefill.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/fault/fault_backend.h"
#include "backends.h"
#include "engine/llama.h"
#include "engine/runner_model.h"
#include "tiers/fault/fault_store.h"
#include "tiers/memory/memory_store.h"

namespace tierkv {
namespace {

using fault::FaultBackend;
using fault::FaultPlan;

constexpr std::int32_t kChunk = 64;

// A CPU profile with figures, so that kPlanned plans (its numbers are not this machine's).
CostProfile test_profile(std::int32_t layers) {
  CostProfile p;
  p.num_layers = layers;
  p.host_to_device_copy_engine.points = {{4096, 5.0}, {1 << 20, 10.0}};
  p.host_to_device_sm_kernel = p.host_to_device_copy_engine;
  p.prefill.new_tokens = {64, 512};
  p.prefill.prefix_tokens = {0, 2048};
  p.prefill.us = {100, 200, 600, 1200};
  p.tiers = {{"memory", 20.0, 5, 20, false}};  // the unthrottled in-memory store
  return p;
}

struct Served {
  std::int32_t next = -1;
  WarmPrefillResult result;
  std::vector<std::uint8_t> kv;  // every layer's K and V of the prompt's tokens, in order
  Status status;                 // the run's, then the compute stream's
};

class WarmPrefillTest : public ::testing::Test {
 protected:
  void SetUp() override { build(1 << 30); }

  // host_chunks: the host tier's budget in chunks; `lower`: tiers below it; `layers`: the tiny
  // model's (2) unless given.
  void build(std::int32_t host_chunks, std::vector<std::shared_ptr<Store>> lower = {},
             std::int32_t layers = 0) {
    runner_.reset();
    warm_.reset();
    cache_.reset();
    pool_.reset();
    stream_.reset();
    fault_.reset();
    if (!inner_) {
      ASSERT_OK_AND_ASSIGN(inner_, create_backend(BackendKind::kCpu));
    }
    fault_ = std::make_unique<FaultBackend>(*inner_);
    ASSERT_OK_AND_ASSIGN(stream_, fault_->create_stream());
    ModelSpec spec = *model_preset("tiny");
    if (layers > 0) spec.num_layers = layers;
    ASSERT_OK_AND_ASSIGN(LlamaWeights w, random_llama_weights(*fault_, *stream_, spec, 7));
    spec_ = w.spec;
    PagePoolOptions po;
    po.model = spec_;
    po.num_pages = 1024;
    po.pages_per_run = kChunk / spec_.page_tokens;
    ASSERT_OK_AND_ASSIGN(pool_, PagePool::create(*fault_, po));
    RunnerOptions ro;
    ro.max_step_tokens = 512;
    ASSERT_OK_AND_ASSIGN(runner_, LlamaRunner::create(*fault_, std::move(w), pool_->view(), ro));
    model_ = std::make_unique<RunnerPrefillModel>(*runner_);
    rebuild_cache(host_chunks, std::move(lower));
  }

  // A new cache (and executor) over the same model and pages: its host tier holds nothing.
  void rebuild_cache(std::int32_t host_chunks, std::vector<std::shared_ptr<Store>> lower = {},
                     const CostProfile* profile = nullptr) {
    warm_.reset();
    cache_.reset();
    CacheOptions co;
    co.model = spec_;
    co.chunk_tokens = kChunk;
    co.host_bytes = std::size_t(std::min(host_chunks, 64)) * kChunk * spec_.kv_bytes_per_token();
    co.transfer.calibrate = false;
    co.lower_tiers = std::move(lower);
    co.write_down.persistent_admit_sightings = 1;
    co.queue_in_background = queue_in_background_;
    ASSERT_OK_AND_ASSIGN(cache_, Cache::create(*fault_, co));
    ASSERT_OK_AND_ASSIGN(warm_,
                         WarmPrefill::create(*fault_, *cache_, *model_,
                                             profile ? *profile : test_profile(spec_.num_layers)));
  }

  std::vector<std::int32_t> tokens(std::size_t n, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int32_t> t(n);
    for (auto& x : t)
      x = std::int32_t(rng() % std::uint64_t(spec_.vocab));
    return t;
  }

  // A 300-token prompt (seed `seed`) whose four full chunks are saved and written down to a
  // fault-injecting store over memory, the cache's only lower tier; returns the store and fills
  // `prompt` and its `cold` answer. The cache is rebuilt (empty host tier) by the caller.
  std::shared_ptr<FaultStore> prompt_in_lower_tier(unsigned seed, std::vector<std::int32_t>& prompt,
                                                   Served& cold) {
    auto memory = MemoryStore::create({});
    EXPECT_TRUE(memory.ok());
    auto faulty = std::make_shared<FaultStore>(std::move(memory).value());
    build(8, {faulty});
    prompt = tokens(300, seed);
    cold = serve(prompt, PrefillPolicy::kRecompute);
    serve(prompt, PrefillPolicy::kLayerwise);  // saves 4 chunks; they are written down
    EXPECT_OK(cache_->flush_lower_tiers());
    return faulty;
  }

  // The test profile, with that store's four chunks in host slots `ready_ms` after a promotion
  // starts, and a layer of 64 new tokens computed in `layer_us`.
  CostProfile lower_tier_profile(double ready_ms, double layer_us) const {
    CostProfile p = test_profile(spec_.num_layers);
    const double bytes = 4.0 * kChunk * double(spec_.kv_bytes_per_token());
    p.tiers = {{"fault(memory)", bytes / (ready_ms * 1e-3) / 1e9, 0, 0, false}};
    p.prefill.us = {layer_us, 2 * layer_us, 6 * layer_us, 12 * layer_us};
    return p;
  }

  // From now on every read of `tier` takes `delay`.
  static void delay_reads(FaultStore& tier, std::chrono::milliseconds delay) {
    EXPECT_OK(tier.add_rule({.op = FaultOp::kRead,
                             .kind = FaultKind::kDelay,
                             .times = FaultRule::kPersistent,
                             .delay = delay}));
  }

  // Serves one prompt with `policy` on fresh pages (the GPU holds nothing of it); or, with
  // `gpu_pages`, on those pages, whose first `gpu_tokens` tokens hold the prompt's KV already.
  Served serve(const std::vector<std::int32_t>& prompt, PrefillPolicy policy,
               std::int32_t chunk = 0, bool timeline = false, std::int32_t gpu_tokens = 0,
               const std::vector<std::int32_t>* gpu_pages = nullptr, std::int32_t split = -1) {
    Served out;
    auto keys = cache_->keys(prompt, "tenant");
    EXPECT_TRUE(keys.ok());
    auto m = cache_->match(*keys);
    EXPECT_TRUE(m.ok());
    m->gpu_tokens = gpu_tokens;
    m->host_tokens = std::max(m->host_tokens, gpu_tokens);
    m->lower_tokens = std::max(m->lower_tokens, m->host_tokens);
    const std::int32_t page = spec_.page_tokens;
    const auto n = std::int32_t(prompt.size());
    auto pages = gpu_pages != nullptr ? Result<std::vector<std::int32_t>>(*gpu_pages)
                                      : pool_->allocate((n + page - 1) / page);
    EXPECT_TRUE(pages.ok());
    WarmPrefillRequest r;
    r.tokens = prompt;
    r.keys = &*keys;
    r.match = *m;
    r.kv = pool_->view();
    r.pages = *pages;
    r.options.policy = policy;
    r.options.chunk_tokens = chunk;
    r.options.timeline = timeline;
    r.options.split = split;
    auto res = warm_->run(r, *stream_);
    if (res.ok()) {
      out.result = *res;
      out.next = res->next_token;
    }
    out.status = res.status();
    const Status synced = stream_->synchronize();
    if (out.status.ok()) out.status = synced;
    if (!errors_expected_) {
      EXPECT_OK(out.status);
      EXPECT_OK(cache_->flush());
    } else {
      cache_->flush().ignore();
    }
    out.kv = read_kv(*pages, n);
    if (gpu_pages == nullptr) {
      EXPECT_OK(pool_->release(*pages));
    }
    return out;
  }

  std::vector<std::uint8_t> read_kv(std::span<const std::int32_t> pages, std::int32_t n) {
    const PagedKvView v = pool_->view();
    const std::size_t row = std::size_t(spec_.num_kv_heads) * spec_.head_dim * 2;
    const std::size_t page_bytes = row * std::size_t(spec_.page_tokens);
    std::vector<std::uint8_t> out;
    for (std::int32_t l = 0; l < spec_.num_layers; ++l) {
      for (const auto& layers : {v.k_layers, v.v_layers}) {
        const auto* base = static_cast<const std::uint8_t*>(layers[std::size_t(l)]);
        for (std::int32_t t = 0; t < n; ++t) {
          const std::uint8_t* p =
              base + std::size_t(pages[std::size_t(t / spec_.page_tokens)]) * page_bytes +
              std::size_t(t % spec_.page_tokens) * row;
          out.insert(out.end(), p, p + row);
        }
      }
    }
    return out;
  }

  std::unique_ptr<Backend> inner_;
  std::unique_ptr<FaultBackend> fault_;
  std::unique_ptr<Stream> stream_;
  ModelSpec spec_;
  std::unique_ptr<PagePool> pool_;
  std::unique_ptr<LlamaRunner> runner_;
  std::unique_ptr<RunnerPrefillModel> model_;
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<WarmPrefill> warm_;
  bool errors_expected_ = false;     // serve() leaves a failed run to the test
  bool queue_in_background_ = true;  // CacheOptions::queue_in_background of rebuild_cache()
};

TEST_F(WarmPrefillTest, EveryPolicyGivesTheColdAnswerAndTheColdKv) {
  const auto prompt = tokens(300, 1);
  const Served cold = serve(prompt, PrefillPolicy::kRecompute);  // saves nothing: no cache at all
  ASSERT_GE(cold.next, 0);
  // A first warm run computes everything (nothing cached) and saves the 4 full chunks.
  const Served first = serve(prompt, PrefillPolicy::kLayerwise);
  EXPECT_EQ(first.result.loaded_tokens, 0);
  EXPECT_EQ(first.next, cold.next);
  EXPECT_EQ(first.kv, cold.kv);
  for (PrefillPolicy p : {PrefillPolicy::kLoadThenCompute, PrefillPolicy::kLayerwise,
                          PrefillPolicy::kPlanned, PrefillPolicy::kGpuOnly}) {
    for (std::int32_t chunk : {0, 64}) {
      SCOPED_TRACE(std::string(prefill_policy_name(p)) + " chunk " + std::to_string(chunk));
      const Served s = serve(prompt, p, chunk);
      EXPECT_EQ(s.next, cold.next);
      EXPECT_TRUE(s.kv == cold.kv) << "KV differs from the cold computation";
      EXPECT_EQ(s.result.loaded_tokens + s.result.computed_tokens, 300);
      if (p == PrefillPolicy::kLayerwise || p == PrefillPolicy::kLoadThenCompute) {
        EXPECT_EQ(s.result.loaded_tokens, 256) << s.result.plan.why;
        EXPECT_GT(s.result.bytes_loaded, 0u);
      }
      if (p == PrefillPolicy::kGpuOnly) {
        EXPECT_EQ(s.result.loaded_tokens, 0);
      }
      EXPECT_EQ(s.result.fallback_tokens, 0);
      EXPECT_FALSE(s.result.plan.why.empty());
      // The host time before the first chunk is part of the time to first token; queuing a load
      // takes some.
      EXPECT_GE(s.result.plan_ms, 0.0);
      EXPECT_LE(s.result.plan_ms + s.result.queue_ms, s.result.ttft_ms);
      if (s.result.loaded_tokens > 0) {
        EXPECT_GT(s.result.queue_ms, 0.0);
      }
    }
  }
  // A longer prompt that extends the cached one loads its prefix and computes the rest.
  auto longer = prompt;
  const auto tail = tokens(150, 2);
  longer.insert(longer.end(), tail.begin(), tail.end());
  const Served longer_cold = serve(longer, PrefillPolicy::kRecompute);
  const Served longer_warm = serve(longer, PrefillPolicy::kLayerwise);
  EXPECT_EQ(longer_warm.next, longer_cold.next);
  EXPECT_EQ(longer_warm.kv, longer_cold.kv);
  EXPECT_EQ(longer_warm.result.loaded_tokens, 256);
}

// The load's copies broken in turn -- each layer's (one batched copy per layer), at queueing and
// after running -- for cached prefixes of 1, 3 and 6 chunks and two prefill chunk sizes: the answer
// and the KV are the cold ones, and the fallback is reported.
TEST_F(WarmPrefillTest, AFailedLoadAtAnyLayerAndChunkBecomesRecompute) {
  int fallbacks = 0, cases = 0;
  for (std::int32_t cached_chunks : {1, 3, 6}) {
    const auto prompt = tokens(std::size_t(cached_chunks * kChunk + 40), 3 + cached_chunks);
    const Served cold = serve(prompt, PrefillPolicy::kRecompute);
    serve(prompt, PrefillPolicy::kLayerwise);  // computes and saves the full chunks
    for (std::int32_t chunk : {cached_chunks == 3 ? 512 : 64}) {
      for (std::uint64_t FaultPlan::*field :
           {&FaultPlan::fail_copy_async, &FaultPlan::fail_copy_at_enqueue}) {
        // The load is queued before any compute: its copies are the run's first ones.
        for (std::int32_t layer = 1; layer <= spec_.num_layers; ++layer) {
          SCOPED_TRACE(std::to_string(cached_chunks) + " chunks, prefill chunk " +
                       std::to_string(chunk) + ", layer " + std::to_string(layer) +
                       (field == &FaultPlan::fail_copy_async ? " (async)" : " (at queueing)"));
          FaultPlan plan;
          plan.*field = std::uint64_t(layer);
          ASSERT_OK(fault_->set_plan(plan));
          const Served s = serve(prompt, PrefillPolicy::kLayerwise, chunk);
          fault_->clear_plan();
          EXPECT_EQ(s.next, cold.next);
          EXPECT_TRUE(s.kv == cold.kv) << "KV differs from the cold computation";
          EXPECT_EQ(s.result.fallback_tokens, cached_chunks * kChunk) << s.result.plan.why;
          EXPECT_FALSE(s.result.load_status.ok());
          fallbacks += s.result.fallback_tokens > 0;
          ++cases;
        }
      }
    }
  }
  std::cout << "warm prefill faults: " << cases << " broken loads, " << fallbacks
            << " turned into recompute, every answer the cold one\n";
}

// With more layers than a load queues up front (6 against 1 + kQueueAhead), the load's later
// layers are queued while the prefill runs: by the gated chunk's wait_layer() alone (no queueing
// thread: which copy is whose is then fixed), or by the cache's queueing thread beside the
// compute. Every copy of such a run, broken in turn (without the thread at queueing and after
// running, with it at queueing, the thread's own failure path): a broken load
// (one batched copy per layer) is recomputed, with the cold answer and KV; a broken copy of the
// compute's own is the run's error; a broken save changes nothing. No run serves anything else.
TEST_F(WarmPrefillTest, ALoadQueuedAsTheComputeGoesFailsAtAnyLayerIntoRecompute) {
  build(1 << 30, {}, 6);
  const auto prompt = tokens(std::size_t(2 * kChunk + 40), 21);
  const Served cold = serve(prompt, PrefillPolicy::kRecompute);
  for (bool background : {false, true}) {
    SCOPED_TRACE(background ? "queueing thread" : "no queueing thread");
    queue_in_background_ = background;
    rebuild_cache(1 << 30);
    serve(prompt, PrefillPolicy::kLayerwise);  // computes and saves the 2 full chunks
    int cases = 0, fallbacks = 0, errors = 0;
    // The whole prefix loaded; with the thread also a recomputed front (the thread queues the
    // load while the front computes).
    for (std::int32_t split : {-1, kChunk}) {
      if (!background && split >= 0) continue;
      SCOPED_TRACE(split < 0 ? "no front" : "front of one chunk");
      const auto policy = split < 0 ? PrefillPolicy::kLayerwise : PrefillPolicy::kPlanned;
      ASSERT_OK(fault_->set_plan({}));
      const Served clean = serve(prompt, policy, kChunk, false, 0, nullptr, split);
      const std::uint64_t copies = fault_->counts().copies;
      EXPECT_EQ(clean.next, cold.next);
      EXPECT_TRUE(clean.kv == cold.kv);
      EXPECT_EQ(clean.result.loaded_tokens, split < 0 ? 2 * kChunk : kChunk)
          << clean.result.plan.why;
      ASSERT_GE(copies, 6u);
      // With the thread, failures at queueing only (the thread's own path); the sweep is long.
      for (std::uint64_t FaultPlan::*field :
           {&FaultPlan::fail_copy_at_enqueue, &FaultPlan::fail_copy_async}) {
        if (background && field == &FaultPlan::fail_copy_async) continue;
        for (std::uint64_t k = 1; k <= copies; ++k) {
          SCOPED_TRACE("copy " + std::to_string(k) +
                       (field == &FaultPlan::fail_copy_async ? " (async)" : " (at queueing)"));
          FaultPlan plan;
          plan.*field = k;
          ASSERT_OK(fault_->set_plan(plan));
          errors_expected_ = true;
          const Served s = serve(prompt, policy, kChunk, false, 0, nullptr, split);
          errors_expected_ = false;
          fault_->clear_plan();
          ++cases;
          if (!s.status.ok()) {
            ++errors;
            EXPECT_EQ(s.status.code(), StatusCode::kDeviceError);
            continue;
          }
          EXPECT_EQ(s.next, cold.next);
          EXPECT_TRUE(s.kv == cold.kv) << "KV differs from the cold computation";
          if (s.result.fallback_tokens > 0) {
            ++fallbacks;
            EXPECT_FALSE(s.result.load_status.ok());
          }
        }
      }
    }
    if (!background) {
      // Each layer's copy of the load, both ways.
      EXPECT_EQ(fallbacks, 2 * spec_.num_layers) << "a broken load copy was not recomputed";
    } else {
      // Which copy is the load's depends on the two threads' interleaving.
      EXPECT_GT(fallbacks, 0) << "no broken copy reached a load";
    }
    std::cout << "warm prefill faults, loads queued as the compute goes ("
              << (background ? "queueing thread" : "wait_layer only") << "): " << cases
              << " broken copies: " << fallbacks << " loads turned into recompute, " << errors
              << " runs failed with the compute's copy, every answer served the cold one\n";
  }
  queue_in_background_ = true;
}

// Chunks evicted between match() and the load: the load comes up short and the rest is computed.
TEST_F(WarmPrefillTest, ChunksEvictedAfterMatchAreRecomputed) {
  build(4);  // a host tier of 4 chunks
  const auto prompt = tokens(300, 4);
  const Served cold = serve(prompt, PrefillPolicy::kRecompute);
  serve(prompt, PrefillPolicy::kLayerwise);
  auto keys = cache_->keys(prompt, "tenant");
  ASSERT_TRUE(keys.ok());
  ASSERT_OK_AND_ASSIGN(const MatchResult m, cache_->match(*keys));
  ASSERT_EQ(m.host_tokens, 256);
  // Another prompt's chunks take the tier's slots after the match.
  serve(tokens(200, 5), PrefillPolicy::kLayerwise);
  const std::int32_t page = spec_.page_tokens;
  ASSERT_OK_AND_ASSIGN(auto pages, pool_->allocate((300 + page - 1) / page));
  WarmPrefillRequest r;
  r.tokens = prompt;
  r.keys = &*keys;
  r.match = m;  // stale
  r.kv = pool_->view();
  r.pages = pages;
  r.options.policy = PrefillPolicy::kLayerwise;
  ASSERT_OK_AND_ASSIGN(const WarmPrefillResult res, warm_->run(r, *stream_));
  EXPECT_EQ(res.next_token, cold.next);
  EXPECT_GT(res.fallback_tokens, 0);
  EXPECT_EQ(res.loaded_tokens + res.fallback_tokens, 256);
  EXPECT_FALSE(res.load_status.ok());
  EXPECT_TRUE(read_kv(pages, 300) == cold.kv);
  ASSERT_OK(stream_->synchronize());
  ASSERT_OK(pool_->release(pages));
}

// A GPU prefix that ends inside a chunk, with the rest of the cached prefix only in a lower tier
// (the case the replay's cross-policy check caught): the chunk holding the end of the GPU prefix
// is promoted whole and loaded from there; nothing is left uncomputed.
TEST_F(WarmPrefillTest, AGpuPrefixEndingInsideAChunkBeforeALowerTier) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<Store> lower, MemoryStore::create({}));
  build(8, {lower});
  const auto prompt = tokens(300, 8);
  const std::int32_t page = spec_.page_tokens;
  ASSERT_OK_AND_ASSIGN(auto resident, pool_->allocate((300 + page - 1) / page));
  const Served cold = serve(prompt, PrefillPolicy::kRecompute, 0, false, 0, &resident);
  serve(prompt, PrefillPolicy::kLayerwise);  // saves 4 chunks; they are written down
  ASSERT_OK(cache_->flush_lower_tiers());
  for (PrefillPolicy p :
       {PrefillPolicy::kLayerwise, PrefillPolicy::kPlanned, PrefillPolicy::kLoadThenCompute}) {
    for (std::int32_t gpu : {48, 64, 0}) {
      SCOPED_TRACE(std::string(prefill_policy_name(p)) + ", GPU prefix " + std::to_string(gpu));
      rebuild_cache(8, {lower});  // a new cache over the same lower tier: an empty host tier
      const Served s = serve(prompt, p, 0, false, gpu, &resident);
      EXPECT_EQ(s.next, cold.next) << s.result.plan.why;
      EXPECT_TRUE(s.kv == cold.kv) << "KV differs from the cold computation: " << s.result.plan.why;
      EXPECT_EQ(s.result.loaded_tokens + s.result.computed_tokens + gpu, 300) << s.result.plan.why;
      EXPECT_GT(s.result.plan.loaded_tokens(), 0) << s.result.plan.why;
      // What the tier did not deliver by the plan's deadline (a busy machine) was computed, and
      // says why.
      EXPECT_EQ(s.result.loaded_tokens + s.result.fallback_tokens, s.result.plan.loaded_tokens());
      if (s.result.fallback_tokens > 0) {
        EXPECT_FALSE(s.result.load_status.ok());
      }
    }
  }
  ASSERT_OK(pool_->release(resident));
}

// A plan that recomputes the front while the back comes from a lower tier, and the tier delivers
// nothing by the plan's deadline (each read takes far longer than its profile says): the front is
// computed first, then the back is computed too -- the whole answer is the cold one, the back
// counted as fallback with the deadline as the reason.
TEST_F(WarmPrefillTest, ALowerTierThatMissesItsDeadlineAfterTheFrontIsComputed) {
  std::vector<std::int32_t> prompt;
  Served cold;
  const auto faulty = prompt_in_lower_tier(21, prompt, cold);
  rebuild_cache(8, {faulty});  // an empty host tier: the prefix is in the lower tier only
  delay_reads(*faulty, std::chrono::seconds(2));  // the plan expects microseconds
  const Served s = serve(prompt, PrefillPolicy::kPlanned, 64, false, 0, nullptr, 128);
  EXPECT_EQ(s.result.plan.load_begin, 128) << s.result.plan.why;
  EXPECT_EQ(s.next, cold.next);
  EXPECT_TRUE(s.kv == cold.kv);
  EXPECT_EQ(s.result.loaded_tokens + s.result.fallback_tokens, 128);
  EXPECT_GT(s.result.fallback_tokens, 0);
  EXPECT_EQ(s.result.load_status.code(), StatusCode::kDeadlineExceeded)
      << s.result.load_status.to_string();
  warm_.reset();
  cache_.reset();  // waits for the read in flight, before the rule goes
  faulty->clear_rules();
}

// A lower tier slower than its profile but steady: each read takes 100 ms where the profile has
// the four chunks in host slots after 120 ms (two readers: two chunks land at 100 ms, two at
// 200 ms; the deadline is 152 ms). Past the deadline the run weighs the two chunks still coming,
// at the pace so far, against computing them by the profile: with a profile where computing costs
// seconds it waits for them and computes nothing twice; with one where it costs microseconds it
// computes them. The answer is the cold one either way.
TEST_F(WarmPrefillTest, ALateButSteadyLowerTierIsWaitedForOnlyWhenThatBeatsComputing) {
  std::vector<std::int32_t> prompt;
  Served cold;
  const auto faulty = prompt_in_lower_tier(33, prompt, cold);
  for (const bool costly_compute : {true, false}) {
    SCOPED_TRACE(costly_compute ? "computing costs seconds" : "computing costs microseconds");
    const CostProfile profile = lower_tier_profile(120.0, costly_compute ? 1e6 : 1e-3);
    rebuild_cache(8, {faulty}, &profile);  // an empty host tier: the prefix is in the tier only
    faulty->clear_rules();
    delay_reads(*faulty, std::chrono::milliseconds(100));
    // Split 0: load every cached chunk, whatever the compute costs.
    const Served s = serve(prompt, PrefillPolicy::kPlanned, 64, false, 0, nullptr, 0);
    ASSERT_EQ(s.result.plan.loaded_tokens(), 4 * kChunk) << s.result.plan.why;
    EXPECT_NEAR(s.result.plan.lower_ready_ms, 120.0, 1.0) << s.result.plan.why;
    EXPECT_EQ(s.next, cold.next);
    EXPECT_TRUE(s.kv == cold.kv);
    EXPECT_EQ(s.result.loaded_tokens + s.result.fallback_tokens, 4 * kChunk);
    EXPECT_GT(s.result.lower_ready_ms, s.result.plan.lower_ready_ms * 1.25)
        << "the run waited past the deadline, or stopped waiting at it";
    if (costly_compute) {
      EXPECT_GE(s.result.lower_extensions, 1);
      EXPECT_EQ(s.result.fallback_tokens, 0) << s.result.load_status.to_string();
      EXPECT_OK(s.result.load_status);
    } else {
      EXPECT_EQ(s.result.lower_extensions, 0);
      EXPECT_EQ(s.result.fallback_tokens, 2 * kChunk) << "the two chunks still coming";
      EXPECT_EQ(s.result.load_status.code(), StatusCode::kDeadlineExceeded)
          << s.result.load_status.to_string();
    }
    warm_.reset();
    cache_.reset();  // waits for the reads in flight
  }
  faulty->clear_rules();
}

// A lower tiers' part is copied in groups as its chunks land in host slots: with four chunks read
// 60 ms each by two readers (two land at 60 ms, two at 120 ms), the first chunks' layers are on the
// device well before the run stops waiting for the last ones, and the answer is the cold one.
TEST_F(WarmPrefillTest, ALowerTiersPartIsCopiedInGroupsAsItsChunksLand) {
  std::vector<std::int32_t> prompt;
  Served cold;
  const auto faulty = prompt_in_lower_tier(35, prompt, cold);
  // Computing costs seconds by this profile: the tier is waited for.
  const CostProfile profile = lower_tier_profile(120.0, 1e6);
  rebuild_cache(8, {faulty}, &profile);
  delay_reads(*faulty, std::chrono::milliseconds(60));
  const Served s = serve(prompt, PrefillPolicy::kPlanned, 64, true, 0, nullptr, 0);
  ASSERT_EQ(s.result.plan.loaded_tokens(), 4 * kChunk) << s.result.plan.why;
  EXPECT_EQ(s.next, cold.next);
  EXPECT_TRUE(s.kv == cold.kv);
  EXPECT_EQ(s.result.loaded_tokens, 4 * kChunk) << s.result.load_status.to_string();
  double first_landed = 1e30;
  int loads = 0;
  for (const TimelineEntry& e : s.result.timeline) {
    if (e.lane != TimelineEntry::Lane::kLoad) continue;
    ++loads;
    first_landed = std::min(first_landed, e.end_ms);
  }
  // Groups of one chunk; chunks that landed together go in one load: two loads or more.
  EXPECT_GE(loads, 2 * spec_.num_layers);
  EXPECT_LE(loads, 4 * spec_.num_layers);
  EXPECT_LT(first_landed + 30.0, s.result.lower_ready_ms)
      << "the first chunks crossed while the last were being read";
  warm_.reset();
  cache_.reset();
  faulty->clear_rules();
}

// An engine's continuous-batching loop: one prefill chunk per step, a decode token of another
// sequence between steps. The answer and the KV are the cold ones, also when a load fails.
TEST_F(WarmPrefillTest, StepByStepBesideDecodesGivesTheColdAnswer) {
  const auto prompt = tokens(400, 9);
  const Served cold = serve(prompt, PrefillPolicy::kRecompute);
  serve(prompt, PrefillPolicy::kLayerwise);  // saves 6 chunks
  // Another running sequence that decodes between the steps.
  const std::int32_t page = spec_.page_tokens;
  ASSERT_OK_AND_ASSIGN(auto other_pages, pool_->allocate(8));
  Sequence other;
  other.pages = other_pages;
  const auto other_prompt = tokens(60, 10);
  ASSERT_OK(runner_->prefill(other, other_prompt, 64, *stream_, nullptr));
  for (std::uint64_t failing : {0, 1, 2}) {
    SCOPED_TRACE("failing copy " + std::to_string(failing));
    if (failing > 0) {
      ASSERT_OK(fault_->set_plan({.fail_copy_async = failing}));
    }
    ASSERT_OK_AND_ASSIGN(const PromptKeys keys, cache_->keys(prompt, "tenant"));
    ASSERT_OK_AND_ASSIGN(const MatchResult m, cache_->match(keys));
    ASSERT_OK_AND_ASSIGN(auto pages, pool_->allocate((400 + page - 1) / page));
    WarmPrefillRequest r;
    r.tokens = prompt;
    r.keys = &keys;
    r.match = m;
    r.kv = pool_->view();
    r.pages = pages;
    r.options.policy = PrefillPolicy::kLayerwise;
    r.options.chunk_tokens = 64;
    ASSERT_OK_AND_ASSIGN(auto run, warm_->start(r, *stream_));
    int steps = 0;
    while (!run->done()) {
      EXPECT_GT(run->next_chunk_tokens(), 0);
      ASSERT_OK(run->step().status());
      ++steps;
      Sequence* seqs[] = {&other};
      const std::int32_t t[] = {1};
      std::vector<std::int32_t> next;
      if (other.len < 120) {
        ASSERT_OK(runner_->decode(seqs, t, *stream_, nullptr, &next));
      }
    }
    fault_->clear_plan();
    EXPECT_EQ(run->next_chunk_tokens(), 0);
    EXPECT_EQ(run->step().status().code(), StatusCode::kFailedPrecondition);
    ASSERT_OK_AND_ASSIGN(const WarmPrefillResult res, run->finish());
    run.reset();
    EXPECT_EQ(res.next_token, cold.next);
    EXPECT_TRUE(read_kv(pages, 400) == cold.kv);
    EXPECT_GE(steps, failing > 0 ? 2 : 1);
    if (failing > 0) {
      EXPECT_EQ(res.fallback_tokens, 384);
    }
    if (res.save) {
      ASSERT_OK(res.save->wait());
    }
    ASSERT_OK(stream_->synchronize());
    ASSERT_OK(pool_->release(pages));
  }
  ASSERT_OK(pool_->release(other_pages));
}

// Several requests started at once (start_many), two of them returning to the same document with
// different questions: every answer and all KV are the cold ones, the shared document crosses
// PCIe once (the second request copies it device to device), and a load copy failing after it
// ran turns the affected requests into recompute with the same answers.
TEST_F(WarmPrefillTest, StartManyGivesEveryRequestTheColdAnswer) {
  const auto doc = tokens(384, 11);
  std::vector<std::vector<std::int32_t>> prompts;
  for (unsigned q : {12u, 13u}) {
    auto p = doc;
    const auto question = tokens(40 + q, q);
    p.insert(p.end(), question.begin(), question.end());
    prompts.push_back(std::move(p));
  }
  prompts.push_back(tokens(300, 14));
  std::vector<Served> cold;
  for (const auto& p : prompts)
    cold.push_back(serve(p, PrefillPolicy::kRecompute));
  serve(prompts[0], PrefillPolicy::kLayerwise);  // saves the document's 6 chunks
  serve(prompts[2], PrefillPolicy::kLayerwise);  // and the other prompt's 4
  const std::int32_t page = spec_.page_tokens;
  for (std::uint64_t failing : {0, 2}) {
    SCOPED_TRACE("failing copy " + std::to_string(failing));
    std::vector<PromptKeys> keys;
    std::vector<std::vector<std::int32_t>> pages;
    std::vector<WarmPrefillRequest> rs;
    for (const auto& p : prompts) {
      ASSERT_OK_AND_ASSIGN(PromptKeys k, cache_->keys(p, "tenant"));
      keys.push_back(std::move(k));
      ASSERT_OK_AND_ASSIGN(auto pg, pool_->allocate((std::int32_t(p.size()) + page - 1) / page));
      pages.push_back(std::move(pg));
    }
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_OK_AND_ASSIGN(const MatchResult m, cache_->match(keys[i]));
      WarmPrefillRequest r;
      r.tokens = prompts[i];
      r.keys = &keys[i];
      r.match = m;
      r.kv = pool_->view();
      r.pages = pages[i];
      r.options.policy = PrefillPolicy::kLayerwise;
      r.options.chunk_tokens = 64;
      rs.push_back(r);
    }
    auto bad = rs;
    bad[1].pages = {};
    const auto refused = warm_->start_many(bad, *stream_);
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(refused.status().message().find("request 1"), std::string::npos);

    const CacheStats before = cache_->stats();
    if (failing > 0) {
      ASSERT_OK(fault_->set_plan({.fail_copy_async = failing}));
    }
    ASSERT_OK_AND_ASSIGN(auto runs, warm_->start_many(rs, *stream_));
    ASSERT_EQ(runs.size(), prompts.size());
    for (bool any = true; any;) {  // one chunk of each in turn, as a batching engine would
      any = false;
      for (auto& run : runs) {
        if (run->done()) continue;
        ASSERT_OK(run->step().status());
        any = true;
      }
    }
    fault_->clear_plan();
    for (std::size_t i = 0; i < runs.size(); ++i) {
      SCOPED_TRACE("request " + std::to_string(i));
      ASSERT_OK_AND_ASSIGN(const WarmPrefillResult res, runs[i]->finish());
      EXPECT_EQ(res.next_token, cold[i].next);
      if (res.save) {
        ASSERT_OK(res.save->wait());
      }
      ASSERT_OK(stream_->synchronize());
      EXPECT_TRUE(read_kv(pages[i], std::int32_t(prompts[i].size())) == cold[i].kv);
      if (failing == 0) {
        EXPECT_EQ(res.loaded_tokens, i < 2 ? 384 : 256);
        EXPECT_EQ(res.fallback_tokens, 0);
      } else {
        EXPECT_GT(res.fallback_tokens, 0) << "every load shared the failed copy's stream";
      }
    }
    runs.clear();
    const CacheStats after = cache_->stats();
    if (failing == 0) {
      EXPECT_EQ(after.shared_chunks - before.shared_chunks, 6u) << "the document was shared";
      EXPECT_EQ(after.bytes_loaded - before.bytes_loaded,
                std::uint64_t(384 + 256) * spec_.kv_bytes_per_token())
          << "each prefix crossed PCIe once";
    }
    for (auto& pg : pages)
      ASSERT_OK(pool_->release(pg));
  }
}

TEST_F(WarmPrefillTest, RecordsATimelineOfLoadsAndCompute) {
  const auto prompt = tokens(300, 6);
  serve(prompt, PrefillPolicy::kLayerwise);
  const Served s = serve(prompt, PrefillPolicy::kLayerwise, 0, true);
  int loads = 0, computes = 0;
  for (const TimelineEntry& e : s.result.timeline) {
    EXPECT_LE(e.start_ms, e.end_ms);
    EXPECT_GE(e.start_ms, 0.0);
    (e.lane == TimelineEntry::Lane::kLoad ? loads : computes)++;
  }
  EXPECT_EQ(loads, spec_.num_layers);
  EXPECT_GE(computes, spec_.num_layers);
}

TEST_F(WarmPrefillTest, RefusesMalformedRequests) {
  const auto prompt = tokens(100, 7);
  ASSERT_OK_AND_ASSIGN(const PromptKeys keys, cache_->keys(prompt, ""));
  ASSERT_OK_AND_ASSIGN(auto pages, pool_->allocate(7));
  WarmPrefillRequest r;
  r.tokens = prompt;
  r.keys = &keys;
  r.kv = pool_->view();
  r.pages = pages;
  const auto code = [&](const WarmPrefillRequest& q) {
    return warm_->run(q, *stream_).status().code();
  };
  WarmPrefillRequest bad = r;
  bad.keys = nullptr;
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = r;
  bad.pages = std::span(pages).first(3);
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = r;
  bad.match.gpu_tokens = 112;  // reaches the page of the last token
  bad.match.host_tokens = 112;
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = r;
  bad.options.policy = PrefillPolicy::kRecompute;
  bad.match.gpu_tokens = 16;
  bad.match.host_tokens = 16;
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = r;
  bad.options.chunk_tokens = 100000;
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = r;
  bad.tokens = std::span(prompt).first(50);
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = r;
  bad.options.queue_layers = -2;
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  ASSERT_OK(pool_->release(pages));
}

}  // namespace
}  // namespace tierkv

// Every failure path of the cache's load, save, flush and creation, and of the page pool, driven by
// the fault-injecting backend over the CPU backend: each copy, record, wait, allocation and
// creation that an operation makes is broken in turn (at queueing and, for copies, after they ran),
// and in every case the cache serves nothing wrong, loses no pin, and reports the error through
// the API the engine uses (load/save results, wait_layer, wait, the compute stream, flush,
// on_async_error, stats).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/fault/fault_backend.h"
#include "cache_harness.h"

namespace tierkv {
namespace {

using fault::FaultBackend;
using fault::FaultCounts;
using fault::FaultPlan;
using test::CacheHarness;
using test::random_tokens;

constexpr std::int32_t kChunk = CacheHarness::kChunk;

class CacheFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(inner_, create_backend(BackendKind::kCpu));
    fault_ = std::make_unique<FaultBackend>(*inner_);
    h_ = std::make_unique<CacheHarness>(*fault_);
    ASSERT_OK_AND_ASSIGN(stream_, fault_->create_stream());
  }
  void TearDown() override {
    fault_->clear_plan();
    stream_.reset();
    h_.reset();
    fault_.reset();
    inner_.reset();
  }

  // A cache that records every asynchronous error it reports.
  std::unique_ptr<Cache> make_cache(std::int32_t host_chunks, bool queue_in_background = true) {
    CacheOptions o = h_->options(host_chunks);
    o.queue_in_background = queue_in_background;
    o.transfer.calibrate = false;  // keep the fault counts to the operation under test
    o.on_async_error = [this](const Status& s) {
      std::lock_guard lock(mu_);
      async_errors_.push_back(s);
    };
    auto c = Cache::create(*fault_, o);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? std::move(c).value() : nullptr;
  }
  std::size_t async_errors() {
    std::lock_guard lock(mu_);
    return async_errors_.size();
  }

  std::unique_ptr<Backend> inner_;
  std::unique_ptr<FaultBackend> fault_;
  std::unique_ptr<CacheHarness> h_;
  std::unique_ptr<Stream> stream_;
  std::mutex mu_;
  std::vector<Status> async_errors_;
};

// The defect this guards against: a load that failed after queueing layer 0 returned at once and
// unpinned its slot; a save then reused the slot and the late layer-0 copy wrote the other
// prompt's KV into the engine's pages. Copies are delayed so that a late copy would land after the
// save rewrote the slot.
TEST_F(CacheFaultTest, AFailedLoadLandsNothingAfterItReturned) {
  auto cache = make_cache(1);
  std::mt19937_64 rng(11);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 1);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(kChunk / h_->model().page_tokens));
  h_->clobber(*stream_, dst);
  ASSERT_OK(stream_->synchronize());

  FaultPlan plan;
  plan.copy_delay = std::chrono::milliseconds(60);
  plan.fail_record = 2;  // layer 0's copy and record are queued; layer 1's record fails
  ASSERT_OK(fault_->set_plan(plan));
  auto load = cache->load(h_->load_request(a, 0, kChunk, dst));
  ASSERT_FALSE(load.ok());
  EXPECT_EQ(load.status().code(), StatusCode::kDeviceError);
  fault_->clear_plan();

  // Another prompt takes the only slot now.
  const PromptKeys b = h_->save_prompt(*cache, *stream_, rng, 1);
  ASSERT_EQ(cache->match(a)->host_tokens, 0);
  ASSERT_EQ(cache->match(b)->host_tokens, kChunk);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // any late copy has landed now
  ASSERT_OK(cache->flush());
  // What load() had queued before it failed (both layers' copies) landed before it returned, and
  // nothing of b's came later.
  const std::size_t pages = dst.size();
  EXPECT_EQ(h_->matching_blocks(*stream_, b, dst, 0, pages), 0u)
      << "another prompt's KV reached the engine's pages";
  EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, pages), 0u);
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  EXPECT_EQ(cache->stats().load_errors, 1u);
  ASSERT_OK(h_->pool().release(dst));
}

// Each call a load makes, broken in turn, at queueing: load() refuses, nothing stays pinned, the
// engine's pages get nothing after the error, and the same load then succeeds.
TEST_F(CacheFaultTest, EveryQueueingFailureOfALoadIsFenced) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(12);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 3);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(3 * kChunk / h_->model().page_tokens));

  fault_->clear_plan();
  {
    ASSERT_OK_AND_ASSIGN(Load clean, cache->load(h_->load_request(a, 0, 3 * kChunk, dst)));
    ASSERT_OK(clean.wait());
  }
  const FaultCounts counts = fault_->counts();
  ASSERT_GT(counts.copies, 0u);
  ASSERT_GT(counts.records, 0u);
  ASSERT_GT(counts.event_creations, 0u);
  int cases = 0;
  const auto sweep = [&](std::uint64_t FaultPlan::*field, std::uint64_t n, const char* what) {
    for (std::uint64_t k = 1; k <= n; ++k) {
      SCOPED_TRACE(std::string(what) + " " + std::to_string(k));
      FaultPlan plan;
      plan.*field = k;
      plan.copy_delay = std::chrono::milliseconds(2);
      ASSERT_OK(fault_->set_plan(plan));
      auto load = cache->load(h_->load_request(a, 0, 3 * kChunk, dst));
      fault_->clear_plan();
      ASSERT_FALSE(load.ok()) << "the fault did not reach the caller";
      EXPECT_EQ(cache->stats().host_pinned_slots, 0) << "a failed load kept its pins";
      ++cases;
    }
  };
  sweep(&FaultPlan::fail_copy_at_enqueue, counts.copies, "copy");
  sweep(&FaultPlan::fail_record, counts.records, "record");
  sweep(&FaultPlan::fail_create_event, counts.event_creations, "event creation");
  EXPECT_EQ(cache->stats().load_errors, std::uint64_t(cases));

  ASSERT_OK_AND_ASSIGN(Load again, cache->load(h_->load_request(a, 0, 3 * kChunk, dst)));
  ASSERT_OK(again.wait());
  EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size()), 0u);
  ASSERT_OK(h_->pool().release(dst));
  std::cout << "cache faults: " << cases << " queueing failures of a load, all fenced\n";
}

// Each copy of a load, failing after it ran: the Load exists, and its error reaches the engine
// through wait(), through wait_layer() once known, through the compute stream that waited on the
// layer, and (for a Load nobody waited for) through stats and on_async_error.
TEST_F(CacheFaultTest, AnAsynchronousCopyErrorOfALoadReachesTheEngine) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(13);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(2 * kChunk / h_->model().page_tokens));
  const std::int32_t layers = h_->model().num_layers;
  for (std::int32_t failing = 1; failing <= layers; ++failing) {
    SCOPED_TRACE("copy " + std::to_string(failing));
    FaultPlan plan;
    plan.fail_copy_async = std::uint64_t(failing);  // one copy per layer
    ASSERT_OK(fault_->set_plan(plan));
    ASSERT_OK_AND_ASSIGN(Load load, cache->load(h_->load_request(a, 0, 2 * kChunk, dst)));
    ASSERT_OK_AND_ASSIGN(auto compute, fault_->create_stream());
    Status waits;
    for (std::int32_t l = 0; l < layers && waits.ok(); ++l)
      waits = load.wait_layer(l, *compute);
    const Status compute_status = compute->synchronize();
    EXPECT_FALSE(waits.ok() && compute_status.ok())
        << "the compute stream that waited for the layers saw no error";
    EXPECT_EQ(load.wait().code(), StatusCode::kDeviceError);
    EXPECT_EQ(load.wait().code(), StatusCode::kDeviceError) << "wait() again: the same status";
    EXPECT_FALSE(load.wait_layer(0, *compute).ok()) << "a finished failed load refuses layers";
    fault_->clear_plan();
  }
  const std::size_t before = async_errors();
  {
    ASSERT_OK(fault_->set_plan({.fail_copy_async = 1}));
    ASSERT_OK_AND_ASSIGN(Load unwatched, cache->load(h_->load_request(a, 0, 2 * kChunk, dst)));
  }  // destroyed without wait(): its error goes to on_async_error
  fault_->clear_plan();
  EXPECT_EQ(async_errors(), before + 1);
  EXPECT_EQ(cache->stats().load_errors, std::uint64_t(layers) + 1);
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  ASSERT_OK(h_->pool().release(dst));
}

// Layer-major issue: load_many queues layer l of every request before layer l + 1 of any, one
// copy per layer. Failing the second copy (layer 1) after it ran leaves every request's layer 0
// clean and fails every request's wait(); request-major issue would have failed the later
// requests' layer 0 as well.
TEST_F(CacheFaultTest, LoadManyIssuesLayerMajor) {
  auto cache = make_cache(8);
  std::mt19937_64 rng(17);
  std::vector<PromptKeys> prompts;
  for (int i = 0; i < 3; ++i)
    prompts.push_back(h_->save_prompt(*cache, *stream_, rng, 2));
  const std::int32_t ppc = kChunk / h_->model().page_tokens;
  ASSERT_OK_AND_ASSIGN(auto pages, h_->pool().allocate(6 * ppc));
  std::vector<LoadRequest> rs;
  for (int i = 0; i < 3; ++i)
    rs.push_back(
        h_->load_request(prompts[std::size_t(i)], 0, 2 * kChunk,
                         std::span(pages).subspan(std::size_t(i * 2 * ppc), 2 * std::size_t(ppc))));
  ASSERT_OK(fault_->set_plan({.fail_copy_async = 2, .copy_delay = std::chrono::milliseconds(5)}));
  ASSERT_OK_AND_ASSIGN(std::vector<Load> loads, cache->load_many(rs));
  ASSERT_EQ(loads.size(), 3u);
  for (std::size_t i = 0; i < loads.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    ASSERT_OK_AND_ASSIGN(auto compute, fault_->create_stream());
    ASSERT_OK(loads[i].wait_layer(0, *compute));
    const Status landed = compute->synchronize();
    EXPECT_TRUE(landed.ok()) << "layer 0 must land before the failing layer-1 copy: "
                             << landed.to_string();
  }
  for (Load& l : loads)
    EXPECT_EQ(l.wait().code(), StatusCode::kDeviceError);
  fault_->clear_plan();
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  ASSERT_OK(h_->pool().release(pages));
}

// A load that shares another's chunks in flight fails with it: the source's failed copies come
// before the shared copies on the load stream, so the later load's events carry the error and its
// wait() reports it (its pages must be recomputed), never a success over garbage.
TEST_F(CacheFaultTest, ALoadSharingAFailedLoadFailsToo) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(19);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  const std::int32_t ppc = kChunk / h_->model().page_tokens;
  ASSERT_OK_AND_ASSIGN(auto first_pages, h_->pool().allocate(2 * ppc));
  ASSERT_OK_AND_ASSIGN(auto second_pages, h_->pool().allocate(2 * ppc));
  for (std::uint64_t failing = 1; failing <= std::uint64_t(h_->model().num_layers); ++failing) {
    SCOPED_TRACE("source copy " + std::to_string(failing));
    ASSERT_OK(
        fault_->set_plan({.fail_copy_async = failing, .copy_delay = std::chrono::milliseconds(2)}));
    ASSERT_OK_AND_ASSIGN(Load first, cache->load(h_->load_request(a, 0, 2 * kChunk, first_pages)));
    ASSERT_OK_AND_ASSIGN(Load second,
                         cache->load(h_->load_request(a, 0, 2 * kChunk, second_pages)));
    EXPECT_EQ(second.shared_tokens(), 2 * kChunk);
    EXPECT_EQ(second.wait().code(), StatusCode::kDeviceError);
    EXPECT_EQ(first.wait().code(), StatusCode::kDeviceError);
    fault_->clear_plan();
  }
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  ASSERT_OK(h_->pool().release(first_pages));
  ASSERT_OK(h_->pool().release(second_pages));
}

// The source's pages stay the engine's until the loads that copy out of them are done: its Load,
// destroyed while their (delayed) copies are still queued, waits for them, so the engine may
// overwrite the pages right after and the sharing load still gets exact bytes.
TEST_F(CacheFaultTest, ASourceLoadWaitsForTheLoadsThatShareIt) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(23);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  const std::int32_t ppc = kChunk / h_->model().page_tokens;
  ASSERT_OK_AND_ASSIGN(auto first_pages, h_->pool().allocate(2 * ppc));
  ASSERT_OK_AND_ASSIGN(auto second_pages, h_->pool().allocate(2 * ppc));
  ASSERT_OK(fault_->set_plan({.copy_delay = std::chrono::milliseconds(20)}));
  std::optional<Load> second;
  {
    ASSERT_OK_AND_ASSIGN(Load first, cache->load(h_->load_request(a, 0, 2 * kChunk, first_pages)));
    ASSERT_OK_AND_ASSIGN(Load shared,
                         cache->load(h_->load_request(a, 0, 2 * kChunk, second_pages)));
    EXPECT_EQ(shared.shared_tokens(), 2 * kChunk);
    second.emplace(std::move(shared));
  }  // `first` is destroyed here, the shared copies still queued behind their delays
  fault_->clear_plan();
  ASSERT_OK_AND_ASSIGN(auto other, fault_->create_stream());
  h_->clobber(*other, first_pages);  // the engine reuses the source's pages at once
  ASSERT_OK(other->synchronize());
  ASSERT_OK(second->wait());
  EXPECT_EQ(h_->wrong_elements(*stream_, a, second_pages, 0, second_pages.size()), 0u);
  ASSERT_OK(h_->pool().release(first_pages));
  ASSERT_OK(h_->pool().release(second_pages));
}

// ---- Loads queued layer by layer (LoadRequest::queue_layers)
// -------------------------------------

// Without the queueing thread (CacheOptions::queue_in_background), so that which call queues
// which layer is known; the thread's own tests come last.
class LazyLoadTest : public CacheFaultTest {
 protected:
  static constexpr std::int32_t kLayers = 6;
  void SetUp() override {
    CacheFaultTest::SetUp();
    h_ = std::make_unique<CacheHarness>(*fault_, 512, kLayers);
  }
  std::unique_ptr<Cache> make_cache(std::int32_t host_chunks) {
    return CacheFaultTest::make_cache(host_chunks, false);
  }
  // Polls until the load's layers are all queued or `limit` passed.
  static std::int32_t wait_queued(const Load& load, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (load.queued_layers() < kLayers && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return load.queued_layers();
  }
  LoadRequest lazy(const PromptKeys& keys, std::int32_t chunks, std::span<const std::int32_t> dst,
                   std::int32_t queue_layers = 1) const {
    LoadRequest r = h_->load_request(keys, 0, chunks * kChunk, dst);
    r.queue_layers = queue_layers;
    return r;
  }
};

// load() queues the layers it was asked to, wait_layer(l) those through l + kQueueAhead,
// queue_through(l) those through l, each once; every layer lands exactly, and the load's bytes
// count as queued (Cache::queued_load_bytes) although its last layer is not queued yet.
TEST_F(LazyLoadTest, LayersAreQueuedAsTheEngineReachesThem) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(31);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(2 * kChunk / h_->model().page_tokens));
  h_->clobber(*stream_, dst);
  ASSERT_OK(stream_->synchronize());
  ASSERT_OK(fault_->set_plan({.copy_delay = std::chrono::milliseconds(1)}));
  ASSERT_OK_AND_ASSIGN(Load load, cache->load(lazy(a, 2, dst)));
  EXPECT_EQ(fault_->counts().copies, 1u) << "one copy per layer: layer 0 only";
  EXPECT_EQ(load.queued_layers(), 1);
  EXPECT_EQ(cache->queued_load_bytes(), 2 * h_->chunk_bytes());
  ASSERT_OK_AND_ASSIGN(auto compute, fault_->create_stream());
  ASSERT_OK(load.wait_layer(0, *compute));
  EXPECT_EQ(fault_->counts().copies, 1u + Load::kQueueAhead);
  EXPECT_EQ(load.queued_layers(), 1 + Load::kQueueAhead);
  ASSERT_OK(load.queue_through(4));
  EXPECT_EQ(fault_->counts().copies, 5u);
  ASSERT_OK(load.wait_layer(1, *compute));  // queued already: nothing more
  EXPECT_EQ(fault_->counts().copies, 5u);
  EXPECT_EQ(load.queue_through(-1).code(), StatusCode::kInvalidArgument);
  ASSERT_OK(load.queue_through(1000));  // clamped to the last layer
  EXPECT_EQ(fault_->counts().copies, std::uint64_t(kLayers));
  for (std::int32_t l = 0; l < kLayers; ++l)
    ASSERT_OK(load.wait_layer(l, *compute));
  ASSERT_OK(compute->synchronize());
  ASSERT_OK(load.wait());
  fault_->clear_plan();
  EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size()), 0u);
  EXPECT_EQ(cache->queued_load_bytes(), 0u);
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  ASSERT_OK(h_->pool().release(dst));
}

// A Load destroyed, or waited for, before its later layers were queued queues them first: its
// pins are released only after every copy that reads them ran, and nothing is left queued.
TEST_F(LazyLoadTest, WaitOrDestroyQueuesTheRest) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(32);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(2 * kChunk / h_->model().page_tokens));
  ASSERT_OK(fault_->set_plan({.copy_delay = std::chrono::milliseconds(2)}));
  { ASSERT_OK_AND_ASSIGN(Load load, cache->load(lazy(a, 2, dst))); }
  EXPECT_EQ(fault_->counts().copies, std::uint64_t(kLayers));
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  EXPECT_EQ(cache->queued_load_bytes(), 0u);
  h_->clobber(*stream_, dst);
  ASSERT_OK(stream_->synchronize());
  ASSERT_OK_AND_ASSIGN(Load load, cache->load(lazy(a, 2, dst)));
  ASSERT_OK(load.wait());
  fault_->clear_plan();
  EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size()), 0u);
  EXPECT_EQ(cache->stats().load_errors, 0u);
  ASSERT_OK(h_->pool().release(dst));
}

// Loads leave the load stream in the order they were asked for, and a load that shares the
// chunks of an earlier one still in flight copies each layer after it landed there: a later
// load() first queues the rest of the earlier one. The earlier load's pages are clobbered first,
// so a layer copied out of them before it landed would be wrong.
TEST_F(LazyLoadTest, ALaterLoadQueuesTheRestOfAnEarlierOneFirst) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(33);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  const std::int32_t ppc = kChunk / h_->model().page_tokens;
  ASSERT_OK_AND_ASSIGN(auto first_pages, h_->pool().allocate(2 * ppc));
  ASSERT_OK_AND_ASSIGN(auto second_pages, h_->pool().allocate(2 * ppc));
  for (std::int32_t queue_layers : {1, 3, -1}) {
    SCOPED_TRACE("second load queues " + std::to_string(queue_layers) + " layers");
    h_->clobber(*stream_, first_pages);
    h_->clobber(*stream_, second_pages);
    ASSERT_OK(stream_->synchronize());
    ASSERT_OK(fault_->set_plan({.copy_delay = std::chrono::milliseconds(1)}));
    ASSERT_OK_AND_ASSIGN(Load first, cache->load(lazy(a, 2, first_pages)));
    ASSERT_OK_AND_ASSIGN(Load second, cache->load(lazy(a, 2, second_pages, queue_layers)));
    EXPECT_EQ(second.shared_tokens(), 2 * kChunk);
    EXPECT_EQ(fault_->counts().copies,
              std::uint64_t(kLayers + (queue_layers < 0 ? kLayers : queue_layers)))
        << "the first load's layers all queued before the second's";
    ASSERT_OK(second.wait());
    ASSERT_OK(first.wait());
    fault_->clear_plan();
    EXPECT_EQ(h_->wrong_elements(*stream_, a, second_pages, 0, second_pages.size()), 0u);
    EXPECT_EQ(h_->wrong_elements(*stream_, a, first_pages, 0, first_pages.size()), 0u);
  }
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  ASSERT_OK(h_->pool().release(first_pages));
  ASSERT_OK(h_->pool().release(second_pages));
}

// Each copy and record of a later layer, failing when it is queued: load() has returned, so the
// failure reaches the engine through wait_layer() from the failed layer on (the layers before it
// landed exactly and may be used), queue_through(), and wait(); nothing stays pinned, and nothing
// of the load lands after the error was returned (the engine recomputes those layers' KV into the
// same pages).
TEST_F(LazyLoadTest, AFailureToQueueALaterLayerEndsTheLoadThere) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(34);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(2 * kChunk / h_->model().page_tokens));
  int cases = 0;
  for (int kind = 0; kind < 2; ++kind) {
    for (std::int32_t failing = 1; failing < kLayers; ++failing) {  // layer 0 is queued by load()
      SCOPED_TRACE(std::string(kind == 0 ? "copy" : "record") + " of layer " +
                   std::to_string(failing));
      h_->clobber(*stream_, dst);
      ASSERT_OK(stream_->synchronize());
      FaultPlan plan;
      plan.copy_delay = std::chrono::milliseconds(2);
      // One copy and one record per layer.
      (kind == 0 ? plan.fail_copy_at_enqueue : plan.fail_record) = std::uint64_t(failing) + 1;
      ASSERT_OK(fault_->set_plan(plan));
      ASSERT_OK_AND_ASSIGN(Load load, cache->load(lazy(a, 2, dst)));
      ASSERT_OK_AND_ASSIGN(auto compute, fault_->create_stream());
      for (std::int32_t l = 0; l < kLayers; ++l) {
        const Status w = load.wait_layer(l, *compute);
        if (l < failing) {
          EXPECT_TRUE(w.ok()) << "layer " << l << ": " << w.to_string();
        } else {
          EXPECT_EQ(w.code(), StatusCode::kDeviceError) << "layer " << l;
        }
      }
      EXPECT_EQ(load.queue_through(kLayers - 1).code(), StatusCode::kDeviceError);
      EXPECT_EQ(load.queued_layers(), failing);
      ASSERT_OK(compute->synchronize());
      fault_->clear_plan();
      // The layers before the failure hold the prompt's KV; then the engine overwrites the rest.
      EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size(), failing), 0u);
      h_->clobber(*stream_, dst);
      ASSERT_OK(stream_->synchronize());
      EXPECT_EQ(load.wait().code(), StatusCode::kDeviceError);
      EXPECT_EQ(cache->stats().host_pinned_slots, 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a late copy would land now
      EXPECT_EQ(h_->matching_blocks(*stream_, a, dst, 0, dst.size()), 0u)
          << "a copy of the failed load landed after it reported the failure";
      ++cases;
    }
  }
  EXPECT_EQ(cache->stats().load_errors, std::uint64_t(cases));
  // The same load, unbroken, then succeeds.
  ASSERT_OK_AND_ASSIGN(Load again, cache->load(lazy(a, 2, dst)));
  ASSERT_OK(again.wait());
  EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size()), 0u);
  ASSERT_OK(h_->pool().release(dst));
  std::cout << "cache faults: " << cases << " failures queueing a later layer, all fenced\n";
}

// load_many() with queue_layers: the later layers are still queued layer-major across the
// requests, whichever request's wait_layer() reaches them.
TEST_F(LazyLoadTest, LoadManyQueuesLaterLayersLayerMajor) {
  auto cache = make_cache(8);
  std::mt19937_64 rng(35);
  std::vector<PromptKeys> prompts;
  for (int i = 0; i < 3; ++i)
    prompts.push_back(h_->save_prompt(*cache, *stream_, rng, 2));
  const std::int32_t ppc = kChunk / h_->model().page_tokens;
  ASSERT_OK_AND_ASSIGN(auto pages, h_->pool().allocate(6 * ppc));
  std::vector<LoadRequest> rs;
  for (int i = 0; i < 3; ++i) {
    rs.push_back(lazy(prompts[std::size_t(i)], 2,
                      std::span(pages).subspan(std::size_t(i * 2 * ppc), 2 * std::size_t(ppc))));
  }
  ASSERT_OK(fault_->set_plan({.copy_delay = std::chrono::milliseconds(1)}));
  ASSERT_OK_AND_ASSIGN(std::vector<Load> loads, cache->load_many(rs));
  EXPECT_EQ(fault_->counts().copies, 1u) << "one copy per layer for the whole batch";
  ASSERT_OK_AND_ASSIGN(auto compute, fault_->create_stream());
  ASSERT_OK(loads[2].wait_layer(0, *compute));
  EXPECT_EQ(fault_->counts().copies, 1u + Load::kQueueAhead);
  for (Load& l : loads) {
    for (std::int32_t layer = 0; layer < kLayers; ++layer)
      ASSERT_OK(l.wait_layer(layer, *compute));
  }
  ASSERT_OK(compute->synchronize());
  for (Load& l : loads)
    ASSERT_OK(l.wait());
  fault_->clear_plan();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(h_->wrong_elements(*stream_, prompts[std::size_t(i)],
                                 std::span(pages).subspan(std::size_t(i * 2 * ppc)), 0,
                                 2 * std::size_t(ppc)),
              0u);
  }
  ASSERT_OK(h_->pool().release(pages));
}

// The queueing thread queues the later layers right after load() returns, with no call from the
// engine, and they land exactly.
TEST_F(LazyLoadTest, TheQueueingThreadQueuesTheRestUnasked) {
  auto cache = CacheFaultTest::make_cache(4, true);
  std::mt19937_64 rng(36);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(2 * kChunk / h_->model().page_tokens));
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    h_->clobber(*stream_, dst);
    ASSERT_OK(stream_->synchronize());
    ASSERT_OK_AND_ASSIGN(Load load, cache->load(lazy(a, 2, dst)));
    EXPECT_GE(load.queued_layers(), 1);
    EXPECT_EQ(wait_queued(load, std::chrono::seconds(10)), kLayers);
    if (round % 2 == 0) {  // the engine's waits race the thread on odd rounds
      ASSERT_OK_AND_ASSIGN(auto compute, fault_->create_stream());
      for (std::int32_t l = 0; l < kLayers; ++l)
        ASSERT_OK(load.wait_layer(l, *compute));
      ASSERT_OK(compute->synchronize());
    }
    ASSERT_OK(load.wait());
    EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size()), 0u);
  }
  EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  EXPECT_EQ(cache->stats().load_errors, 0u);
  ASSERT_OK(h_->pool().release(dst));
}

// A failure of the queueing thread's copy ends the load at that layer, as one of the engine's
// own call would: the layers before it are good, the engine's wait_layer() returns the error
// from there on, wait() returns it, nothing stays pinned.
TEST_F(LazyLoadTest, AFailureInTheQueueingThreadEndsTheLoadThere) {
  auto cache = CacheFaultTest::make_cache(4, true);
  std::mt19937_64 rng(37);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(2 * kChunk / h_->model().page_tokens));
  for (std::int32_t failing = 1; failing < kLayers; ++failing) {
    SCOPED_TRACE("copy of layer " + std::to_string(failing));
    h_->clobber(*stream_, dst);
    ASSERT_OK(stream_->synchronize());
    ASSERT_OK(fault_->set_plan({.fail_copy_at_enqueue = std::uint64_t(failing) + 1}));
    ASSERT_OK_AND_ASSIGN(Load load, cache->load(lazy(a, 2, dst)));
    // Whoever queues the failing layer (the thread, or this wait), the load ends there.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (load.queued_layers() < failing && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_OK_AND_ASSIGN(auto compute, fault_->create_stream());
    for (std::int32_t l = 0; l < kLayers; ++l) {
      const Status w = load.wait_layer(l, *compute);
      EXPECT_EQ(w.ok(), l < failing) << "layer " << l << ": " << w.to_string();
    }
    EXPECT_EQ(load.queued_layers(), failing);
    ASSERT_OK(compute->synchronize());
    fault_->clear_plan();
    EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size(), failing), 0u);
    EXPECT_EQ(load.wait().code(), StatusCode::kDeviceError);
    EXPECT_EQ(cache->stats().host_pinned_slots, 0);
  }
  // The thread goes on serving later loads.
  ASSERT_OK_AND_ASSIGN(Load again, cache->load(lazy(a, 2, dst)));
  EXPECT_EQ(wait_queued(again, std::chrono::seconds(10)), kLayers);
  ASSERT_OK(again.wait());
  EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size()), 0u);
  ASSERT_OK(h_->pool().release(dst));
}

// Each call a save makes, broken in turn, at queueing and after running: a failed save never
// publishes a chunk, flush() and on_async_error report the asynchronous failures, no slot stays
// reserved, and the same save then succeeds and its bytes load back exactly.
TEST_F(CacheFaultTest, AFailedSaveIsNeverVisible) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(14);
  const auto tokens = random_tokens(2 * kChunk, rng);
  ASSERT_OK_AND_ASSIGN(const PromptKeys keys, cache->keys(tokens, "t"));
  ASSERT_OK_AND_ASSIGN(auto src, h_->pool().allocate(std::int32_t(keys.pages.size())));
  h_->write_kv(*stream_, keys, src, keys.pages.size());
  ASSERT_OK(stream_->synchronize());

  FaultCounts counts;
  {  // count the calls of one save, on a cache of its own
    auto counting = make_cache(4);
    fault_->clear_plan();
    ASSERT_OK_AND_ASSIGN(Save s, counting->save(h_->save_request(keys, src, *stream_)));
    ASSERT_OK(s.wait());
    counts = fault_->counts();
  }
  int cases = 0;
  const auto sweep = [&](std::uint64_t FaultPlan::*field, std::uint64_t n, const char* what) {
    for (std::uint64_t k = 1; k <= n; ++k) {
      SCOPED_TRACE(std::string(what) + " " + std::to_string(k));
      FaultPlan plan;
      plan.*field = k;
      ASSERT_OK(fault_->set_plan(plan));
      const std::size_t before = async_errors();
      auto save = cache->save(h_->save_request(keys, src, *stream_));
      Status result = save.ok() ? save->wait() : save.status();
      const Status flushed = cache->flush();
      stream_->synchronize().ignore();  // a broken record or wait may have been the producer's
      fault_->clear_plan();
      EXPECT_FALSE(result.ok()) << "the fault did not reach the caller";
      if (save.ok()) {
        EXPECT_FALSE(flushed.ok()) << "flush() did not report the failed save";
        EXPECT_EQ(async_errors(), before + 1) << "on_async_error was not called";
      }
      EXPECT_EQ(cache->match(keys)->host_tokens, 0) << "a failed save published a chunk";
      const CacheStats st = cache->stats();
      EXPECT_EQ(st.host_ready_slots, 0);
      EXPECT_EQ(st.host_pinned_slots, 0) << "a failed save kept its reservations";
      ++cases;
    }
  };
  sweep(&FaultPlan::fail_copy_at_enqueue, counts.copies, "copy");
  sweep(&FaultPlan::fail_copy_async, counts.copies, "asynchronous copy");
  sweep(&FaultPlan::fail_record, counts.records, "record");
  sweep(&FaultPlan::fail_wait, counts.waits, "wait");
  sweep(&FaultPlan::fail_create_event, counts.event_creations, "event creation");
  EXPECT_EQ(cache->stats().save_errors, std::uint64_t(cases));

  ASSERT_OK_AND_ASSIGN(Save ok, cache->save(h_->save_request(keys, src, *stream_)));
  ASSERT_OK(ok.wait());
  ASSERT_OK(cache->flush());
  EXPECT_EQ(cache->match(keys)->host_tokens, 2 * kChunk);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(std::int32_t(keys.pages.size())));
  ASSERT_OK_AND_ASSIGN(Load load, cache->load(h_->load_request(keys, 0, 2 * kChunk, dst)));
  ASSERT_OK(load.wait());
  EXPECT_EQ(h_->wrong_elements(*stream_, keys, dst, 0, dst.size()), 0u);
  ASSERT_OK(h_->pool().release(dst));
  ASSERT_OK(h_->pool().release(src));
  std::cout << "cache faults: " << cases << " failures of a save, none visible\n";
}

// KV whose producer failed is not saved: the producer stream's error reaches the save.
TEST_F(CacheFaultTest, ASaveOfKvWhoseProducerFailedPublishesNothing) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(15);
  const auto tokens = random_tokens(kChunk, rng);
  ASSERT_OK_AND_ASSIGN(const PromptKeys keys, cache->keys(tokens, ""));
  ASSERT_OK_AND_ASSIGN(auto src, h_->pool().allocate(std::int32_t(keys.pages.size())));
  ASSERT_OK_AND_ASSIGN(Buffer scratch, fault_->allocate(MemoryKind::kDevice, 256));
  ASSERT_OK(fault_->set_plan({.fail_copy_async = 1}));
  ASSERT_OK(stream_->copy(scratch.data(), scratch.data(), 0 + 256));  // "the model" fails
  fault_->clear_plan();
  h_->write_kv(*stream_, keys, src, keys.pages.size());
  ASSERT_OK_AND_ASSIGN(Save save, cache->save(h_->save_request(keys, src, *stream_)));
  EXPECT_FALSE(save.wait().ok());
  EXPECT_FALSE(cache->flush().ok());
  EXPECT_EQ(cache->match(keys)->host_tokens, 0);
  EXPECT_FALSE(stream_->synchronize().ok());
  ASSERT_OK(h_->pool().release(src));
}

// Creation under every allocation, stream and event failure: a clear error, nothing leaked (the
// leak checks of the sanitizer builds see to the rest), and a later creation works.
TEST_F(CacheFaultTest, CreationFailuresAreCleanErrors) {
  fault_->clear_plan();
  { auto counting = make_cache(4); }
  const FaultCounts counts = fault_->counts();  // creation and destruction of one cache
  int cases = 0;
  for (auto [field, n] : {std::pair{&FaultPlan::fail_allocate, counts.allocations},
                          std::pair{&FaultPlan::fail_create_stream, counts.stream_creations},
                          std::pair{&FaultPlan::fail_create_event, counts.event_creations}}) {
    for (std::uint64_t k = 1; k <= n; ++k) {
      FaultPlan plan;
      plan.*field = k;
      ASSERT_OK(fault_->set_plan(plan));
      CacheOptions o = h_->options(4);
      o.transfer.calibrate = false;
      auto c = Cache::create(*fault_, o);
      EXPECT_FALSE(c.ok());
      EXPECT_FALSE(c.status().message().empty());
      ++cases;
    }
  }
  fault_->clear_plan();
  EXPECT_NE(make_cache(4), nullptr);
  // The page pool: each of its allocations failing.
  PagePoolOptions po;
  po.model = h_->model();
  po.num_pages = 64;
  fault_->clear_plan();
  { ASSERT_OK_AND_ASSIGN(auto pool, PagePool::create(*fault_, po)); }
  const std::uint64_t pool_allocs = fault_->counts().allocations;
  ASSERT_GT(pool_allocs, 0u);
  for (std::uint64_t k = 1; k <= pool_allocs; ++k) {
    ASSERT_OK(fault_->set_plan({.fail_allocate = k}));
    auto pool = PagePool::create(*fault_, po);
    EXPECT_EQ(pool.status().code(), StatusCode::kResourceExhausted);
    ++cases;
  }
  fault_->clear_plan();
  std::cout << "cache faults: " << cases << " creation failures, all clean errors\n";
}

// A Load and a Save outlive their Cache: the Load still waits, verifies and unpins; the Save's
// result is known (the Cache's destruction finished it).
TEST_F(CacheFaultTest, LoadsAndSavesOutliveTheirCache) {
  auto cache = make_cache(4);
  std::mt19937_64 rng(16);
  const PromptKeys a = h_->save_prompt(*cache, *stream_, rng, 2);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(2 * kChunk / h_->model().page_tokens));
  const auto tokens = random_tokens(kChunk, rng);
  ASSERT_OK_AND_ASSIGN(const PromptKeys b, cache->keys(tokens, ""));
  ASSERT_OK_AND_ASSIGN(auto src, h_->pool().allocate(std::int32_t(b.pages.size())));
  h_->write_kv(*stream_, b, src, b.pages.size());
  ASSERT_OK(fault_->set_plan({.copy_delay = std::chrono::milliseconds(30)}));
  ASSERT_OK_AND_ASSIGN(Load load, cache->load(h_->load_request(a, 0, 2 * kChunk, dst)));
  ASSERT_OK_AND_ASSIGN(Save save, cache->save(h_->save_request(b, src, *stream_)));
  cache.reset();
  fault_->clear_plan();
  EXPECT_TRUE(save.done());
  EXPECT_OK(save.wait());
  EXPECT_OK(load.wait());
  EXPECT_EQ(h_->wrong_elements(*stream_, a, dst, 0, dst.size()), 0u);
  ASSERT_OK(h_->pool().release(dst));
  ASSERT_OK(h_->pool().release(src));
}

}  // namespace
}  // namespace tierkv

// `tierkv calibrate`'s measurements on the CPU backend with the tiny model and the experiment tier
// (an in-memory store throttled to a stated bandwidth): a complete profile whose figures are what
// was set up (the tier's bandwidth within tolerance, prefill time growing with the tokens), that
// survives the profile file, and that a cache's transfer engine takes instead of measuring.
#include "engine/calibrate.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "backends.h"
#include "tiers/memory/memory_store.h"
#include "transfer/transfer_engine.h"

namespace tierkv {
namespace {

TEST(Calibrate, MeasuresTheMachineAndTheTiers) {
  ASSERT_OK_AND_ASSIGN(auto backend, create_backend(BackendKind::kCpu));
  CalibrateOptions o;
  o.model = *model_preset("tiny");
  o.new_tokens = {8, 32};  // the CPU backend's reference kernels are slow: small shapes
  o.prefix_tokens = {0, 256};
  o.reps = 1;
  o.chunk_tokens = 1024;  // chunks of 1 MiB for the tiny model: 2 ms each at 0.5 GB/s
  o.tier_chunks = 6;
  MemoryStoreOptions mo;
  mo.bandwidth_gbps = 0.5;
  mo.latency_us = 200;
  ASSERT_OK_AND_ASSIGN(auto slow, MemoryStore::create(mo));
  o.tiers.push_back(std::move(slow));
  int lines = 0;
  o.progress = [&](std::string_view line) {
    ++lines;
    std::cout << "calibrate: " << line << "\n" << std::flush;
  };
  ASSERT_OK_AND_ASSIGN(const CostProfile p, calibrate(*backend, o));
  EXPECT_TRUE(p.complete());
  EXPECT_GT(lines, 4);
  EXPECT_EQ(p.model_shape, model_shape_name(o.model));
  EXPECT_EQ(p.device, backend->info().name);
  ASSERT_EQ(p.prefill.us.size(), 4u);
  for (double us : p.prefill.us)
    EXPECT_GT(us, 0.0);
  EXPECT_GT(p.prefill.layer_us(32, 0), p.prefill.layer_us(8, 0)) << "more tokens, more time";
  ASSERT_EQ(p.tiers.size(), 1u);
  const TierCost& t = p.tiers[0];
  EXPECT_TRUE(t.experiment);
  // A chunk costs 2.1 ms of bytes on the shared link and 0.2 ms of latency: with two reads in
  // flight the link is busy all the time, 0.5 GB/s. The right order of magnitude even on a loaded
  // machine or under a sanitizer (0.22 measured under ThreadSanitizer beside other builds); never
  // above the throttle.
  EXPECT_GT(t.read_gbps, 0.5 * 0.1);
  EXPECT_LT(t.read_gbps, 0.5 * 1.05) << "the throttle is a ceiling";
  EXPECT_GE(t.p99_latency_us, t.latency_us);
  EXPECT_GE(p.copy_engine_compute_slowdown, 0.0);
  EXPECT_GE(p.load_slowdown_beside_compute, 0.0);
  EXPECT_LT(p.load_slowdown_beside_compute, 10.0);
  EXPECT_FALSE(p.host_to_device_copy_engine.points.empty());

  const auto path = std::filesystem::temp_directory_path() /
                    ("tierkv-calibrate-" + std::to_string(::getpid()) + "/profile.json");
  ASSERT_OK(save_profile(p, path.string()));
  ASSERT_OK_AND_ASSIGN(const CostProfile back, load_profile(path.string(), &backend->info(), &o.model));
  EXPECT_EQ(back.prefill.us, p.prefill.us);
  EXPECT_DOUBLE_EQ(back.load_slowdown_beside_compute, p.load_slowdown_beside_compute);
  ASSERT_EQ(back.tiers.size(), 1u);
  EXPECT_EQ(back.tiers[0].readers, o.tier_readers);
  EXPECT_DOUBLE_EQ(back.tiers[0].read_gbps, t.read_gbps);
  // A transfer engine given the profile takes its curves and measures nothing.
  TransferOptions to;
  to.profile = std::make_shared<const CostProfile>(back);
  ASSERT_OK_AND_ASSIGN(auto engine, TransferEngine::create(*backend, to));
  EXPECT_EQ(engine->costs().copy_engine.points, back.host_to_device_copy_engine.points);
  EXPECT_DOUBLE_EQ(engine->costs().copy_engine_compute_slowdown, back.copy_engine_compute_slowdown);
  std::filesystem::remove_all(path.parent_path());
}

// A tier whose reads wait on something other than a shared link (here 4 ms per operation, no
// bandwidth limit) serves two readers twice as fast as one: the bandwidth is measured with the
// reads in flight that the cache's promotion has, not one after another.
TEST(Calibrate, MeasuresATierWithThePromotionsReadsInFlight) {
  MemoryStoreOptions mo;
  mo.latency_us = 4000;
  ASSERT_OK_AND_ASSIGN(auto store, MemoryStore::create(mo));
  CalibrateOptions o;
  o.model = *model_preset("tiny");
  o.chunk_tokens = 256;
  o.tier_chunks = 8;
  std::vector<double> gbps;
  for (const std::int32_t readers : {1, 2}) {
    o.tier_readers = readers;
    ASSERT_OK_AND_ASSIGN(const TierCost t, measure_tier(o, *store));
    EXPECT_EQ(t.readers, readers);
    EXPECT_GT(t.latency_us, 4000 * 0.9) << "a read alone still costs its latency";
    gbps.push_back(t.read_gbps);
  }
  EXPECT_GT(gbps[1], 1.5 * gbps[0])
      << gbps[0] << " GB/s with one reader, " << gbps[1] << " with two";
  EXPECT_EQ(store->stats().records, 0u) << "its records are erased";
  o.tier_readers = 0;
  EXPECT_EQ(measure_tier(o, *store).status().code(), StatusCode::kInvalidArgument);
}

TEST(Calibrate, RefusesWhatItCannotMeasure) {
  ASSERT_OK_AND_ASSIGN(auto backend, create_backend(BackendKind::kCpu));
  CalibrateOptions o;
  o.model = *model_preset("tiny");
  o.reps = 0;
  EXPECT_EQ(calibrate(*backend, o).status().code(), StatusCode::kInvalidArgument);
  o.reps = 1;
  o.new_tokens.clear();
  EXPECT_EQ(calibrate(*backend, o).status().code(), StatusCode::kInvalidArgument);
  o.new_tokens = {16};
  o.model.vocab = 0;
  EXPECT_EQ(calibrate(*backend, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tierkv

// The warm-prefill planner on a profile shaped like the H100 test machine's measurements
// (TARGETS.md): a 55 GB/s link and one Llama-8B layer of prefill taking 404 / 629 / 1163 us for
// 512 new tokens over 0 / 4K / 16K cached ones (1739 / 2236 / 3573 us for 2048). It checks the
// choices the issue asks for -- load from host behind the compute, recompute the front while the
// back loads when that wins by the planner's margin, never a plan predicted slower than
// recomputing, the best split against slow tiers -- and the profile file's round trip and refusals.
#include "engine/planner.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "backends.h"

namespace tierkv {
namespace {

CostProfile h100_like() {
  CostProfile p;
  p.device = "test-device";
  p.backend = "cuda";
  p.num_layers = 32;
  p.host_to_device_copy_engine.points = {{16384, 9.0}, {65536, 54.9}, {1 << 20, 55.0}};
  p.host_to_device_copy_engine.fixed_us = 8;
  p.copy_engine_compute_slowdown = 0.023;
  p.prefill.new_tokens = {128, 512, 2048};
  p.prefill.prefix_tokens = {0, 4096, 16384};
  p.prefill.us = {120, 180, 320,      // 128 new (scaled from the 512 row, GEMMs dominate less)
                  404, 629, 1163,     // 512
                  1739, 2236, 3573};  // 2048
  return p;
}

// A lower tier at `gbps`, 200 us per read, a 2 ms tail.
TierCost slow_tier(double gbps) {
  TierCost t;
  t.name = "experiment";
  t.read_gbps = gbps;
  t.latency_us = 200;
  t.p99_latency_us = 2000;
  t.experiment = true;
  return t;
}

PlanInput request(std::int32_t prefix, std::int32_t fresh, PrefillPolicy policy) {
  PlanInput in;
  in.policy = policy;
  in.prompt_tokens = prefix + fresh;
  in.gpu_end = 0;
  in.host_end = prefix;
  in.lower_end = prefix;
  in.page_tokens = 16;
  in.cache_chunk_tokens = 256;
  in.max_chunk_tokens = 2048;
  in.num_layers = 32;
  in.kv_bytes_per_token_layer = 4096;  // Llama-8B: 8 KV heads x 128 x 2 bytes x K and V
  return in;
}

TEST(Planner, LoadsAHostPrefixBehindTheComputeAndBeatsTheAlternatives) {
  const CostProfile p = h100_like();
  const auto plan = [&](PrefillPolicy pol) { return make_plan(request(16384, 512, pol), p); };
  const WarmPrefillPlan planned = plan(PrefillPolicy::kPlanned);
  const WarmPrefillPlan layerwise = plan(PrefillPolicy::kLayerwise);
  const WarmPrefillPlan ltc = plan(PrefillPolicy::kLoadThenCompute);
  const WarmPrefillPlan cold = plan(PrefillPolicy::kRecompute);
  std::cout << planned.why << "\n" << ltc.why << "\n" << cold.why << "\n";
  EXPECT_EQ(planned.loaded_tokens(), 16384) << planned.why;
  // About 39 ms to load 2 GiB at 55 GB/s; the compute of 512 tokens over 16K is shorter.
  EXPECT_NEAR(layerwise.load_ms, 2.0 * (1 << 30) / 55e9 * 1e3, 1.5);
  EXPECT_LE(planned.predicted_ms, layerwise.predicted_ms * 1.0001);
  EXPECT_LE(planned.predicted_ms, 1.05 * std::max(planned.load_ms, planned.compute_ms));
  EXPECT_GE(ltc.predicted_ms / planned.predicted_ms, 1.5);
  EXPECT_GE(cold.predicted_ms / planned.predicted_ms, 12.0);
}

// Few new tokens over a long prefix: recomputing the front while the back loads is predicted a
// little faster than loading everything from the host tier (about 6% here), which is inside the
// planner's margin -- on the H100 such plans measured slower -- so the prefix is loaded whole. From
// a tier at 5 GB/s the same split wins by far more than the margin and is chosen.
// A chunk size beyond the profile's prefill grid has an extrapolated cost (linear, where a
// chunk's attention over itself grows faster): the planner does not choose one. With a grid that
// stops at 512 new tokens, a cold 4K-token prompt is computed in chunks of at most 512, where the
// full grid picks 2048; a fixed chunk_tokens is still honoured.
TEST(Planner, ChoosesNoChunkLargerThanTheProfileMeasured) {
  CostProfile full = h100_like();
  CostProfile small = full;
  small.prefill.new_tokens = {128, 512};
  small.prefill.us.resize(6);
  PlanInput in = request(0, 4096, PrefillPolicy::kPlanned);
  EXPECT_EQ(make_plan(in, full).chunk_tokens, 2048) << make_plan(in, full).why;
  const WarmPrefillPlan p = make_plan(in, small);
  EXPECT_LE(p.chunk_tokens, 512) << p.why;
  in.chunk_tokens = 1024;
  EXPECT_EQ(make_plan(in, small).chunk_tokens, 1024);
  small.prefill.new_tokens = {16, 64};  // smaller than every candidate: the smallest one
  small.prefill.us.resize(6);
  in.chunk_tokens = 0;
  EXPECT_EQ(make_plan(in, small).chunk_tokens, kPlannerChunkSizes[0]);
}

TEST(Planner, RecomputesTheFrontWhileTheBackLoadsOnlyWhenItWinsByTheMargin) {
  CostProfile p = h100_like();
  const WarmPrefillPlan host = make_plan(request(16384, 128, PrefillPolicy::kPlanned), p);
  std::cout << host.why << "\n";
  EXPECT_EQ(host.load_begin, 0) << "the whole prefix is loaded from the host tier";
  PlanInput in = request(16384, 128, PrefillPolicy::kPlanned);
  std::int32_t best_front = 0;
  double best_front_us = 1e30;
  for (std::int32_t k = 256; k < 16384; k += 256) {
    const double t = predict(in, p, k, 16384, host.chunk_tokens, true).total_us;
    if (t < best_front_us) best_front_us = t, best_front = k;
  }
  EXPECT_LT(best_front_us, host.predicted_ms * 1e3) << "a front split is predicted a bit faster";
  EXPECT_GT(best_front_us * (1 + kFrontMargin), host.predicted_ms * 1e3)
      << "but by less than the margin (front " << best_front << ")";

  p.tiers = {slow_tier(5.0)};
  in.host_end = 0;  // the whole prefix is in the 5 GB/s tier
  in.lower_tiers = {{"experiment", 16384}};
  const WarmPrefillPlan slow = make_plan(in, p);
  in.policy = PrefillPolicy::kLayerwise;
  const WarmPrefillPlan slow_all = make_plan(in, p);
  std::cout << slow.why << "\n";
  EXPECT_GT(slow.load_begin, 0) << "the front is recomputed";
  EXPECT_LT(slow.predicted_ms * (1 + kFrontMargin), slow_all.predicted_ms)
      << "faster than loading the whole prefix from the tier, by more than the margin";
}

TEST(Planner, IsNeverPredictedSlowerThanRecomputingAndFindsTheBestSplitOfASlowTier) {
  CostProfile p = h100_like();
  for (double gbps : {1.0, 2.0, 5.0, 10.0}) {
    p.tiers = {slow_tier(gbps)};
    for (std::int32_t fresh : {128, 512, 2048}) {
      PlanInput in = request(16384, fresh, PrefillPolicy::kPlanned);
      in.host_end = 0;  // the whole prefix is in the slow tier
      in.lower_tiers = {{"experiment", 16384}};
      const WarmPrefillPlan plan = make_plan(in, p);
      SCOPED_TRACE(plan.why);
      EXPECT_LE(plan.predicted_ms, plan.recompute_all_ms * 1.0001);
      // The best fixed split of the same model, swept by hand at the plan's chunk size.
      double best = 1e30;
      for (std::int32_t k = 0; k <= 16384; k += 256)
        best = std::min(best, predict(in, p, k, 16384, plan.chunk_tokens, true).total_us);
      best = std::min(best, predict(in, p, 0, 0, plan.chunk_tokens, true).total_us);
      // Within the margin a recomputed front must win by (kFrontMargin).
      EXPECT_LE(plan.predicted_ms * 1e3, best * (1 + kFrontMargin) * 1.0001)
          << gbps << " GB/s, " << fresh << " new";
      if (gbps <= 2.0) {
        EXPECT_LT(plan.loaded_tokens(), 16384) << "a slow tier is not all loaded";
      }
    }
  }
}

TEST(Planner, PoliciesUseWhatTheyAreAllowedAndAlwaysComputeTheLastToken) {
  const CostProfile p = h100_like();
  PlanInput in = request(4096, 0, PrefillPolicy::kLayerwise);  // the whole prompt is cached
  in.gpu_end = 1024;
  const WarmPrefillPlan warm = make_plan(in, p);
  EXPECT_EQ(warm.gpu_end, 1024);
  EXPECT_EQ(warm.load_begin, 1024);
  EXPECT_EQ(warm.load_end, 4096 - 256) << "the chunk of the last token is computed";
  EXPECT_GT(warm.computed_tokens(), 0);
  in.policy = PrefillPolicy::kGpuOnly;
  const WarmPrefillPlan gpu = make_plan(in, p);
  EXPECT_EQ(gpu.loaded_tokens(), 0);
  EXPECT_EQ(gpu.gpu_end, 1024);
  in.policy = PrefillPolicy::kRecompute;
  const WarmPrefillPlan cold = make_plan(in, p);
  EXPECT_EQ(cold.gpu_end, 0);
  EXPECT_EQ(cold.computed_tokens(), 4096);
  in.policy = PrefillPolicy::kPlanned;
  const WarmPrefillPlan unprofiled = make_plan(in, CostProfile{});
  EXPECT_EQ(unprofiled.load_end, 4096 - 256) << "without figures it loads what is cached";
  EXPECT_NE(unprofiled.why.find("calibrate"), std::string::npos);
  in.chunk_tokens = 128;
  EXPECT_EQ(make_plan(in, p).chunk_tokens, 128);
  in.max_chunk_tokens = 64;
  EXPECT_EQ(make_plan(in, p).chunk_tokens, 64);
}

TEST(Planner, LoadsQueuedAheadMakeRecomputeWin) {
  const CostProfile p = h100_like();
  PlanInput in = request(4096, 2048, PrefillPolicy::kPlanned);
  const WarmPrefillPlan free_link = make_plan(in, p);
  EXPECT_EQ(free_link.loaded_tokens(), 4096);
  in.queued_ahead_us = 500e3;  // half a second of other loads in front
  const WarmPrefillPlan busy = make_plan(in, p);
  EXPECT_EQ(busy.loaded_tokens(), 0) << busy.why;
  EXPECT_NEAR(busy.queued_ahead_ms, 500, 1e-6);
}

// The planner's search stops lengthening the front once the front's compute alone exceeds the
// best plan so far. That prune loses nothing: over host and slow-tier prefixes, GPU-resident
// starts and every prompt shape here, its choice scores what an exhaustive sweep of the same
// candidates (every chunk size, every end, every front on the grid) finds best, within the
// planner's 0.1% tie rule.
TEST(Planner, ThePrunedSearchFindsTheExhaustiveBest) {
  CostProfile p = h100_like();
  p.tiers = {slow_tier(3.0)};
  struct Case {
    std::int32_t prefix, fresh, gpu, host;  // host < prefix: the rest is in the slow tier
  };
  for (const Case& c :
       {Case{4096, 128, 0, 4096}, Case{16384, 128, 0, 16384}, Case{16384, 2048, 0, 16384},
        Case{32768, 512, 0, 32768}, Case{16384, 128, 0, 0}, Case{16384, 512, 2048, 8192},
        Case{8192, 2048, 0, 4096}, Case{2048, 16, 512, 512}}) {
    PlanInput in = request(c.prefix, c.fresh, PrefillPolicy::kPlanned);
    in.gpu_end = c.gpu;
    in.host_end = c.host;
    if (c.host < c.prefix) in.lower_tiers = {{"experiment", c.prefix - c.host}};
    const WarmPrefillPlan plan = make_plan(in, p);
    SCOPED_TRACE(plan.why);
    const std::int32_t last = in.prompt_tokens - 1;
    const std::int32_t lower = std::min(c.prefix, last / 256 * 256);
    const std::int32_t host = std::max(c.gpu, std::min(c.host, lower));
    double best = 1e30;
    for (std::int32_t s : kPlannerChunkSizes) {
      for (std::int32_t e : {c.gpu, host, lower}) {
        // The planner's grid of fronts: gpu_end, then the boundaries of the smaller of the
        // compute chunk and the cache chunk, up to e.
        const std::int32_t step = std::max(16, std::min(s, 256));
        for (std::int32_t k = c.gpu;; k = std::min(e, (k / step + 1) * step)) {
          const double margin = k > c.gpu && e > k ? 1.0 + kFrontMargin : 1.0;
          best = std::min(best, predict(in, p, k, e, s, true).total_us * margin);
          if (k >= e) break;
        }
      }
    }
    const double chosen =
        predict(in, p, plan.load_begin, plan.load_end, plan.chunk_tokens, true).total_us *
        (plan.load_begin > c.gpu && plan.load_end > plan.load_begin ? 1.0 + kFrontMargin : 1.0);
    EXPECT_LE(chosen, best * 1.001) << c.prefix << " + " << c.fresh;
  }
}

// A load runs slower while prefill computes beside it (the profile's
// load_slowdown_beside_compute): the planner stretches the load over the compute's time -- a plan
// with a recomputed front the most, a gated tail's compute too, a load-then-compute plan (nothing
// beside its load) not at all -- and never by more than the factor.
TEST(Planner, ALoadBesideComputeIsPredictedSlower) {
  CostProfile plain = h100_like();
  CostProfile contended = plain;
  contended.load_slowdown_beside_compute = 0.12;
  const PlanInput in = request(16384, 512, PrefillPolicy::kPlanned);
  for (std::int32_t front : {0, 1024, 4096}) {
    SCOPED_TRACE("front " + std::to_string(front));
    const PlanCost a = predict(in, plain, front, 16384, 512, true);
    const PlanCost b = predict(in, contended, front, 16384, 512, true);
    EXPECT_GT(b.load_us, a.load_us);
    EXPECT_LE(b.load_us, a.load_us * 1.12 + 1e-6);
    EXPECT_GE(b.total_us, a.total_us);
  }
  const PlanCost ltc_a = predict(in, plain, 0, 16384, 512, false);
  const PlanCost ltc_b = predict(in, contended, 0, 16384, 512, false);
  EXPECT_DOUBLE_EQ(ltc_b.total_us, ltc_a.total_us) << "nothing computes beside that load";
  // With 128 new tokens the gated tail computes little beside the load: the front is what
  // stretches it.
  const PlanInput few = request(16384, 128, PrefillPolicy::kPlanned);
  const double no_front = predict(few, contended, 0, 16384, 512, true).load_us -
                          predict(few, plain, 0, 16384, 512, true).load_us;
  const double with_front = predict(few, contended, 2048, 16384, 512, true).load_us -
                            predict(few, plain, 2048, 16384, 512, true).load_us;
  EXPECT_GT(with_front, no_front);
}

TEST(Profile, RoundTripsAndRefusesStaleOrMalformedFiles) {
  const auto dir = std::filesystem::temp_directory_path() / ("tierkv-profile-" + std::to_string(::getpid()));
  const std::string path = (dir / "p.json").string();
  CostProfile p = h100_like();
  ModelSpec m = *model_preset("llama-3.1-8b");
  p.model_shape = model_shape_name(m);
  p.tiers = {{"disk", 1.4, 90, 400, false}};
  p.load_slowdown_beside_compute = 0.11;
  ASSERT_OK(save_profile(p, path));
  DeviceInfo dev;
  dev.name = "test-device";
  ASSERT_OK_AND_ASSIGN(const CostProfile q, load_profile(path, &dev, &m));
  EXPECT_EQ(q.prefill.us, p.prefill.us);
  EXPECT_EQ(q.host_to_device_copy_engine.points, p.host_to_device_copy_engine.points);
  ASSERT_NE(q.tier("disk"), nullptr);
  EXPECT_DOUBLE_EQ(q.tier("disk")->read_gbps, 1.4);
  EXPECT_DOUBLE_EQ(q.prefill.layer_us(512, 4096), 629);
  EXPECT_DOUBLE_EQ(q.load_slowdown_beside_compute, 0.11);
  EXPECT_NEAR(q.prefill.layer_us(1280, 4096), (629 + 2236) / 2.0, 1e-9);
  DeviceInfo other;
  other.name = "another card";
  EXPECT_EQ(load_profile(path, &other, &m).status().code(), StatusCode::kFailedPrecondition);
  const ModelSpec tiny = *model_preset("tiny");
  EXPECT_EQ(load_profile(path, &dev, &tiny).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(load_profile((dir / "absent.json").string(), nullptr, nullptr).status().code(),
            StatusCode::kNotFound);
  for (const char* bad : {"{", "[]", R"({"version": 99})",
                          R"({"version": 1, "transfer": {"h2d_copy_engine": {"points": [[1]]}}})",
                          R"({"version": 1, "load_slowdown_beside_compute": -1})"}) {
    std::ofstream(path) << bad;
    EXPECT_EQ(load_profile(path, nullptr, nullptr).status().code(), StatusCode::kDataLoss) << bad;
  }
  std::filesystem::remove_all(dir);
  DeviceInfo h100;
  h100.name = "NVIDIA H100 80GB HBM3";
  EXPECT_EQ(default_profile_path(h100, m, "/home/u", ""),
            "/home/u/.cache/tierkv/profile-nvidia-h100-80gb-hbm3-llama-3-1-8b.json");
  EXPECT_EQ(default_profile_path(h100, m, "/home/u", "/xdg"),
            "/xdg/tierkv/profile-nvidia-h100-80gb-hbm3-llama-3-1-8b.json");
}

}  // namespace
}  // namespace tierkv

// Host time of the warm-prefill planner (make_plan) on one core: the time a planned request spends
// choosing its plan before its first chunk is queued, inside its time to first token. The profile
// is the one measured on the H100 test machine (bench/results/profile-NVIDIA-H100-80GB-HBM3-
// 20261207.json), the request a Llama-3.1-8B prompt whose prefix is in the host tier (args:
// prefix tokens, new tokens) or, for BM_MakePlanSlowTier, in a 2 GB/s lower tier, where the
// search also weighs recomputing the front. One iteration is one plan.
//
//   taskset -c 0 build/bench/planner_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one command line)
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "engine/planner.h"
#include "tierkv/model_spec.h"
#include "tierkv/profile.h"

namespace tierkv {
namespace {

const CostProfile& h100_profile() {
  static const CostProfile p = [] {
    auto loaded =
        load_profile(TIERKV_SOURCE_DIR "/bench/results/profile-NVIDIA-H100-80GB-HBM3-20261207.json",
                     nullptr, nullptr);
    if (!loaded.ok()) {
      std::fprintf(stderr, "planner_bench: %s\n", loaded.status().to_string().c_str());
      std::exit(1);
    }
    return *loaded;
  }();
  return p;
}

PlanInput request(std::int32_t prefix, std::int32_t fresh, bool slow_tier) {
  const ModelSpec spec = *model_preset("llama-3.1-8b");
  PlanInput in;
  in.prompt_tokens = prefix + fresh;
  in.host_end = slow_tier ? 0 : prefix;
  in.lower_end = prefix;
  if (slow_tier) in.lower_tiers = {{"memory-experiment", prefix}};
  in.page_tokens = spec.page_tokens;
  in.num_layers = spec.num_layers;
  in.kv_bytes_per_token_layer = spec.kv_bytes_per_token_layer();
  return in;
}

void run(benchmark::State& state, bool slow_tier) {
  CostProfile profile = h100_profile();
  if (slow_tier) {
    TierCost t;  // the experiment tier at 2 GB/s, 50 us per read
    t.name = "memory-experiment";
    t.read_gbps = 2.0;
    t.readers = 2;
    t.latency_us = t.p99_latency_us = 50;
    t.experiment = true;
    profile.tiers = {t};
  }
  const PlanInput in =
      request(std::int32_t(state.range(0)), std::int32_t(state.range(1)), slow_tier);
  WarmPrefillPlan plan;
  for (auto _ : state) {
    plan = make_plan(in, profile);
    benchmark::DoNotOptimize(plan);
  }
  state.SetLabel("recompute " + std::to_string(plan.load_begin) + ", load " +
                 std::to_string(plan.loaded_tokens()) + ", chunk " +
                 std::to_string(plan.chunk_tokens));
}

void BM_MakePlanHostTier(benchmark::State& state) {
  run(state, false);
}
void BM_MakePlanSlowTier(benchmark::State& state) {
  run(state, true);
}

void grid(benchmark::internal::Benchmark* b) {
  for (std::int64_t prefix : {4096, 8192, 16384, 32768})
    for (std::int64_t fresh : {128, 512, 2048})
      b->Args({prefix, fresh});
  b->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_MakePlanHostTier)->Apply(grid);
BENCHMARK(BM_MakePlanSlowTier)->Apply(grid);

}  // namespace
}  // namespace tierkv

BENCHMARK_MAIN();

// tierkv-warm-bench: time to first token of a returning prompt, by policy, on the reference runner.
//
// Section 1 (host tier): for each cached prefix P and new-token count n, the prefix's chunks are in
// the host tier and these are timed, each the median of --reps runs:
//   compute   the n new tokens with the prefix's KV already on the GPU (compute alone)
//   load      loading the prefix from the host tier into GPU pages, nothing else (load alone)
//   ltc       load-then-compute: load everything, wait, then compute
//   warm      layer-wise warm prefill (layer l's attention waits for layer l's load only)
//   planned   the planner's choice (it may recompute the front while the back loads)
//   recompute the whole prompt, nothing cached
// and reported against max(load, compute) measured in the same run. Section 3 (a slow tier): the
// prefix is only in the experiment tier (host memory served at a stated GB/s); the planner's time
// against every fixed recompute/load split, swept (section 3). Section 2: per-layer prefill compute
// beside per-layer load time, and the smallest chunk that hides the load.
//
// Times are host wall time from the executor's call to the next token on the host (what a user
// waits for), after the device was idle. On a machine without a GPU it runs the tiny model on the
// CPU backend at small sizes and says so.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/bench_io.h"
#include "common/memory_check.h"
#include "engine/calibrate.h"
#include "engine/llama.h"
#include "engine/planner.h"
#include "engine/runner_model.h"
#include "tierkv/cache.h"
#include "tierkv/page_pool.h"
#include "tierkv/warm_prefill.h"
#include "tiers/memory/memory_store.h"

namespace tierkv {
namespace {

constexpr const char* kTool = "tierkv-warm-bench";

struct Options {
  std::string backend = "auto";
  std::string model;
  std::vector<std::int32_t> prefixes, news, slow_news;
  std::vector<double> slow_gbps;
  std::int32_t slow_prefix = 0;
  std::int32_t splits = 8;
  std::vector<std::int32_t> host_fronts;  // fronts recomputed while the rest loads from host
  std::int32_t reps = 3;
  std::string profile;  // load instead of measuring
  std::string save_profile;
  std::string json, report;
  bool skip_recompute_above = false;
  std::int32_t recompute_max = 0;
  bool quiet = false;  // no progress lines on stderr
  std::int32_t queue_layers = WarmPrefillOptions{}.queue_layers;
};

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Row {
  std::string impl;
  std::int32_t prefix = 0, fresh = 0;
  double ms = 0;
  double gbps = 0;  // slow tier only
  std::int32_t split = -1;
  std::string why;
  // Fixed splits and fronts: what the run predicted and did (the lower tier's part: slow tier
  // only).
  struct Slow {
    double tier_measured_gbps = 0, predicted_ms = 0, lower_predicted_ms = 0, lower_ready_ms = 0;
    std::int32_t extensions = 0, fallback_tokens = 0;
  };
  std::optional<Slow> slow;
  // Executor runs: its host time before the first chunk (WarmPrefillResult::plan_ms, queue_ms;
  // the median over the reps in section 1); negative: not recorded.
  double plan_ms = -1, queue_ms = -1;
};

Row::Slow slow_figures(const WarmPrefillResult& r, const TierCost& tier) {
  return {tier.read_gbps,   r.plan.predicted_ms, r.plan.lower_ready_ms,
          r.lower_ready_ms, r.lower_extensions,  r.fallback_tokens};
}

// `row` with the host time of the run `r` it reports.
Row with_host_time(Row row, const WarmPrefillResult& r) {
  row.plan_ms = r.plan_ms;
  row.queue_ms = r.queue_ms;
  return row;
}

// What every measurement runs on.
struct Rig {
  Backend& backend;
  const Options& o;
  ModelSpec spec;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<PagePool> pool;
  std::unique_ptr<LlamaRunner> runner;
  std::unique_ptr<RunnerPrefillModel> model;
  std::shared_ptr<const CostProfile> profile;
  std::vector<std::int32_t> prefix_pages, work_pages;  // the prefix's GPU copy; pages runs write
  std::mt19937 rng{3};

  std::vector<std::int32_t> tokens(std::size_t n) {
    std::vector<std::int32_t> t(n);
    for (auto& x : t)
      x = std::int32_t(rng() % std::uint32_t(spec.vocab));
    return t;
  }

  Result<std::unique_ptr<Cache>> cache(std::int32_t host_tokens,
                                       std::vector<std::shared_ptr<Store>> lower = {}) {
    CacheOptions co;
    co.model = spec;
    co.chunk_tokens = 256;
    co.host_bytes = std::size_t(std::max(host_tokens, 256)) * spec.kv_bytes_per_token();
    co.transfer.profile = profile;
    co.lower_tiers = std::move(lower);
    co.write_down.persistent_admit_sightings = 1;
    // The write-down queue takes every chunk the host tier holds: filling a lower tier with one
    // save of the whole prefix drops nothing (a full queue drops saves, as it must in an engine).
    co.write_down.queue_chunks =
        std::max(co.write_down.queue_chunks, std::max(host_tokens, 256) / co.chunk_tokens + 1);
    TIERKV_ASSIGN_OR_RETURN(auto c, Cache::create(backend, co));
    // The host slab is pinned in pieces in the background: measure only once all of it is usable.
    TIERKV_RETURN_IF_ERROR(c->wait_host_tier(Clock::now() + std::chrono::seconds(60)));
    return c;
  }

  // One run of the executor; returns its result after the device is idle again.
  Result<WarmPrefillResult> run(Cache& c, WarmPrefill& w, const std::vector<std::int32_t>& prompt,
                                PrefillPolicy policy, std::int32_t gpu_tokens,
                                std::span<const std::int32_t> pages, bool save,
                                std::int32_t split = -1) {
    TIERKV_ASSIGN_OR_RETURN(const PromptKeys keys, c.keys(prompt, ""));
    TIERKV_ASSIGN_OR_RETURN(MatchResult m, c.match(keys));
    if (policy == PrefillPolicy::kRecompute) m = MatchResult{};
    m.gpu_tokens = gpu_tokens;
    m.host_tokens = std::max(m.host_tokens, gpu_tokens);
    m.lower_tokens = std::max(m.lower_tokens, m.host_tokens);
    WarmPrefillRequest r;
    r.tokens = prompt;
    r.keys = &keys;
    r.match = m;
    r.kv = pool->view();
    r.pages = pages;
    r.options.policy = policy;
    r.options.save = save;
    r.options.split = split;
    r.options.queue_layers = o.queue_layers;
    TIERKV_RETURN_IF_ERROR(stream->synchronize());
    TIERKV_ASSIGN_OR_RETURN(WarmPrefillResult res, w.run(r, *stream));
    TIERKV_RETURN_IF_ERROR(stream->synchronize());
    TIERKV_RETURN_IF_ERROR(c.flush());
    return res;
  }
};

Status build(Rig& rig, std::int32_t max_tokens) {
  const Options& o = rig.o;
  TIERKV_ASSIGN_OR_RETURN(rig.stream, rig.backend.create_stream());
  TIERKV_ASSIGN_OR_RETURN(LlamaWeights w,
                          random_llama_weights(rig.backend, *rig.stream, rig.spec, 3));
  rig.spec = w.spec;
  const std::int32_t page = rig.spec.page_tokens;
  const std::int32_t pages_per_seq = (max_tokens + page - 1) / page;
  PagePoolOptions po;
  po.model = rig.spec;
  po.num_pages = 2 * pages_per_seq + 16;
  po.pages_per_run = 256 / page;
  TIERKV_ASSIGN_OR_RETURN(rig.pool, PagePool::create(rig.backend, po));
  RunnerOptions ro;
  ro.max_step_tokens = 2048;
  ro.max_batch = 1;
  ro.max_pages_per_seq = pages_per_seq;
  TIERKV_ASSIGN_OR_RETURN(rig.runner,
                          LlamaRunner::create(rig.backend, std::move(w), rig.pool->view(), ro));
  rig.model = std::make_unique<RunnerPrefillModel>(*rig.runner);
  TIERKV_ASSIGN_OR_RETURN(rig.prefix_pages, rig.pool->allocate(pages_per_seq));
  TIERKV_ASSIGN_OR_RETURN(rig.work_pages, rig.pool->allocate(pages_per_seq));
  if (!o.profile.empty()) {
    TIERKV_ASSIGN_OR_RETURN(CostProfile p, load_profile(o.profile, &rig.backend.info(), &rig.spec));
    rig.profile = std::make_shared<const CostProfile>(std::move(p));
  } else {
    CalibrateOptions co;
    co.model = rig.spec;
    const bool cpu = rig.backend.kind() == BackendKind::kCpu;
    co.new_tokens =
        cpu ? std::vector<std::int32_t>{16, 64, 256} : std::vector<std::int32_t>{128, 512, 2048};
    co.prefix_tokens =
        cpu ? std::vector<std::int32_t>{0, 512} : std::vector<std::int32_t>{0, 4096, 16384, 32768};
    co.reps = cpu ? 1 : 3;
    if (!o.quiet)
      co.progress = [](std::string_view l) {
        std::fprintf(stderr, "  calibrate: %.*s\n", int(l.size()), l.data());
      };
    TIERKV_ASSIGN_OR_RETURN(CostProfile p, calibrate(rig.backend, co));
    if (!o.save_profile.empty()) TIERKV_RETURN_IF_ERROR(save_profile(p, o.save_profile));
    rig.profile = std::make_shared<const CostProfile>(std::move(p));
  }
  return Status::Ok();
}

// Section 1's fixed fronts (--host-fronts): each front length recomputed while the rest of the
// prefix loads from the host tier, measured beside the planner's prediction of it, so that the
// model of a front beside a load can be checked where the planner would choose one.
Status host_fronts(Rig& rig, Cache& cache, WarmPrefill& warm,
                   const std::vector<std::int32_t>& prompt, std::int32_t prefix, std::int32_t fresh,
                   double load_ms, std::vector<Row>& rows, std::string& text) {
  const Options& o = rig.o;
  if (o.host_fronts.empty()) return Status::Ok();
  char line[256];
  text += "        fixed fronts (ms, measured / predicted):";
  for (std::int32_t front : o.host_fronts) {
    if (front < 0 || front > prefix) continue;
    std::vector<double> ms;
    WarmPrefillResult last;
    for (std::int32_t r = 0; r < o.reps; ++r) {
      TIERKV_ASSIGN_OR_RETURN(last, rig.run(cache, warm, prompt, PrefillPolicy::kPlanned, 0,
                                            rig.work_pages, false, front));
      ms.push_back(last.ttft_ms);
    }
    Row row{"tierkv-host-front", prefix, fresh, median(ms), 0, front, last.plan.why};
    row.slow = slow_figures(last, TierCost{});  // its lower-tier figures stay out of the JSON
    rows.push_back(with_host_time(row, last));
    std::snprintf(line, sizeof line, " %d: %.2f / %.2f;", front, median(ms),
                  last.plan.predicted_ms);
    text += line;
  }
  std::snprintf(line, sizeof line, " load alone %.2f\n", load_ms);
  text += line;
  if (!o.quiet) std::fprintf(stderr, "%s", text.substr(text.rfind("        fixed fronts")).c_str());
  return Status::Ok();
}

// Section 1: a prefix in the host tier.
Status host_section(Rig& rig, std::vector<Row>& rows, std::string& text) {
  const Options& o = rig.o;
  char line[512];
  text += "\n1. Prefix in the host tier: time to first token (ms, median of " +
          std::to_string(o.reps) + ")\n";
  std::snprintf(line, sizeof line, "%7s %6s %9s %9s %9s %9s %9s %10s | %8s %8s %8s %8s\n", "prefix",
                "new", "compute", "load", "ltc", "warm", "planned", "recompute", "warm/lim",
                "plan/lim", "ltc/plan", "rec/plan");
  text += line;
  for (std::int32_t prefix : o.prefixes) {
    auto cache = rig.cache(prefix);
    if (!cache.ok()) return cache.status();
    TIERKV_ASSIGN_OR_RETURN(auto warm,
                            WarmPrefill::create(rig.backend, **cache, *rig.model, *rig.profile));
    const auto prefix_tokens = rig.tokens(std::size_t(prefix));
    // The prefix computed once: its KV stays in prefix_pages (for compute alone) and its chunks in
    // the host tier (for the loads).
    TIERKV_ASSIGN_OR_RETURN(
        auto first,
        rig.run(**cache, *warm, prefix_tokens, PrefillPolicy::kGpuOnly, 0, rig.prefix_pages, true));
    (void)first;
    for (std::int32_t fresh : o.news) {
      auto prompt = prefix_tokens;
      const auto more = rig.tokens(std::size_t(fresh));
      prompt.insert(prompt.end(), more.begin(), more.end());
      // Compute alone reads the prefix from prefix_pages and writes the new tokens after it.
      std::vector<std::int32_t> compute_pages(
          rig.prefix_pages.begin(), rig.prefix_pages.begin() + prefix / rig.spec.page_tokens);
      const std::int32_t page = rig.spec.page_tokens;
      compute_pages.insert(compute_pages.end(), rig.work_pages.begin(),
                           rig.work_pages.begin() + (fresh + page - 1) / page);
      std::vector<double> t_compute, t_load, t_ltc, t_warm, t_plan, t_rec;
      std::vector<double> plan_host, queue_host;  // the planned runs' host time before compute
      std::string why;
      for (std::int32_t r = 0; r < o.reps; ++r) {
        TIERKV_ASSIGN_OR_RETURN(auto c, rig.run(**cache, *warm, prompt, PrefillPolicy::kGpuOnly,
                                                prefix, compute_pages, false));
        t_compute.push_back(c.ttft_ms);
        {  // load alone
          TIERKV_ASSIGN_OR_RETURN(const PromptKeys keys, (*cache)->keys(prompt, ""));
          TIERKV_RETURN_IF_ERROR(rig.stream->synchronize());
          const auto t0 = Clock::now();
          TIERKV_ASSIGN_OR_RETURN(
              Load l, (*cache)->load({&keys, 0, prefix, rig.pool->view(), rig.work_pages}));
          TIERKV_RETURN_IF_ERROR(l.wait());
          t_load.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
          if (l.loaded_tokens() != prefix) return internal_error("the prefix left the host tier");
        }
        for (auto [policy, out] : {std::pair{PrefillPolicy::kLoadThenCompute, &t_ltc},
                                   std::pair{PrefillPolicy::kLayerwise, &t_warm},
                                   std::pair{PrefillPolicy::kPlanned, &t_plan}}) {
          TIERKV_ASSIGN_OR_RETURN(
              auto res, rig.run(**cache, *warm, prompt, policy, 0, rig.work_pages, false));
          if (res.loaded_tokens + res.fallback_tokens != res.plan.loaded_tokens())
            return internal_error("a load did not come back whole");
          out->push_back(res.ttft_ms);
          if (policy == PrefillPolicy::kPlanned) {
            why = res.plan.why;
            plan_host.push_back(res.plan_ms);
            queue_host.push_back(res.queue_ms);
          }
        }
        if (o.recompute_max == 0 || prefix + fresh <= o.recompute_max) {
          TIERKV_ASSIGN_OR_RETURN(
              auto res,
              rig.run(**cache, *warm, prompt, PrefillPolicy::kRecompute, 0, rig.work_pages, false));
          t_rec.push_back(res.ttft_ms);
        }
      }
      const double lim = std::max(median(t_load), median(t_compute));
      const double plan = median(t_plan);
      std::snprintf(line, sizeof line,
                    "%7d %6d %9.2f %9.2f %9.2f %9.2f %9.2f %10.2f | %8.3f %8.3f %8.2f %8.1f\n",
                    prefix, fresh, median(t_compute), median(t_load), median(t_ltc), median(t_warm),
                    plan, median(t_rec), median(t_warm) / lim, plan / lim, median(t_ltc) / plan,
                    t_rec.empty() ? 0.0 : median(t_rec) / plan);
      text += line;
      text += "        planned: " + why + "\n";
      char host_line[160];
      std::snprintf(
          host_line, sizeof host_line,
          "        host time before its first chunk: plan %.3f ms, queue the load %.3f ms\n",
          median(plan_host), median(queue_host));
      text += host_line;
      for (auto [impl, v] :
           {std::pair{"tierkv-compute", &t_compute}, std::pair{"tierkv-load", &t_load},
            std::pair{"tierkv-load-then-compute", &t_ltc}, std::pair{"tierkv-layerwise", &t_warm},
            std::pair{"tierkv-planned", &t_plan}, std::pair{"tierkv-recompute", &t_rec}}) {
        if (v->empty()) continue;
        const bool planned = impl == std::string("tierkv-planned");
        rows.push_back({impl, prefix, fresh, median(*v), 0, -1, planned ? why : ""});
        if (planned) {
          rows.back().plan_ms = median(plan_host);
          rows.back().queue_ms = median(queue_host);
        }
      }
      if (!rig.o.quiet) std::fprintf(stderr, "%s", line);
      TIERKV_RETURN_IF_ERROR(
          host_fronts(rig, **cache, *warm, prompt, prefix, fresh, median(t_load), rows, text));
    }
  }
  return Status::Ok();
}

// Section 3: the prefix only in the experiment tier.
Status slow_section(Rig& rig, std::vector<Row>& rows, std::string& text) {
  const Options& o = rig.o;
  if (o.slow_gbps.empty()) return Status::Ok();
  const std::int32_t prefix = o.slow_prefix;
  char line[512];
  text += "\n3. Prefix of " + std::to_string(prefix) +
          " tokens in the experiment tier only (host memory served at a stated GB/s; an "
          "experiment tier, not a real one): the planner against every fixed split\n";
  std::snprintf(line, sizeof line, "%6s %6s %10s %10s %8s %10s %s\n", "GB/s", "new", "planned",
                "best", "split", "plan/best", "(ms)");
  text += line;
  const auto prefix_tokens = rig.tokens(std::size_t(prefix));
  for (double gbps : o.slow_gbps) {
    MemoryStoreOptions mo;
    mo.bandwidth_gbps = gbps;
    mo.latency_us = 50;
    TIERKV_ASSIGN_OR_RETURN(std::shared_ptr<Store> slow, MemoryStore::create(mo));
    // What the planner knows of the tier: measured, as tierkv calibrate measures it.
    CalibrateOptions co;
    co.model = rig.spec;
    co.tier_chunks = 4;
    TIERKV_ASSIGN_OR_RETURN(TierCost tc, measure_tier(co, *slow));
    std::snprintf(
        line, sizeof line,
        "  tier at %.3g GB/s as calibrate measures it: %.3g GB/s with %d readers, %.0f us "
        "per read\n",
        gbps, tc.read_gbps, tc.readers, tc.latency_us);
    text += line;
    auto profile = std::make_shared<CostProfile>(*rig.profile);
    profile->tiers = {tc};
    rig.profile = profile;
    {  // fill the tier: compute the prefix once and let the cache write it down
      TIERKV_ASSIGN_OR_RETURN(auto c, rig.cache(prefix, {slow}));
      TIERKV_ASSIGN_OR_RETURN(auto w, WarmPrefill::create(rig.backend, *c, *rig.model, *profile));
      TIERKV_ASSIGN_OR_RETURN(auto res, rig.run(*c, *w, prefix_tokens, PrefillPolicy::kGpuOnly, 0,
                                                rig.work_pages, true));
      (void)res;
      TIERKV_RETURN_IF_ERROR(c->flush_lower_tiers());
    }
    {  // every run below must find the whole prefix in the tier (a fresh cache: nothing in host)
      TIERKV_ASSIGN_OR_RETURN(auto c, rig.cache(prefix, {slow}));
      TIERKV_ASSIGN_OR_RETURN(const PromptKeys keys, c->keys(prefix_tokens, ""));
      TIERKV_ASSIGN_OR_RETURN(const MatchResult m, c->match(keys));
      const std::int32_t chunk = c->options().chunk_tokens;
      if (m.lower_tokens < prefix / chunk * chunk) {
        return internal_error("warm bench: the experiment tier holds " +
                              std::to_string(m.lower_tokens) + " of the " + std::to_string(prefix) +
                              " prefix tokens after filling it");
      }
    }
    for (std::int32_t fresh : o.slow_news) {
      auto prompt = prefix_tokens;
      const auto more = rig.tokens(std::size_t(fresh));
      prompt.insert(prompt.end(), more.begin(), more.end());
      // Each run on a fresh cache: the host tier holds nothing, every hit comes from the tier.
      const auto once = [&](PrefillPolicy pol, std::int32_t split) -> Result<WarmPrefillResult> {
        std::vector<double> ms;
        WarmPrefillResult last;
        for (std::int32_t r = 0; r < std::max(1, o.reps / 2); ++r) {
          TIERKV_ASSIGN_OR_RETURN(auto c, rig.cache(prefix, {slow}));
          TIERKV_ASSIGN_OR_RETURN(auto w,
                                  WarmPrefill::create(rig.backend, *c, *rig.model, *profile));
          TIERKV_ASSIGN_OR_RETURN(last,
                                  rig.run(*c, *w, prompt, pol, 0, rig.work_pages, false, split));
          ms.push_back(last.ttft_ms);
        }
        last.ttft_ms = median(ms);
        return last;
      };
      TIERKV_ASSIGN_OR_RETURN(const WarmPrefillResult planned, once(PrefillPolicy::kPlanned, -1));
      double best = 1e30;
      std::int32_t best_split = -1;
      for (std::int32_t i = 0; i <= o.splits; ++i) {
        const std::int32_t split = prefix / o.splits * i / 256 * 256;
        TIERKV_ASSIGN_OR_RETURN(const WarmPrefillResult r, once(PrefillPolicy::kPlanned, split));
        rows.push_back(with_host_time(
            {"tierkv-fixed-split", prefix, fresh, r.ttft_ms, gbps, split, "", slow_figures(r, tc)},
            r));
        if (!rig.o.quiet) {
          std::fprintf(stderr,
                       "    split %d: %.2f ms, predicted %.2f; the tier's part ready at %.2f ms, "
                       "predicted %.2f; %d tokens computed instead\n",
                       split, r.ttft_ms, r.plan.predicted_ms, r.lower_ready_ms,
                       r.plan.lower_ready_ms, r.fallback_tokens);
        }
        if (r.ttft_ms < best) {
          best = r.ttft_ms;
          best_split = split;
        }
      }
      rows.push_back(
          with_host_time({"tierkv-planned-slow", prefix, fresh, planned.ttft_ms, gbps,
                          planned.plan.load_begin, planned.plan.why, slow_figures(planned, tc)},
                         planned));
      std::snprintf(line, sizeof line, "%6.3g %6d %10.2f %10.2f %8d %10.3f\n", gbps, fresh,
                    planned.ttft_ms, best, best_split, planned.ttft_ms / best);
      text += line;
      if (!rig.o.quiet) std::fprintf(stderr, "%s", line);
      text += "        planned: " + planned.plan.why + "\n";
      if (planned.plan.lower_ready_ms > 0) {
        std::snprintf(line, sizeof line,
                      "        the tier's part: predicted in host slots at %.2f ms, waited until "
                      "%.2f ms (%d times past the deadline); %d tokens computed instead of "
                      "loaded\n",
                      planned.plan.lower_ready_ms, planned.lower_ready_ms, planned.lower_extensions,
                      planned.fallback_tokens);
        text += line;
        if (!rig.o.quiet) std::fprintf(stderr, "%s", line);  // kept if a time limit cuts the run
      }
    }
  }
  return Status::Ok();
}

// Section 2: per-layer compute beside per-layer load, from the profile's measured figures.
void hide_section(const Rig& rig, std::string& text) {
  text +=
      "\n2. Per layer: loading a prefix against computing a chunk over it (us, measured grid); "
      "the smallest chunk whose compute hides the load\n";
  text += format_hide_analysis(
      hide_analysis(*rig.profile, rig.spec, rig.o.prefixes, kPlannerChunkSizes),
      kPlannerChunkSizes);
}

int run(Options o) {
  auto kind = bench::backend_from_flag(o.backend);
  if (!kind.ok()) return bench::report_error(kTool, kind.status(), bench::kExitUsage);
  const bool cpu = *kind == BackendKind::kCpu;
  auto json = bench::OutputFile::open(o.json, "--json");
  auto report = bench::OutputFile::open(o.report, "--report");
  if (!json.ok()) return bench::report_error(kTool, json.status(), bench::kExitUsage);
  if (!report.ok()) return bench::report_error(kTool, report.status(), bench::kExitUsage);
  if (o.prefixes.empty())
    o.prefixes = cpu ? std::vector<std::int32_t>{256, 512}
                     : std::vector<std::int32_t>{4096, 8192, 16384, 32768};
  if (o.news.empty())
    o.news = cpu ? std::vector<std::int32_t>{32, 64} : std::vector<std::int32_t>{128, 512, 2048};
  if (o.slow_news.empty())
    o.slow_news = cpu ? std::vector<std::int32_t>{32} : std::vector<std::int32_t>{128, 512, 2048};
  if (o.slow_prefix == 0) o.slow_prefix = cpu ? 512 : 16384;
  auto backend = create_backend(*kind);
  if (!backend.ok()) return bench::report_error(kTool, backend.status(), bench::kExitUsage);
  auto spec = model_preset(!o.model.empty() ? o.model : cpu ? "tiny" : "llama-3.1-8b");
  if (!spec.ok()) return bench::report_error(kTool, spec.status(), bench::kExitUsage);
  const std::int32_t max_tokens =
      std::max(*std::max_element(o.prefixes.begin(), o.prefixes.end()), o.slow_prefix) +
      std::max(*std::max_element(o.news.begin(), o.news.end()),
               *std::max_element(o.slow_news.begin(), o.slow_news.end()));
  if (max_tokens > spec->max_positions) {
    return bench::report_error(kTool,
                               invalid_argument("prefix + new tokens exceed the model's " +
                                                std::to_string(spec->max_positions) + " positions"),
                               bench::kExitUsage);
  }
  Rig rig{**backend, o, *spec};
  std::string text = std::string("tierkv-warm-bench: ") + (cpu ? "CPU backend" : "CUDA backend") +
                     " (" + (*backend)->info().name + "), model " + spec->name +
                     (cpu ? " -- no GPU visible: the tiny model on the CPU backend at small sizes; "
                            "the targets are for the H100"
                          : "") +
                     ", " + bench::utc_date() + "\n";
  if (!o.quiet) std::fprintf(stderr, "%s", text.c_str());
  std::vector<Row> rows;
  Status s = build(rig, max_tokens);
  if (s.ok()) s = host_section(rig, rows, text);
  if (s.ok()) hide_section(rig, text);
  if (s.ok()) s = slow_section(rig, rows, text);
  if (!s.ok()) return bench::report_error(kTool, s, bench::kExitFailure);
  std::printf("%s", text.c_str());
  std::vector<std::string> lines;
  for (const Row& r : rows) {
    nlohmann::json j = {{"bench", r.gbps > 0 ? "warm_prefill_slow_tier" : "warm_prefill"},
                        {"card", (*backend)->info().name},
                        {"backend", cpu ? "cpu" : "cuda"},
                        {"impl", r.impl},
                        {"model", spec->name},
                        {"prefix_tokens", r.prefix},
                        {"new_tokens", r.fresh},
                        {"us", r.ms * 1e3},
                        {"date", bench::utc_date()}};
    if (r.gbps > 0) {
      j["tier_gbps"] = r.gbps;
      j["tier"] = "memory-experiment (experiment tier)";
    }
    if (r.split >= 0) j["split"] = r.split;
    if (!r.why.empty()) j["plan"] = r.why;
    if (r.plan_ms >= 0) {
      j["plan_us"] = r.plan_ms * 1e3;
      j["queue_us"] = r.queue_ms * 1e3;
    }
    if (r.slow) {
      j["predicted_us"] = r.slow->predicted_ms * 1e3;
      j["fallback_tokens"] = r.slow->fallback_tokens;
      if (r.gbps > 0) {
        j["tier_measured_gbps"] = r.slow->tier_measured_gbps;
        j["lower_ready_predicted_us"] = r.slow->lower_predicted_ms * 1e3;
        j["lower_ready_us"] = r.slow->lower_ready_ms * 1e3;
        j["lower_extensions"] = r.slow->extensions;
      }
    }
    lines.push_back(j.dump());
  }
  if (Status w = json->commit_lines(lines); !w.ok())
    return bench::report_error(kTool, w, bench::kExitFailure);
  if (Status w = report->commit(text); !w.ok())
    return bench::report_error(kTool, w, bench::kExitFailure);
  return 0;
}

}  // namespace
}  // namespace tierkv

int main(int argc, char** argv) {
  tierkv::Options o;
  CLI::App app{"tierkv-warm-bench: time to first token of a returning prompt, by policy"};
  app.add_option("--backend", o.backend, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--model", o.model,
                 "model shape (default: llama-3.1-8b on CUDA, tiny on the CPU)");
  app.add_option("--prefix", o.prefixes, "cached prefix lengths (tokens, multiples of 256)")
      ->delimiter(',');
  app.add_option("--new", o.news, "new tokens after the prefix")->delimiter(',');
  app.add_option("--reps", o.reps, "runs per point (median)")->check(CLI::Range(1, 50));
  app.add_option("--queue-layers", o.queue_layers,
                 "layers of a load queued before the compute (-1: all; default: the executor's)")
      ->check(CLI::Range(-1, 1024));
  app.add_option("--recompute-max", o.recompute_max,
                 "time recompute only up to this many tokens (0: always)");
  app.add_option("--slow-gbps", o.slow_gbps,
                 "experiment-tier bandwidths for section 2 (empty: skip)")
      ->delimiter(',');
  app.add_option("--slow-prefix", o.slow_prefix, "prefix length for section 2");
  app.add_option("--slow-new", o.slow_news, "new tokens for section 2")->delimiter(',');
  app.add_option("--splits", o.splits, "fixed splits swept in section 2")->check(CLI::Range(1, 64));
  app.add_option(
         "--host-fronts", o.host_fronts,
         "section 1: also time these fronts (tokens recomputed while the rest of the prefix "
         "loads from host), beside the planner's prediction of each")
      ->delimiter(',');
  app.add_option("--profile", o.profile, "cost profile to use (default: measure one first)");
  app.add_option("--save-profile", o.save_profile, "write the measured profile here");
  app.add_option("--json", o.json, "JSON Lines results");
  app.add_option("--report", o.report, "the text report");
  app.add_flag("--quiet", o.quiet, "no progress lines on stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return tierkv::bench::parse_error_exit(app, e);
  }
  for (std::int32_t p : o.prefixes) {
    if (p <= 0 || p % 256 != 0) {
      std::fprintf(stderr,
                   "tierkv-warm-bench: --prefix values must be positive multiples of 256\n");
      return tierkv::bench::kExitUsage;
    }
  }
  return tierkv::run(std::move(o));
}

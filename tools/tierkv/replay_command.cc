// `tierkv replay`: replays workloads once per cache policy through a continuous-batching loop on
// the reference runner, and reports time to first token, inter-token latency, hits and bytes per
// tier; checks that every policy generated the same tokens. The parts: replay_options (flags),
// replay_workloads, replay_setup (model, weights, profile, memory), replay_policy (one policy's
// engine), replay_loop (the batching loop), replay_stats, replay_output (tables, JSON Lines,
// progress), replay_plots, replay_max_rate.
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "common/bench_io.h"
#include "common/memory_check.h"
#include "replay_loop.h"
#include "replay_max_rate.h"
#include "replay_options.h"
#include "replay_output.h"
#include "replay_plots.h"
#include "replay_policy.h"
#include "replay_setup.h"
#include "replay_stats.h"
#include "replay_workloads.h"
#include "subcommands.h"

namespace tierkv::cli {
namespace replay {
namespace {

constexpr std::string_view kTool = "tierkv replay";
using bench::kExitFailure;
using bench::kExitUsage;
using bench::report_error;

struct Context {
  ReplayOptions& o;
  Backend& backend;
  EngineConfig config;
  RunHeader header;
  ProgressBar progress;
  std::vector<std::string> lines;  // JSON Lines, in order
  std::vector<std::pair<std::string, std::int64_t>> timelines;  // (policy, request) recorded
  bool mismatch = false;
  // (labels, text): each policy run's cache statistics in the Prometheus text format
  std::vector<std::pair<std::vector<std::pair<std::string, std::string>>, std::string>> metrics;
};

std::uint64_t chunk_bytes(const ModelSpec& m, std::int32_t chunk_tokens) {
  return std::uint64_t(chunk_tokens) * m.kv_bytes_per_token();
}

Result<PolicyRun> replay_policy(Context& c, const std::string& id, const std::string& workload,
                                const tierkv::replay::Workload& w, std::int64_t timeline_id,
                                bool show_progress) {
  TIERKV_ASSIGN_OR_RETURN(const PolicySpec spec, policy_spec(id, c.config));
  const auto setup_start = std::chrono::steady_clock::now();
  auto engine = PolicyEngine::create(c.backend, spec, c.config);
  if (!engine.ok()) return engine.status().with_context("setting up policy " + spec.label);
  const double setup_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - setup_start).count();
  LoopOptions lo;
  lo.max_batch = c.o.max_batch;
  lo.timeline_request = timeline_id;
  if (show_progress) {
    c.progress.start(workload, spec.label, std::int64_t(w.requests.size()));
    lo.progress = [&c](std::int64_t done, std::int64_t total, double t) {
      c.progress.update(done, total, t);
    };
  }
  auto run = run_policy(**engine, w, lo);
  if (!run.ok()) return run.status().with_context("replaying " + workload + " under " + spec.label);
  if (show_progress) c.progress.finish(run->wall_s);
  // One line per policy on stderr, also with --quiet: a log cut short still says how far it got.
  std::fprintf(stderr, "[replay] %s, %s: %zu requests replayed in %.1f s (setup %.1f s, %lld steps)\n",
               workload.c_str(), spec.label.c_str(), w.requests.size(), run->wall_s, setup_s,
               static_cast<long long>(run->steps));
  return run;
}

std::vector<std::string> tier_lines(const Context& c) {
  const EngineConfig& e = c.config;
  const std::uint64_t page_bytes = std::uint64_t(e.model.page_tokens) * e.model.kv_bytes_per_token();
  std::vector<std::string> t{
      "gpu: page pool of " + std::to_string(e.gpu_pages) + " pages of " +
          std::to_string(e.model.page_tokens) + " tokens (" +
          bench::format_bytes(std::size_t(e.gpu_pages * std::int64_t(page_bytes))) + ")",
      "host: pinned host tier of " + bench::format_bytes(e.host_bytes) +
          " (load-then-compute, warm, planned); " + bench::format_bytes(e.staging_bytes) +
          " of staging under the lower tiers; chunks of " +
          std::to_string(e.cache_chunk_tokens) + " tokens (" +
          bench::format_bytes(chunk_bytes(e.model, e.cache_chunk_tokens)) + ")"};
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "%s: EXPERIMENT TIER (host memory throttled to %g GB/s, %g us per read), %s",
                kExperimentTierName, e.slow_gbps, e.slow_latency_us,
                bench::format_bytes(e.slow_bytes).c_str());
  t.emplace_back(buf);
  if (!e.disk_dir.empty())
    t.push_back("disk: a fresh directory under " + e.disk_dir + ", " + bench::format_bytes(e.disk_bytes));
  if (!e.redis.empty()) t.push_back("redis: " + e.redis + " (keys of this run's own namespace)");
  return t;
}

// The max-rate search of every policy on workload `w`. `base_p90[i]` is policy i's p90 at the
// workload's own rate (scale 1), from the replay just done: the search starts there.
Status search_max_rates(Context& c, const std::string& name, const tierkv::replay::Workload& w,
                        const std::vector<std::string>& policies,
                        const std::vector<double>& base_p90) {
  std::vector<MaxRate> rates;
  for (std::size_t i = 0; i < policies.size(); ++i) {
    const std::string& id = policies[i];
    TIERKV_ASSIGN_OR_RETURN(const PolicySpec spec, policy_spec(id, c.config));
    MaxRate m{spec.label, name, c.o.max_rate_ttft_s * 1e3, 0, 0, {}};
    auto p90_at = [&](double scale) -> Result<double> {
      const bool reused = scale == 1.0 && i < base_p90.size();
      double p90 = reused ? base_p90[i] : 0.0;
      if (!reused) {
        std::fprintf(stderr, "[replay] max rate: %s at %.2fx the arrival rate\n",
                     spec.label.c_str(), scale);
        TIERKV_ASSIGN_OR_RETURN(PolicyRun run,
                                replay_policy(c, id, name, compress_arrivals(w, scale), -1, false));
        p90 = summarize_run(run, name).ttft_p90;
      }
      // On stderr as it comes: a search cut short keeps what it found.
      std::fprintf(stderr,
                   "[replay] max rate: %s at %.2fx the arrival rate%s: p90 TTFT %.0f ms (%s)\n",
                   spec.label.c_str(), scale, reused ? " (the replay above)" : "", p90,
                   p90 <= m.threshold_ms ? "pass" : "fail");
      return p90;
    };
    TIERKV_RETURN_IF_ERROR(find_max_rate(p90_at, c.o.max_rate_steps, m));
    c.lines.push_back(max_rate_json(m, c.header));
    rates.push_back(std::move(m));
  }
  std::printf("\n%s", format_max_rates(rates).c_str());
  return Status::Ok();
}

Status replay_workload(Context& c, const std::string& name, const PreparedWorkload& p) {
  const auto& w = p.workload;
  std::printf("\n%s", tierkv::replay::format_summary(w, p.summary).c_str());
  std::fflush(stdout);  // before the progress bar, on stderr
  const std::int64_t timeline_id =
      c.o.timeline_request >= 0 ? c.o.timeline_request : default_timeline_request(p);
  const std::vector<std::string> policies = policy_names(c.o);
  std::vector<PolicyRun> runs;
  for (const std::string& id : policies) {
    TIERKV_ASSIGN_OR_RETURN(PolicyRun run, replay_policy(c, id, name, w, timeline_id, true));
    runs.push_back(std::move(run));
  }
  std::vector<PolicySummary> summaries;
  std::vector<std::string> timeline_policies;
  for (const PolicyRun& run : runs) {
    summaries.push_back(summarize_run(run, name));
    for (const RequestRecord& r : run.records) {
      c.lines.push_back(request_json(r, run.spec.label, name));
      for (std::string& line : timeline_json(r, run.spec.label))
        c.lines.push_back(std::move(line));
      if (!r.prefill.timeline.empty()) {
        timeline_policies.push_back(run.spec.label);
        c.timelines.emplace_back(run.spec.label, r.id);
      }
    }
    c.lines.push_back(summary_json(summaries.back(), c.header));
    c.metrics.push_back({{{"workload", name}, {"policy", run.spec.label}}, run.metrics});
  }
  std::vector<std::string> tiers = tier_lines(c);
  std::printf("\n%s", format_tables(c.header, name, summaries, tiers).c_str());
  std::printf("Timeline recorded for request %lld under %zu policies.\n",
              static_cast<long long>(timeline_id), timeline_policies.size());
  // The CPU backend computes each token the same way whatever the batch or chunk: there, every
  // policy must give recompute's tokens exactly. On CUDA they are compared and reported only.
  const bool exact = c.o.outputs == "exact" ||
                     (c.o.outputs == "auto" && c.backend.kind() == BackendKind::kCpu);
  if (exact) {
    const auto mismatches = compare_outputs(runs);
    std::printf("%s", format_mismatches(mismatches, runs.size(), w.requests.size()).c_str());
    if (!mismatches.empty()) c.mismatch = true;
  } else {
    std::printf("%s", format_agreement(runs).c_str());
  }
  if (wants_max_rate(c.o, name, c.backend.kind())) {
    std::vector<double> base_p90;
    for (const PolicySummary& s : summaries)
      base_p90.push_back(s.ttft_p90);
    TIERKV_RETURN_IF_ERROR(search_max_rates(c, name, w, policies, base_p90));
  }
  std::fflush(stdout);
  return Status::Ok();
}

// The directory for plots, created now so that a path that cannot be used ends the run first.
Status make_plot_dir(const std::string& dir) {
  if (dir.empty()) return Status::Ok();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    return io_error("--plots " + dir + ": cannot create the directory: " + ec.message());
  }
  if (::access(dir.c_str(), W_OK) != 0) return io_error("--plots " + dir + ": not writable");
  return Status::Ok();
}

std::string first_line(const Context& c, bool gpu_visible) {
  const std::string& b = c.header.backend;
  std::string line = "tierkv replay: " + b + " backend (" + c.header.device + "), model " +
                     c.header.model + ", " + c.header.weights;
  if (b != "cpu") return line;
  line += gpu_visible ? ". The CPU backend, as asked" : ". No GPU here";
  line += c.header.model == "tiny"
              ? ": the tiny model on the CPU backend at small sizes (a GPU machine runs the "
                "8B-shaped model at full sizes)."
              : ": the " + c.header.model + "-shaped model on the CPU backend, as asked (slow).";
  return line;
}

struct Prepared {
  std::vector<std::pair<std::string, PreparedWorkload>> workloads;
  std::int32_t longest_prompt = 0;
  std::int64_t longest_request = 0;  // prompt + output
};

Result<Prepared> prepare_all(const ReplayOptions& o, const ModelSpec& model) {
  Prepared p;
  for (const std::string& name : o.workloads) {
    auto w = prepare_workload(name, o, model);
    if (!w.ok()) return w.status().with_context("workload " + name);
    p.longest_prompt = std::max(p.longest_prompt, w->longest_prompt);
    p.longest_request = std::max(p.longest_request, std::int64_t(w->longest_request));
    p.workloads.emplace_back(name, std::move(w).value());
  }
  return p;
}

int write_outputs(Context& c, bench::OutputFile& json, const std::string& jsonl_path,
                  bench::OutputFile& metrics) {
  if (Status s = json.commit_lines(c.lines); !s.ok()) return report_error(kTool, s, kExitFailure);
  if (Status s = metrics.commit(merge_prometheus(c.metrics)); !s.ok())
    return report_error(kTool, s, kExitFailure);
  if (metrics.enabled()) std::printf("\nMetrics (Prometheus text): %s\n", c.o.metrics.c_str());
  if (!jsonl_path.empty()) std::printf("\nJSON Lines: %s (%zu records)\n", jsonl_path.c_str(), c.lines.size());
  if (c.o.plots.empty()) return 0;
  const std::string python = python_with_matplotlib();
  if (python.empty()) {
    std::printf("Plots: skipped: python3 cannot import matplotlib here (Debian: apt-get install "
                "python3-matplotlib).\n");
    return 0;
  }
  std::printf("Plots into %s:\n", c.o.plots.c_str());
  std::fflush(stdout);
  const Status s = draw_plots(python, c.o.plot_script, jsonl_path, c.o.plots, c.timelines);
  if (!s.ok()) return report_error(kTool, s, kExitFailure);
  return 0;
}

int run_replay(ReplayOptions& o) {
  if (Status s = validate(o); !s.ok()) return report_error(kTool, s, kExitUsage);
  // Everything that can refuse the command line comes before the first replay.
  std::string jsonl_path = o.json;
  if (jsonl_path.empty() && !o.plots.empty()) jsonl_path = o.plots + "/replay.jsonl";
  if (Status s = make_plot_dir(o.plots); !s.ok()) return report_error(kTool, s, kExitUsage);
  auto json = bench::OutputFile::open(jsonl_path, o.json.empty() ? "--plots" : "--json");
  if (!json.ok()) return report_error(kTool, json.status(), kExitUsage);
  auto metrics = bench::OutputFile::open(o.metrics, "--metrics");
  if (!metrics.ok()) return report_error(kTool, metrics.status(), kExitUsage);
  auto kind = bench::backend_from_flag(o.backend);
  if (!kind.ok()) return report_error(kTool, kind.status().with_context("--backend"), kExitUsage);
  auto backend = create_backend(*kind);
  if (!backend.ok()) return report_error(kTool, backend.status().with_context("--backend"), kExitUsage);
  auto model = choose_model(o.model, *kind);
  if (!model.ok()) return report_error(kTool, model.status(), kExitUsage);
  if (!o.weights.empty() && !std::filesystem::is_directory(o.weights)) {
    return report_error(kTool, not_found("--weights " + o.weights + ": no such directory"), kExitUsage);
  }
  const bool gpu_pages_given = o.tiers.gpu_pages > 0;
  resolve_defaults(o, *kind, *model);
  auto prepared = prepare_all(o, *model);
  if (!prepared.ok()) return report_error(kTool, prepared.status(), kExitUsage);
  const std::int64_t page = model->page_tokens;
  const std::int64_t longest_pages = (prepared->longest_request + page - 1) / page;
  if (!gpu_pages_given) {  // by default the pool holds 1.5 of the longest requests
    o.tiers.gpu_pages = std::max(o.tiers.gpu_pages, (3 * longest_pages + 1) / 2);
  } else if (o.tiers.gpu_pages < longest_pages) {
    return report_error(kTool,
                        invalid_argument("--gpu-pages " + std::to_string(o.tiers.gpu_pages) +
                                         ": the longest request (prompt and output) needs " +
                                         std::to_string(longest_pages) + " pages"),
                        kExitUsage);
  }

  Context c{o, **backend, {}, {}, ProgressBar(o.quiet), {}, {}, false};
  c.header = RunHeader{std::string(backend_kind_name(*kind)), (*backend)->info().name, model->name,
                       o.weights.empty() ? "random weights (seed " + std::to_string(o.seed) + ")"
                                         : "weights from " + o.weights,
                       o.small};
  std::printf("%s\n", first_line(c, cuda_device_count() > 0).c_str());
  std::string profile_note;
  auto profile = load_cost_profile(o, (*backend)->info(), *model, &profile_note);
  if (!profile.ok()) return report_error(kTool, profile.status(), kExitUsage);
  std::printf("%s\n", profile_note.c_str());
  std::fflush(stdout);

  EngineConfig& e = c.config;
  e.model = *model;
  e.weights = weights_source(*model, o.weights, o.seed);
  e.gpu_pages = o.tiers.gpu_pages;
  e.cache_chunk_tokens = o.cache_chunk_tokens;
  e.chunk_tokens = o.chunk_tokens;
  e.max_batch = o.max_batch;
  e.host_bytes = o.tiers.host_bytes;
  const std::uint64_t chunk = chunk_bytes(*model, o.cache_chunk_tokens);
  e.staging_bytes = o.tiers.staging_bytes > 0
                        ? o.tiers.staging_bytes
                        : (std::uint64_t(prepared->longest_prompt) / std::uint64_t(o.cache_chunk_tokens) + 1) * chunk;
  e.slow_bytes = o.tiers.slow_bytes;
  e.slow_gbps = o.tiers.slow_gbps;
  e.slow_latency_us = o.tiers.slow_latency_us;
  e.disk_dir = o.tiers.disk_dir;
  e.disk_bytes = o.tiers.disk_bytes;
  e.redis = o.tiers.redis;
  e.profile = *profile;
  if (Status s = bench::check_memory(**backend, replay_memory_need(*model, o, e.staging_bytes),
                                     "the replay", "Lower --gpu-pages, --host-bytes or --slow-bytes.");
      !s.ok()) {
    return report_error(kTool, s, kExitUsage);
  }
  for (const auto& [name, w] : prepared->workloads) {
    if (Status s = replay_workload(c, name, w); !s.ok()) return report_error(kTool, s, kExitFailure);
  }
  if (int rc = write_outputs(c, *json, jsonl_path, *metrics); rc != 0) return rc;
  if (c.mismatch) {
    std::fprintf(stderr, "%s: greedy outputs differ between policies (listed above)\n", kTool.data());
    return kExitFailure;
  }
  return 0;
}

}  // namespace
}  // namespace replay

Runner define_replay(CLI::App& app) {
  auto o = std::make_shared<replay::ReplayOptions>();
  replay::add_replay_flags(app, *o);
  app.footer(
      "Policies: recompute, gpu-only (the page pool's prefix index), load-then-compute, warm "
      "(layer-wise warm prefill), planned (the planner) over the host tier; planned-slow over the "
      "experiment tier (host memory throttled to --slow-gbps); planned-disk with --disk-dir; "
      "planned-redis with --redis. Each replays the same workload from empty tiers. Outputs: a "
      "progress bar on stderr, a table per workload on stdout, --json (bench/replay/README.md), "
      "--plots. Exit status: 0; 1 when a replay failed or (on the cpu backend) policies generated "
      "different tokens; "
      "2 for a command line that cannot run here.");
  return [o]() { return replay::run_replay(*o); };
}

}  // namespace tierkv::cli

#include "replay_options.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <string_view>

namespace tierkv::cli::replay {
namespace {

constexpr std::array<std::string_view, 3> kWorkloads{"chat", "docqa", "trace"};
// Every policy, in the order the tables list them. The last two run only when their tier is given.
constexpr std::array<std::string_view, 8> kPolicies{
    "recompute", "gpu-only", "load-then-compute", "warm", "planned", "planned-slow",
    "planned-disk", "planned-redis"};

bool is_one_of(std::string_view v, std::span<const std::string_view> names) {
  return std::find(names.begin(), names.end(), v) != names.end();
}

std::string joined(std::span<const std::string_view> names) {
  std::string s;
  for (std::string_view n : names)
    s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

void add_workload_flags(CLI::App& app, ReplayOptions& o) {
  app.add_option("--workload", o.workloads,
                 "workloads to replay, one table each: chat, docqa, trace (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--requests", o.requests,
                 "keep the first N requests of each workload; 0: all [trace on cpu: 32]")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--minutes", o.minutes,
                 "keep requests arriving in the first M minutes (trace: of trace time); 0: all")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--time-scale", o.time_scale,
                 "multiply arrival and think times (0.5: the same requests at twice the rate)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-prompt", o.max_prompt,
                 "longest prompt (chat: prompt + answer; trace: longer ones are skipped); 0: the "
                 "model's positions")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", o.seed, "seed of the workloads and of the random weights")
      ->capture_default_str();
  auto* g = "chat workload (defaults: cpu / cuda)";
  app.add_option("--sessions", o.chat.sessions, "chat sessions [8 / 64]")->group(g)->check(CLI::PositiveNumber);
  app.add_option("--session-rate", o.chat.session_rate, "sessions starting per second [1 / 0.5]")
      ->group(g)->check(CLI::PositiveNumber);
  app.add_option("--turns", o.chat.mean_turns, "mean turns per session [3 / 4]")->group(g)->check(CLI::Range(1.0, 1e6));
  app.add_option("--max-turns", o.chat.max_turns, "most turns per session [4 / 16]")->group(g)->check(CLI::PositiveNumber);
  app.add_option("--system-tokens", o.chat.system_tokens, "shared system prompt tokens [256 / 2048]")
      ->group(g)->check(CLI::NonNegativeNumber);
  app.add_option("--user-tokens", o.chat.user_tokens, "median user message tokens [48 / 256]")
      ->group(g)->check(CLI::PositiveNumber);
  app.add_option("--answer-tokens", o.chat.answer_tokens, "median answer tokens, chat and docqa [8 / 128]")
      ->group(g)->check(CLI::PositiveNumber);
  app.add_option("--think-s", o.chat.think_s, "mean think time between turns, s [2 / 5]")
      ->group(g)->check(CLI::NonNegativeNumber);
  g = "document QA workload (defaults: cpu / cuda)";
  app.add_option("--documents", o.docqa.documents, "shared documents [6 / 8]")->group(g)->check(CLI::PositiveNumber);
  app.add_option("--document-tokens", o.docqa.document_tokens, "median document tokens [640 / 8192]")
      ->group(g)->check(CLI::PositiveNumber);
  app.add_option("--questions", o.docqa.questions, "questions [20 / 256]")->group(g)->check(CLI::PositiveNumber);
  app.add_option("--question-rate", o.docqa.question_rate, "questions per second [1 / 2]")
      ->group(g)->check(CLI::PositiveNumber);
  app.add_option("--zipf", o.docqa.zipf, "document popularity exponent (Zipf) [0.5 / 1]")->group(g)->check(CLI::NonNegativeNumber);
  g = "trace workload";
  app.add_option("--trace", o.trace.path,
                 "Mooncake-format trace (JSON Lines) [bench/traces/mooncake-conversation.jsonl]")
      ->group(g);
  app.add_option("--length-scale", o.trace.length_scale,
                 "scale the trace's lengths (blocks keep their place) [1/32 on cpu, 1 on cuda]")
      ->group(g)->check(CLI::Range(1e-6, 1.0));
  app.add_option("--max-output", o.trace.max_output, "longest output after scaling [16 / 512]")
      ->group(g)->check(CLI::PositiveNumber);
}

void add_engine_flags(CLI::App& app, ReplayOptions& o) {
  auto* g = "model and engine";
  app.add_option("--backend", o.backend, "cpu, cuda, or auto (cuda when a GPU is visible)")
      ->group(g)->capture_default_str()->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--model", o.model,
                 "auto (tiny on the cpu backend, llama-3.1-8b on cuda), tiny, llama-3.1-8b")
      ->group(g)->capture_default_str()->check(CLI::IsMember({"auto", "tiny", "llama-3.1-8b"}));
  app.add_option("--weights", o.weights,
                 "safetensors checkpoint directory of the model (default: random weights from --seed)")
      ->group(g);
  app.add_option("--profile", o.profile,
                 "cost profile for the planner (tierkv calibrate) [~/.cache/tierkv/profile-<device>-<model>.json]")
      ->group(g);
  app.add_option("--chunk-tokens", o.chunk_tokens, "prefill chunk; 0: the executor's choice")
      ->group(g)->check(CLI::Range(0, 65536));
  app.add_option("--cache-chunk-tokens", o.cache_chunk_tokens,
                 "the cache's chunk, the unit of every tier below the GPU [64 for the tiny model, "
                 "whose prompts are short; 256]")
      ->group(g)->check(CLI::Range(16, 65536));
  app.add_option("--max-batch", o.max_batch, "most running requests (one decode batch)")
      ->group(g)->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--policies", o.policies,
                 "policies to compare (comma-separated; default: all available): " +
                     joined(kPolicies))
      ->group(g)->delimiter(',');
}

void add_tier_flags(CLI::App& app, TierFlags& t) {
  auto* g = "tier budgets (defaults: tiny model / 8B-shaped)";
  app.add_option("--gpu-pages", t.gpu_pages, "GPU page pool, pages of 16 tokens [1.5x the longest request; 8B on cuda: at least 12288]")
      ->group(g)->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 28));
  app.add_option("--host-bytes", t.host_bytes, "host tier of the host policies [64 MiB / 32 GiB (4 GiB on the cpu backend)]")
      ->group(g)->transform(CLI::AsSizeValue(false));
  app.add_option("--staging-bytes", t.staging_bytes,
                 "host tier under the lower-tier policies [the longest prompt's full chunks + 1]")
      ->group(g)->transform(CLI::AsSizeValue(false));
  app.add_option("--slow-bytes", t.slow_bytes, "experiment tier budget [256 MiB / 32 GiB (4 GiB on the cpu backend)]")
      ->group(g)->transform(CLI::AsSizeValue(false));
  app.add_option("--slow-gbps", t.slow_gbps,
                 "experiment tier bandwidth, GB/s [tiny: 0.0005, where a 64-token chunk takes "
                 "about as long to read as to recompute on two cores; 8B: 2]")
      ->group(g)->check(CLI::PositiveNumber);
  app.add_option("--slow-latency-us", t.slow_latency_us, "experiment tier latency per read [50]")
      ->group(g)->check(CLI::NonNegativeNumber);
  app.add_option("--disk-dir", t.disk_dir,
                 "run planned-disk: a disk tier in a fresh directory under this one (removed after)")
      ->group(g);
  app.add_option("--disk-bytes", t.disk_bytes, "disk tier budget [as --slow-bytes]")
      ->group(g)->transform(CLI::AsSizeValue(false));
  app.add_option("--redis", t.redis, "run planned-redis against this server, host:port")->group(g);
}

void add_output_flags(CLI::App& app, ReplayOptions& o) {
  auto* g = "output";
  app.add_option("--json", o.json, "write JSON Lines here (bench/replay/README.md)")->group(g);
  app.add_option("--metrics", o.metrics,
                 "write each policy's cache statistics here, in the Prometheus text format "
                 "(labels workload and policy)")
      ->group(g);
  app.add_option("--plots", o.plots,
                 "draw plots into this directory (bench/replay/plot_replay.py; needs matplotlib)")
      ->group(g);
  app.add_option("--plot-script", o.plot_script, "the plot script [bench/replay/plot_replay.py]")
      ->group(g);
  app.add_option("--timeline-request", o.timeline_request,
                 "request whose per-layer timeline is recorded under each policy [the first with "
                 "the longest shared prefix]")
      ->group(g)->check(CLI::NonNegativeNumber);
  app.add_flag("--quiet", o.quiet, "no progress bar")->group(g);
  app.add_option("--outputs", o.outputs,
                 "greedy outputs against recompute's: exact (a difference fails the run), report "
                 "(agreement printed), auto (exact on cpu, report on cuda, where bf16 tokens "
                 "follow each schedule's batch and chunk shapes)")
      ->group(g)->capture_default_str()->check(CLI::IsMember({"auto", "exact", "report"}));
  app.add_option("--find-max-rate", o.find_max_rate,
                 "search the highest arrival-rate scale keeping p90 TTFT under --max-rate-ttft: "
                 "auto (trace on cuda), on, off")
      ->group(g)->capture_default_str()->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_option("--max-rate-ttft", o.max_rate_ttft_s, "p90 TTFT threshold of the search, s")
      ->group(g)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-rate-steps", o.max_rate_steps,
                 "probes per policy in the search (the first, at the workload's own rate, reuses "
                 "its replay)")
      ->group(g)
      ->capture_default_str()
      ->check(CLI::Range(2, 20));
}

}  // namespace

void add_replay_flags(CLI::App& app, ReplayOptions& o) {
  add_workload_flags(app, o);
  add_engine_flags(app, o);
  add_tier_flags(app, o.tiers);
  add_output_flags(app, o);
}

Status validate(const ReplayOptions& o) {
  if (o.workloads.empty()) return invalid_argument("--workload: name at least one of " + joined(kWorkloads));
  for (const std::string& w : o.workloads) {
    if (!is_one_of(w, kWorkloads)) {
      return invalid_argument("--workload: unknown workload '" + w + "' (known: " + joined(kWorkloads) + ")");
    }
  }
  for (const std::string& p : o.policies) {
    if (!is_one_of(p, kPolicies)) {
      return invalid_argument("--policies: unknown policy '" + p + "' (known: " + joined(kPolicies) + ")");
    }
    if (p == "planned-disk" && o.tiers.disk_dir.empty()) {
      return invalid_argument("--policies: planned-disk needs --disk-dir");
    }
    if (p == "planned-redis" && o.tiers.redis.empty()) {
      return invalid_argument("--policies: planned-redis needs --redis host:port");
    }
  }
  if (!o.tiers.redis.empty()) {
    const auto colon = o.tiers.redis.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == o.tiers.redis.size() ||
        o.tiers.redis.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      return invalid_argument("--redis: expected host:port, got '" + o.tiers.redis + "'");
    }
  }
  if (o.cache_chunk_tokens % 16 != 0) {  // 0 (the default) passes
    return invalid_argument("--cache-chunk-tokens must be a multiple of the page size (16)");
  }
  return Status::Ok();
}

namespace {

template <typename T>
void or_default(T& v, T unset, T value) {
  if (v == unset) v = value;
}

}  // namespace

void resolve_defaults(ReplayOptions& o, BackendKind backend, const ModelSpec& model) {
  const bool small = backend == BackendKind::kCpu;
  const bool tiny = model.name == "tiny";
  o.small = small;
  ChatFlags& c = o.chat;
  const bool answer_set = c.answer_tokens != 0;
  or_default(c.sessions, 0, small ? 8 : 64);
  or_default(c.session_rate, 0.0, small ? 1.0 : 0.5);
  or_default(c.mean_turns, 0.0, small ? 3.0 : 4.0);
  or_default(c.max_turns, 0, small ? 4 : 16);
  or_default(c.system_tokens, -1, small ? 256 : 2048);
  or_default(c.user_tokens, 0, small ? 48 : 256);
  or_default(c.answer_tokens, 0, small ? 8 : 128);
  or_default(c.think_s, -1.0, small ? 2.0 : 5.0);
  DocQaFlags& d = o.docqa;
  or_default(d.documents, 0, small ? 6 : 8);
  or_default(d.document_tokens, 0, small ? 640 : 8192);
  or_default(d.questions, 0, small ? 20 : 256);
  or_default(d.question_rate, 0.0, small ? 1.0 : 2.0);
  or_default(d.zipf, -1.0, small ? 0.5 : 1.0);
  or_default(d.answer_tokens, 0, answer_set ? c.answer_tokens : (small ? 8 : 64));
  TraceFlags& t = o.trace;
  // The trace in the source tree the tool was built from; where that tree is not here (a copy of
  // the binary on another machine), the one under the current directory's bench/traces.
  const std::string built_from = TIERKV_SOURCE_DIR "/bench/traces/mooncake-conversation.jsonl";
  std::error_code ec;
  or_default(t.path, std::string(),
             std::filesystem::exists(built_from, ec) ? built_from
                                                     : "bench/traces/mooncake-conversation.jsonl");
  or_default(t.length_scale, 0.0, tiny ? 1.0 / 32 : 1.0);
  or_default(t.max_output, 0, small ? 16 : 512);
  or_default(o.max_prompt, 0, model.max_positions);
  or_default(o.cache_chunk_tokens, 0, tiny ? 64 : 256);
  TierFlags& tf = o.tiers;
  const std::uint64_t MiB = 1 << 20, GiB = std::uint64_t{1} << 30;
  or_default(tf.gpu_pages, std::int64_t{0}, std::int64_t{tiny || small ? 0 : 12288});  // 0: see run_replay
  // The 8B shape on the CPU backend (only when asked) gets budgets a workstation holds.
  or_default(tf.host_bytes, std::uint64_t{0}, tiny ? 64 * MiB : small ? 4 * GiB : 32 * GiB);
  or_default(tf.slow_bytes, std::uint64_t{0}, tiny ? 256 * MiB : small ? 4 * GiB : 32 * GiB);
  or_default(tf.slow_gbps, 0.0, tiny ? 0.0005 : 2.0);
  or_default(tf.slow_latency_us, -1.0, 50.0);
  or_default(tf.disk_bytes, std::uint64_t{0}, tf.slow_bytes);
  or_default(o.plot_script, std::string(), std::string(TIERKV_SOURCE_DIR "/bench/replay/plot_replay.py"));
}

std::vector<std::string> policy_names(const ReplayOptions& o) {
  std::vector<std::string> out;
  for (std::string_view p : kPolicies) {
    const bool asked = o.policies.empty() ? true
                                          : std::find(o.policies.begin(), o.policies.end(), p) !=
                                                o.policies.end();
    if (!asked) continue;
    if (p == "planned-disk" && o.tiers.disk_dir.empty()) continue;
    if (p == "planned-redis" && o.tiers.redis.empty()) continue;
    out.emplace_back(p);
  }
  return out;
}

bool wants_max_rate(const ReplayOptions& o, const std::string& workload, BackendKind backend) {
  if (o.find_max_rate == "on") return true;
  if (o.find_max_rate == "off") return false;
  return workload == "trace" && backend == BackendKind::kCuda;
}

}  // namespace tierkv::cli::replay

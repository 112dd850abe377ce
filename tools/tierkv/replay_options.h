// `tierkv replay`: its options, filled from flags in one place (add_replay_flags) and completed
// with the defaults of the backend it runs on in one place (resolve_defaults).
//
// A value of 0 (or "") for a size means "the default for this backend and model": the synthetic
// workloads and the tier budgets are small on the CPU backend with the tiny model, so that the
// whole comparison runs in a few minutes on two cores, and model-sized on CUDA. The defaults are
// stated in --help and the run prints the values it used.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/status.h"

namespace tierkv::cli::replay {

struct ChatFlags {
  std::int32_t sessions = 0;       // default: 8 (cpu), 64 (cuda)
  double session_rate = 0;         // sessions per second; default 1 (cpu), 0.5 (cuda)
  double mean_turns = 0;           // default 3 (cpu), 4 (cuda)
  std::int32_t max_turns = 0;      // default 4 (cpu), 16 (cuda)
  std::int32_t system_tokens = -1; // default 256 (cpu), 2048 (cuda)
  std::int32_t user_tokens = 0;    // median; default 48 (cpu), 256 (cuda)
  std::int32_t answer_tokens = 0;  // median; default 8 (cpu), 128 (cuda)
  double think_s = -1;             // mean; default 2 (cpu), 5 (cuda)
};

struct DocQaFlags {
  std::int32_t documents = 0;        // default 6 (cpu), 8 (cuda)
  std::int32_t document_tokens = 0;  // median; default 640 (cpu), 8192 (cuda)
  std::int32_t questions = 0;        // default 20 (cpu), 256 (cuda)
  double question_rate = 0;          // per second; default 1 (cpu), 2 (cuda)
  double zipf = -1;                  // default 0.5 (cpu), 1 (cuda)
  std::int32_t answer_tokens = 0;    // median; default 8 (cpu), 64 (cuda)
};

struct TraceFlags {
  std::string path;           // default: bench/traces/mooncake-conversation.jsonl
  double length_scale = 0;    // default 1/32 (cpu, tiny), 1 (cuda)
  std::int32_t max_output = 0;  // default 16 (cpu), 512 (cuda)
};

// Budgets of the tiers, per policy run (each policy starts from empty tiers of these sizes).
struct TierFlags {
  std::int64_t gpu_pages = 0;       // GPU page pool; default: 1.5x the longest request, at
                                    // least 12288 for the 8B shape on cuda
  std::uint64_t host_bytes = 0;     // host tier of the host policies; default 64 MiB (tiny),
                                    // 32 GiB (8B; 4 GiB on the cpu backend)
  // Host tier under the policies over a lower tier (its staging area): default, the longest
  // prompt's full chunks plus one, so the lower tier serves what does not fit.
  std::uint64_t staging_bytes = 0;
  std::uint64_t slow_bytes = 0;     // experiment tier; default 256 MiB (tiny), 32 GiB (8B; 4 GiB
                                    // on the cpu backend)
  double slow_gbps = 0;             // experiment tier bandwidth; default 0.0005 (tiny), 2 (8B)
  double slow_latency_us = -1;      // experiment tier latency per operation; default 50
  std::string disk_dir;             // when set: the planned-disk policy, records under it
  std::uint64_t disk_bytes = 0;     // default: as slow_bytes
  std::string redis;                // host:port; when set: the planned-redis policy
};

struct ReplayOptions {
  std::vector<std::string> workloads{"chat"};  // chat, docqa, trace
  std::vector<std::string> policies;           // empty: every policy available
  ChatFlags chat;
  DocQaFlags docqa;
  TraceFlags trace;
  // Applied to every workload.
  std::int64_t requests = 0;     // keep the first N requests; 0: all (trace default 32 on cpu)
  double minutes = 0;            // keep requests arriving in the first M minutes; 0: all
  double time_scale = 1.0;       // multiplies arrival and think times (0.5: twice the load)
  std::int32_t max_prompt = 0;   // longest prompt (+ answer, for chat); 0: the model's positions
  std::uint64_t seed = 1;        // workloads and random weights

  std::string backend = "auto";  // auto, cpu, cuda
  std::string model = "auto";    // auto (tiny on cpu, llama-3.1-8b on cuda), tiny, llama-3.1-8b
  std::string weights;           // safetensors checkpoint directory; "": random weights
  std::string profile;           // cost profile for the planner; "": the default path

  std::int32_t chunk_tokens = 0;        // prefill chunk; 0: the executor's choice
  std::int32_t cache_chunk_tokens = 0;  // the cache's chunk (the unit below the GPU); default 64
                                        // for the tiny model (its prompts are short), else 256
  std::int32_t max_batch = 32;          // running requests (one decode batch)
  TierFlags tiers;

  std::string json;          // JSON Lines file
  std::string metrics;       // each policy's cache statistics, Prometheus text format
  std::string plots;         // directory for plots
  std::string plot_script;   // default: bench/replay/plot_replay.py of the source tree
  std::int64_t timeline_request = -1;  // -1: the first with the longest shared prefix
  bool quiet = false;
  // Greedy outputs against recompute's: exact (any difference fails the run), report (agreement
  // printed), auto (exact on the cpu backend, report on cuda).
  std::string outputs = "auto";

  // Highest arrival-rate scale keeping p90 TTFT under a threshold.
  std::string find_max_rate = "auto";  // auto (trace on cuda), on, off
  double max_rate_ttft_s = 2.0;
  std::int32_t max_rate_steps = 6;  // probes per policy; the first (scale 1) reuses the replay

  bool small = false;  // resolve_defaults: the CPU backend's small sizes are in use
};

void add_replay_flags(CLI::App& app, ReplayOptions& o);

// Checks what CLI11 cannot (lists of names, combinations). InvalidArgument naming the flag.
Status validate(const ReplayOptions& o);

// Fills every 0 / "" / negative default from the backend and model (see the fields' comments).
void resolve_defaults(ReplayOptions& o, BackendKind backend, const ModelSpec& model);

// The policies a run compares, in order (validate() has checked the names).
std::vector<std::string> policy_names(const ReplayOptions& o);

// Whether the max-rate search runs for this workload on this backend.
bool wants_max_rate(const ReplayOptions& o, const std::string& workload, BackendKind backend);

}  // namespace tierkv::cli::replay

// The continuous-batching loop of `tierkv replay`, on virtual time.
//
// Each step runs one prefill chunk of the request at the head of the prefill queue (through the
// executor: WarmPrefill::start, then one WarmPrefillRun::step per loop step) and then one decode
// token for every running request, in one decode call. Requests join the queue at their arrival: open-loop requests at
// arrival_s; a chat turn after the first arrives think_s after its previous turn's last token,
// with the history (the previous prompt and the tokens the model generated for it) in front of
// its message. Time is virtual: it advances by each step's measured wall time (the step returns
// after the device synchronized), and when nothing runs it jumps to the next arrival, so a
// replay of minutes of traffic takes only the compute it needs.
//
// A request that finds the page pool full waits at the head of the queue until a running request
// finishes; one that cannot fit an empty pool is an error naming --gpu-pages.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "replay/workload.h"
#include "replay_policy.h"
#include "tierkv/status.h"

namespace tierkv::cli::replay {

// One request as a policy served it. Times are virtual seconds from the replay's start.
struct RequestRecord {
  std::int64_t id = 0, session = -1;
  std::int32_t turn = 0;
  double arrival_s = 0, first_token_s = 0, finish_s = 0;
  std::int32_t prompt_tokens = 0;
  PrefillOutcome prefill;
  double prefill_ms = 0;  // from its first prefill chunk's step to its first token (virtual)
  std::vector<double> token_s;  // when each output token was known (token_s[0] = first_token_s)
  std::vector<std::int32_t> output;

  double ttft_ms() const { return (first_token_s - arrival_s) * 1e3; }
  // Mean gap between output tokens; < 0 with a single token.
  double mean_itl_ms() const;
};

struct PolicyRun {
  PolicySpec spec;
  std::vector<RequestRecord> records;  // by position in the workload's request list
  TierUsage usage;
  std::string metrics;   // the cache's statistics at the end, Prometheus text format
  double wall_s = 0;     // real time of the replay (engine creation excluded)
  double virtual_s = 0;  // virtual time at the last token
  std::int64_t steps = 0;
};

struct LoopOptions {
  std::int32_t max_batch = 32;
  std::int64_t timeline_request = -1;  // request id whose prefill records a timeline
  // Called after every finished request with (done, total, virtual seconds).
  std::function<void(std::int64_t, std::int64_t, double)> progress;
};

// Replays `workload` on `engine` (fresh: nothing cached). Errors of the engine end the replay
// with the request's id in the message.
Result<PolicyRun> run_policy(PolicyEngine& engine, const tierkv::replay::Workload& workload,
                             const LoopOptions& options);

}  // namespace tierkv::cli::replay

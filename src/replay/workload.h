// Workloads for `tierkv replay`: the requests a continuous-batching loop replays under each cache
// policy, and a summary of how much of their prompts a cache could serve.
//
// Three sources:
//   chat_workload   multi-turn chat sessions over a shared system prompt (synthetic);
//   docqa_workload  questions over a few long shared documents (synthetic);
//   trace_workload  the Mooncake conversation trace (one JSON object per line; see
//                   /work/shared/traces/README.md), its prefix-block structure turned into tokens.
//
// Determinism: every generator is a pure function of its options, its seed and `vocab`: the same
// arguments give the same requests, bit for bit (on one platform's libm: lengths use std::log,
// std::exp, std::cos). The generators use their own random streams, never std::*_distribution
// (whose algorithms differ between standard libraries). Each synthetic session, document and
// question draws from a stream of its own, keyed by its index, so a workload of 10 sessions is the
// first 10 sessions of a workload of 20 with the same options otherwise.
//
// Tokens: every token id is in [0, vocab). Token runs are keyed (system prompt s, document d,
// trace block id b, ...) so that equal keys give equal tokens: that is how prompts share prefixes.
// The tokens carry no text; they only have to be equal where the prefixes are equal and different
// elsewhere (two distinct runs agree on a token with probability 1/vocab).
//
// Errors: InvalidArgument for options out of range (the message names the field) and for a
// malformed trace line (the message names the file and the line number); NotFound / IoError when
// the trace file cannot be opened or read. No exception escapes.
//
// Thread safety: the functions keep no state; they may be called from any thread at the same time.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::replay {

// One request of a workload, as the replay loop consumes it.
struct ReplayRequest {
  std::int64_t id = 0;
  std::int64_t session = -1;  // chat session, or -1
  std::int32_t turn = 0;      // 0-based turn within the session
  // Open-loop arrival in seconds from the workload's start (turn 0, docqa, trace). For turn > 0
  // of a chat session the arrival is closed-loop (think_s after the previous turn's last token);
  // arrival_s then holds the session's turn-0 arrival, a lower bound the loop must not use as
  // the arrival.
  double arrival_s = 0;
  double think_s = 0;            // chat turn > 0: arrives this long after the previous turn's last token
  bool extends_session = false;  // chat turn > 0: the prompt is the session's history (previous
                                 // prompt + the tokens the model generated) followed by `tokens`
  std::vector<std::int32_t> tokens;  // the whole prompt, or (extends_session) the new user message
  std::int32_t output_tokens = 1;    // tokens to generate (>= 1)
  std::string tenant;                // salt; "" for none
};

struct Workload {
  std::string name;  // "chat", "docqa", "trace"
  // Requests in the order the loop should admit them: by arrival_s for open-loop requests; a chat
  // session's turns are consecutive and in turn order, sessions in order of their turn-0 arrival.
  // Ids are 0, 1, 2, ... in this order.
  std::vector<ReplayRequest> requests;
  // The trace's block size after length scaling (0 for the synthetic workloads): summarize()'s
  // default block.
  std::int32_t block_tokens = 0;
  // What was left out or cut to fit, so a report can say so.
  std::int64_t skipped_requests = 0;  // trace: prompts over max_prompt_tokens (OverLength::kSkip)
  std::int64_t clamped_prompts = 0;   // trace: prompts cut to max_prompt_tokens (OverLength::kClamp)
  std::int64_t clamped_outputs = 0;   // trace: outputs cut to max_output_tokens
  std::int64_t dropped_turns = 0;     // chat: turns left out because they did not fit max_context_tokens
  // Trace only, from the hash ids themselves: blocks of the kept prompts, and those among them
  // whose id appeared earlier in the trace (the trace README's "36.6% of blocks repeat").
  std::int64_t trace_blocks = 0;
  std::int64_t trace_repeated_blocks = 0;
};

// A token count drawn as round(median * exp(sigma * z)), z standard normal (Box-Muller), then
// clamped to [min, max]. Before clamping the median is `median` and the mean
// median * exp(sigma^2 / 2); sigma = 0 gives `median` every time.
// REQUIRES (else InvalidArgument): median > 0, sigma >= 0, 1 <= min <= max.
struct LogNormalLength {
  double median = 128;
  double sigma = 0.8;
  std::int32_t min = 1;
  std::int32_t max = 1024;
};

// Multi-turn chat.
//
// Sessions arrive as a Poisson process: the gaps between turn-0 arrivals are exponential with
// mean 1 / session_rate_per_s (the first session arrives after one gap, not at 0). Each session
// picks one of `system_prompts` system prompts uniformly and runs T turns, T = 1 + a geometric
// count, P(T = k) = p (1 - p)^(k - 1) with p = 1 / mean_turns (so the mean is mean_turns), clamped
// to max_turns. Turn 0's prompt is the system prompt followed by the first user message; turn k > 0
// extends the session (extends_session): its prompt is the history (the previous turn's prompt
// and the output_tokens tokens the model generated for it) followed by a new user message, and it
// arrives think_s after the previous turn's last token, think_s exponential with mean
// mean_think_s. User message and answer lengths are LogNormalLength draws. Different sessions
// with the same system prompt share it as a prefix; a turn shares its whole history with the
// turn before it.
//
// A session ends early before a turn whose prompt (history included) plus answer would exceed
// max_context_tokens; the turns left out are counted in Workload::dropped_turns.
struct ChatOptions {
  std::uint64_t seed = 1;
  std::int32_t sessions = 64;                  // >= 1
  double session_rate_per_s = 0.5;             // >= 0; 0: every session arrives at t = 0
  double mean_turns = 4;                       // >= 1
  std::int32_t max_turns = 16;                 // >= 1
  std::int32_t system_prompt_tokens = 512;     // >= 0; 0: no system prompt
  std::int32_t system_prompts = 1;             // distinct system prompts, >= 1
  LogNormalLength user_tokens{128, 0.8, 8, 1024};   // mean before clamping ~177
  LogNormalLength answer_tokens{192, 0.7, 8, 1024};  // mean before clamping ~245
  double mean_think_s = 5.0;                   // >= 0
  // Largest prompt + answer of any turn; 0: no limit. The default is the tiny model's
  // max_positions. REQUIRES: 0 or >= system_prompt_tokens + user_tokens.max + answer_tokens.max,
  // so that turn 0 always fits.
  std::int32_t max_context_tokens = 4096;
  std::string tenant;                          // every request's salt
};

// Questions over long shared documents.
//
// `documents` documents with lengths drawn once each from document_tokens (or exactly
// document_lengths when that is set), then `questions` questions arriving as a Poisson process
// (exponential gaps, mean 1 / question_rate_per_s; 0: all at t = 0). A question picks document k
// (0-based) with probability proportional to 1 / (k + 1)^zipf_s (zipf_s = 0: uniformly); its
// prompt is the whole document followed by the question's tokens, so every question on a document
// shares the document as a prefix. Question and answer lengths are LogNormalLength draws.
// With the defaults every prompt + answer fits 4096 positions (3072 + 256 + 512 = 3840).
struct DocQaOptions {
  std::uint64_t seed = 1;
  std::int32_t documents = 8;                             // >= 1
  LogNormalLength document_tokens{2048, 0.3, 1024, 3072};
  std::vector<std::int32_t> document_lengths;             // when not empty: these (each >= 1)
  std::int32_t questions = 256;                           // >= 1
  double question_rate_per_s = 2.0;                       // >= 0
  double zipf_s = 1.0;                                    // >= 0
  LogNormalLength question_tokens{48, 0.5, 8, 256};
  LogNormalLength answer_tokens{64, 0.6, 4, 512};
  std::string tenant;
};

// What trace_workload does with a prompt longer than max_prompt_tokens.
enum class OverLength : std::uint8_t {
  kSkip = 0,   // leave the request out (Workload::skipped_requests)
  kClamp = 1,  // keep its first max_prompt_tokens tokens (Workload::clamped_prompts)
};

// The trace's block: each hash id names 512 prompt tokens (the last block of a prompt may be
// partial).
inline constexpr std::int32_t kTraceBlockTokens = 512;

// The Mooncake trace format.
//
// Each non-blank line is a JSON object with `timestamp` (ms from the trace's start, a number >= 0,
// never decreasing), `input_length` (>= 1), `output_length` (>= 0) and `hash_ids` (an array of
// ceil(input_length / 512) ids >= 0). Other members are ignored.
//
// Tokens: the block size becomes B = max(1, round(512 * length_scale)); block id b becomes the
// B tokens drawn from a generator keyed by (seed, b), so requests sharing a leading run of ids
// share those tokens. A prompt of n blocks whose last block held r tokens becomes
// (n - 1) * B + clamp(round(r * B / 512), 1, B) tokens: every block keeps its place and every
// full block stays full, so the prefix-sharing structure is the trace's at any scale. Outputs
// become max(1, round(output_length * length_scale)), then at most max_output_tokens.
// arrival_s = timestamp / 1000 * time_scale. session -1, turn 0, no tenant.
//
// Reading stops after max_requests requests were kept, or at the first line whose timestamp is
// max_minutes or later (in trace time, before time_scale); lines after that are not read or
// checked. Requests over max_prompt_tokens (after scaling) are skipped or clamped (over_length)
// and counted; skipped ones do not count towards max_requests.
struct TraceOptions {
  std::string path;                  // the .jsonl file (trace_workload); a name for messages (parse_trace)
  std::uint64_t seed = 1;            // keys the token generator, with each block id
  double length_scale = 1.0;         // in (0, 1]: shrinks the block size, input and output lengths
  double time_scale = 1.0;           // > 0: multiplies arrival times (0.5: twice the load)
  std::int64_t max_requests = 0;     // >= 0; 0: no limit
  double max_minutes = 0;            // >= 0; 0: no limit
  std::int32_t max_prompt_tokens = 0;  // >= 0; 0: no limit
  OverLength over_length = OverLength::kSkip;
  std::int32_t max_output_tokens = 0;  // >= 0; 0: no limit
};

// The generators. vocab: REQUIRES 1 <= vocab <= kMaxVocab (include/tierkv/model_spec.h).
Result<Workload> chat_workload(const ChatOptions& options, std::int32_t vocab);
Result<Workload> docqa_workload(const DocQaOptions& options, std::int32_t vocab);
// Reads options.path. NotFound when it does not exist, IoError when it cannot be read.
Result<Workload> trace_workload(const TraceOptions& options, std::int32_t vocab);
// The same from text already in memory (options.path only names it in messages).
Result<Workload> parse_trace(std::string_view text, const TraceOptions& options,
                             std::int32_t vocab);

// How much a workload's prompts share.
//
// Every request's whole prompt is considered: for extends_session turns, the session's history
// (the previous turn's whole prompt, then output_tokens stand-in tokens for what the model will
// generate, distinct per session and turn) followed by the new message. A prompt's shared prefix
// is the longest prefix it has in common with any earlier prompt of the list (order as in
// Workload::requests), in tokens. Blocks are the prompt's consecutive runs of block_tokens tokens,
// the last one possibly partial; a block is shared when it lies wholly inside the shared prefix.
struct WorkloadSummary {
  std::int64_t requests = 0;
  std::int64_t sessions = 0;         // distinct session ids >= 0
  std::int64_t prompt_tokens = 0;    // whole prompts, summed
  std::int64_t output_tokens = 0;
  std::int32_t prompt_p50 = 0, prompt_p90 = 0, prompt_p99 = 0, prompt_max = 0;  // nearest rank
  double last_arrival_s = 0;         // the latest arrival_s
  std::int32_t block_tokens = 0;
  std::int64_t blocks = 0;
  std::int64_t shared_blocks = 0;
  std::int64_t shared_tokens = 0;    // shared prefixes, summed

  double shared_block_fraction() const {
    return blocks ? static_cast<double>(shared_blocks) / static_cast<double>(blocks) : 0.0;
  }
  double shared_token_fraction() const {
    return prompt_tokens ? static_cast<double>(shared_tokens) / static_cast<double>(prompt_tokens)
                         : 0.0;
  }
};

// block_tokens: 0 takes workload.block_tokens, or 256 (the cache's default chunk) where that is 0.
// InvalidArgument for block_tokens < 0, or an extends_session turn without the same session's
// previous turn earlier in the list. Time O(total prompt tokens x log(requests)) in the worst case;
// memory: the extended prompts of chat sessions are materialized.
Result<WorkloadSummary> summarize(const Workload& workload, std::int32_t block_tokens = 0);

// A few lines for a terminal: counts, prompt percentiles, shared fractions, and the workload's
// skipped / clamped / dropped counts and trace block figures when they are not zero.
std::string format_summary(const Workload& workload, const WorkloadSummary& summary);

}  // namespace tierkv::replay

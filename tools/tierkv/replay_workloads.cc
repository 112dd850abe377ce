#include "replay_workloads.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

namespace tierkv::cli::replay {
namespace {

namespace rp = tierkv::replay;

rp::LogNormalLength lengths(std::int32_t median, double sigma, std::int32_t max) {
  rp::LogNormalLength l;
  l.median = median;
  l.sigma = sigma;
  l.max = std::max(max, median);
  l.min = std::min(8, median);
  return l;
}

Result<rp::Workload> chat(const ReplayOptions& o, const ModelSpec& m) {
  rp::ChatOptions c;
  c.seed = o.seed;
  c.sessions = o.chat.sessions;
  c.session_rate_per_s = o.chat.session_rate;
  c.mean_turns = o.chat.mean_turns;
  c.max_turns = o.chat.max_turns;
  c.system_prompt_tokens = o.chat.system_tokens;
  c.user_tokens = lengths(o.chat.user_tokens, 0.8, 4 * o.chat.user_tokens);
  c.answer_tokens = lengths(o.chat.answer_tokens, 0.7, 4 * o.chat.answer_tokens);
  c.mean_think_s = o.chat.think_s;
  c.max_context_tokens = std::min(o.max_prompt, m.max_positions);
  const std::int64_t turn0 =
      std::int64_t(c.system_prompt_tokens) + c.user_tokens.max + c.answer_tokens.max;
  if (turn0 > c.max_context_tokens) {
    return invalid_argument(
        "--system-tokens + 4 x --user-tokens + 4 x --answer-tokens (" + std::to_string(turn0) +
        ") must fit --max-prompt / the model's positions (" +
        std::to_string(c.max_context_tokens) + "): make the messages shorter");
  }
  return rp::chat_workload(c, m.vocab);
}

Result<rp::Workload> docqa(const ReplayOptions& o, const ModelSpec& m) {
  rp::DocQaOptions d;
  d.seed = o.seed;
  d.documents = o.docqa.documents;
  d.questions = o.docqa.questions;
  d.question_rate_per_s = o.docqa.question_rate;
  d.zipf_s = o.docqa.zipf;
  d.question_tokens = lengths(32, 0.5, 128);
  d.answer_tokens = lengths(o.docqa.answer_tokens, 0.6, 4 * o.docqa.answer_tokens);
  const std::int32_t room = std::min(o.max_prompt, m.max_positions) - d.question_tokens.max -
                            d.answer_tokens.max;
  const std::int32_t median = o.docqa.document_tokens;
  if (room < median) {
    return invalid_argument("--document-tokens " + std::to_string(median) +
                            " leaves no room for a question and its answer within " +
                            std::to_string(std::min(o.max_prompt, m.max_positions)) +
                            " positions (--max-prompt / the model's): make documents shorter");
  }
  d.document_tokens = rp::LogNormalLength{double(median), 0.3, std::max(1, median / 2),
                                          std::min(room, median * 3 / 2)};
  return rp::docqa_workload(d, m.vocab);
}

Result<rp::Workload> trace(const ReplayOptions& o, const ModelSpec& m) {
  rp::TraceOptions t;
  t.path = o.trace.path;
  t.seed = o.seed;
  t.length_scale = o.trace.length_scale;
  t.time_scale = o.time_scale;
  t.max_requests = o.requests > 0 ? o.requests : (o.small ? 32 : 0);
  t.max_minutes = o.minutes;
  t.max_output_tokens = o.trace.max_output;
  const std::int32_t positions = std::min(o.max_prompt, m.max_positions);
  t.max_prompt_tokens = positions - t.max_output_tokens;
  if (t.max_prompt_tokens < 1) {
    return invalid_argument("--max-output " + std::to_string(t.max_output_tokens) +
                            " leaves no room for a prompt within " + std::to_string(positions) +
                            " positions");
  }
  t.over_length = rp::OverLength::kSkip;
  return rp::trace_workload(t, m.vocab);
}

// --requests, --minutes and --time-scale on a synthetic workload. Requests are in arrival order
// of their sessions, so both limits keep a prefix of the list (whole sessions for --minutes).
void limit(rp::Workload& w, const ReplayOptions& o) {
  std::size_t keep = w.requests.size();
  if (o.requests > 0) keep = std::min<std::size_t>(keep, std::size_t(o.requests));
  if (o.minutes > 0) {
    for (std::size_t i = 0; i < keep; ++i) {
      if (w.requests[i].arrival_s >= o.minutes * 60) {
        keep = i;
        break;
      }
    }
  }
  w.requests.resize(keep);
  w = compress_arrivals(w, 1.0 / o.time_scale);
}

// FNV-1a style chained hash of a prompt, read at every page boundary.
std::vector<std::uint64_t> page_hashes(const std::vector<std::int32_t>& tokens, std::int32_t page) {
  std::vector<std::uint64_t> out;
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    h = (h ^ std::uint64_t(std::uint32_t(tokens[i]))) * 1099511628211ull;
    h ^= h >> 29;
    if ((i + 1) % std::size_t(page) == 0) out.push_back(h);
  }
  return out;
}

// Whole prompts (chat turns with their history and stand-ins for generated tokens) and the
// page-aligned prefix each shares with an earlier one.
void shared_prefixes(PreparedWorkload& p, std::int32_t page) {
  std::unordered_set<std::uint64_t> seen;
  std::unordered_map<std::int64_t, std::vector<std::int32_t>> history;  // session -> last prompt
  std::int32_t stand_in = -1;  // negative: never a real token
  for (const rp::ReplayRequest& r : p.workload.requests) {
    std::vector<std::int32_t> prompt;
    if (r.extends_session) {
      prompt = history[r.session];
      for (std::int32_t k = 0; k < r.output_tokens; ++k) prompt.push_back(stand_in--);
    }
    prompt.insert(prompt.end(), r.tokens.begin(), r.tokens.end());
    const auto hashes = page_hashes(prompt, page);
    std::int32_t shared = 0;
    for (std::size_t k = 0; k < hashes.size(); ++k) {
      if (seen.count(hashes[k])) shared = std::int32_t(k + 1) * page;
    }
    seen.insert(hashes.begin(), hashes.end());
    p.shared_prefix.push_back(shared);
    p.longest_prompt = std::max(p.longest_prompt, std::int32_t(prompt.size()));
    p.longest_output = std::max(p.longest_output, r.output_tokens);
    p.longest_request = std::max(p.longest_request, std::int32_t(prompt.size()) + r.output_tokens);
    if (r.session >= 0) history[r.session] = std::move(prompt);
  }
}

}  // namespace

Result<PreparedWorkload> prepare_workload(const std::string& name, const ReplayOptions& o,
                                          const ModelSpec& model) {
  PreparedWorkload p;
  if (name == "chat") {
    TIERKV_ASSIGN_OR_RETURN(p.workload, chat(o, model));
    limit(p.workload, o);
  } else if (name == "docqa") {
    TIERKV_ASSIGN_OR_RETURN(p.workload, docqa(o, model));
    limit(p.workload, o);
  } else if (name == "trace") {
    auto t = trace(o, model);
    if (!t.ok()) return t.status().with_context("--trace");
    p.workload = std::move(t).value();
  } else {
    return invalid_argument("--workload: unknown workload '" + name + "'");
  }
  if (p.workload.requests.empty()) {
    return invalid_argument("workload " + name +
                            " has no requests within the limits (--requests, --minutes, "
                            "--max-prompt)");
  }
  TIERKV_ASSIGN_OR_RETURN(p.summary, tierkv::replay::summarize(p.workload));
  shared_prefixes(p, model.page_tokens);
  return p;
}

std::int64_t default_timeline_request(const PreparedWorkload& w) {
  const auto it = std::max_element(w.shared_prefix.begin(), w.shared_prefix.end());
  if (it == w.shared_prefix.end()) return 0;
  return w.workload.requests[std::size_t(it - w.shared_prefix.begin())].id;
}

rp::Workload compress_arrivals(const rp::Workload& w, double factor) {
  rp::Workload out = w;
  for (rp::ReplayRequest& r : out.requests) {
    r.arrival_s /= factor;
    r.think_s /= factor;
  }
  return out;
}

}  // namespace tierkv::cli::replay

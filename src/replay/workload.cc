#include "replay/workload.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <numbers>
#include <set>
#include <span>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/counter_rng.h"
#include "tierkv/model_spec.h"

namespace tierkv::replay {
namespace {

constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ull;

// What a random stream is for. Each value keys a family of independent streams, so adding draws to
// one never shifts another.
enum class Tag : std::uint64_t {
  kArrivals = 1,
  kSession,
  kSystemPrompt,
  kUserMessage,
  kDocumentLength,
  kDocument,
  kQuestion,
  kQuestionTokens,
  kTraceBlock,
  kStandIn,
};

// The key of stream (seed, tag, a, b): a chain of mixes, so every argument changes every bit.
std::uint64_t stream_key(std::uint64_t seed, Tag tag, std::uint64_t a = 0, std::uint64_t b = 0) {
  std::uint64_t k = mix64(seed + kGolden);
  k = mix64(k ^ mix64(static_cast<std::uint64_t>(tag) * kGolden));
  k = mix64(k ^ mix64(a + 1));
  return mix64(k ^ mix64(b + 2));
}

// splitmix64 over a key. Draws are pure functions of the key and the draw's index.
class Rng {
 public:
  explicit Rng(std::uint64_t key) : state_(key) {}

  std::uint64_t next() {
    state_ += kGolden;
    return mix64(state_);
  }
  // Uniform in [0, 1), 53 bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform in (0, 1], for logarithms.
  double open_uniform() { return static_cast<double>((next() >> 11) + 1) * 0x1.0p-53; }
  // Exponential with the given mean (0 when mean is 0).
  double exponential(double mean) { return mean > 0 ? -mean * std::log(open_uniform()) : 0.0; }
  // Standard normal, Box-Muller (one value per two draws, nothing cached between calls).
  double normal() {
    const double r = std::sqrt(-2.0 * std::log(open_uniform()));
    return r * std::cos(2.0 * std::numbers::pi * uniform());
  }
  // Uniform integer in [0, n), n >= 1.
  std::int32_t below(std::int32_t n) {
    return static_cast<std::int32_t>(((next() >> 32) * static_cast<std::uint64_t>(n)) >> 32);
  }

 private:
  std::uint64_t state_;
};

// Token j of the run keyed by `key`, in [0, vocab).
std::int32_t run_token(std::uint64_t key, std::int64_t j, std::int32_t vocab) {
  const std::uint64_t x = mix64(key + static_cast<std::uint64_t>(j + 1) * kGolden);
  return static_cast<std::int32_t>(((x >> 32) * static_cast<std::uint64_t>(vocab)) >> 32);
}

void append_run(std::vector<std::int32_t>& out, std::uint64_t key, std::int32_t count,
                std::int32_t vocab) {
  out.reserve(out.size() + static_cast<std::size_t>(count));
  for (std::int32_t j = 0; j < count; ++j) out.push_back(run_token(key, j, vocab));
}

std::int32_t draw_length(Rng& rng, const LogNormalLength& d) {
  const double v = std::round(d.median * std::exp(d.sigma * rng.normal()));
  if (!(v >= d.min)) return d.min;  // also catches NaN
  if (v >= d.max) return d.max;
  return static_cast<std::int32_t>(v);
}

// 1 + a geometric count with mean `mean`, at most `max`.
std::int32_t draw_turns(Rng& rng, double mean, std::int32_t max) {
  const double u = rng.open_uniform();
  if (mean <= 1.0) return 1;
  const double extra = std::floor(std::log(u) / std::log1p(-1.0 / mean));
  return extra >= max - 1 ? max : 1 + static_cast<std::int32_t>(extra);
}

Status check(bool ok, std::string_view what) {
  return ok ? Status() : invalid_argument(std::string(what));
}

Status check_length(const LogNormalLength& d, std::string_view field) {
  const std::string f(field);
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(d.median) && d.median > 0,
                               f + ".median must be finite and > 0"));
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(d.sigma) && d.sigma >= 0,
                               f + ".sigma must be finite and >= 0"));
  return check(d.min >= 1 && d.min <= d.max,
               f + ": need 1 <= min <= max, got min " + std::to_string(d.min) + ", max " +
                   std::to_string(d.max));
}

Status check_vocab(std::int32_t vocab) {
  return check(vocab >= 1 && vocab <= kMaxVocab,
               "vocab must be in [1, " + std::to_string(kMaxVocab) + "], got " +
                   std::to_string(vocab));
}

Status check_rate(double rate, std::string_view field) {
  return check(std::isfinite(rate) && rate >= 0,
               std::string(field) + " must be finite and >= 0");
}

// Runs `body`, turning an exception that would otherwise escape (memory, mostly) into a Status.
template <typename T>
Result<T> guarded(std::string_view what, const std::function<Result<T>()>& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return resource_exhausted(std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return internal_error(std::string(what) + ": " + e.what());
  }
}

void number_requests(Workload& w) {
  for (std::size_t i = 0; i < w.requests.size(); ++i)
    w.requests[i].id = static_cast<std::int64_t>(i);
}

// ---- chat ----------------------------------------------------------------------------------

Status check_chat(const ChatOptions& o) {
  TIERKV_RETURN_IF_ERROR(check(o.sessions >= 1, "ChatOptions.sessions must be >= 1"));
  TIERKV_RETURN_IF_ERROR(check_rate(o.session_rate_per_s, "ChatOptions.session_rate_per_s"));
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(o.mean_turns) && o.mean_turns >= 1,
                               "ChatOptions.mean_turns must be finite and >= 1"));
  TIERKV_RETURN_IF_ERROR(check(o.max_turns >= 1, "ChatOptions.max_turns must be >= 1"));
  TIERKV_RETURN_IF_ERROR(
      check(o.system_prompt_tokens >= 0, "ChatOptions.system_prompt_tokens must be >= 0"));
  TIERKV_RETURN_IF_ERROR(check(o.system_prompts >= 1, "ChatOptions.system_prompts must be >= 1"));
  TIERKV_RETURN_IF_ERROR(check_length(o.user_tokens, "ChatOptions.user_tokens"));
  TIERKV_RETURN_IF_ERROR(check_length(o.answer_tokens, "ChatOptions.answer_tokens"));
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(o.mean_think_s) && o.mean_think_s >= 0,
                               "ChatOptions.mean_think_s must be finite and >= 0"));
  const std::int64_t first_turn = std::int64_t{o.system_prompt_tokens} + o.user_tokens.max +
                                  o.answer_tokens.max;
  return check(o.max_context_tokens == 0 || o.max_context_tokens >= first_turn,
               "ChatOptions.max_context_tokens must be 0 or at least system_prompt_tokens + "
               "user_tokens.max + answer_tokens.max = " +
                   std::to_string(first_turn) + ", got " +
                   std::to_string(o.max_context_tokens));
}

Result<Workload> make_chat(const ChatOptions& o, std::int32_t vocab) {
  Workload w;
  w.name = "chat";
  std::vector<std::vector<std::int32_t>> systems(static_cast<std::size_t>(o.system_prompts));
  for (std::size_t s = 0; s < systems.size(); ++s)
    append_run(systems[s], stream_key(o.seed, Tag::kSystemPrompt, s), o.system_prompt_tokens,
               vocab);

  Rng arrivals(stream_key(o.seed, Tag::kArrivals));
  double t = 0;
  for (std::int32_t s = 0; s < o.sessions; ++s) {
    if (o.session_rate_per_s > 0) t += arrivals.exponential(1.0 / o.session_rate_per_s);
    Rng rng(stream_key(o.seed, Tag::kSession, static_cast<std::uint64_t>(s)));
    const std::int32_t system = rng.below(o.system_prompts);
    const std::int32_t turns = draw_turns(rng, o.mean_turns, o.max_turns);
    std::int64_t history = 0;  // the previous turn's whole prompt plus its answer
    for (std::int32_t k = 0; k < turns; ++k) {
      const std::int32_t user = draw_length(rng, o.user_tokens);
      const std::int32_t answer = draw_length(rng, o.answer_tokens);
      const double think = rng.exponential(o.mean_think_s);
      const std::int64_t prompt = (k == 0 ? o.system_prompt_tokens : history) + user;
      if (o.max_context_tokens > 0 && prompt + answer > o.max_context_tokens) {
        w.dropped_turns += turns - k;
        break;
      }
      ReplayRequest r;
      r.session = s;
      r.turn = k;
      r.arrival_s = t;
      r.output_tokens = answer;
      r.tenant = o.tenant;
      if (k == 0) {
        r.tokens = systems[static_cast<std::size_t>(system)];
      } else {
        r.think_s = think;
        r.extends_session = true;
      }
      append_run(r.tokens, stream_key(o.seed, Tag::kUserMessage, static_cast<std::uint64_t>(s),
                                      static_cast<std::uint64_t>(k)),
                 user, vocab);
      w.requests.push_back(std::move(r));
      history = prompt + answer;
    }
  }
  number_requests(w);
  return w;
}

// ---- document QA ---------------------------------------------------------------------------

Status check_docqa(const DocQaOptions& o) {
  if (o.document_lengths.empty()) {
    TIERKV_RETURN_IF_ERROR(check(o.documents >= 1, "DocQaOptions.documents must be >= 1"));
    TIERKV_RETURN_IF_ERROR(check_length(o.document_tokens, "DocQaOptions.document_tokens"));
  }
  for (std::int32_t len : o.document_lengths)
    TIERKV_RETURN_IF_ERROR(check(len >= 1, "DocQaOptions.document_lengths must all be >= 1"));
  TIERKV_RETURN_IF_ERROR(check(o.questions >= 1, "DocQaOptions.questions must be >= 1"));
  TIERKV_RETURN_IF_ERROR(check_rate(o.question_rate_per_s, "DocQaOptions.question_rate_per_s"));
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(o.zipf_s) && o.zipf_s >= 0,
                               "DocQaOptions.zipf_s must be finite and >= 0"));
  TIERKV_RETURN_IF_ERROR(check_length(o.question_tokens, "DocQaOptions.question_tokens"));
  return check_length(o.answer_tokens, "DocQaOptions.answer_tokens");
}

Result<Workload> make_docqa(const DocQaOptions& o, std::int32_t vocab) {
  Workload w;
  w.name = "docqa";
  std::vector<std::int32_t> lengths = o.document_lengths;
  if (lengths.empty()) {
    for (std::int32_t d = 0; d < o.documents; ++d) {
      Rng rng(stream_key(o.seed, Tag::kDocumentLength, static_cast<std::uint64_t>(d)));
      lengths.push_back(draw_length(rng, o.document_tokens));
    }
  }
  std::vector<std::vector<std::int32_t>> docs(lengths.size());
  std::vector<double> cdf(lengths.size());
  double total = 0;
  for (std::size_t d = 0; d < docs.size(); ++d) {
    append_run(docs[d], stream_key(o.seed, Tag::kDocument, d), lengths[d], vocab);
    total += std::pow(static_cast<double>(d + 1), -o.zipf_s);
    cdf[d] = total;
  }

  Rng arrivals(stream_key(o.seed, Tag::kArrivals));
  double t = 0;
  for (std::int32_t q = 0; q < o.questions; ++q) {
    if (o.question_rate_per_s > 0) t += arrivals.exponential(1.0 / o.question_rate_per_s);
    Rng rng(stream_key(o.seed, Tag::kQuestion, static_cast<std::uint64_t>(q)));
    const double u = rng.uniform() * total;
    const auto doc = std::min<std::size_t>(
        static_cast<std::size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin()),
        docs.size() - 1);
    const std::int32_t question = draw_length(rng, o.question_tokens);
    ReplayRequest r;
    r.arrival_s = t;
    r.output_tokens = draw_length(rng, o.answer_tokens);
    r.tenant = o.tenant;
    r.tokens = docs[doc];
    append_run(r.tokens, stream_key(o.seed, Tag::kQuestionTokens, static_cast<std::uint64_t>(q)),
               question, vocab);
    w.requests.push_back(std::move(r));
  }
  number_requests(w);
  return w;
}

// ---- the Mooncake trace --------------------------------------------------------------------

struct TraceLine {
  double timestamp_ms = 0;
  std::int64_t input_length = 0;
  std::int64_t output_length = 0;
  std::vector<std::int64_t> hash_ids;
};

Status check_trace_options(const TraceOptions& o) {
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(o.length_scale) && o.length_scale > 0 &&
                                   o.length_scale <= 1,
                               "TraceOptions.length_scale must be in (0, 1]"));
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(o.time_scale) && o.time_scale > 0,
                               "TraceOptions.time_scale must be finite and > 0"));
  TIERKV_RETURN_IF_ERROR(check(o.max_requests >= 0, "TraceOptions.max_requests must be >= 0"));
  TIERKV_RETURN_IF_ERROR(check(std::isfinite(o.max_minutes) && o.max_minutes >= 0,
                               "TraceOptions.max_minutes must be finite and >= 0"));
  TIERKV_RETURN_IF_ERROR(
      check(o.max_prompt_tokens >= 0, "TraceOptions.max_prompt_tokens must be >= 0"));
  return check(o.max_output_tokens >= 0, "TraceOptions.max_output_tokens must be >= 0");
}

// A non-negative integer member `name` of `j`, at most `max`.
Status get_count(const nlohmann::json& j, const char* name, std::int64_t min, std::int64_t max,
                 std::int64_t* out) {
  const auto it = j.find(name);
  if (it == j.end()) return invalid_argument(std::string("missing \"") + name + "\"");
  if (!it->is_number_integer())
    return invalid_argument(std::string("\"") + name + "\" must be an integer, got " +
                            it->dump());
  const bool big = it->is_number_unsigned() &&
                   it->get<std::uint64_t>() >
                       static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  const std::int64_t v = big ? max + 1 : it->get<std::int64_t>();
  if (v < min || v > max)
    return invalid_argument(std::string("\"") + name + "\" must be in [" + std::to_string(min) +
                            ", " + std::to_string(max) + "], got " + it->dump());
  *out = v;
  return Status();
}

Status parse_fields(const nlohmann::json& j, TraceLine* t) {
  if (!j.is_object()) return invalid_argument("not a JSON object");
  const auto ts = j.find("timestamp");
  if (ts == j.end()) return invalid_argument("missing \"timestamp\"");
  if (!ts->is_number() || !std::isfinite(ts->get<double>()) || ts->get<double>() < 0)
    return invalid_argument("\"timestamp\" must be a number >= 0 (ms), got " + ts->dump());
  t->timestamp_ms = ts->get<double>();
  TIERKV_RETURN_IF_ERROR(get_count(j, "input_length", 1, kMaxPositions, &t->input_length));
  TIERKV_RETURN_IF_ERROR(get_count(j, "output_length", 0, kMaxPositions, &t->output_length));
  const auto ids = j.find("hash_ids");
  if (ids == j.end()) return invalid_argument("missing \"hash_ids\"");
  if (!ids->is_array()) return invalid_argument("\"hash_ids\" must be an array");
  const std::int64_t blocks = (t->input_length + kTraceBlockTokens - 1) / kTraceBlockTokens;
  if (static_cast<std::int64_t>(ids->size()) != blocks)
    return invalid_argument("input_length " + std::to_string(t->input_length) + " needs " +
                            std::to_string(blocks) + " blocks of " +
                            std::to_string(kTraceBlockTokens) + " tokens, hash_ids has " +
                            std::to_string(ids->size()));
  t->hash_ids.clear();
  for (const auto& id : *ids) {
    if (!id.is_number_integer() || (!id.is_number_unsigned() && id.get<std::int64_t>() < 0) ||
        (id.is_number_unsigned() &&
         id.get<std::uint64_t>() >
             static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())))
      return invalid_argument("hash_ids must hold integers in [0, 2^63), got " + id.dump());
    t->hash_ids.push_back(id.get<std::int64_t>());
  }
  return Status();
}

Status parse_line(std::string_view line, TraceLine* t) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(std::string("not valid JSON: ") + e.what());
  }
  try {
    return parse_fields(j, t);
  } catch (const nlohmann::json::exception& e) {  // not expected: every get<> is type-checked
    return invalid_argument(std::string("unexpected member type: ") + e.what());
  }
}

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// Turns one trace line into a request (scaled, clamped); false when it is skipped.
bool add_trace_request(const TraceLine& t, const TraceOptions& o, std::int32_t block,
                       std::int32_t vocab, std::unordered_set<std::int64_t>& seen, Workload& w) {
  const auto n = static_cast<std::int64_t>(t.hash_ids.size());
  const std::int64_t last = t.input_length - (n - 1) * kTraceBlockTokens;  // in [1, 512]
  const auto scaled_last = std::clamp<std::int64_t>(
      std::llround(static_cast<double>(last) * block / kTraceBlockTokens), 1, block);
  std::int64_t length = (n - 1) * block + scaled_last;
  if (o.max_prompt_tokens > 0 && length > o.max_prompt_tokens) {
    if (o.over_length == OverLength::kSkip) {
      ++w.skipped_requests;
      return false;
    }
    ++w.clamped_prompts;
    length = o.max_prompt_tokens;
  }
  ReplayRequest r;
  r.arrival_s = t.timestamp_ms / 1000.0 * o.time_scale;
  std::int64_t out = std::max<std::int64_t>(
      1, std::llround(static_cast<double>(t.output_length) * o.length_scale));
  if (o.max_output_tokens > 0 && out > o.max_output_tokens) {
    ++w.clamped_outputs;
    out = o.max_output_tokens;
  }
  r.output_tokens = static_cast<std::int32_t>(out);
  r.tokens.reserve(static_cast<std::size_t>(length));
  for (std::int64_t b = 0; b * block < length; ++b) {
    const std::int64_t id = t.hash_ids[static_cast<std::size_t>(b)];
    const auto count = static_cast<std::int32_t>(std::min<std::int64_t>(block, length - b * block));
    append_run(r.tokens, stream_key(o.seed, Tag::kTraceBlock, static_cast<std::uint64_t>(id)),
               count, vocab);
    ++w.trace_blocks;
    if (!seen.insert(id).second) ++w.trace_repeated_blocks;
  }
  w.requests.push_back(std::move(r));
  return true;
}

Result<Workload> make_trace(std::string_view text, const TraceOptions& o, std::int32_t vocab) {
  Workload w;
  w.name = "trace";
  const std::int32_t block = std::max<std::int32_t>(
      1, static_cast<std::int32_t>(std::lround(kTraceBlockTokens * o.length_scale)));
  w.block_tokens = block;
  const std::string source = o.path.empty() ? std::string("trace") : "trace " + o.path;
  std::unordered_set<std::int64_t> seen;
  double previous_ms = 0;
  std::int64_t line_no = 0;
  std::size_t pos = 0;
  TraceLine t;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = trim(text.substr(pos, end - pos));
    pos = end + 1;
    ++line_no;
    if (line.empty()) continue;
    const Status s = parse_line(line, &t);
    if (!s.ok()) return s.with_context(source + " line " + std::to_string(line_no));
    if (t.timestamp_ms < previous_ms)
      return invalid_argument(source + " line " + std::to_string(line_no) + ": timestamp " +
                              std::to_string(t.timestamp_ms) + " ms is before the previous line's " +
                              std::to_string(previous_ms) + " ms; the trace must be in time order");
    previous_ms = t.timestamp_ms;
    if (o.max_minutes > 0 && t.timestamp_ms >= o.max_minutes * 60000.0) break;
    if (add_trace_request(t, o, block, vocab, seen, w) && o.max_requests > 0 &&
        static_cast<std::int64_t>(w.requests.size()) >= o.max_requests)
      break;
  }
  number_requests(w);
  return w;
}

Result<std::string> read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return not_found("trace file " + path + " does not exist");
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error("cannot open trace file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return io_error("error reading trace file " + path);
  return std::move(text).str();
}

// ---- summary -------------------------------------------------------------------------------

using Tokens = std::span<const std::int32_t>;

struct Lexicographic {
  bool operator()(Tokens a, Tokens b) const {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  }
};

std::int64_t common_prefix(Tokens a, Tokens b) {
  const auto n = std::min(a.size(), b.size());
  std::size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<std::int64_t>(i);
}

// Stand-in for the tokens a session's turn will generate: negative, so never equal to a real token,
// and keyed by (session, turn), so no two turns share them.
void append_stand_in(std::vector<std::int32_t>& out, std::int64_t session, std::int32_t turn,
                     std::int32_t count) {
  const std::uint64_t key = stream_key(0, Tag::kStandIn, static_cast<std::uint64_t>(session),
                                       static_cast<std::uint64_t>(turn));
  for (std::int32_t j = 0; j < count; ++j)
    out.push_back(-1 - static_cast<std::int32_t>(mix64(key + static_cast<std::uint64_t>(j)) >> 34));
}

std::int32_t nearest_rank(const std::vector<std::int32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

Result<WorkloadSummary> make_summary(const Workload& w, std::int32_t block_tokens) {
  WorkloadSummary s;
  s.block_tokens = block_tokens;
  const auto& reqs = w.requests;
  s.requests = static_cast<std::int64_t>(reqs.size());

  // Whole prompts: views of the requests' tokens, or histories built here (a deque keeps them put).
  std::vector<Tokens> prompts(reqs.size());
  std::deque<std::vector<std::int32_t>> built;
  std::unordered_map<std::int64_t, std::size_t> latest;  // session -> its latest request
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const ReplayRequest& r = reqs[i];
    if (r.extends_session) {
      const auto it = latest.find(r.session);
      if (r.session < 0 || it == latest.end())
        return invalid_argument("request " + std::to_string(r.id) + " (session " +
                                std::to_string(r.session) + ", turn " + std::to_string(r.turn) +
                                ") extends its session, but no earlier turn of it is listed");
      const ReplayRequest& previous = reqs[it->second];
      std::vector<std::int32_t> whole(prompts[it->second].begin(), prompts[it->second].end());
      append_stand_in(whole, previous.session, previous.turn, previous.output_tokens);
      whole.insert(whole.end(), r.tokens.begin(), r.tokens.end());
      built.push_back(std::move(whole));
      prompts[i] = built.back();
    } else {
      prompts[i] = r.tokens;
    }
    if (r.session >= 0) latest[r.session] = i;
  }
  s.sessions = static_cast<std::int64_t>(latest.size());

  std::set<Tokens, Lexicographic> earlier;
  std::vector<std::int32_t> lengths;
  lengths.reserve(reqs.size());
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const Tokens p = prompts[i];
    std::int64_t shared = 0;
    const auto next = earlier.lower_bound(p);  // the longest common prefix is with a neighbour
    if (next != earlier.end()) shared = common_prefix(p, *next);
    if (next != earlier.begin()) shared = std::max(shared, common_prefix(p, *std::prev(next)));
    earlier.insert(p);
    const auto len = static_cast<std::int64_t>(p.size());
    s.prompt_tokens += len;
    s.output_tokens += reqs[i].output_tokens;
    s.shared_tokens += shared;
    s.blocks += (len + block_tokens - 1) / block_tokens;
    s.shared_blocks += shared == len ? (len + block_tokens - 1) / block_tokens : shared / block_tokens;
    s.last_arrival_s = std::max(s.last_arrival_s, reqs[i].arrival_s);
    lengths.push_back(static_cast<std::int32_t>(std::min<std::int64_t>(
        len, std::numeric_limits<std::int32_t>::max())));
  }
  std::sort(lengths.begin(), lengths.end());
  s.prompt_p50 = nearest_rank(lengths, 0.50);
  s.prompt_p90 = nearest_rank(lengths, 0.90);
  s.prompt_p99 = nearest_rank(lengths, 0.99);
  s.prompt_max = lengths.empty() ? 0 : lengths.back();
  return s;
}

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * fraction);
  return buf;
}

}  // namespace

Result<Workload> chat_workload(const ChatOptions& options, std::int32_t vocab) {
  TIERKV_RETURN_IF_ERROR(check_vocab(vocab));
  TIERKV_RETURN_IF_ERROR(check_chat(options));
  return guarded<Workload>("chat_workload", [&] { return make_chat(options, vocab); });
}

Result<Workload> docqa_workload(const DocQaOptions& options, std::int32_t vocab) {
  TIERKV_RETURN_IF_ERROR(check_vocab(vocab));
  TIERKV_RETURN_IF_ERROR(check_docqa(options));
  return guarded<Workload>("docqa_workload", [&] { return make_docqa(options, vocab); });
}

Result<Workload> parse_trace(std::string_view text, const TraceOptions& options,
                             std::int32_t vocab) {
  TIERKV_RETURN_IF_ERROR(check_vocab(vocab));
  TIERKV_RETURN_IF_ERROR(check_trace_options(options));
  return guarded<Workload>("parse_trace", [&] { return make_trace(text, options, vocab); });
}

Result<Workload> trace_workload(const TraceOptions& options, std::int32_t vocab) {
  TIERKV_RETURN_IF_ERROR(check_vocab(vocab));
  TIERKV_RETURN_IF_ERROR(check_trace_options(options));
  return guarded<Workload>("trace_workload", [&]() -> Result<Workload> {
    TIERKV_ASSIGN_OR_RETURN(const std::string text, read_file(options.path));
    return make_trace(text, options, vocab);
  });
}

Result<WorkloadSummary> summarize(const Workload& workload, std::int32_t block_tokens) {
  if (block_tokens < 0)
    return invalid_argument("summarize: block_tokens must be >= 0, got " +
                            std::to_string(block_tokens));
  if (block_tokens == 0) block_tokens = workload.block_tokens > 0 ? workload.block_tokens : 256;
  return guarded<WorkloadSummary>("summarize",
                                  [&] { return make_summary(workload, block_tokens); });
}

std::string format_summary(const Workload& w, const WorkloadSummary& s) {
  std::ostringstream out;
  out << "workload " << w.name << ": " << s.requests << " requests";
  if (s.sessions > 0) out << " in " << s.sessions << " sessions";
  out << ", last arrival " << s.last_arrival_s << " s\n";
  out << "  prompt tokens: " << s.prompt_tokens << " (p50 " << s.prompt_p50 << ", p90 "
      << s.prompt_p90 << ", p99 " << s.prompt_p99 << ", max " << s.prompt_max
      << "); output tokens: " << s.output_tokens << "\n";
  out << "  shared with an earlier prompt: " << percent(s.shared_token_fraction())
      << " of tokens, " << percent(s.shared_block_fraction()) << " of blocks of "
      << s.block_tokens << " tokens\n";
  if (w.trace_blocks > 0)
    out << "  trace blocks whose id repeats an earlier one: " << w.trace_repeated_blocks << " of "
        << w.trace_blocks << " ("
        << percent(static_cast<double>(w.trace_repeated_blocks) /
                   static_cast<double>(w.trace_blocks))
        << ")\n";
  if (w.skipped_requests || w.clamped_prompts || w.clamped_outputs || w.dropped_turns)
    out << "  left out or cut: " << w.skipped_requests << " requests skipped, "
        << w.clamped_prompts << " prompts clamped, " << w.clamped_outputs
        << " outputs clamped, " << w.dropped_turns << " chat turns dropped\n";
  return out.str();
}

}  // namespace tierkv::replay

#include "replay_loop.h"

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <queue>
#include <utility>

namespace tierkv::cli::replay {
namespace {

using Clock = std::chrono::steady_clock;
namespace rp = tierkv::replay;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Running {
  std::size_t index = 0;
  Sequence seq;
};

// The request whose prefill is under way, one chunk per step.
struct Prefilling {
  std::size_t index = 0;
  std::unique_ptr<PrefillJob> job;
  double started_s = 0;  // virtual time of its first chunk's step
};

class Loop {
 public:
  Loop(PolicyEngine& e, const rp::Workload& w, const LoopOptions& o) : e_(e), w_(w), o_(o) {}

  Result<PolicyRun> run();

 private:
  Status init();
  void admit();
  Status step();
  // Runs one prefill chunk: of the request under way, or of the queue's head when it fits.
  Status prefill_head(Clock::time_point t0);
  Status decode(std::vector<std::size_t>* decoded);
  Status finish_done();
  void schedule_next_turn(std::size_t i);
  const rp::ReplayRequest& req(std::size_t i) const { return w_.requests[i]; }

  PolicyEngine& e_;
  const rp::Workload& w_;
  const LoopOptions& o_;
  std::vector<RequestRecord> rec_;
  std::vector<std::vector<std::int32_t>> prompts_;  // whole prompts, set when known
  std::vector<std::int64_t> next_turn_;             // the request continuing i's session, or -1
  using Arrival = std::pair<double, std::size_t>;
  std::priority_queue<Arrival, std::vector<Arrival>, std::greater<>> pending_;
  std::deque<std::size_t> waiting_;
  std::optional<Prefilling> head_;
  std::vector<Running> running_;
  double now_ = 0;
  std::int64_t done_ = 0, steps_ = 0;
};

double mean_gap_ms(const std::vector<double>& t) {
  return t.size() < 2 ? -1.0 : (t.back() - t.front()) * 1e3 / double(t.size() - 1);
}

Status Loop::init() {
  const std::size_t n = w_.requests.size();
  rec_.resize(n);
  prompts_.resize(n);
  next_turn_.assign(n, -1);
  for (std::size_t i = 0; i < n; ++i) {
    const rp::ReplayRequest& r = req(i);
    RequestRecord& x = rec_[i];
    x.id = r.id;
    x.session = r.session;
    x.turn = r.turn;
    if (r.extends_session) {
      if (i == 0 || req(i - 1).session != r.session || req(i - 1).turn != r.turn - 1) {
        return invalid_argument("workload: request " + std::to_string(r.id) +
                                " extends a session whose previous turn is not right before it");
      }
      next_turn_[i - 1] = std::int64_t(i);
      continue;
    }
    prompts_[i] = r.tokens;
    x.arrival_s = r.arrival_s;
    pending_.emplace(r.arrival_s, i);
  }
  return Status::Ok();
}

void Loop::admit() {
  while (!pending_.empty() && pending_.top().first <= now_) {
    waiting_.push_back(pending_.top().second);
    pending_.pop();
  }
}

Status Loop::prefill_head(Clock::time_point t0) {
  if (!head_) {
    if (waiting_.empty() || std::int64_t(running_.size()) >= o_.max_batch) return Status::Ok();
    const std::size_t i = waiting_.front();
    const rp::ReplayRequest& r = req(i);
    auto job = e_.start_prefill(prompts_[i], r.tenant, r.output_tokens, r.id == o_.timeline_request);
    if (!job.ok()) return job.status().with_context("request " + std::to_string(r.id));
    if (!job->has_value()) {
      if (!running_.empty()) return Status::Ok();  // waits for pages
      return resource_exhausted(
          "request " + std::to_string(r.id) + " needs " +
          std::to_string(e_.pages_needed(std::int32_t(prompts_[i].size()), r.output_tokens)) +
          " pages and the GPU page pool has " + std::to_string(e_.pool_pages()) +
          ": raise --gpu-pages or lower --max-prompt");
    }
    waiting_.pop_front();
    head_ = Prefilling{i, std::move(**job), now_};
  }
  const std::size_t i = head_->index;
  Running live{i, {}};
  auto out = e_.step_prefill(*head_->job, live.seq);
  if (!out.ok()) return out.status().with_context("request " + std::to_string(req(i).id));
  if (!out->has_value()) return Status::Ok();  // more chunks in the next steps
  RequestRecord& x = rec_[i];
  x.first_token_s = now_ + seconds_since(t0);
  x.prefill_ms = (x.first_token_s - head_->started_s) * 1e3;
  head_.reset();
  x.prompt_tokens = std::int32_t(prompts_[i].size());
  x.prefill = std::move(**out);
  x.output.push_back(x.prefill.next_token);
  x.token_s.push_back(x.first_token_s);
  running_.push_back(std::move(live));
  return Status::Ok();
}

Status Loop::decode(std::vector<std::size_t>* decoded) {
  std::vector<Sequence*> seqs;
  std::vector<std::int32_t> tokens, next;
  for (std::size_t k = 0; k < running_.size(); ++k) {
    const std::size_t i = running_[k].index;
    if (std::int32_t(rec_[i].output.size()) >= req(i).output_tokens) continue;
    seqs.push_back(&running_[k].seq);
    tokens.push_back(rec_[i].output.back());
    decoded->push_back(k);
  }
  if (seqs.empty()) return Status::Ok();
  TIERKV_RETURN_IF_ERROR(e_.decode(seqs, tokens, next));
  for (std::size_t b = 0; b < decoded->size(); ++b)
    rec_[running_[(*decoded)[b]].index].output.push_back(next.at(b));
  return Status::Ok();
}

void Loop::schedule_next_turn(std::size_t i) {
  if (next_turn_[i] < 0) return;
  const std::size_t j = std::size_t(next_turn_[i]);
  prompts_[j] = prompts_[i];
  prompts_[j].insert(prompts_[j].end(), rec_[i].output.begin(), rec_[i].output.end());
  prompts_[j].insert(prompts_[j].end(), req(j).tokens.begin(), req(j).tokens.end());
  rec_[j].arrival_s = rec_[i].finish_s + req(j).think_s;
  pending_.emplace(rec_[j].arrival_s, j);
}

Status Loop::finish_done() {
  for (std::size_t k = 0; k < running_.size();) {
    const std::size_t i = running_[k].index;
    if (std::int32_t(rec_[i].output.size()) < req(i).output_tokens) {
      ++k;
      continue;
    }
    TIERKV_RETURN_IF_ERROR(e_.finish(running_[k].seq));
    rec_[i].finish_s = rec_[i].token_s.back();
    schedule_next_turn(i);
    running_.erase(running_.begin() + std::ptrdiff_t(k));
    ++done_;
    if (o_.progress) o_.progress(done_, std::int64_t(rec_.size()), now_);
  }
  return Status::Ok();
}

Status Loop::step() {
  const Clock::time_point t0 = Clock::now();
  TIERKV_RETURN_IF_ERROR(prefill_head(t0));
  std::vector<std::size_t> decoded;
  TIERKV_RETURN_IF_ERROR(decode(&decoded));
  const double decode_end = now_ + seconds_since(t0);
  for (std::size_t k : decoded)
    rec_[running_[k].index].token_s.push_back(decode_end);
  TIERKV_RETURN_IF_ERROR(finish_done());
  now_ += seconds_since(t0);
  ++steps_;
  return Status::Ok();
}

Result<PolicyRun> Loop::run() {
  TIERKV_RETURN_IF_ERROR(init());
  const Clock::time_point t0 = Clock::now();
  const std::int64_t n = std::int64_t(rec_.size());
  while (done_ < n) {
    admit();
    if (waiting_.empty() && running_.empty() && !head_) {
      if (pending_.empty()) return internal_error("replay: requests are left but none will arrive");
      now_ = std::max(now_, pending_.top().first);
      continue;
    }
    TIERKV_RETURN_IF_ERROR(step());
  }
  PolicyRun run;
  run.spec = e_.spec();
  run.records = std::move(rec_);
  run.usage = e_.usage();
  run.metrics = e_.metrics();
  run.wall_s = seconds_since(t0);
  run.virtual_s = now_;
  run.steps = steps_;
  return run;
}

}  // namespace

double RequestRecord::mean_itl_ms() const {
  return mean_gap_ms(token_s);
}

Result<PolicyRun> run_policy(PolicyEngine& engine, const rp::Workload& workload,
                             const LoopOptions& options) {
  Loop loop(engine, workload, options);
  return loop.run();
}

}  // namespace tierkv::cli::replay

#include "replay_policy.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "common/memory_check.h"
#include "engine/calibrate.h"
#include "engine/runner_model.h"
#include "tierkv/cache.h"
#include "tierkv/disk_store.h"
#include "tierkv/metrics.h"
#include "tierkv/page_pool.h"
#include "tierkv/redis_store.h"
#include "tiers/memory/memory_store.h"

namespace tierkv::cli::replay {
namespace {

std::string gbps_text(double gbps) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g GB/s", gbps);
  return buf;
}

// The name a lower tier is reported by: the experiment tier's is the same everywhere.
std::string tier_name(const Store& store) {
  return store.capabilities().experiment ? kExperimentTierName : store.capabilities().name;
}

Result<RedisEndpoint> endpoint(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  RedisEndpoint e;
  e.host = host_port.substr(0, colon);
  try {
    e.port = std::stoi(host_port.substr(colon + 1));
  } catch (...) {
    return invalid_argument("--redis: bad port in '" + host_port + "'");
  }
  return e;
}

}  // namespace

Result<PolicySpec> policy_spec(const std::string& id, const EngineConfig& c) {
  PolicySpec p;
  p.id = id;
  p.label = id;
  if (id == "recompute") {
    p.prefill = PrefillPolicy::kRecompute;
    p.gpu_prefix = false;
  } else if (id == "gpu-only") {
    p.prefill = PrefillPolicy::kGpuOnly;
  } else if (id == "load-then-compute" || id == "warm" || id == "planned") {
    p.prefill = id == "warm"      ? PrefillPolicy::kLayerwise
                : id == "planned" ? PrefillPolicy::kPlanned
                                  : PrefillPolicy::kLoadThenCompute;
    p.host_tier = true;
  } else if (id == "planned-slow") {
    p.host_tier = true;
    p.lower = LowerTier::kExperiment;
    p.label = id + " (experiment tier, " + gbps_text(c.slow_gbps) + ")";
  } else if (id == "planned-disk") {
    p.host_tier = true;
    p.lower = LowerTier::kDisk;
  } else if (id == "planned-redis") {
    p.host_tier = true;
    p.lower = LowerTier::kRedis;
  } else {
    return invalid_argument("unknown policy '" + id + "'");
  }
  return p;
}

struct PolicyEngine::State {
  Backend& backend;
  PolicySpec spec;
  EngineConfig config;
  ModelSpec model;  // with the weights' digest
  std::unique_ptr<Stream> stream;
  // Destroyed in reverse order: the executor, the model adapter, the cache (which finishes its
  // saves from the pool's pages), the runner, the pool.
  std::unique_ptr<PagePool> pool;
  std::unique_ptr<LlamaRunner> runner;
  std::shared_ptr<Store> lower;
  std::string lower_dir;  // the disk tier's fresh directory, removed at the end
  std::unique_ptr<Cache> cache;
  std::unique_ptr<RunnerPrefillModel> prefill_model;
  std::unique_ptr<WarmPrefill> executor;
  std::uint64_t save_errors = 0, fallback_tokens = 0;

  State(Backend& b, PolicySpec s, EngineConfig c)
      : backend(b), spec(std::move(s)), config(std::move(c)) {}
  ~State() {
    executor.reset();
    prefill_model.reset();
    cache.reset();
    lower.reset();
    if (!lower_dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(lower_dir, ec);
    }
  }

  std::int32_t page() const { return model.page_tokens; }
  Status make_pool_and_runner();
  Result<std::shared_ptr<Store>> open_lower_tier(std::string* dir) const;
  Status make_lower_tier();
  Status measure_lower_tier();
  Status make_cache();
  std::uint64_t host_budget() const {
    if (!spec.host_tier) return 0;
    return spec.lower == LowerTier::kNone ? config.host_bytes : config.staging_bytes;
  }
  std::uint64_t lower_budget() const {
    switch (spec.lower) {
      case LowerTier::kExperiment: return config.slow_bytes;
      case LowerTier::kDisk: return config.disk_bytes;
      default: return 0;
    }
  }
  // Takes the GPU-resident prefix (at most up to the page of the last token) and fresh pages.
  Result<std::optional<std::vector<std::int32_t>>> take_pages(const PromptKeys& keys,
                                                              MatchResult& m,
                                                              std::int64_t total);
  TierTokens hits(const MatchResult& m, std::int32_t gpu_matched) const;
};

Status PolicyEngine::State::make_pool_and_runner() {
  TIERKV_ASSIGN_OR_RETURN(stream, backend.create_stream());
  TIERKV_ASSIGN_OR_RETURN(LlamaWeights w, config.weights(backend, *stream));
  model = w.spec;
  PagePoolOptions po;
  po.model = model;
  po.num_pages = std::int32_t(config.gpu_pages);
  po.pages_per_run = std::min<std::int32_t>(config.cache_chunk_tokens / model.page_tokens,
                                            po.num_pages);
  auto pool_or = PagePool::create(backend, po);
  if (!pool_or.ok()) return pool_or.status().with_context("--gpu-pages");
  pool = std::move(pool_or).value();
  RunnerOptions ro;
  ro.max_step_tokens = std::max({2048, config.chunk_tokens, config.max_batch});
  ro.max_batch = config.max_batch;
  ro.max_pages_per_seq = model.max_positions / model.page_tokens + 2;
  TIERKV_ASSIGN_OR_RETURN(runner, LlamaRunner::create(backend, std::move(w), pool->view(), ro));
  return Status::Ok();
}

// A fresh store of the policy's lower tier: an empty directory of its own under --disk-dir (its
// path in *dir, for the caller to remove), a Redis namespace of its own; null for none.
Result<std::shared_ptr<Store>> PolicyEngine::State::open_lower_tier(std::string* dir) const {
  switch (spec.lower) {
    case LowerTier::kNone:
      return std::shared_ptr<Store>();
    case LowerTier::kExperiment: {
      MemoryStoreOptions mo;
      mo.budget_bytes = config.slow_bytes;
      mo.bandwidth_gbps = config.slow_gbps;
      mo.latency_us = config.slow_latency_us;
      TIERKV_ASSIGN_OR_RETURN(auto store, MemoryStore::create(mo));
      return std::shared_ptr<Store>(std::move(store));
    }
    case LowerTier::kDisk: {
      std::string tmpl = config.disk_dir + "/tierkv-replay-XXXXXX";
      if (::mkdtemp(tmpl.data()) == nullptr) {
        return io_error("--disk-dir " + config.disk_dir + ": cannot create a directory in it: " +
                        std::generic_category().message(errno));
      }
      *dir = tmpl;
      DiskStoreOptions d;
      d.directory = tmpl;
      d.budget_bytes = config.disk_bytes;
      TIERKV_ASSIGN_OR_RETURN(auto store, open_disk_store(d));
      return std::shared_ptr<Store>(std::move(store));
    }
    case LowerTier::kRedis: {
      RedisStoreOptions r;
      TIERKV_ASSIGN_OR_RETURN(r.server, endpoint(config.redis));
      r.ttl = std::chrono::hours(1);
      // A namespace of its own: each policy run starts from an empty tier.
      static std::atomic<std::uint64_t> opened{0};
      const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
      r.key_prefix = "tkv-replay-" + std::to_string(::getpid()) + "-" +
                     std::to_string(std::uint64_t(now) % 1000000007ull) + "-" +
                     std::to_string(opened++);
      auto store = open_redis_store(r);
      if (!store.ok()) return store.status().with_context("--redis " + config.redis);
      return std::shared_ptr<Store>(std::move(store).value());
    }
  }
  return internal_error("unknown lower tier");
}

Status PolicyEngine::State::make_lower_tier() {
  TIERKV_ASSIGN_OR_RETURN(lower, open_lower_tier(&lower_dir));
  return Status::Ok();
}

// The planner needs the lower tier's figures. A profile without them (tierkv calibrate measures
// a tier only when given one) would leave it to guess an unknown tier's: this tier is measured
// here instead, as calibrate measures one, on its own records (erased after), and said once:
// later engines of the same configuration (other policies, the max-rate search's probes) reuse it.
Status PolicyEngine::State::measure_lower_tier() {
  if (!lower || !config.profile || spec.prefill != PrefillPolicy::kPlanned) return Status::Ok();
  const std::string name = lower->capabilities().name;
  if (config.profile->tier(name) != nullptr) return Status::Ok();
  auto use = [&](const TierCost& t) {
    auto p = std::make_shared<CostProfile>(*config.profile);
    p->tiers.push_back(t);
    config.profile = std::move(p);
  };
  if (auto known = config.measured_tiers->find(name); known != config.measured_tiers->end()) {
    use(known->second);
    return Status::Ok();
  }
  CalibrateOptions o;
  o.model = model;
  o.chunk_tokens = config.cache_chunk_tokens;
  o.tier_chunks = 4;
  o.tier_readers = WriteDownOptions{}.promote_threads;
  // On a store of its own beside the policy's (the same file system or server), so that the
  // policy's tier and its counters start from nothing.
  std::string scratch_dir;
  Result<TierCost> t = internal_error("not measured");
  {
    auto scratch = open_lower_tier(&scratch_dir);
    t = scratch.ok() ? measure_tier(o, **scratch) : Result<TierCost>(scratch.status());
  }  // closed before its directory goes
  if (!scratch_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir, ec);
  }
  if (!t.ok()) return t.status().with_context("measuring the " + name + " tier for the planner");
  (*config.measured_tiers)[name] = *t;
  use(*t);
  std::fprintf(stderr,
               "[replay] %s: the cost profile has no figures for the %s tier; measured now: "
               "%.3g GB/s with %d readers, %.0f us per read (tail %.0f us)\n",
               spec.label.c_str(), name.c_str(), t->read_gbps, t->readers, t->latency_us,
               t->p99_latency_us);
  return Status::Ok();
}

Status PolicyEngine::State::make_cache() {
  CacheOptions co;
  co.model = model;
  co.chunk_tokens = config.cache_chunk_tokens;
  co.host_bytes = host_budget();
  co.gpu_pool = spec.gpu_prefix ? pool.get() : nullptr;
  co.transfer.profile = config.profile;
  if (lower) co.lower_tiers.push_back(lower);
  co.write_down.persistent_admit_sightings = 1;  // the replay's disk tier takes every chunk
  auto c = Cache::create(backend, co);
  if (!c.ok()) return c.status().with_context(spec.host_tier ? "--host-bytes / --staging-bytes" : "cache");
  cache = std::move(c).value();
  // A large host tier is pinned in the background after create(); each piece's registration
  // holds the CUDA driver while it runs, delaying the engine's calls. The replay measures serving,
  // not start-up: it waits here (counted in the policy's setup time) until the whole tier is
  // pinned. A piece that could not be pinned leaves a smaller tier, said once.
  if (Status pinned =
          cache->wait_host_tier(std::chrono::steady_clock::now() + std::chrono::minutes(10));
      !pinned.ok()) {
    const CacheStats st = cache->stats();
    std::fprintf(stderr, "[replay] %s: the host tier serves %zu of %zu bytes: %s\n",
                 spec.label.c_str(), st.host_usable_bytes, st.host_allocated_bytes,
                 pinned.to_string().c_str());
  }
  prefill_model = std::make_unique<RunnerPrefillModel>(*runner);
  static const CostProfile kEmpty;
  TIERKV_ASSIGN_OR_RETURN(executor, WarmPrefill::create(backend, *cache, *prefill_model,
                                                        config.profile ? *config.profile : kEmpty));
  return Status::Ok();
}

PolicyEngine::PolicyEngine(std::unique_ptr<State> s) : s_(std::move(s)) {}
PolicyEngine::~PolicyEngine() = default;

Result<std::unique_ptr<PolicyEngine>> PolicyEngine::create(Backend& backend,
                                                           const PolicySpec& spec,
                                                           const EngineConfig& config) {
  auto st = std::make_unique<State>(backend, spec, config);
  TIERKV_RETURN_IF_ERROR(st->make_pool_and_runner());
  TIERKV_RETURN_IF_ERROR(st->make_lower_tier());
  TIERKV_RETURN_IF_ERROR(st->measure_lower_tier());
  TIERKV_RETURN_IF_ERROR(st->make_cache());
  return std::unique_ptr<PolicyEngine>(new PolicyEngine(std::move(st)));
}

const PolicySpec& PolicyEngine::spec() const {
  return s_->spec;
}

std::int64_t PolicyEngine::pages_needed(std::int32_t prompt, std::int32_t output) const {
  const std::int64_t p = s_->page();
  return (std::int64_t(prompt) + output + p - 1) / p;
}

std::int64_t PolicyEngine::pool_pages() const {
  return s_->pool->stats().num_pages;
}

Result<std::optional<std::vector<std::int32_t>>> PolicyEngine::State::take_pages(
    const PromptKeys& keys, MatchResult& m, std::int64_t total) {
  const std::int32_t p = page();
  std::vector<std::int32_t> pages;
  if (spec.gpu_prefix && m.gpu_tokens > 0) {
    const std::int32_t last_page_start = (keys.tokens - 1) / p;
    const std::int32_t want = std::min(m.gpu_tokens / p, last_page_start);
    pages = pool->acquire_cached(std::span<const Key>(keys.pages.data(), std::size_t(want)));
  }
  m.gpu_tokens = std::int32_t(pages.size()) * p;
  auto fresh = pool->allocate(std::int32_t(total - std::int64_t(pages.size())));
  if (!fresh.ok()) {
    TIERKV_RETURN_IF_ERROR(pool->release(pages));
    if (fresh.status().code() == StatusCode::kResourceExhausted) {
      return std::optional<std::vector<std::int32_t>>();
    }
    return fresh.status();
  }
  pages.insert(pages.end(), fresh->begin(), fresh->end());
  return std::optional<std::vector<std::int32_t>>(std::move(pages));
}

TierTokens PolicyEngine::State::hits(const MatchResult& m, std::int32_t gpu_matched) const {
  TierTokens t;
  t.emplace_back("gpu", m.gpu_tokens);
  if (spec.host_tier) t.emplace_back("host", std::max(0, m.host_tokens - gpu_matched));
  if (lower) {
    const std::int64_t n = m.lower_tier_tokens.empty() ? 0 : m.lower_tier_tokens[0];
    t.emplace_back(tier_name(*lower), n);
  }
  return t;
}

Result<std::optional<std::unique_ptr<PrefillJob>>> PolicyEngine::start_prefill(
    std::span<const std::int32_t> prompt, const std::string& tenant, std::int32_t output_tokens,
    bool timeline) {
  using Started = std::optional<std::unique_ptr<PrefillJob>>;
  State& s = *s_;
  auto job = std::make_unique<PrefillJob>();
  job->prompt = prompt;
  TIERKV_ASSIGN_OR_RETURN(job->keys, s.cache->keys(prompt, tenant));
  if (s.spec.prefill != PrefillPolicy::kRecompute) {
    TIERKV_ASSIGN_OR_RETURN(job->match, s.cache->match(job->keys));
  }
  job->gpu_matched = job->match.gpu_tokens;
  TIERKV_ASSIGN_OR_RETURN(auto pages, s.take_pages(job->keys, job->match,
                                                   pages_needed(std::int32_t(prompt.size()), output_tokens)));
  if (!pages) return Started();
  job->pages = std::move(*pages);
  const std::int64_t prompt_pages = (std::int64_t(prompt.size()) + s.page() - 1) / s.page();
  WarmPrefillRequest r;
  r.tokens = prompt;
  r.keys = &job->keys;
  r.match = job->match;
  r.kv = s.pool->view();
  r.pages = std::span<const std::int32_t>(job->pages.data(), std::size_t(prompt_pages));
  r.options.policy = s.spec.prefill;
  r.options.chunk_tokens = s.config.chunk_tokens;
  r.options.save = s.spec.host_tier;
  r.options.timeline = timeline;
  auto run = s.executor->start(r, *s.stream);
  if (!run.ok()) {
    s.pool->release(job->pages).ignore();
    return run.status().with_context("warm prefill (" + s.spec.label + ")");
  }
  job->run = std::move(run).value();
  return Started(std::move(job));
}

Result<std::optional<PrefillOutcome>> PolicyEngine::step_prefill(PrefillJob& job, Sequence& seq) {
  State& s = *s_;
  auto fail = [&](const Status& st) -> Status {
    job.run.reset();  // waits for its loads: nothing writes into the pages after this
    s.pool->release(job.pages).ignore();
    job.pages.clear();
    return st.with_context("warm prefill (" + s.spec.label + ")");
  };
  auto done = job.run->step();
  if (!done.ok()) return fail(done.status());
  if (!*done) return std::optional<PrefillOutcome>();
  auto res = job.run->finish();
  if (!res.ok()) return fail(res.status());
  const MatchResult& m = job.match;
  if (s.spec.gpu_prefix) {
    for (std::size_t i = std::size_t(m.gpu_tokens / s.page()); i < job.keys.pages.size(); ++i)
      s.pool->publish(job.pages[i], job.keys.pages[i]);
  }
  seq.pages = std::move(job.pages);
  seq.len = std::int32_t(job.prompt.size());

  PrefillOutcome o;
  o.next_token = res->next_token;
  o.hit_tokens = s.hits(m, job.gpu_matched);
  o.loaded_tokens = res->loaded_tokens;
  o.computed_tokens = res->computed_tokens;
  o.fallback_tokens = res->fallback_tokens;
  o.recomputed_tokens = std::max(0, m.lower_tokens - job.gpu_matched - res->loaded_tokens);
  if (s.spec.prefill == PrefillPolicy::kRecompute || s.spec.prefill == PrefillPolicy::kGpuOnly)
    o.recomputed_tokens = 0;
  o.bytes_loaded = res->bytes_loaded;
  o.plan = "gpu " + std::to_string(m.gpu_tokens) + " + load " + std::to_string(res->loaded_tokens) +
           " + compute " + std::to_string(res->computed_tokens);
  if (res->fallback_tokens > 0) o.plan += " (" + std::to_string(res->fallback_tokens) + " fell back)";
  o.why = res->plan.why;
  o.timeline = std::move(res->timeline);
  s.fallback_tokens += std::uint64_t(res->fallback_tokens);
  job.run.reset();
  return std::optional<PrefillOutcome>(std::move(o));
}

Status PolicyEngine::decode(std::span<Sequence* const> seqs, std::span<const std::int32_t> tokens,
                            std::vector<std::int32_t>& next) {
  return s_->runner->decode(seqs, tokens, *s_->stream, nullptr, &next);
}

Status PolicyEngine::finish(Sequence& seq) {
  // A save queued by the executor reads the prompt's pages until it lands.
  if (s_->spec.host_tier && !s_->cache->flush().ok()) ++s_->save_errors;
  Status st = s_->pool->release(seq.pages);
  seq.pages.clear();
  return st;
}

std::string PolicyEngine::metrics() const {
  return prometheus_text(s_->cache->stats());
}

TierUsage PolicyEngine::usage() const {
  const State& s = *s_;
  TierUsage u;
  const CacheStats cs = s.cache->stats();
  const std::uint64_t page_bytes = std::uint64_t(s.model.page_tokens) * s.model.kv_bytes_per_token();
  u.memory_bytes.emplace_back("gpu", std::int64_t(std::uint64_t(s.config.gpu_pages) * page_bytes));
  u.descriptions.push_back("gpu: page pool of " + std::to_string(s.config.gpu_pages) + " pages (" +
                           bench::format_bytes(std::size_t(s.config.gpu_pages) * page_bytes) + ")");
  if (s.spec.host_tier) {
    u.bytes_moved.emplace_back("host", std::int64_t(cs.bytes_loaded));
    u.memory_bytes.emplace_back("host", std::int64_t(s.host_budget()));
    u.descriptions.push_back(std::string("host: pinned host tier of ") +
                             bench::format_bytes(s.host_budget()) +
                             (s.spec.lower == LowerTier::kNone ? "" : " (staging)"));
  }
  if (s.lower) {
    std::uint64_t read = 0;
    for (const TierStats& t : cs.lower_tiers)
      read += t.store.bytes_read;
    u.bytes_moved.emplace_back(tier_name(*s.lower), std::int64_t(read));
    if (s.lower_budget() > 0) {  // Redis: the server's maxmemory decides
      u.memory_bytes.emplace_back(tier_name(*s.lower), std::int64_t(s.lower_budget()));
    }
    u.descriptions.push_back(tier_name(*s.lower) + ": " + s.lower->capabilities().description);
  }
  u.saved_chunks = cs.saved_chunks;
  u.dropped_chunks = cs.dropped_chunks;
  u.save_errors = s.save_errors + cs.save_errors;
  u.load_fallback_tokens = s.fallback_tokens;
  return u;
}

}  // namespace tierkv::cli::replay

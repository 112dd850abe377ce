#include "cache/lower_tiers.h"

#include <algorithm>
#include <list>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "cache/lower_tiers_internal.h"

namespace tierkv {

// ---- Sightings ----------------------------------------------------------------------------------

// How often each recently seen chunk appeared in saves: an LRU map of chunk key -> count holding
// at most `capacity` chunks. A chunk forgotten by it starts again from 1.
class LowerTiers::Sightings {
 public:
  explicit Sightings(std::size_t capacity) : capacity_(capacity) {}

  std::uint32_t sight(const Key& k) {
    std::lock_guard lock(mu_);
    auto it = map_.find(k);
    if (it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      if (it->second.first < UINT32_MAX) ++it->second.first;
      return it->second.first;
    }
    if (map_.size() >= capacity_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(k);
    map_.emplace(k, std::pair{std::uint32_t{1}, lru_.begin()});
    return 1;
  }

 private:
  struct KeyHash {
    std::size_t operator()(const Key& k) const { return std::size_t(k.hash()); }
  };
  const std::size_t capacity_;
  std::mutex mu_;
  std::list<Key> lru_;  // GUARDED_BY(mu_): front = most recent
  std::unordered_map<Key, std::pair<std::uint32_t, std::list<Key>::iterator>, KeyHash>
      map_;  // GUARDED_BY(mu_)
};

// ---- PromotionTask ------------------------------------------------------------------------------

void PromotionTask::end_locked(Status why) {
  done = true;
  status = std::move(why);
  cv.notify_all();
}

// ---- LowerTiers ---------------------------------------------------------------------------------

namespace {

Status check_write_down(const WriteDownOptions& w) {
  const auto range = [](const char* name, std::int64_t v, std::int64_t lo, std::int64_t hi) {
    if (v >= lo && v <= hi) return Status::Ok();
    return invalid_argument(std::string("cache: write_down.") + name + " is " + std::to_string(v) +
                            ", must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                            "]");
  };
  TIERKV_RETURN_IF_ERROR(range("queue_chunks", w.queue_chunks, 1, 1 << 20));
  TIERKV_RETURN_IF_ERROR(
      range("persistent_admit_sightings", w.persistent_admit_sightings, 1, 1 << 20));
  TIERKV_RETURN_IF_ERROR(range("threads_per_tier", w.threads_per_tier, 1, 64));
  TIERKV_RETURN_IF_ERROR(range("promote_threads", w.promote_threads, 1, 64));
  return range("sighting_memory", w.sighting_memory, 1, 1 << 26);
}

}  // namespace

LowerTiers::LowerTiers(const CacheOptions& o, const Digest& identity, std::uint64_t layer_bytes,
                       HostTier& host)
    : opts_(o), identity_(identity), layer_bytes_(layer_bytes), host_(host) {}

Result<std::unique_ptr<LowerTiers>> LowerTiers::create(const CacheOptions& o,
                                                       const Digest& identity,
                                                       std::uint64_t layer_bytes, HostTier& host) {
  TIERKV_RETURN_IF_ERROR(check_write_down(o.write_down));
  for (std::size_t i = 0; i < o.lower_tiers.size(); ++i) {
    if (o.lower_tiers[i] == nullptr)
      return invalid_argument("cache: lower_tiers[" + std::to_string(i) + "] is null");
  }
  std::unique_ptr<LowerTiers> t(new LowerTiers(o, identity, layer_bytes, host));
  bool admits_by_sightings = false;
  for (const auto& store : o.lower_tiers) {
    auto tier = std::make_unique<Tier>();
    tier->store = store;
    tier->caps = store->capabilities();
    admits_by_sightings |= tier->caps.persistent && o.write_down.persistent_admit_sightings > 1;
    t->tiers_.push_back(std::move(tier));
  }
  if (admits_by_sightings)
    t->sightings_ = std::make_unique<Sightings>(std::size_t(o.write_down.sighting_memory));
  try {
    for (auto& tier : t->tiers_) {
      for (std::int32_t i = 0; i < o.write_down.threads_per_tier; ++i)
        tier->writers.emplace_back([p = t.get(), tr = tier.get()] { p->write_loop(*tr); });
    }
    for (std::int32_t i = 0; i < o.write_down.promote_threads; ++i)
      t->readers_.emplace_back([p = t.get()] { p->read_loop(); });
  } catch (const std::system_error& e) {
    t->stop();
    return resource_exhausted(std::string("cache: cannot start the lower tiers' threads: ") +
                              e.what());
  }
  return t;
}

LowerTiers::~LowerTiers() {
  stop();
}

RecordId LowerTiers::record_id(const Digest& salt_tag, const Key& chunk_key) const {
  RecordId id;
  id.identity = identity_;
  id.salt_tag = salt_tag;
  id.chunk_key = chunk_key;
  id.tokens = std::uint32_t(opts_.chunk_tokens);
  id.num_layers = std::uint32_t(opts_.model.num_layers);
  id.layer_bytes = layer_bytes_;
  return id;
}

void LowerTiers::match(const PromptKeys& keys, std::int32_t c, MatchResult& m) {
  m.lower_tier_tokens.assign(tiers_.size(), 0);
  for (; c < keys.full_chunks(); ++c) {
    const Key& key = keys.chunk_key(c);
    std::size_t holder = tiers_.size();  // the host tier, when it has the chunk
    if (!host_.contains(key)) {
      const RecordId id = record_id(keys.salt_tag, key);
      std::size_t t = 0;
      for (; t < tiers_.size(); ++t) {
        const Result<bool> held = tiers_[t]->store->contains(id);
        if (held.ok() && *held) break;
      }
      if (t == tiers_.size()) break;
      holder = t;
    }
    const std::int32_t from = std::max(c * keys.chunk_tokens, m.host_tokens);
    if (holder < tiers_.size()) m.lower_tier_tokens[holder] += (c + 1) * keys.chunk_tokens - from;
  }
  m.lower_tokens = std::max(m.host_tokens, c * keys.chunk_tokens);
}

std::uint32_t LowerTiers::sight(const Key& chunk_key) {
  return sightings_ ? sightings_->sight(chunk_key) : 0;
}

void LowerTiers::stats(CacheStats& st, std::uint64_t host_saved_bytes) const {
  st.lower_tiers.clear();
  for (const auto& tier : tiers_) {
    const TierCounters& c = tier->counters;
    TierStats t;
    t.name = tier->caps.name;
    t.experiment = tier->caps.experiment;
    t.persistent = tier->caps.persistent;
    t.store = tier->store->stats();
    t.promoted_chunks = c.promoted.load();
    t.promote_failures = c.promote_failures.load();
    t.write_queued = c.queued.load();
    t.write_dropped = c.dropped.load();
    t.write_not_admitted = c.not_admitted.load();
    t.write_present = c.present.load();
    t.write_evicted = c.evicted.load();
    t.written_chunks = c.written.load();
    t.write_failures = c.failures.load();
    t.store.misses[std::size_t(MissReason::kDropped)] += t.write_dropped;
    {
      std::lock_guard lock(tier->mu);
      t.queue_depth = std::int32_t(tier->queue.size());
    }
    st.lower_tiers.push_back(std::move(t));
  }
  st.write_amplification =
      host_saved_bytes == 0 ? 0.0 : double(persistent_bytes_.load()) / double(host_saved_bytes);
}

void LowerTiers::stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(read_mu_);
    stopping_ = true;
  }
  read_cv_.notify_all();
  for (auto& th : readers_)
    th.join();
  // What the readers left queued ends here: no thread will read it any more.
  std::deque<std::shared_ptr<PromotionTask>> left;
  {
    std::lock_guard lock(read_mu_);
    left.swap(read_queue_);
  }
  for (const auto& task : left) {
    std::lock_guard lock(task->mu);
    if (!task->done)
      task->end_locked(failed_precondition("promotion: its cache was destroyed before it ended"));
  }
  for (auto& tier : tiers_) {
    {
      std::lock_guard lock(tier->mu);
      tier->stopping = true;
    }
    tier->work_cv.notify_all();
    for (auto& th : tier->writers)
      th.join();
  }
}

}  // namespace tierkv

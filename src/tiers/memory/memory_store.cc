#include "tiers/memory/memory_store.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/record.h"

namespace tierkv {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kRememberEvicted = 4096;

struct KeyHash {
  std::size_t operator()(const Key& k) const { return std::size_t(k.hash()); }
};

}  // namespace

struct MemoryStore::State {
  MemoryStoreOptions options;
  StoreCapabilities caps;

  std::mutex mu;
  struct Entry {
    std::shared_ptr<const std::vector<std::uint8_t>> bytes;  // replaced, never changed
    std::uint64_t charged = 0;                               // bytes counted against the budget
    std::uint64_t payload = 0;
    std::list<Key>::iterator lru;
  };
  std::unordered_map<Key, Entry, KeyHash> records;  // GUARDED_BY(mu)
  std::list<Key> lru;                               // GUARDED_BY(mu): front = most recent
  std::unordered_set<Key, KeyHash> evicted;         // GUARDED_BY(mu)
  std::deque<Key> evicted_order;                    // GUARDED_BY(mu)
  std::uint64_t held = 0;                           // GUARDED_BY(mu): charged bytes
  StoreStats st;                                    // GUARDED_BY(mu)

  std::mutex link_mu;
  Clock::time_point link_free{};  // GUARDED_BY(link_mu): when the simulated link is idle again

  bool throttled() const { return options.bandwidth_gbps > 0 || options.latency_us > 0; }

  // Waits as long as moving `bytes` over the simulated link takes, behind earlier operations.
  void throttle(std::uint64_t bytes) {
    if (!throttled()) return;
    Clock::time_point done = Clock::now();
    if (options.bandwidth_gbps > 0 && bytes > 0) {
      const auto transfer = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(double(bytes) / (options.bandwidth_gbps * 1e9)));
      std::lock_guard<std::mutex> l(link_mu);
      link_free = std::max(link_free, done) + transfer;
      done = link_free;
    }
    done += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double, std::micro>(options.latency_us));
    std::this_thread::sleep_until(done);
  }

  void drop_locked(Key k, bool evict) {  // by value: callers pass lru elements
    auto it = records.find(k);
    if (it == records.end()) return;
    held -= it->second.charged;
    lru.erase(it->second.lru);
    records.erase(it);
    if (!evict) return;
    ++st.evictions;
    if (evicted.insert(k).second) evicted_order.push_back(k);
    while (evicted_order.size() > kRememberEvicted) {
      evicted.erase(evicted_order.front());
      evicted_order.pop_front();
    }
  }

  void miss_locked(const Key& k) {
    ++st.misses[std::size_t(evicted.count(k) ? MissReason::kEvicted : MissReason::kAbsent)];
  }
};

Result<std::unique_ptr<MemoryStore>> MemoryStore::create(const MemoryStoreOptions& o) {
  if (!(std::isfinite(o.bandwidth_gbps) && o.bandwidth_gbps >= 0))
    return invalid_argument("memory store bandwidth_gbps must be finite and >= 0");
  if (!(std::isfinite(o.latency_us) && o.latency_us >= 0))
    return invalid_argument("memory store latency_us must be finite and >= 0");
  auto s = std::make_unique<State>();
  s->options = o;
  s->st.budget_bytes = o.budget_bytes;
  char desc[160];
  if (s->throttled()) {
    s->caps.name = "memory-experiment";
    s->caps.experiment = true;
    std::snprintf(desc, sizeof desc,
                  "in-memory experiment tier: %.3g GB/s shared link, %.3g us per operation",
                  o.bandwidth_gbps, o.latency_us);
  } else {
    s->caps.name = "memory";
    std::snprintf(desc, sizeof desc, "in-memory records (test store)");
  }
  s->caps.description = desc;
  if (o.budget_bytes > 0)
    s->caps.description += ", budget " + std::to_string(o.budget_bytes) + " B";
  return std::unique_ptr<MemoryStore>(new MemoryStore(std::move(s)));
}

MemoryStore::MemoryStore(std::unique_ptr<State> state) : s_(std::move(state)) {}
MemoryStore::~MemoryStore() = default;

const StoreCapabilities& MemoryStore::capabilities() const {
  return s_->caps;
}

Result<bool> MemoryStore::contains(const RecordId& id) {
  s_->throttle(0);
  std::lock_guard<std::mutex> l(s_->mu);
  return s_->records.count(id.chunk_key) != 0;
}

Status MemoryStore::read(const RecordId& id, std::span<std::uint8_t> payload) {
  const auto t0 = Clock::now();
  if (payload.size() != id.payload_bytes())
    return invalid_argument("read buffer of " + std::to_string(payload.size()) +
                            " bytes for a record of " + std::to_string(id.payload_bytes()));
  std::shared_ptr<const std::vector<std::uint8_t>> rec;
  {
    std::lock_guard<std::mutex> l(s_->mu);
    auto it = s_->records.find(id.chunk_key);
    if (it == s_->records.end()) {
      s_->miss_locked(id.chunk_key);
      return not_found("no record of chunk " + id.chunk_key.hex().substr(0, 16) + " in memory");
    }
    s_->lru.splice(s_->lru.begin(), s_->lru, it->second.lru);
    rec = it->second.bytes;  // verified outside the lock, like a real tier's read
  }
  s_->throttle(payload.size());
  const RecordCheck c = decode_record(*rec, id, payload);
  std::lock_guard<std::mutex> l(s_->mu);
  if (!c.status.ok()) {
    ++s_->st.misses[std::size_t(c.reason)];
    auto it = s_->records.find(id.chunk_key);
    if (it != s_->records.end() && it->second.bytes == rec) s_->drop_locked(id.chunk_key, false);
    return c.status;
  }
  ++s_->st.hits;
  s_->st.bytes_read += payload.size();
  s_->st.read_latency.add(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  return Status::Ok();
}

Status MemoryStore::write(const RecordId& id, std::span<const std::uint8_t> payload) {
  const auto t0 = Clock::now();
  Result<std::vector<std::uint8_t>> rec = encode_record(id, payload);
  if (!rec.ok()) {
    std::lock_guard<std::mutex> l(s_->mu);
    ++s_->st.write_failures;
    return rec.status();
  }
  s_->throttle(payload.size());
  const std::uint64_t size = rec->size();
  std::lock_guard<std::mutex> l(s_->mu);
  const std::uint64_t budget = s_->options.budget_bytes;
  if (budget > 0 && size > budget) {
    ++s_->st.write_failures;
    return resource_exhausted("record of " + std::to_string(size) +
                              " bytes is larger than the memory store's budget of " +
                              std::to_string(budget));
  }
  s_->drop_locked(id.chunk_key, false);  // a rewrite replaces the record
  while (budget > 0 && s_->held + size > budget)
    s_->drop_locked(s_->lru.back(), true);
  s_->lru.push_front(id.chunk_key);
  s_->records[id.chunk_key] =
      State::Entry{std::make_shared<const std::vector<std::uint8_t>>(std::move(rec).value()), size,
                   payload.size(), s_->lru.begin()};
  s_->held += size;
  s_->evicted.erase(id.chunk_key);
  ++s_->st.writes;
  s_->st.bytes_written += payload.size();
  s_->st.write_latency.add(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  return Status::Ok();
}

Status MemoryStore::erase(const RecordId& id) {
  s_->throttle(0);
  std::lock_guard<std::mutex> l(s_->mu);
  if (s_->records.count(id.chunk_key)) {
    s_->drop_locked(id.chunk_key, false);
    ++s_->st.erases;
  }
  return Status::Ok();
}

StoreStats MemoryStore::stats() const {
  std::lock_guard<std::mutex> l(s_->mu);
  StoreStats st = s_->st;
  st.records = s_->records.size();
  st.bytes_held = 0;
  for (const auto& [k, e] : s_->records)
    st.bytes_held += e.payload;
  return st;
}

Status MemoryStore::edit_record(const RecordId& id,
                                const std::function<void(std::vector<std::uint8_t>&)>& edit) {
  std::lock_guard<std::mutex> l(s_->mu);
  auto it = s_->records.find(id.chunk_key);
  if (it == s_->records.end()) return not_found("no record of that chunk key to edit");
  auto edited = std::make_shared<std::vector<std::uint8_t>>(*it->second.bytes);
  edit(*edited);
  it->second.bytes = std::move(edited);  // readers in flight keep the bytes they have
  return Status::Ok();
}

}  // namespace tierkv

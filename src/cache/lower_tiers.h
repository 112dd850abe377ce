// The cache's side of the stores below the host tier (CacheOptions::lower_tiers, fastest first):
//
//  - match: whether a tier holds a chunk (Store::contains, in tier order; an error is "not held");
//  - promotion: reading lower-tier hits into reserved host slots on a small pool of reader
//    threads (promotion.cc), each promotion's chunks in order, one chunk at a time per promotion;
//  - write-down: chunks committed to the host tier offered to each tier through a bounded queue
//    served by that tier's writer threads, with admission by sightings for persistent tiers
//    (write_down.cc; the policy is stated at WriteDownOptions in tierkv/cache.h);
//  - per-tier counters for CacheStats.
//
// A record's id is the chunk's key under the cache identity and the prompt's salt tag, shaped as a
// host slot is (RecordId::layer_bytes = one layer's K then V), so a slot is a record's payload.
//
// Ownership: owned by the cache's state; borrows the host tier, which outlives it. Its threads are
// stopped by stop(), which the Cache's destructor calls; promotions may outlive it (they hold the
// cache's state, not this object's threads).
// Thread safety: every method may be called from any thread, stop() once all callers are done.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "tierkv/cache.h"
#include "tierkv/key.h"
#include "tierkv/status.h"
#include "tierkv/store.h"
#include "tiers/host/host_tier.h"

namespace tierkv {

// One promotion, shared by its Promotion handle (as Promotion::State) and the reader threads.
// Field order matters: the pins are destroyed before keep_alive releases the host tier.
struct PromotionTask {
  std::shared_ptr<const void> keep_alive;  // the cache's state: the host tier outlives the pins
  HostTier* host = nullptr;
  Digest salt_tag{};
  std::vector<Key> chunk_keys;  // the requested chunks, in order
  std::int32_t first_token = 0;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<HostTier::Pin> pins;  // GUARDED_BY(mu): the promoted chunks, in order
  std::int32_t promoted = 0;        // GUARDED_BY(mu): leading chunks promoted (== pins.size())
  // Chunks that landed before an earlier one (readers work on several chunks of one promotion at
  // once): moved to `pins` when the chunks before them have landed.
  std::map<std::int32_t, HostTier::Pin> early;  // GUARDED_BY(mu)
  std::int32_t next = 0;       // GUARDED_BY(mu): the next chunk to hand to a reader
  std::int32_t in_flight = 0;  // GUARDED_BY(mu): chunks readers are working on
  bool done = false;           // GUARDED_BY(mu): ended; `status` says why
  bool cancelled = false;      // GUARDED_BY(mu)
  // The first chunk (in order) whose read failed, and why: no chunk is handed out after a
  // failure, and the promotion ends with it once the chunks in flight are back.
  std::int32_t failed_at = std::numeric_limits<std::int32_t>::max();  // GUARDED_BY(mu)
  Status failure;                                                     // GUARDED_BY(mu)
  Status status;                                                      // GUARDED_BY(mu)

  std::int32_t requested() const { return std::int32_t(chunk_keys.size()); }
  // Ends the task with `why` (OK when every chunk was promoted) and wakes its waiters.
  // REQUIRES: mu held, !done.
  void end_locked(Status why);
};

class LowerTiers {
 public:
  // InvalidArgument for a null store or write-down options out of range. ResourceExhausted when
  // its threads cannot start. `host` must outlive the result.
  static Result<std::unique_ptr<LowerTiers>> create(const CacheOptions& options,
                                                    const Digest& identity,
                                                    std::uint64_t layer_bytes, HostTier& host);
  ~LowerTiers();  // stop()
  LowerTiers(const LowerTiers&) = delete;
  LowerTiers& operator=(const LowerTiers&) = delete;

  std::size_t size() const { return tiers_.size(); }
  // The record of one chunk of a prompt.
  RecordId record_id(const Digest& salt_tag, const Key& chunk_key) const;

  // Continues a match from chunk `chunk` (where the GPU and host tiers stopped): chunk by chunk,
  // the host tier or the first tier whose contains() says yes; stops at the first chunk none
  // holds. Sets m.lower_tokens and m.lower_tier_tokens (m.host_tokens must be set).
  void match(const PromptKeys& keys, std::int32_t chunk, MatchResult& m);

  // Write-down. sight() counts one sighting of a chunk in a save and returns its count (0 when
  // no tier needs sightings). offer() hands a chunk the host tier holds to every tier that takes
  // it: `new_in_host` when the save just committed it, else it was present already. Never blocks
  // on a store: a full queue drops the chunk (counted).
  bool counts_sightings() const { return sightings_ != nullptr; }
  std::uint32_t sight(const Key& chunk_key);
  void offer(const Digest& salt_tag, const Key& chunk_key, std::uint32_t sightings,
             bool new_in_host);
  // Blocks until every writer queue is empty and no write is running. Returns the first write
  // error since the last flush(), else OK.
  Status flush();

  // Queues a new promotion for the reader threads (its leading host-present chunks already
  // pinned). REQUIRES: task->mu held. ResourceExhausted when the queue cannot grow (the caller
  // ends the promotion).
  Status submit_locked(const std::shared_ptr<PromotionTask>& task);

  // Per-tier figures, and the write amplification over `host_saved_bytes`.
  void stats(CacheStats& st, std::uint64_t host_saved_bytes) const;

  // Ends queued promotions (FailedPrecondition: the cache is gone) after the chunks being read,
  // writes what the queues hold (at most queue_chunks per tier), joins every thread. Idempotent.
  void stop();

 private:
  struct Tier;
  class Sightings;
  LowerTiers(const CacheOptions& options, const Digest& identity, std::uint64_t layer_bytes,
             HostTier& host);

  void write_loop(Tier& tier);
  void write_one(Tier& tier, const RecordId& id);
  void read_loop();
  // Puts a promotion with chunks left back at the end of the readers' queue (task->mu not held).
  void requeue(std::shared_ptr<PromotionTask> task);
  // Reads chunk `c` of `task` into a host slot (or pins it where the host tier has it already).
  Result<HostTier::Pin> promote_chunk(PromotionTask& task, std::int32_t c);
  bool task_cancelled(const PromotionTask& task) const;

  const CacheOptions opts_;
  const Digest identity_;
  const std::uint64_t layer_bytes_;
  HostTier& host_;
  std::vector<std::unique_ptr<Tier>> tiers_;
  std::unique_ptr<Sightings> sightings_;            // null when no tier admits by sightings
  std::atomic<std::uint64_t> persistent_bytes_{0};  // written to persistent tiers; statistics

  std::mutex read_mu_;
  std::condition_variable read_cv_;
  std::deque<std::shared_ptr<PromotionTask>> read_queue_;  // GUARDED_BY(read_mu_)
  std::atomic<bool> stopping_{false};  // set under read_mu_; read lock-free by retry loops
  std::vector<std::thread> readers_;
  bool stopped_ = false;  // touched by stop() only
};

}  // namespace tierkv

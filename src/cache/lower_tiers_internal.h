// One lower tier as LowerTiers keeps it (lower_tiers.cc, write_down.cc, promotion.cc): its store,
// its counters, its writer queue and threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cache/lower_tiers.h"

namespace tierkv {

struct TierCounters {  // statistics only: relaxed atomics
  std::atomic<std::uint64_t> promoted{0}, promote_failures{0};
  std::atomic<std::uint64_t> queued{0}, dropped{0}, not_admitted{0}, present{0}, evicted{0};
  std::atomic<std::uint64_t> written{0}, failures{0};
};

inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t v = 1) {
  c.fetch_add(v, std::memory_order_relaxed);
}

struct LowerTiers::Tier {
  std::shared_ptr<Store> store;
  StoreCapabilities caps;
  TierCounters counters;

  std::mutex mu;
  std::condition_variable work_cv;  // a chunk was queued, or stopping
  std::condition_variable idle_cv;  // the queue emptied and no write runs
  std::deque<RecordId> queue;       // GUARDED_BY(mu): at most write_down.queue_chunks
  std::int32_t busy = 0;            // GUARDED_BY(mu): writes running
  bool stopping = false;            // GUARDED_BY(mu)
  Status first_error;               // GUARDED_BY(mu): since the last flush()
  std::vector<std::thread> writers;
};

}  // namespace tierkv

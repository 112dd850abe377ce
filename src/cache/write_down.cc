// Write-down: chunks the host tier holds, offered to the lower tiers through a bounded queue per
// tier and written by that tier's threads (the policy: WriteDownOptions in tierkv/cache.h).
#include <new>
#include <string>

#include "cache/lower_tiers.h"
#include "cache/lower_tiers_internal.h"

namespace tierkv {

void LowerTiers::offer(const Digest& salt_tag, const Key& chunk_key, std::uint32_t sightings,
                       bool new_in_host) {
  const std::uint32_t admit = std::uint32_t(opts_.write_down.persistent_admit_sightings);
  for (auto& tier : tiers_) {
    if (tier->caps.persistent && admit > 1) {
      // Admitted from its admit-th sighting on. A chunk present in the host tier was offered when
      // it came in; it is offered again only at the sighting that admits it.
      if (sightings < admit) {
        if (new_in_host) bump(tier->counters.not_admitted);
        continue;
      }
      if (!new_in_host && sightings != admit) continue;
    } else if (!new_in_host) {
      continue;
    }
    bool queued = false;
    try {
      std::lock_guard lock(tier->mu);
      if (!tier->stopping && tier->queue.size() < std::size_t(opts_.write_down.queue_chunks)) {
        tier->queue.push_back(record_id(salt_tag, chunk_key));
        queued = true;
      }
    } catch (const std::bad_alloc&) {
      // Counted as dropped: the write-down never blocks or fails a save.
    }
    if (queued) {
      bump(tier->counters.queued);
      tier->work_cv.notify_one();
    } else {
      bump(tier->counters.dropped);
    }
  }
}

void LowerTiers::write_loop(Tier& tier) {
  for (;;) {
    RecordId id;
    {
      std::unique_lock lock(tier.mu);
      tier.work_cv.wait(lock, [&] { return tier.stopping || !tier.queue.empty(); });
      if (tier.queue.empty()) return;  // stopping, and everything queued is written
      id = tier.queue.front();
      tier.queue.pop_front();
      ++tier.busy;
    }
    try {
      write_one(tier, id);
    } catch (const std::bad_alloc&) {
      bump(tier.counters.failures);  // not written; the host tier still has the chunk
    }
    bool idle = false;
    {
      std::lock_guard lock(tier.mu);
      idle = --tier.busy == 0 && tier.queue.empty();
    }
    if (idle) tier.idle_cv.notify_all();
  }
}

// The chunk's host slot stays pinned for the write: its bytes cannot change or go under it.
void LowerTiers::write_one(Tier& tier, const RecordId& id) {
  HostTier::Pin pin = host_.pin(id.chunk_key);
  if (!pin) {
    bump(tier.counters.evicted);
    return;
  }
  const Result<bool> held = tier.store->contains(id);
  if (held.ok() && *held) {
    bump(tier.counters.present);
    return;
  }
  const Status s = tier.store->write(id, {pin.data(), id.payload_bytes()});
  if (s.ok()) {
    bump(tier.counters.written);
    if (tier.caps.persistent) bump(persistent_bytes_, id.payload_bytes());
    return;
  }
  bump(tier.counters.failures);
  std::lock_guard lock(tier.mu);
  if (tier.first_error.ok()) tier.first_error = s.with_context("write-down to " + tier.caps.name);
}

Status LowerTiers::flush() {
  Status first;
  for (auto& tier : tiers_) {
    std::unique_lock lock(tier->mu);
    tier->idle_cv.wait(lock, [&] { return tier->queue.empty() && tier->busy == 0; });
    Status s = std::exchange(tier->first_error, Status::Ok());
    if (first.ok()) first = std::move(s);
  }
  return first;
}

}  // namespace tierkv

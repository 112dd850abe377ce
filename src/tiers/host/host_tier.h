// The host tier: one pinned slab of chunk slots with a byte budget that is never exceeded.
//
// The slab is allocated once, at exactly slots * chunk_bytes (<= the budget), as pinned memory the
// device can DMA and read directly. A slot holds one chunk laid out layer-major: for each layer,
// that chunk's K pages then its V pages, contiguous, so one layer of one chunk is a single run.
//
// Residency is refcounted: a Pin keeps a slot's bytes in place. Slots are written through a
// reserved Pin that is invisible to lookups until commit(), which the caller calls only after the
// bytes have landed; a reserved Pin dropped without commit() frees its slot. Eviction takes the
// least recently used committed slot that nobody pins; nothing being read or written is evicted.
//
// Thread safety: all methods may be called from any thread; a Pin is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/key_map.h"
#include "tierkv/backend.h"
#include "tierkv/key.h"
#include "tierkv/status.h"

namespace tierkv {

struct HostTierStats {
  std::size_t budget_bytes = 0;
  std::size_t allocated_bytes = 0;  // slots * chunk_bytes, <= budget_bytes
  std::size_t chunk_bytes = 0;
  std::int32_t slots = 0;
  std::int32_t ready_slots = 0;    // committed chunks, visible to lookups
  std::int32_t writing_slots = 0;  // reserved, not yet committed
  std::int32_t pinned_slots = 0;   // slots with at least one pin
  std::uint64_t hits = 0, misses = 0, evictions = 0, commits = 0, aborts = 0, reserve_failures = 0;
};

class HostTier {
 public:
  // A refcounted pin of one slot. Move-only; unpins (or, for an uncommitted reservation, frees the
  // slot) when destroyed.
  class Pin {
   public:
    Pin() = default;
    ~Pin() { reset(); }
    Pin(Pin&& o) noexcept { *this = std::move(o); }
    Pin& operator=(Pin&& o) noexcept;
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;

    explicit operator bool() const { return tier_ != nullptr; }
    std::uint8_t* data() const { return data_; }
    std::int32_t slot() const { return slot_; }
    void reset();

   private:
    friend class HostTier;
    Pin(HostTier* tier, std::int32_t slot, std::uint8_t* data)
        : tier_(tier), slot_(slot), data_(data) {}
    HostTier* tier_ = nullptr;
    std::int32_t slot_ = -1;
    std::uint8_t* data_ = nullptr;
  };

  // InvalidArgument when the budget holds no chunk; ResourceExhausted when pinned memory of that
  // size cannot be had.
  static Result<std::unique_ptr<HostTier>> create(Backend& backend, std::size_t budget_bytes,
                                                  std::size_t chunk_bytes);
  ~HostTier();

  std::size_t chunk_bytes() const { return chunk_bytes_; }
  bool contains(const Key& chunk_key) const;
  // Pins a committed chunk; an empty Pin when it is not here. Counts a hit or a miss.
  Pin pin(const Key& chunk_key);
  // A slot to write `chunk_key` into. AlreadyExists when the chunk is here or being written;
  // ResourceExhausted when every slot is pinned.
  Result<Pin> reserve(const Key& chunk_key);
  // Publishes a reserved slot (its bytes complete) and unpins it. REQUIRES: `pin` came from
  // reserve().
  void commit(Pin pin);
  // Drops a committed chunk unless it is pinned; returns whether it was dropped.
  bool erase(const Key& chunk_key);
  HostTierStats stats() const;

 private:
  enum class SlotState : std::uint8_t { kFree, kWriting, kReady };
  HostTier(Buffer slab, std::size_t budget, std::size_t chunk_bytes, std::int32_t slots);
  void unpin(std::int32_t slot);
  void lru_remove(std::int32_t slot);
  void lru_push_back(std::int32_t slot);
  void free_slot(std::int32_t slot);
  std::int32_t find_victim() const;

  Buffer slab_;
  const std::size_t budget_;
  const std::size_t chunk_bytes_;
  const std::int32_t slots_;

  mutable std::mutex mu_;
  std::vector<SlotState> state_;           // GUARDED_BY(mu_)
  std::vector<std::int32_t> pins_;         // GUARDED_BY(mu_)
  std::vector<Key> keys_;                  // GUARDED_BY(mu_)
  std::vector<std::int32_t> free_;         // GUARDED_BY(mu_) free slot stack
  std::vector<std::int32_t> prev_, next_;  // GUARDED_BY(mu_) LRU of ready slots; head = oldest
  std::int32_t head_ = -1, tail_ = -1;     // GUARDED_BY(mu_)
  KeyMap<std::int32_t> index_;             // GUARDED_BY(mu_) key -> slot, ready or writing
  HostTierStats counters_;                 // GUARDED_BY(mu_) hits, misses, ...
};

}  // namespace tierkv

// The host tier: a pinned slab of chunk slots with a byte budget that is never exceeded.
//
// The slab holds exactly slots * chunk_bytes (<= the budget) of pinned memory the device can DMA
// and read directly. A slot holds one chunk laid out layer-major: for each layer, that chunk's K
// pages then its V pages, contiguous, so one layer of one chunk is a single run. That layout is
// also a lower-tier record's payload (tierkv/store.h), so a slot is read from and written to a
// store as it is.
//
// Start-up: pinning (cudaHostAlloc / cudaHostRegister) takes time in proportion to the bytes (every
// page is touched and locked), so a large slab is pinned in pieces of about piece_bytes (whole
// slots): the first piece at creation (so that a shortage then is create()'s error, and a small
// tier is whole at once), the others one after another on a background thread. A slot becomes
// usable when its piece is pinned; until then reserve() does not hand it out
// (HostTierStats::usable_slots and usable_bytes say how far pinning got). A piece that cannot be
// pinned stops the growth there: the tier keeps the slots it has, and the error goes to
// on_pin_error and pin_status(). On the CPU backend "pinned" memory is ordinary memory; the code
// path is the same.
//
// Budget checks: create() refuses a slab larger than the machine's available memory or the
// container's memory limit, less a margin (tiers/host/host_memory.h), before it pins anything.
//
// Residency is refcounted: a Pin keeps a slot's bytes in place. Slots are written through a
// reserved Pin that is invisible to lookups until commit() (or publish()), which the caller calls
// only after the bytes have landed; a reserved Pin dropped without commit() frees its slot.
// Eviction takes the least recently used committed slot that nobody pins; nothing being read or
// written is evicted.
//
// Thread safety: all methods may be called from any thread; a Pin is used by one thread at a time.
// A Pin must be destroyed before its HostTier.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/key_map.h"
#include "tierkv/backend.h"
#include "tierkv/key.h"
#include "tierkv/status.h"
#include "tiers/host/host_memory.h"

namespace tierkv {

struct HostTierOptions {
  std::size_t budget_bytes = 0;  // never exceeded; must hold at least one chunk
  std::size_t chunk_bytes = 0;   // one slot
  // Pinned at a time by the background thread: rounded down to whole slots, at least one. The
  // first piece is pinned by create() itself, so a tier that creates has usable slots at once.
  std::size_t piece_bytes = std::size_t{256} << 20;
  // The machine's figures the budget is checked against. Unset: read_host_memory() of this
  // machine. Tests set it.
  std::optional<HostMemory> memory;
  // Called (from the background thread) when a piece cannot be pinned; must be thread-safe and
  // must not call into the tier.
  std::function<void(const Status&)> on_pin_error;
};

struct HostTierStats {
  std::size_t budget_bytes = 0;
  std::size_t allocated_bytes = 0;  // slots * chunk_bytes, <= budget_bytes: the slab when whole
  std::size_t usable_bytes = 0;     // pinned and ready for use now (<= allocated_bytes)
  std::size_t chunk_bytes = 0;
  std::int32_t slots = 0;
  std::int32_t usable_slots = 0;   // slots whose piece is pinned
  std::int32_t ready_slots = 0;    // committed chunks, visible to lookups
  std::int32_t writing_slots = 0;  // reserved, not yet committed
  std::int32_t pinned_slots = 0;   // slots with at least one pin
  bool pinning = false;            // the background thread is still pinning pieces
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

  // InvalidArgument when the budget holds no chunk or more than 2^31 - 1 slots; ResourceExhausted
  // when the slab does not fit in the machine's or the container's memory (with the figures), or
  // when the first piece cannot be pinned.
  static Result<std::unique_ptr<HostTier>> create(Backend& backend, const HostTierOptions& options);
  // The same with the default options for this budget and chunk size.
  static Result<std::unique_ptr<HostTier>> create(Backend& backend, std::size_t budget_bytes,
                                                  std::size_t chunk_bytes);
  // Stops the background pinning (waits for the piece being pinned) and frees the slab.
  ~HostTier();

  std::size_t chunk_bytes() const { return chunk_bytes_; }
  bool contains(const Key& chunk_key) const;
  // Pins a committed chunk; an empty Pin when it is not here. Counts a hit or a miss and makes the
  // chunk the most recently used.
  Pin pin(const Key& chunk_key);
  // A slot to write `chunk_key` into, taken from the usable free slots or by evicting the least
  // recently used unpinned chunk. AlreadyExists when the chunk is here or being written;
  // ResourceExhausted when every usable slot is pinned.
  Result<Pin> reserve(const Key& chunk_key);
  // Publishes a reserved slot (its bytes complete) and unpins it. REQUIRES: `pin` came from
  // reserve() of this tier and was not committed.
  void commit(Pin pin);
  // Publishes a reserved slot and keeps it pinned: the returned Pin reads the chunk, with no
  // window in which it could be evicted. REQUIRES: as commit().
  Pin publish(Pin pin);
  // Drops a committed chunk unless it is pinned; returns whether it was dropped.
  bool erase(const Key& chunk_key);
  HostTierStats stats() const;
  // OK while pinning goes on or after it finished; the error that stopped it otherwise.
  Status pin_status() const;
  // Blocks until the background pinning ended (every piece pinned, or stopped by an error) or
  // `deadline` passed. Returns pin_status() once it ended, DeadlineExceeded before.
  Status wait_pinned(std::chrono::steady_clock::time_point deadline =
                         std::chrono::steady_clock::time_point::max()) const;
  // Stops the background pinning after the piece in progress and waits for it: the tier keeps the
  // slots pinned so far, and on_pin_error is not called after this returns. Idempotent; the
  // destructor calls it. Not to be called concurrently with itself.
  void stop_pinning();

 private:
  enum class SlotState : std::uint8_t { kFree, kWriting, kReady };
  HostTier(Backend& backend, const HostTierOptions& options, std::int32_t slots,
           std::int32_t slots_per_piece);
  // Adds piece `p` (pinned as `buffer`) to the usable slots.
  void add_piece(std::int32_t p, Buffer buffer);
  void pin_pieces();  // the background thread
  std::uint8_t* slot_data(std::int32_t slot) const;
  void mark_published(std::int32_t slot, const Pin& pin);
  void unpin(std::int32_t slot);
  void lru_remove(std::int32_t slot);
  void lru_push_back(std::int32_t slot);
  void free_slot(std::int32_t slot);
  std::int32_t find_victim() const;

  Backend& backend_;
  const std::size_t budget_;
  const std::size_t chunk_bytes_;
  const std::int32_t slots_;
  const std::int32_t slots_per_piece_;
  const std::int32_t pieces_;
  const std::function<void(const Status&)> on_pin_error_;

  mutable std::mutex mu_;
  mutable std::condition_variable pinned_cv_;
  // One per piece; pinned_[p] and bases_[p] are written once, before the piece's slots are freed
  // under mu_, and read only by holders of those slots (or under mu_).
  std::vector<Buffer> pinned_;
  std::vector<std::uint8_t*> bases_;
  std::int32_t usable_slots_ = 0;          // GUARDED_BY(mu_)
  bool pinning_ = false;                   // GUARDED_BY(mu_)
  bool stop_ = false;                      // GUARDED_BY(mu_)
  Status pin_status_;                      // GUARDED_BY(mu_)
  std::vector<SlotState> state_;           // GUARDED_BY(mu_)
  std::vector<std::int32_t> pins_;         // GUARDED_BY(mu_)
  std::vector<Key> keys_;                  // GUARDED_BY(mu_)
  std::vector<std::int32_t> free_;         // GUARDED_BY(mu_) usable free slot stack
  std::vector<std::int32_t> prev_, next_;  // GUARDED_BY(mu_) LRU of ready slots; head = oldest
  std::int32_t head_ = -1, tail_ = -1;     // GUARDED_BY(mu_)
  KeyMap<std::int32_t> index_;             // GUARDED_BY(mu_) key -> slot, ready or writing
  HostTierStats counters_;                 // GUARDED_BY(mu_) hits, misses, ...
  std::thread pinner_;                     // pins pieces 1.. in the background
};

}  // namespace tierkv

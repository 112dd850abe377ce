#include "tiers/host/host_tier.h"

#include <string>

namespace tierkv {

HostTier::Pin& HostTier::Pin::operator=(Pin&& o) noexcept {
  if (this != &o) {
    reset();
    tier_ = o.tier_;
    slot_ = o.slot_;
    data_ = o.data_;
    o.tier_ = nullptr;
  }
  return *this;
}

void HostTier::Pin::reset() {
  if (tier_ != nullptr) tier_->unpin(slot_);
  tier_ = nullptr;
}

Result<std::unique_ptr<HostTier>> HostTier::create(Backend& backend, std::size_t budget,
                                                   std::size_t chunk_bytes) {
  if (chunk_bytes == 0) return invalid_argument("host tier: chunk size is zero");
  const std::size_t slots = budget / chunk_bytes;
  if (slots == 0) {
    return invalid_argument("host tier: a budget of " + std::to_string(budget) +
                            " bytes holds no chunk of " + std::to_string(chunk_bytes) + " bytes");
  }
  if (slots > INT32_MAX) return invalid_argument("host tier: more than 2^31 slots");
  auto slab = backend.allocate(MemoryKind::kPinnedHost, slots * chunk_bytes);
  if (!slab.ok()) return slab.status().with_context("host tier");
  return std::unique_ptr<HostTier>(
      new HostTier(std::move(slab).value(), budget, chunk_bytes, static_cast<std::int32_t>(slots)));
}

HostTier::HostTier(Buffer slab, std::size_t budget, std::size_t chunk_bytes, std::int32_t slots)
    : slab_(std::move(slab)),
      budget_(budget),
      chunk_bytes_(chunk_bytes),
      slots_(slots),
      state_(std::size_t(slots), SlotState::kFree),
      pins_(std::size_t(slots), 0),
      keys_(std::size_t(slots)),
      prev_(std::size_t(slots), -1),
      next_(std::size_t(slots), -1),
      index_(std::size_t(slots)) {
  free_.reserve(std::size_t(slots));
  for (std::int32_t s = slots - 1; s >= 0; --s)
    free_.push_back(s);
}

HostTier::~HostTier() = default;

bool HostTier::contains(const Key& key) const {
  std::lock_guard lock(mu_);
  const std::int32_t* s = index_.find(key);
  return s != nullptr && state_[*s] == SlotState::kReady;
}

HostTier::Pin HostTier::pin(const Key& key) {
  std::lock_guard lock(mu_);
  const std::int32_t* s = index_.find(key);
  if (s == nullptr || state_[*s] != SlotState::kReady) {
    ++counters_.misses;
    return {};
  }
  ++counters_.hits;
  ++pins_[*s];
  lru_remove(*s);  // most recently used now
  lru_push_back(*s);
  return Pin(this, *s, slab_.as<std::uint8_t>() + std::size_t(*s) * chunk_bytes_);
}

Result<HostTier::Pin> HostTier::reserve(const Key& key) {
  std::lock_guard lock(mu_);
  if (index_.find(key) != nullptr)
    return already_exists("host tier: chunk " + key.hex() + " is present");
  std::int32_t slot = -1;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = find_victim();
    if (slot < 0) {
      ++counters_.reserve_failures;
      return resource_exhausted("host tier: all " + std::to_string(slots_) + " slots are pinned");
    }
    lru_remove(slot);
    index_.erase(keys_[slot]);
    ++counters_.evictions;
  }
  state_[slot] = SlotState::kWriting;
  keys_[slot] = key;
  pins_[slot] = 1;
  index_.insert(key, slot);
  return Pin(this, slot, slab_.as<std::uint8_t>() + std::size_t(slot) * chunk_bytes_);
}

void HostTier::commit(Pin pin) {
  {
    std::lock_guard lock(mu_);
    const std::int32_t s = pin.slot_;
    if (pin.tier_ != this || state_[s] != SlotState::kWriting) {
      detail::abort_with(
          "tierkv: HostTier::commit of a pin that is not a reservation of this tier");
    }
    state_[s] = SlotState::kReady;
    lru_push_back(s);
    ++counters_.commits;
  }
  pin.reset();
}

bool HostTier::erase(const Key& key) {
  std::lock_guard lock(mu_);
  const std::int32_t* found = index_.find(key);
  if (found == nullptr) return false;
  const std::int32_t s = *found;
  if (state_[s] != SlotState::kReady || pins_[s] > 0) return false;
  lru_remove(s);
  index_.erase(key);
  free_slot(s);
  return true;
}

void HostTier::unpin(std::int32_t s) {
  std::lock_guard lock(mu_);
  if (--pins_[s] > 0) return;
  if (state_[s] == SlotState::kWriting) {  // dropped without commit: the bytes are not trusted
    index_.erase(keys_[s]);
    free_slot(s);
    ++counters_.aborts;
  }
}

void HostTier::free_slot(std::int32_t s) {
  state_[s] = SlotState::kFree;
  free_.push_back(s);
}

std::int32_t HostTier::find_victim() const {
  for (std::int32_t s = head_; s >= 0; s = next_[s]) {
    if (pins_[s] == 0) return s;
  }
  return -1;
}

void HostTier::lru_remove(std::int32_t s) {
  (prev_[s] < 0 ? head_ : next_[prev_[s]]) = next_[s];
  (next_[s] < 0 ? tail_ : prev_[next_[s]]) = prev_[s];
  prev_[s] = next_[s] = -1;
}

void HostTier::lru_push_back(std::int32_t s) {
  prev_[s] = tail_;
  next_[s] = -1;
  (tail_ < 0 ? head_ : next_[tail_]) = s;
  tail_ = s;
}

HostTierStats HostTier::stats() const {
  std::lock_guard lock(mu_);
  HostTierStats st = counters_;
  st.budget_bytes = budget_;
  st.chunk_bytes = chunk_bytes_;
  st.slots = slots_;
  st.allocated_bytes = std::size_t(slots_) * chunk_bytes_;
  for (std::int32_t s = 0; s < slots_; ++s) {
    st.ready_slots += state_[s] == SlotState::kReady;
    st.writing_slots += state_[s] == SlotState::kWriting;
    st.pinned_slots += pins_[s] > 0;
  }
  return st;
}

}  // namespace tierkv

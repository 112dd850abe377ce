#include "tiers/host/host_tier.h"

#include <algorithm>
#include <string>
#include <system_error>

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
  HostTierOptions o;
  o.budget_bytes = budget;
  o.chunk_bytes = chunk_bytes;
  return create(backend, o);
}

Result<std::unique_ptr<HostTier>> HostTier::create(Backend& backend, const HostTierOptions& o) {
  if (o.chunk_bytes == 0) return invalid_argument("host tier: chunk size is zero");
  const std::size_t slots = o.budget_bytes / o.chunk_bytes;
  if (slots == 0) {
    return invalid_argument("host tier: a budget of " + std::to_string(o.budget_bytes) +
                            " bytes holds no chunk of " + std::to_string(o.chunk_bytes) + " bytes");
  }
  if (slots > INT32_MAX) return invalid_argument("host tier: more than 2^31 slots");
  TIERKV_RETURN_IF_ERROR(check_host_budget(
      slots * o.chunk_bytes, o.memory ? *o.memory : read_host_memory(), "host tier budget"));
  const std::size_t per_piece = std::clamp<std::size_t>(o.piece_bytes / o.chunk_bytes, 1, slots);
  try {
    std::unique_ptr<HostTier> t(
        new HostTier(backend, o, std::int32_t(slots), std::int32_t(per_piece)));
    // The first piece here, so that a tier that exists has usable slots and a memory shortage at
    // creation is the caller's error.
    auto first =
        backend.allocate(MemoryKind::kPinnedHost, std::min(slots, per_piece) * o.chunk_bytes);
    if (!first.ok()) return first.status().with_context("host tier");
    t->add_piece(0, std::move(first).value());
    if (t->pieces_ > 1) {
      {
        std::lock_guard lock(t->mu_);
        t->pinning_ = true;
      }
      t->pinner_ = std::thread([p = t.get()] { p->pin_pieces(); });
    }
    return t;
  } catch (const std::bad_alloc&) {
    return resource_exhausted("host tier: out of host memory for its index");
  } catch (const std::system_error& e) {
    return resource_exhausted(std::string("host tier: cannot start its pinning thread: ") +
                              e.what());
  }
}

HostTier::HostTier(Backend& backend, const HostTierOptions& o, std::int32_t slots,
                   std::int32_t slots_per_piece)
    : backend_(backend),
      budget_(o.budget_bytes),
      chunk_bytes_(o.chunk_bytes),
      slots_(slots),
      slots_per_piece_(slots_per_piece),
      pieces_((slots + slots_per_piece - 1) / slots_per_piece),
      on_pin_error_(o.on_pin_error),
      pinned_(std::size_t(pieces_)),
      bases_(std::size_t(pieces_), nullptr),
      state_(std::size_t(slots), SlotState::kFree),
      pins_(std::size_t(slots), 0),
      keys_(std::size_t(slots)),
      prev_(std::size_t(slots), -1),
      next_(std::size_t(slots), -1),
      index_(std::size_t(slots)) {
  free_.reserve(std::size_t(slots));
}

HostTier::~HostTier() {
  stop_pinning();
}

void HostTier::stop_pinning() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  if (pinner_.joinable()) pinner_.join();
}

void HostTier::add_piece(std::int32_t p, Buffer buffer) {
  const std::int32_t first = p * slots_per_piece_;
  const std::int32_t end = std::min(slots_, first + slots_per_piece_);
  std::lock_guard lock(mu_);
  bases_[std::size_t(p)] = buffer.as<std::uint8_t>();
  pinned_[std::size_t(p)] = std::move(buffer);
  // Lowest slot on top: slots are handed out in address order.
  free_.insert(free_.begin(), std::size_t(end - first), 0);
  for (std::int32_t s = first; s < end; ++s)
    free_[std::size_t(end - 1 - s)] = s;
  usable_slots_ += end - first;
}

void HostTier::pin_pieces() {
  Status failed;
  for (std::int32_t p = 1; p < pieces_; ++p) {
    {
      std::lock_guard lock(mu_);
      if (stop_) break;
    }
    const std::int32_t n = std::min(slots_per_piece_, slots_ - p * slots_per_piece_);
    auto buffer = backend_.allocate(MemoryKind::kPinnedHost, std::size_t(n) * chunk_bytes_);
    if (!buffer.ok()) {
      failed = buffer.status().with_context(
          "host tier: pinning piece " + std::to_string(p) + " of " + std::to_string(pieces_) +
          "; the tier keeps its first " + std::to_string(p * slots_per_piece_) + " slots");
      break;
    }
    add_piece(p, std::move(buffer).value());
  }
  if (!failed.ok() && on_pin_error_) on_pin_error_(failed);  // before wait_pinned() returns
  {
    std::lock_guard lock(mu_);
    pinning_ = false;
    pin_status_ = failed;
  }
  pinned_cv_.notify_all();
}

Status HostTier::pin_status() const {
  std::lock_guard lock(mu_);
  return pin_status_;
}

Status HostTier::wait_pinned(std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(mu_);
  const auto ended = [&] { return !pinning_; };
  if (deadline == std::chrono::steady_clock::time_point::max()) {
    pinned_cv_.wait(lock, ended);
  } else if (!pinned_cv_.wait_until(lock, deadline, ended)) {
    return deadline_exceeded("host tier: " + std::to_string(usable_slots_) + " of " +
                             std::to_string(slots_) + " slots pinned by the deadline");
  }
  return pin_status_;
}

std::uint8_t* HostTier::slot_data(std::int32_t s) const {
  return bases_[std::size_t(s / slots_per_piece_)] +
         std::size_t(s % slots_per_piece_) * chunk_bytes_;
}

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
  return Pin(this, *s, slot_data(*s));
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
      std::string msg =
          "host tier: all " + std::to_string(usable_slots_) + " usable slots are pinned";
      if (usable_slots_ < slots_) {
        msg += " (" + std::to_string(slots_ - usable_slots_) + " more " +
               (pinning_ ? "are being pinned)" : "could not be pinned)");
      }
      return resource_exhausted(std::move(msg));
    }
    lru_remove(slot);
    index_.erase(keys_[slot]);
    ++counters_.evictions;
  }
  state_[slot] = SlotState::kWriting;
  keys_[slot] = key;
  pins_[slot] = 1;
  index_.insert(key, slot);
  return Pin(this, slot, slot_data(slot));
}

void HostTier::mark_published(std::int32_t s, const Pin& pin) {
  if (pin.tier_ != this || state_[s] != SlotState::kWriting) {
    detail::abort_with("tierkv: HostTier::commit of a pin that is not a reservation of this tier");
  }
  state_[s] = SlotState::kReady;
  lru_push_back(s);
  ++counters_.commits;
}

void HostTier::commit(Pin pin) {
  {
    std::lock_guard lock(mu_);
    mark_published(pin.slot_, pin);
  }
  pin.reset();
}

HostTier::Pin HostTier::publish(Pin pin) {
  std::lock_guard lock(mu_);
  mark_published(pin.slot_, pin);
  return pin;  // the reservation's pin count carries over to the reader
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
  st.usable_slots = usable_slots_;
  st.allocated_bytes = std::size_t(slots_) * chunk_bytes_;
  st.usable_bytes = std::size_t(usable_slots_) * chunk_bytes_;
  st.pinning = pinning_;
  for (std::int32_t s = 0; s < slots_; ++s) {
    st.ready_slots += state_[s] == SlotState::kReady;
    st.writing_slots += state_[s] == SlotState::kWriting;
    st.pinned_slots += pins_[s] > 0;
  }
  return st;
}

}  // namespace tierkv

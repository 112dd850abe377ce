// KeyMap<V>: a flat open-addressing hash map from page Key to a small value (a page id, a slot
// index). It is the "one probe per page" structure behind prefix matching: keys are SHA-256
// output, so Key::hash() is used as the hash directly.
//
// Layout: a power-of-two array of slots {Key, V} and a parallel array of control bytes (0 = empty,
// else 0x80 | the hash's top 7 bits), so a probe walks one byte per slot and compares a whole key
// only when the tag matches. Collisions are resolved by linear probing; erase shifts the following
// run back (no tombstones), so a lookup's cost depends only on the live entries.
//
// Invariant: every entry lies in the cyclic run of full slots that starts at its home slot
// (hash & mask); i.e. no empty slot lies between an entry's home and its position.
//
// Capacity grows by doubling when an insert would take the load above 7/8; KeyMap(expected)
// presizes so that `expected` entries fit without growing. Growing and clear() keep nothing but
// the entries; erase never shrinks.
//
// Pointers returned by find() stay valid until the next insert, erase or clear on this map.
//
// Thread safety: none. Concurrent const calls (find, size, for_each) are safe; anything else needs
// the caller's lock.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "tierkv/key.h"

namespace tierkv {

template <typename V>
class KeyMap {
  static_assert(std::is_trivially_copyable_v<V>, "KeyMap values are small trivially copyable ids");

 public:
  KeyMap() : KeyMap(0) {}
  // A map that holds `expected` entries without growing.
  explicit KeyMap(std::size_t expected) { allocate(capacity_for(expected)); }

  // The value stored for `key`, or nullptr.
  V* find(const Key& key) { return const_cast<V*>(std::as_const(*this).find(key)); }
  const V* find(const Key& key) const {
    const std::size_t i = index_of(key);
    return i == kAbsent ? nullptr : &slots_[i].value;
  }

  // Adds key -> value and returns true, or returns false (and changes nothing) if `key` is present.
  bool insert(const Key& key, V value) {
    if (index_of(key) != kAbsent) return false;
    if ((size_ + 1) * 8 > capacity() * 7) allocate_and_rehash(2 * capacity());
    place(key, value);
    ++size_;
    return true;
  }

  // Removes `key`; false if it was absent.
  bool erase(const Key& key) {
    const std::size_t i = index_of(key);
    if (i == kAbsent) return false;
    shift_back_into(i);
    --size_;
    return true;
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Number of slots (a power of two); the map grows before size() exceeds 7/8 of it.
  std::size_t capacity() const { return ctrl_.size(); }

  // Removes every entry; keeps the capacity.
  void clear() {
    std::fill(ctrl_.begin(), ctrl_.end(), kEmpty);
    size_ = 0;
  }

  // Calls fn(const Key&, const V&) for every entry, in no particular order. `fn` must not modify
  // the map.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (std::size_t i = 0; i < capacity(); ++i) {
      if (ctrl_[i] != kEmpty) fn(slots_[i].key, slots_[i].value);
    }
  }

 private:
  struct Slot {
    Key key;
    V value;
  };
  static constexpr std::uint8_t kEmpty = 0;
  static constexpr std::size_t kMinCapacity = 16;
  static constexpr std::size_t kAbsent = SIZE_MAX;

  static std::uint8_t tag(std::uint64_t h) { return static_cast<std::uint8_t>(0x80 | (h >> 57)); }

  static std::size_t capacity_for(std::size_t expected) {
    // Smallest power of two with expected <= 7/8 of it.
    return std::bit_ceil(std::max(kMinCapacity, (expected * 8 + 6) / 7));
  }

  // The slot holding `key`, or kAbsent. Terminates because the load stays below 7/8, so every
  // probe sequence reaches an empty slot.
  std::size_t index_of(const Key& key) const {
    const std::uint64_t h = key.hash();
    const std::uint8_t t = tag(h);
    for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
      if (ctrl_[i] == kEmpty) return kAbsent;
      if (ctrl_[i] == t && slots_[i].key == key) return i;
    }
  }

  void allocate(std::size_t capacity) {
    ctrl_.assign(capacity, kEmpty);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
  }

  void allocate_and_rehash(std::size_t capacity) {
    std::vector<std::uint8_t> old_ctrl = std::move(ctrl_);
    std::vector<Slot> old_slots = std::move(slots_);
    allocate(capacity);
    for (std::size_t i = 0; i < old_ctrl.size(); ++i) {
      if (old_ctrl[i] != kEmpty) place(old_slots[i].key, old_slots[i].value);
    }
  }

  // REQUIRES: `key` is absent and a slot is free.
  void place(const Key& key, V value) {
    const std::uint64_t h = key.hash();
    std::size_t i = h & mask_;
    while (ctrl_[i] != kEmpty)
      i = (i + 1) & mask_;
    ctrl_[i] = tag(h);
    slots_[i] = Slot{key, value};
  }

  // Empties slot `hole` and restores the invariant: each later entry of the run moves back into
  // the hole when the hole lies between its home and its position (cyclically).
  void shift_back_into(std::size_t hole) {
    for (std::size_t j = (hole + 1) & mask_; ctrl_[j] != kEmpty; j = (j + 1) & mask_) {
      const std::size_t home = slots_[j].key.hash() & mask_;
      if (((j - home) & mask_) >= ((j - hole) & mask_)) {
        ctrl_[hole] = ctrl_[j];
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    ctrl_[hole] = kEmpty;
  }

  std::vector<std::uint8_t> ctrl_;
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace tierkv

// An in-memory Store: records held as encoded bytes (src/core/record.h) and verified on every read
// exactly as the disk and Redis tiers verify theirs. Two uses:
//
//  - tests: a real Store without files or servers, whose records a test may edit in place
//    (edit_record) to see corruption caught;
//  - the "experiment tier": with a bandwidth limit and a latency it stands in for a slower tier
//    (a remote store, a throttled disk) so the planner can be measured against known speeds. A
//    throttled store says so: capabilities().experiment is true and its name is
//    "memory-experiment".
//
// Budget: with budget_bytes set, whole records (header + payload) are counted and the least
// recently used records are evicted to make room; a record larger than the budget is refused
// (ResourceExhausted). Misses report kEvicted for records the budget dropped (the last 4096 of
// them are remembered), kAbsent otherwise.
//
// Throttle: every read and write moves its payload over one simulated link of bandwidth_gbps
// shared by all callers (operations queue behind each other, as on a real link), then waits
// latency_us more. contains() and erase() wait latency_us only.
//
// Ownership: the store owns its records. Thread safety: every method may be called from any thread
// at the same time (store.h); edit_record too.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tierkv/status.h"
#include "tierkv/store.h"

namespace tierkv {

struct MemoryStoreOptions {
  std::uint64_t budget_bytes = 0;  // whole records; 0: unbounded
  double bandwidth_gbps = 0;       // 1 GB = 1e9 B; 0: no throttle
  double latency_us = 0;           // added to every operation when throttled (or when > 0)
};

class MemoryStore final : public Store {
 public:
  // InvalidArgument for a negative or non-finite bandwidth or latency.
  static Result<std::unique_ptr<MemoryStore>> create(const MemoryStoreOptions& options = {});
  ~MemoryStore() override;

  const StoreCapabilities& capabilities() const override;
  Result<bool> contains(const RecordId& id) override;
  Status read(const RecordId& id, std::span<std::uint8_t> payload) override;
  Status write(const RecordId& id, std::span<const std::uint8_t> payload) override;
  Status erase(const RecordId& id) override;
  StoreStats stats() const override;

  // For tests: calls `edit` on the stored bytes (header then payload) of the record whose chunk key
  // is id.chunk_key, e.g. to flip a byte or truncate it. NotFound when there is none. The budget
  // keeps counting the record's original size.
  Status edit_record(const RecordId& id,
                     const std::function<void(std::vector<std::uint8_t>&)>& edit);

 private:
  struct State;
  explicit MemoryStore(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace tierkv

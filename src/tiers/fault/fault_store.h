// A Store decorator that injects faults into the calls it passes to another Store: for tests of
// whatever sits above a store (the cache's promotion path, the planner), so that they can prove
// that a failing, slow or lying tier turns into misses and recomputation, never wrong bytes.
//
// Rules say which call of which operation misbehaves and how. Calls of each operation are counted
// from 1 (contains, read, write and erase separately); a rule fires on calls first_call ..
// first_call + times - 1 of its operation (times == kPersistent: every call from first_call on).
// A rule that names a record fires only on calls for that record, from call first_call on, the
// first `times` of them: with several threads reading at once, which record a call number falls to
// is not fixed, but the record a test corrupts is. When several rules match a call, the one added
// first wins.
//
//   kFail          return `code` without calling the inner store (a write leaves nothing behind)
//   kFailAfter     call the inner store, then return `code` anyway: a write that landed although
//                  its caller was told it failed, as after a remote timeout
//   kDelay         sleep `delay`, then call the inner store
//   kCorrupt       read only: call the inner store, scribble over the payload, return DataLoss
//                  (a store that caught bad bytes; the caller must not use the buffer)
//   kCorruptSilently  read only: call the inner store, flip one payload byte, return OK: a store
//                  that does not verify. Only for tests of checks above the store; never a real
//                  tier's behaviour
//
// Ownership: the FaultStore owns the inner store. Thread safety: every method may be called from
// any thread at the same time, add_rule and clear_rules included.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "tierkv/status.h"
#include "tierkv/store.h"

namespace tierkv {

enum class FaultOp : std::uint8_t { kContains = 0, kRead, kWrite, kErase, kCount };
enum class FaultKind : std::uint8_t { kFail = 0, kFailAfter, kDelay, kCorrupt, kCorruptSilently };

struct FaultRule {
  static constexpr std::uint64_t kPersistent = std::numeric_limits<std::uint64_t>::max();
  FaultOp op = FaultOp::kRead;
  FaultKind kind = FaultKind::kFail;
  StatusCode code = StatusCode::kIoError;  // for kFail and kFailAfter
  std::uint64_t first_call = 1;            // 1-based call number of `op`
  std::uint64_t times = 1;                 // 1: one transient fault; kPersistent: from then on
  std::chrono::microseconds delay{0};      // for kDelay
  std::optional<RecordId> record;          // set: only calls for this record
};

class FaultStore final : public Store {
 public:
  explicit FaultStore(std::unique_ptr<Store> inner);
  ~FaultStore() override;

  // InvalidArgument for a corruption rule on another operation than read, or times == 0.
  Status add_rule(const FaultRule& rule);
  void clear_rules();
  // Calls of `op` seen so far, and faults injected so far (all operations).
  std::uint64_t calls(FaultOp op) const;
  std::uint64_t injected() const;
  Store& inner() { return *inner_; }

  // Name "fault(<inner name>)"; the inner store's other capabilities.
  const StoreCapabilities& capabilities() const override;
  Result<bool> contains(const RecordId& id) override;
  Status read(const RecordId& id, std::span<std::uint8_t> payload) override;
  Status write(const RecordId& id, std::span<const std::uint8_t> payload) override;
  Status erase(const RecordId& id) override;
  StoreStats stats() const override;  // the inner store's

 private:
  struct Fired {
    bool any = false;
    FaultRule rule;
  };
  struct Armed {
    FaultRule rule;
    std::uint64_t fired = 0;  // for a rule that names a record
  };
  // Counts a call of `op` for record `id` and returns the rule that fires for it, if any.
  Fired next_call(FaultOp op, const RecordId& id);
  static Status injected_status(const FaultRule& rule, const char* what);

  std::unique_ptr<Store> inner_;
  StoreCapabilities caps_;
  mutable std::mutex mu_;
  std::vector<Armed> rules_;                                         // GUARDED_BY(mu_)
  std::array<std::uint64_t, std::size_t(FaultOp::kCount)> calls_{};  // GUARDED_BY(mu_)
  std::uint64_t injected_ = 0;                                       // GUARDED_BY(mu_)
};

}  // namespace tierkv

// Promotion: lower-tier hits read into host slots, verified, published and pinned, so that a load
// finds them. A promotion's chunks are handed out in order: a reader thread takes a promotion from
// the queue, claims its next chunk and, when more are left, puts the promotion back at the end of
// the queue before it reads, so that another reader can claim the chunk after it. One promotion
// thus has up to promote_threads chunks in flight (a single request reads its lower-tier prefix
// that many chunks at a time: one O_DIRECT stream drains at every record's end), and promotions in
// flight share the readers chunk by chunk. Chunks may land out of order; `promoted` counts the
// leading chunks that have landed, which is what a load waits for.
#include <algorithm>
#include <chrono>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <thread>

#include "cache/cache_state.h"
#include "cache/lower_tiers.h"
#include "cache/lower_tiers_internal.h"

namespace tierkv {

struct Promotion::State : PromotionTask {};

namespace {
Status promotion_moved_from(const char* what) {
  return failed_precondition(std::string(what) + ": the Promotion was moved from");
}
// Short enough for the string's inline buffer: making it allocates nothing.
Status out_of_memory() {
  return Status(StatusCode::kResourceExhausted, "out of memory");
}
}  // namespace

// ---- Promotion ----------------------------------------------------------------------------------

Promotion::Promotion(std::shared_ptr<State> s) : state_(std::move(s)) {}
Promotion::Promotion(Promotion&&) noexcept = default;

Promotion& Promotion::operator=(Promotion&& o) noexcept {
  if (this != &o) {
    Promotion gone(std::move(*this));  // ends and unpins what this held
    state_ = std::move(o.state_);
  }
  return *this;
}

Promotion::~Promotion() {
  if (!state_) return;
  cancel();
  std::vector<HostTier::Pin> pins;
  std::map<std::int32_t, HostTier::Pin> early;
  {
    std::unique_lock lock(state_->mu);
    state_->cv.wait(lock, [&] { return state_->in_flight == 0; });  // the chunks being read
    pins.swap(state_->pins);
    early.swap(state_->early);
  }
  // `pins` unpin here, while state_ (and through it the host tier) is still held.
}

std::int32_t Promotion::first_token() const {
  return state_ ? state_->first_token : 0;
}

std::int32_t Promotion::requested_chunks() const {
  return state_ ? state_->requested() : 0;
}

std::int32_t Promotion::promoted_chunks() const {
  if (!state_) return 0;
  std::lock_guard lock(state_->mu);
  return state_->promoted;
}

bool Promotion::done() const {
  if (!state_) return true;
  std::lock_guard lock(state_->mu);
  return state_->done;
}

std::int32_t Promotion::wait_for(std::int32_t chunks,
                                 std::chrono::steady_clock::time_point deadline) {
  if (!state_) return 0;
  std::unique_lock lock(state_->mu);
  state_->cv.wait_until(lock, deadline, [&] { return state_->done || state_->promoted >= chunks; });
  return state_->promoted;
}

Status Promotion::wait() {
  if (!state_) return promotion_moved_from("Promotion::wait");
  std::unique_lock lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  return state_->status;
}

void Promotion::cancel() {
  if (!state_) return;
  std::lock_guard lock(state_->mu);
  state_->cancelled = true;
  // Chunks being read finish first; the last reader then ends the promotion.
  if (!state_->done && state_->in_flight == 0)
    state_->end_locked(failed_precondition("promotion: cancelled"));
}

// ---- Cache::promote -----------------------------------------------------------------------------

Result<Promotion> Cache::promote(const PromptKeys& keys, std::int32_t first_token,
                                 std::int32_t end_token) {
  State& s = *state_;
  TIERKV_RETURN_IF_ERROR(s.check_cache_keys(&keys));
  const std::int64_t c = s.opts.chunk_tokens;
  const std::int64_t limit = std::int64_t{keys.full_chunks()} * c;
  if (first_token < 0 || end_token < first_token || first_token % c != 0 || end_token % c != 0 ||
      end_token > limit) {
    return invalid_argument("promote: tokens [" + std::to_string(first_token) + ", " +
                            std::to_string(end_token) + ") must be chunk-aligned (chunks of " +
                            std::to_string(c) + ") inside the prompt's full chunks (" +
                            std::to_string(limit) + " tokens)");
  }
  if (s.host == nullptr) {
    return failed_precondition(
        "promote: the cache has no host tier (host_bytes = 0): there is nowhere to promote to");
  }
  try {
    auto st = std::make_shared<Promotion::State>();
    st->keep_alive = state_;
    st->host = s.host.get();
    st->salt_tag = keys.salt_tag;
    st->first_token = first_token;
    for (std::int32_t k = std::int32_t(first_token / c); k < std::int32_t(end_token / c); ++k)
      st->chunk_keys.push_back(keys.chunk_key(k));
    st->pins.reserve(st->chunk_keys.size());
    // The leading chunks the host tier has: pinned here, without a thread hop.
    while (st->promoted < st->requested()) {
      HostTier::Pin pin = s.host->pin(st->chunk_keys[std::size_t(st->promoted)]);
      if (!pin) break;
      st->pins.push_back(std::move(pin));
      ++st->promoted;
    }
    std::lock_guard lock(st->mu);
    st->next = st->promoted;
    if (st->promoted == st->requested()) {
      st->end_locked(Status::Ok());
    } else if (s.lower == nullptr) {
      st->end_locked(not_found("promote: chunk " + std::to_string(first_token / c + st->promoted) +
                               " is not in the host tier and the cache has no lower tiers"));
    } else if (Status q = s.lower->submit_locked(st); !q.ok()) {
      st->end_locked(q);
    }
    return Promotion(std::move(st));
  } catch (const std::bad_alloc&) {
    return resource_exhausted("promote: out of host memory");
  }
}

// ---- The reader threads -------------------------------------------------------------------------

bool LowerTiers::task_cancelled(const PromotionTask& task) const {
  std::lock_guard lock(task.mu);
  return task.cancelled;
}

Status LowerTiers::submit_locked(const std::shared_ptr<PromotionTask>& task) {
  try {
    std::lock_guard lock(read_mu_);
    read_queue_.push_back(task);
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  }
  read_cv_.notify_one();
  return Status::Ok();
}

void LowerTiers::requeue(std::shared_ptr<PromotionTask> task) {
  try {
    std::lock_guard lock(read_mu_);
    read_queue_.push_back(task);
  } catch (const std::bad_alloc&) {
    std::lock_guard lock(task->mu);
    // The chunks left cannot be handed out: a failure at the next one. The chunks in flight land
    // and the last of them ends the promotion; with none in flight, it ends here.
    if (task->next < task->failed_at) {
      task->failed_at = task->next;
      task->failure = out_of_memory();
    }
    if (!task->done && task->in_flight == 0) task->end_locked(task->failure);
    task->cv.notify_all();
    return;
  }
  read_cv_.notify_one();
}

void LowerTiers::read_loop() {
  for (;;) {
    std::shared_ptr<PromotionTask> task;
    {
      std::unique_lock lock(read_mu_);
      read_cv_.wait(lock, [&] { return stopping_ || !read_queue_.empty(); });
      if (stopping_) return;  // stop() ends what is left in the queue
      task = std::move(read_queue_.front());
      read_queue_.pop_front();
    }
    std::int32_t c = 0;
    bool again = false;
    {
      std::lock_guard lock(task->mu);
      if (task->done || task->cancelled || task->failed_at < task->requested() ||
          task->next >= task->requested())
        continue;
      c = task->next++;
      ++task->in_flight;
      // More to hand out: back in the queue before this read, for another reader to take.
      again = task->next < task->requested();
    }
    if (again) requeue(task);
    Result<HostTier::Pin> pin = out_of_memory();
    try {
      pin = promote_chunk(*task, c);
    } catch (const std::bad_alloc&) {
      // The chunk's slot, if reserved, was dropped unpublished: the promotion ends here.
    }
    std::optional<HostTier::Pin> unused;  // a chunk that landed after its promotion ended
    {
      std::lock_guard lock(task->mu);
      --task->in_flight;
      const auto failed = [&](std::int32_t chunk, Status why) {
        if (chunk < task->failed_at) {
          task->failed_at = chunk;
          task->failure = std::move(why);
        }
      };
      if (task->done) {
        if (pin.ok()) unused.emplace(std::move(pin).value());
      } else if (!pin.ok()) {
        failed(c, pin.status());
      } else {
        try {
          task->early.emplace(c, std::move(pin).value());
          // The leading chunks that have landed, up to a failed one (which never lands).
          for (auto it = task->early.find(task->promoted); it != task->early.end();
               it = task->early.find(task->promoted)) {
            task->pins.push_back(std::move(it->second));
            task->early.erase(it);
            ++task->promoted;
          }
        } catch (const std::bad_alloc&) {
          failed(c, out_of_memory());
        }
      }
      if (!task->done) {
        if (task->promoted == task->requested()) {
          task->end_locked(Status::Ok());
        } else if (task->in_flight == 0 && task->failed_at < task->requested()) {
          task->end_locked(task->failure);
        } else if (task->in_flight == 0 && task->cancelled) {
          task->end_locked(failed_precondition("promotion: cancelled"));
        }
      }
      task->cv.notify_all();
    }
    // `unused` unpins here, outside the promotion's lock.
  }
}

// Where the host tier has the chunk (a save or another promotion brought it in), it is pinned as
// it is. Otherwise the fastest tier that says it holds it is read into a reserved slot; the slot
// is published only after the store's read() verified the record. A tier whose read() misses
// (NotFound: it lost the record since contains()) hands over to the next tier holding it; any
// other failure ends the promotion here, and the reservation is dropped unpublished.
Result<HostTier::Pin> LowerTiers::promote_chunk(PromotionTask& task, std::int32_t c) {
  const Key& key = task.chunk_keys[std::size_t(c)];
  const RecordId id = record_id(task.salt_tag, key);
  const std::string where =
      "promote: chunk " + std::to_string(task.first_token / opts_.chunk_tokens + c);
  const auto holds = [&](std::size_t t) {
    const Result<bool> held = tiers_[t]->store->contains(id);
    return held.ok() && *held;  // a tier that cannot answer holds nothing for us
  };
  if (HostTier::Pin pin = host_.pin(key)) return pin;
  std::size_t t = 0;
  while (t < tiers_.size() && !holds(t))
    ++t;
  if (t == tiers_.size()) return not_found(where + ": no tier holds it");
  auto backoff = std::chrono::microseconds(50);
  for (;;) {
    Result<HostTier::Pin> slot = host_.reserve(key);
    if (!slot.ok()) {
      if (slot.status().code() != StatusCode::kAlreadyExists)
        return slot.status().with_context(where);
      // Being written by a save or another promotion: it lands (and is pinned here) or is
      // dropped (and the next reserve() succeeds) soon.
      if (HostTier::Pin pin = host_.pin(key)) return pin;
      if (stopping_ || task_cancelled(task))
        return failed_precondition(where + ": cancelled while another writer held it");
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::microseconds(2000));
      continue;
    }
    for (bool asked = true; t < tiers_.size(); ++t, asked = false) {
      if (!asked && !holds(t)) continue;
      Tier& tier = *tiers_[t];
      const Status read = tier.store->read(id, {slot->data(), id.payload_bytes()});
      if (read.ok()) {
        bump(tier.counters.promoted);
        return host_.publish(std::move(slot).value());
      }
      if (read.code() == StatusCode::kNotFound) continue;
      bump(tier.counters.promote_failures);
      return read.with_context(where + " from " + tier.caps.name);
    }
    return not_found(where + ": every tier that held it lost it before it was read");
  }
}

}  // namespace tierkv

// A fault-injecting Backend for tests: it forwards every call to a real backend and breaks the
// calls its FaultPlan names, so that tests can drive error paths (a copy that fails at enqueue or
// on the stream, a record or wait that is refused, memory that runs out) and widen races (copies
// that land late) without a device that misbehaves.
//
// Its streams and events decorate the inner backend's (Stream::base(), Event::base() return the
// inner ones), so the inner backend, its Ops (create_ops picks them by info().backend, which is
// the inner backend's) and its kernels accept them. Buffers come from the inner backend and are
// owned by it.
//
// Counting: each kind of call (copies, records, waits, allocations, stream and event creations)
// is counted from 1 since the plan was last set; a plan entry k > 0 breaks the k-th call of its
// kind. A test can run an operation under an empty plan, read counts(), then repeat it for
// k = 1..count to inject a fault at each step.
//
// Enqueue-time faults work over any inner backend. Asynchronous copy failures and copy delays
// queue host tasks on the inner stream, which only the CPU backend has; set_plan refuses them
// over another backend.
//
// Ownership: the inner backend is borrowed and must outlive this one. Streams and events made
// here must be destroyed before this backend. Thread safety: like any Backend, usable from
// several threads at once; set_plan, plan and counts may be called from any thread at any time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "tierkv/backend.h"

namespace tierkv::fault {

class FaultStream;  // fault_backend.cc

// What to break. Each count is 1-based over the calls of its kind seen since the plan was set;
// 0 = never.
struct FaultPlan {
  // The k-th copy (Stream::copy or Backend::copy_runs, one call = one copy) returns DeviceError
  // and queues nothing.
  std::uint64_t fail_copy_at_enqueue = 0;
  // The k-th copy is queued as usual (it writes all its bytes), then a failure is queued behind
  // it on the same stream: the copy's completion reports DeviceError, through the stream's
  // synchronize() and events recorded after it. CPU backend only. When both copy faults name the
  // same call, it fails at enqueue.
  std::uint64_t fail_copy_async = 0;
  std::uint64_t fail_record = 0;         // the k-th Stream::record returns DeviceError
  std::uint64_t fail_wait = 0;           // the k-th Stream::wait returns DeviceError
  std::uint64_t fail_allocate = 0;       // the k-th allocate returns ResourceExhausted
  std::uint64_t fail_create_stream = 0;  // the k-th create_stream returns DeviceError
  std::uint64_t fail_create_event = 0;   // the k-th create_event returns DeviceError
  // Every copy starts executing this much later than it would (a sleep queued before it on its
  // stream), so its completion lands late. CPU backend only.
  std::chrono::microseconds copy_delay{0};
  // Once a fault of a kind fired, every later call of that kind fails too (a device that broke
  // stays broken), until the plan is set again.
  bool persistent = false;
};

// Calls seen since the plan was last set, per kind, and faults injected.
struct FaultCounts {
  std::uint64_t copies = 0;  // Stream::copy and copy_runs calls
  std::uint64_t records = 0;
  std::uint64_t waits = 0;
  std::uint64_t allocations = 0;
  std::uint64_t stream_creations = 0;
  std::uint64_t event_creations = 0;
  std::uint64_t faults = 0;  // calls broken, of all kinds
};

class FaultBackend final : public Backend {
 public:
  // Forwards to `inner` (borrowed) with an empty plan.
  explicit FaultBackend(Backend& inner);
  ~FaultBackend() override;

  // Replaces the plan and restarts every count. Unimplemented (and the plan is unchanged) when
  // the plan asks for asynchronous copy failures or copy delays over a backend other than the
  // CPU backend.
  Status set_plan(const FaultPlan& plan);
  // set_plan({}): nothing breaks; the counts restart.
  void clear_plan();
  FaultPlan plan() const;
  FaultCounts counts() const;
  Backend& inner() { return inner_; }

  // ---- Backend: forwarded, with faults where the plan says ----
  const DeviceInfo& info() const override { return inner_.info(); }
  Result<std::size_t> free_memory() override { return inner_.free_memory(); }
  Result<Buffer> allocate(MemoryKind kind, std::size_t bytes) override;
  Result<std::unique_ptr<Stream>> create_stream() override;
  Result<std::unique_ptr<Event>> create_event() override;
  Result<double> elapsed_ms(const Event& start, const Event& end) override;
  Status fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed, float lo,
                      float hi, Stream& stream) override;
  Status copy_runs(std::span<const CopyRun> runs, CopyPath path, int sm_blocks,
                   Stream& stream) override;
  Status decode_attention(const DecodeAttentionArgs& args, Stream& stream) override;
  Status prefill_attention(const PrefillAttentionArgs& args, Stream& stream) override;

 protected:
  // Never called: buffers are the inner backend's and go back to it.
  void release(void* data, std::size_t size, MemoryKind kind) noexcept override;

 private:
  friend class FaultStream;

  enum Kind : int {
    kCopyEnqueue,
    kCopyAsync,
    kRecord,
    kWait,
    kAllocate,
    kCreateStream,
    kCreateEvent,
    kNumKinds
  };
  // What the plan decides for one copy.
  struct CopyFault {
    Status at_enqueue;                   // not OK: return it, queue nothing
    Status async;                        // not OK: queue a task returning it after the copy
    std::chrono::microseconds delay{0};  // > 0: queue a sleep before the copy
  };

  // Counts one copy and decides its faults; `where` names the call in messages.
  CopyFault on_copy(const char* where);
  // A copy on `stream` with the faults `f`: the delay, `enqueue` (which queues the copy on the
  // inner stream), then the asynchronous failure. Defined in fault_backend.cc, its only user.
  template <typename Enqueue>
  Status copy_with(const CopyFault& f, Stream& stream, Enqueue&& enqueue);
  // Counts one call of a kind other than copies; the fault to return, or OK.
  Status on_call(Kind kind, std::uint64_t FaultCounts::*counter, const char* what);
  // Whether call number `n` of `kind` fails under the plan (and remembers that it fired).
  // REQUIRES: mu_ held.
  bool fires(Kind kind, std::uint64_t n);
  // Counts a fault and makes its Status. REQUIRES: mu_ held.
  Status fault(Kind kind, std::uint64_t n, const char* what);

  Backend& inner_;
  mutable std::mutex mu_;
  FaultPlan plan_;              // GUARDED_BY(mu_)
  FaultCounts counts_;          // GUARDED_BY(mu_)
  bool fired_[kNumKinds] = {};  // GUARDED_BY(mu_): a fault of this kind fired under the plan
};

}  // namespace tierkv::fault

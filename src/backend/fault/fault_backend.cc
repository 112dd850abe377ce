#include "backend/fault/fault_backend.h"

#include <string>
#include <thread>
#include <utility>

#include "backend/cpu/cpu_stream.h"

namespace tierkv::fault {

// A stream of the inner backend, with this backend's plan applied to its copies, records and
// waits. Everything else is forwarded.
class FaultStream final : public Stream {
 public:
  FaultStream(FaultBackend& backend, std::unique_ptr<Stream> inner)
      : backend_(backend), inner_(std::move(inner)) {}

  Status copy(void* dst, const void* src, std::size_t bytes) override {
    const FaultBackend::CopyFault f = backend_.on_copy("Stream::copy");
    return backend_.copy_with(f, *this, [&] { return inner_->copy(dst, src, bytes); });
  }
  Status fill(void* dst, std::uint8_t value, std::size_t bytes) override {
    return inner_->fill(dst, value, bytes);
  }
  Status record(Event& event) override {
    TIERKV_RETURN_IF_ERROR(
        backend_.on_call(FaultBackend::kRecord, &FaultCounts::records, "Stream::record"));
    return inner_->record(event.base());
  }
  Status wait(const Event& event) override {
    TIERKV_RETURN_IF_ERROR(
        backend_.on_call(FaultBackend::kWait, &FaultCounts::waits, "Stream::wait"));
    return inner_->wait(event.base());
  }
  Status synchronize() override { return inner_->synchronize(); }
  Status begin_capture() override { return inner_->begin_capture(); }
  Result<std::unique_ptr<Graph>> end_capture() override { return inner_->end_capture(); }
  void* native_handle() override { return inner_->native_handle(); }
  Stream& base() override { return inner_->base(); }
  const Stream& base() const override { return inner_->base(); }

 private:
  FaultBackend& backend_;
  std::unique_ptr<Stream> inner_;
};

namespace {

class FaultEvent final : public Event {
 public:
  explicit FaultEvent(std::unique_ptr<Event> inner) : inner_(std::move(inner)) {}

  Status synchronize() override { return inner_->synchronize(); }
  Result<bool> done() override { return inner_->done(); }
  Event& base() override { return inner_->base(); }
  const Event& base() const override { return inner_->base(); }

 private:
  std::unique_ptr<Event> inner_;
};

}  // namespace

FaultBackend::FaultBackend(Backend& inner) : inner_(inner) {}

FaultBackend::~FaultBackend() = default;

// ---- the plan ----------------------------------------------------------------------------------

Status FaultBackend::set_plan(const FaultPlan& plan) {
  if (inner_.kind() != BackendKind::kCpu &&
      (plan.fail_copy_async != 0 || plan.copy_delay.count() > 0)) {
    return unimplemented(
        "fault plan: asynchronous copy failures and copy delays need the CPU backend (they queue "
        "host tasks on its streams); the inner backend is " +
        std::string(backend_kind_name(inner_.kind())));
  }
  std::lock_guard lock(mu_);
  plan_ = plan;
  counts_ = FaultCounts{};
  for (bool& f : fired_)
    f = false;
  return Status::Ok();
}

void FaultBackend::clear_plan() {
  set_plan(FaultPlan{}).ignore();  // an empty plan fits every backend
}

FaultPlan FaultBackend::plan() const {
  std::lock_guard lock(mu_);
  return plan_;
}

FaultCounts FaultBackend::counts() const {
  std::lock_guard lock(mu_);
  return counts_;
}

bool FaultBackend::fires(Kind kind, std::uint64_t n) {
  if (plan_.persistent && fired_[kind]) return true;
  std::uint64_t k = 0;
  switch (kind) {
    case kCopyEnqueue:
      k = plan_.fail_copy_at_enqueue;
      break;
    case kCopyAsync:
      k = plan_.fail_copy_async;
      break;
    case kRecord:
      k = plan_.fail_record;
      break;
    case kWait:
      k = plan_.fail_wait;
      break;
    case kAllocate:
      k = plan_.fail_allocate;
      break;
    case kCreateStream:
      k = plan_.fail_create_stream;
      break;
    case kCreateEvent:
      k = plan_.fail_create_event;
      break;
    case kNumKinds:
      break;
  }
  if (k == 0 || n != k) return false;
  fired_[kind] = true;
  return true;
}

Status FaultBackend::fault(Kind kind, std::uint64_t n, const char* what) {
  ++counts_.faults;
  std::string m = "fault injection: " + std::string(what) + " call #" + std::to_string(n);
  switch (kind) {
    case kCopyEnqueue:
      return device_error(m + " failed at enqueue (nothing queued)");
    case kCopyAsync:
      return device_error(m + " failed on its stream after it was queued");
    case kAllocate:
      return resource_exhausted(m + " found no memory");
    default:
      return device_error(m + " failed");
  }
}

Status FaultBackend::on_call(Kind kind, std::uint64_t FaultCounts::*counter, const char* what) {
  std::lock_guard lock(mu_);
  const std::uint64_t n = ++(counts_.*counter);
  if (!fires(kind, n)) return Status::Ok();
  return fault(kind, n, what);
}

FaultBackend::CopyFault FaultBackend::on_copy(const char* where) {
  std::lock_guard lock(mu_);
  const std::uint64_t n = ++counts_.copies;
  CopyFault f;
  if (fires(kCopyEnqueue, n)) {
    f.at_enqueue = fault(kCopyEnqueue, n, where);
    return f;
  }
  if (fires(kCopyAsync, n)) f.async = fault(kCopyAsync, n, where);
  f.delay = plan_.copy_delay;
  return f;
}

template <typename Enqueue>
Status FaultBackend::copy_with(const CopyFault& f, Stream& stream, Enqueue&& enqueue) {
  if (!f.at_enqueue.ok()) return f.at_enqueue;
  cpu::CpuStream* cpu = nullptr;
  if (f.delay.count() > 0 || !f.async.ok()) {
    cpu = dynamic_cast<cpu::CpuStream*>(&stream.base());
    if (cpu == nullptr) {
      return unimplemented(
          "fault injection: copy delays and asynchronous copy failures need a CPU backend stream");
    }
  }
  if (f.delay.count() > 0) {
    cpu->enqueue([delay = f.delay] {
      std::this_thread::sleep_for(delay);
      return Status::Ok();
    });
  }
  TIERKV_RETURN_IF_ERROR(enqueue());
  if (!f.async.ok()) cpu->enqueue([error = f.async] { return error; });
  return Status::Ok();
}

// ---- Backend -----------------------------------------------------------------------------------

Result<Buffer> FaultBackend::allocate(MemoryKind kind, std::size_t bytes) {
  TIERKV_RETURN_IF_ERROR(on_call(kAllocate, &FaultCounts::allocations, "allocate"));
  return inner_.allocate(kind, bytes);
}

Result<std::unique_ptr<Stream>> FaultBackend::create_stream() {
  TIERKV_RETURN_IF_ERROR(on_call(kCreateStream, &FaultCounts::stream_creations, "create_stream"));
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<Stream> inner, inner_.create_stream());
  return std::unique_ptr<Stream>(std::make_unique<FaultStream>(*this, std::move(inner)));
}

Result<std::unique_ptr<Event>> FaultBackend::create_event() {
  TIERKV_RETURN_IF_ERROR(on_call(kCreateEvent, &FaultCounts::event_creations, "create_event"));
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<Event> inner, inner_.create_event());
  return std::unique_ptr<Event>(std::make_unique<FaultEvent>(std::move(inner)));
}

Result<double> FaultBackend::elapsed_ms(const Event& start, const Event& end) {
  return inner_.elapsed_ms(start.base(), end.base());
}

Status FaultBackend::fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed,
                                  float lo, float hi, Stream& stream) {
  return inner_.fill_uniform(dst, count, dtype, seed, lo, hi, stream.base());
}

Status FaultBackend::copy_runs(std::span<const CopyRun> runs, CopyPath path, int sm_blocks,
                               Stream& stream) {
  const CopyFault f = on_copy("copy_runs");
  return copy_with(f, stream,
                   [&] { return inner_.copy_runs(runs, path, sm_blocks, stream.base()); });
}

Status FaultBackend::decode_attention(const DecodeAttentionArgs& args, Stream& stream) {
  return inner_.decode_attention(args, stream.base());
}

Status FaultBackend::prefill_attention(const PrefillAttentionArgs& args, Stream& stream) {
  return inner_.prefill_attention(args, stream.base());
}

void FaultBackend::release(void*, std::size_t, MemoryKind) noexcept {}

}  // namespace tierkv::fault

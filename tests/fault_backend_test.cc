// The fault-injecting backend over the CPU backend: each fault fires at exactly the call its plan
// names, persistent faults keep firing, asynchronous copy failures surface through events, waits
// and synchronize, delays delay, and with no plan it is the backend it wraps (a Llama runner over
// it computes the same logits).
#include "backend/fault/fault_backend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_stream.h"
#include "backends.h"
#include "engine/llama.h"
#include "tierkv/page_pool.h"

namespace tierkv {
namespace {

using fault::FaultBackend;
using fault::FaultCounts;
using fault::FaultPlan;

constexpr std::size_t kSlice = 4096;  // bytes per copy
constexpr int kCopies = 6;

std::vector<std::uint8_t> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v)
    b = static_cast<std::uint8_t>(rng() | 1);  // never 0: a zero byte means "not copied"
  return v;
}

class FaultBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = create_backend(BackendKind::kCpu);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    inner_ = std::move(b).value();
    fault_ = std::make_unique<FaultBackend>(*inner_);
    ASSERT_OK_AND_ASSIGN(stream_, fault_->create_stream());
    ASSERT_OK_AND_ASSIGN(src_, fault_->allocate(MemoryKind::kPinnedHost, kCopies * kSlice));
    ASSERT_OK_AND_ASSIGN(dst_, fault_->allocate(MemoryKind::kDevice, kCopies * kSlice));
    const auto bytes = random_bytes(kCopies * kSlice, 11);
    std::memcpy(src_.data(), bytes.data(), bytes.size());
    std::memset(dst_.data(), 0, dst_.size());
    fault_->clear_plan();
  }
  void TearDown() override {
    src_.reset();
    dst_.reset();
    stream_.reset();
    fault_.reset();
    inner_.reset();
  }

  // Copy `i` of slice i from src_ to dst_: even ones by Stream::copy, odd ones by copy_runs.
  Status copy_slice(int i) { return copy_slice_on(*stream_, i); }
  Status copy_slice_on(Stream& s, int i) {
    auto* d = dst_.as<std::uint8_t>() + std::size_t(i) * kSlice;
    const auto* from = src_.as<std::uint8_t>() + std::size_t(i) * kSlice;
    if (i % 2 == 0) return s.copy(d, from, kSlice);
    const CopyRun run{d, from, kSlice};
    return fault_->copy_runs({&run, 1}, CopyPath::kCopyEngine, 1, s);
  }
  bool slice_copied(int i) const {
    return std::memcmp(dst_.as<std::uint8_t>() + std::size_t(i) * kSlice,
                       src_.as<std::uint8_t>() + std::size_t(i) * kSlice, kSlice) == 0;
  }
  bool slice_untouched(int i) const {
    const auto* p = dst_.as<std::uint8_t>() + std::size_t(i) * kSlice;
    for (std::size_t j = 0; j < kSlice; ++j) {
      if (p[j] != 0) return false;
    }
    return true;
  }

  std::unique_ptr<Backend> inner_;
  std::unique_ptr<FaultBackend> fault_;
  std::unique_ptr<Stream> stream_;
  Buffer src_, dst_;
};

TEST_F(FaultBackendTest, WithNoPlanItForwardsAndCounts) {
  for (int i = 0; i < kCopies; ++i)
    ASSERT_OK(copy_slice(i));
  ASSERT_OK(stream_->synchronize());
  for (int i = 0; i < kCopies; ++i)
    EXPECT_TRUE(slice_copied(i)) << i;
  ASSERT_OK_AND_ASSIGN(auto e, fault_->create_event());
  ASSERT_OK(stream_->record(*e));
  ASSERT_OK(stream_->wait(*e));
  ASSERT_OK(e->synchronize());
  const FaultCounts c = fault_->counts();
  EXPECT_EQ(c.copies, std::uint64_t(kCopies));
  EXPECT_EQ(c.records, 1u);
  EXPECT_EQ(c.waits, 1u);
  EXPECT_EQ(c.event_creations, 1u);
  EXPECT_EQ(c.faults, 0u);
  // Decorated objects look through to the CPU backend's.
  EXPECT_NE(dynamic_cast<cpu::CpuStream*>(&stream_->base()), nullptr);
  EXPECT_NE(dynamic_cast<cpu::CpuEvent*>(&e->base()), nullptr);
  EXPECT_EQ(fault_->kind(), BackendKind::kCpu);
}

TEST_F(FaultBackendTest, KernelsAndTimingRunThroughDecoratedStreamsAndEvents) {
  const std::size_t n = 10'001;
  ASSERT_OK_AND_ASSIGN(Buffer out, fault_->allocate(MemoryKind::kDevice, n * sizeof(float)));
  ASSERT_OK_AND_ASSIGN(auto start, fault_->create_event());
  ASSERT_OK_AND_ASSIGN(auto end, fault_->create_event());
  ASSERT_OK(stream_->record(*start));
  ASSERT_OK(fault_->fill_uniform(out.data(), n, DType::kF32, 5, -1.0f, 2.0f, *stream_));
  ASSERT_OK(stream_->record(*end));
  ASSERT_OK(end->synchronize());
  for (std::size_t i = 0; i < n; i += 997)
    EXPECT_EQ(out.as<float>()[i], uniform_at(5, i, -1.0f, 2.0f)) << i;
  ASSERT_OK_AND_ASSIGN(const double ms, fault_->elapsed_ms(*start, *end));
  EXPECT_GE(ms, 0.0);
}

TEST_F(FaultBackendTest, CopyFailsAtEnqueueExactlyAtK) {
  for (int k = 1; k <= kCopies; ++k) {
    SCOPED_TRACE("k = " + std::to_string(k));
    std::memset(dst_.data(), 0, dst_.size());
    ASSERT_OK(fault_->set_plan({.fail_copy_at_enqueue = std::uint64_t(k)}));
    for (int i = 0; i < kCopies; ++i) {
      const Status s = copy_slice(i);
      if (i + 1 == k) {
        EXPECT_EQ(s.code(), StatusCode::kDeviceError) << s.to_string();
      } else {
        EXPECT_OK(s);
      }
    }
    ASSERT_OK(stream_->synchronize());  // nothing failing was queued
    for (int i = 0; i < kCopies; ++i) {
      if (i + 1 == k) {
        EXPECT_TRUE(slice_untouched(i)) << "a copy refused at enqueue wrote bytes";
      } else {
        EXPECT_TRUE(slice_copied(i)) << i;
      }
    }
    const FaultCounts c = fault_->counts();
    EXPECT_EQ(c.copies, std::uint64_t(kCopies));
    EXPECT_EQ(c.faults, 1u);
  }
}

TEST_F(FaultBackendTest, AsyncCopyFailureSurfacesThroughEventsAndSynchronize) {
  for (int k = 1; k <= kCopies; ++k) {
    SCOPED_TRACE("k = " + std::to_string(k));
    ASSERT_OK(fault_->set_plan({.fail_copy_async = std::uint64_t(k)}));
    std::vector<std::unique_ptr<Event>> after(kCopies);
    for (int i = 0; i < kCopies; ++i) {
      ASSERT_OK(copy_slice(i));  // queued: the failure comes later
      ASSERT_OK_AND_ASSIGN(after[i], fault_->create_event());
      ASSERT_OK(stream_->record(*after[i]));
    }
    for (int i = 0; i < kCopies; ++i) {
      const Status s = after[i]->synchronize();
      if (i + 1 < k) {
        EXPECT_OK(s);
        ASSERT_OK_AND_ASSIGN(const bool done, after[i]->done());
        EXPECT_TRUE(done);
      } else {
        EXPECT_EQ(s.code(), StatusCode::kDeviceError) << "event after copy " << i;
        EXPECT_EQ(after[i]->done().status().code(), StatusCode::kDeviceError);
      }
    }
    const Status sync = stream_->synchronize();
    EXPECT_EQ(sync.code(), StatusCode::kDeviceError) << sync.to_string();
    EXPECT_NE(sync.message().find("#" + std::to_string(k)), std::string::npos) << sync.message();
    EXPECT_EQ(fault_->counts().faults, 1u);
    // The stream is clean again after the synchronize that reported the failure.
    ASSERT_OK(copy_slice(0));
    ASSERT_OK(stream_->record(*after[0]));
    EXPECT_OK(after[0]->synchronize());
    EXPECT_OK(stream_->synchronize());
  }
}

TEST_F(FaultBackendTest, AsyncCopyFailureReachesAStreamThatWaits) {
  ASSERT_OK_AND_ASSIGN(auto consumer, fault_->create_stream());
  ASSERT_OK_AND_ASSIGN(auto produced, fault_->create_event());
  ASSERT_OK(fault_->set_plan({.fail_copy_async = 1, .copy_delay = std::chrono::milliseconds(20)}));
  ASSERT_OK(copy_slice(0));
  ASSERT_OK(stream_->record(*produced));
  ASSERT_OK(consumer->wait(*produced));
  ASSERT_OK(copy_slice_on(*consumer, 1));  // ordered after the failed copy, and runs anyway
  const Status s = consumer->synchronize();
  EXPECT_EQ(s.code(), StatusCode::kDeviceError) << s.to_string();
  EXPECT_EQ(stream_->synchronize().code(), StatusCode::kDeviceError);
  EXPECT_OK(consumer->synchronize());
}

// One table for the kinds whose fault is a refused call.
struct CallKind {
  const char* name;
  std::uint64_t FaultPlan::*plan_field;
  std::uint64_t FaultCounts::*counter;
  StatusCode code;
};

TEST_F(FaultBackendTest, EveryOtherKindFiresExactlyAtK) {
  ASSERT_OK_AND_ASSIGN(auto event, fault_->create_event());
  ASSERT_OK(stream_->record(*event));
  const std::vector<std::pair<CallKind, std::function<Status()>>> kinds = {
      {{"record", &FaultPlan::fail_record, &FaultCounts::records, StatusCode::kDeviceError},
       [&] { return stream_->record(*event); }},
      {{"wait", &FaultPlan::fail_wait, &FaultCounts::waits, StatusCode::kDeviceError},
       [&] { return stream_->wait(*event); }},
      {{"allocate", &FaultPlan::fail_allocate, &FaultCounts::allocations,
        StatusCode::kResourceExhausted},
       [&] { return fault_->allocate(MemoryKind::kPinnedHost, 1000).status(); }},
      {{"create_stream", &FaultPlan::fail_create_stream, &FaultCounts::stream_creations,
        StatusCode::kDeviceError},
       [&] { return fault_->create_stream().status(); }},
      {{"create_event", &FaultPlan::fail_create_event, &FaultCounts::event_creations,
        StatusCode::kDeviceError},
       [&] { return fault_->create_event().status(); }},
  };
  constexpr int kCalls = 4;
  for (const auto& [kind, call] : kinds) {
    for (int k = 1; k <= kCalls; ++k) {
      SCOPED_TRACE(std::string(kind.name) + ", k = " + std::to_string(k));
      FaultPlan plan;
      plan.*kind.plan_field = std::uint64_t(k);
      ASSERT_OK(fault_->set_plan(plan));
      for (int i = 1; i <= kCalls; ++i) {
        const Status s = call();
        if (i == k) {
          EXPECT_EQ(s.code(), kind.code) << s.to_string();
          EXPECT_NE(s.message().find(kind.name), std::string::npos) << s.message();
        } else {
          EXPECT_OK(s);
        }
      }
      const FaultCounts c = fault_->counts();
      EXPECT_EQ(c.*kind.counter, std::uint64_t(kCalls));
      EXPECT_EQ(c.faults, 1u);
    }
  }
  EXPECT_OK(stream_->synchronize());  // refused records and waits queued nothing
}

TEST_F(FaultBackendTest, PersistentFaultsKeepFiringUntilThePlanChanges) {
  ASSERT_OK_AND_ASSIGN(auto event, fault_->create_event());
  ASSERT_OK(fault_->set_plan({.fail_record = 2, .persistent = true}));
  EXPECT_OK(stream_->record(*event));
  for (int i = 2; i <= 5; ++i)
    EXPECT_EQ(stream_->record(*event).code(), StatusCode::kDeviceError) << i;
  EXPECT_EQ(fault_->counts().faults, 4u);

  ASSERT_OK(fault_->set_plan({.fail_copy_at_enqueue = 3, .persistent = true}));
  for (int i = 0; i < kCopies; ++i) {
    const Status s = copy_slice(i);
    EXPECT_EQ(s.ok(), i < 2) << i << ": " << s.to_string();
  }
  EXPECT_OK(stream_->record(*event));  // other kinds are untouched
  EXPECT_EQ(fault_->counts().faults, std::uint64_t(kCopies - 2));

  ASSERT_OK(fault_->set_plan({.fail_copy_async = 2, .persistent = true}));
  for (int i = 0; i < kCopies; ++i)
    ASSERT_OK(copy_slice(i));
  EXPECT_EQ(stream_->synchronize().code(), StatusCode::kDeviceError);
  ASSERT_OK(copy_slice(0));  // still broken after the synchronize
  EXPECT_EQ(stream_->synchronize().code(), StatusCode::kDeviceError);

  // Without `persistent`, only the k-th call fails.
  ASSERT_OK(fault_->set_plan({.fail_record = 2}));
  EXPECT_OK(stream_->record(*event));
  EXPECT_FALSE(stream_->record(*event).ok());
  for (int i = 3; i <= 5; ++i)
    EXPECT_OK(stream_->record(*event));
  fault_->clear_plan();
  for (int i = 0; i < kCopies; ++i)
    EXPECT_OK(copy_slice(i));
  EXPECT_OK(stream_->synchronize());
}

TEST_F(FaultBackendTest, DelayMakesCopiesLandLate) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kDelay = std::chrono::milliseconds(60);
  ASSERT_OK_AND_ASSIGN(auto landed, fault_->create_event());
  ASSERT_OK(fault_->set_plan({.copy_delay = kDelay}));
  const auto t0 = Clock::now();
  ASSERT_OK(copy_slice(0));
  ASSERT_OK(copy_slice(1));
  ASSERT_OK(stream_->record(*landed));
  ASSERT_OK_AND_ASSIGN(const bool early, landed->done());
  EXPECT_FALSE(early) << "the delayed copies completed at once";
  ASSERT_OK(landed->synchronize());
  EXPECT_GE(Clock::now() - t0, 2 * kDelay) << "each copy starts `copy_delay` later";
  EXPECT_TRUE(slice_copied(0));
  EXPECT_TRUE(slice_copied(1));
  EXPECT_EQ(fault_->counts().faults, 0u);
}

// The intended use: run an operation cleanly, count its calls, then break each one in turn. The
// operation uploads on one stream and downloads on another after an event.
TEST_F(FaultBackendTest, SweepingEachCopyOfAnOperationFailsItEveryTime) {
  ASSERT_OK_AND_ASSIGN(auto other, fault_->create_stream());
  ASSERT_OK_AND_ASSIGN(auto uploaded, fault_->create_event());
  ASSERT_OK_AND_ASSIGN(Buffer back, fault_->allocate(MemoryKind::kPinnedHost, kSlice));
  auto operation = [&]() -> Status {
    TIERKV_RETURN_IF_ERROR(copy_slice(1));  // copy_runs on stream_
    TIERKV_RETURN_IF_ERROR(stream_->record(*uploaded));
    TIERKV_RETURN_IF_ERROR(other->wait(*uploaded));
    TIERKV_RETURN_IF_ERROR(other->copy(back.data(), dst_.as<std::uint8_t>() + kSlice, kSlice));
    const Status a = stream_->synchronize();
    const Status b = other->synchronize();
    TIERKV_RETURN_IF_ERROR(b);
    return a;
  };
  ASSERT_OK(operation());
  const FaultCounts clean = fault_->counts();
  ASSERT_EQ(clean.copies, 2u);
  ASSERT_EQ(clean.records, 1u);
  ASSERT_EQ(clean.waits, 1u);
  for (bool async : {false, true}) {
    for (std::uint64_t k = 1; k <= clean.copies; ++k) {
      SCOPED_TRACE(std::string(async ? "async" : "at enqueue") + ", k = " + std::to_string(k));
      FaultPlan plan;
      (async ? plan.fail_copy_async : plan.fail_copy_at_enqueue) = k;
      ASSERT_OK(fault_->set_plan(plan));
      EXPECT_EQ(operation().code(), StatusCode::kDeviceError);
      ASSERT_OK(stream_->synchronize());  // whatever was left, a later round starts clean
      ASSERT_OK(other->synchronize());
    }
  }
  fault_->clear_plan();
  EXPECT_OK(operation());
}

TEST_F(FaultBackendTest, ConcurrentCallersAreCountedOnceEach) {
  constexpr int kThreads = 4, kPerThread = 60;
  ASSERT_OK(fault_->set_plan({.fail_copy_at_enqueue = 100}));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto s = fault_->create_stream();
      auto mine = fault_->allocate(MemoryKind::kDevice, kSlice);
      if (!s.ok() || !mine.ok()) return;
      for (int i = 0; i < kPerThread; ++i) {
        const CopyRun run{mine->data(), src_.data(), kSlice};
        const Status st = i % 2 == 0 ? (*s)->copy(run.dst, run.src, run.bytes)
                                     : fault_->copy_runs({&run, 1}, CopyPath::kSmKernel, 2, **s);
        if (!st.ok()) failures.fetch_add(1);
        (void)fault_->counts();  // readers race with callers
      }
      if (!(*s)->synchronize().ok()) failures.fetch_add(100);
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(failures.load(), 1);
  const FaultCounts c = fault_->counts();
  EXPECT_EQ(c.copies, std::uint64_t(kThreads * kPerThread));
  EXPECT_EQ(c.stream_creations, std::uint64_t(kThreads));
  EXPECT_EQ(c.faults, 1u);
}

// A backend of another kind, with no host tasks on its streams: plans that need them are refused,
// enqueue-time faults still apply.
class ForeignBackend final : public Backend {
 public:
  ForeignBackend() { info_.backend = BackendKind::kCuda; }
  const DeviceInfo& info() const override { return info_; }
  Result<std::size_t> free_memory() override { return unimplemented("foreign"); }
  Result<Buffer> allocate(MemoryKind kind, std::size_t bytes) override {
    return wrap(new std::uint8_t[bytes], bytes, kind);
  }
  Result<std::unique_ptr<Stream>> create_stream() override { return unimplemented("foreign"); }
  Result<std::unique_ptr<Event>> create_event() override { return unimplemented("foreign"); }
  Result<double> elapsed_ms(const Event&, const Event&) override {
    return unimplemented("foreign");
  }
  Status fill_uniform(void*, std::size_t, DType, std::uint64_t, float, float, Stream&) override {
    return unimplemented("foreign");
  }
  Status copy_runs(std::span<const CopyRun>, CopyPath, int, Stream&) override {
    return unimplemented("foreign");
  }
  Status decode_attention(const DecodeAttentionArgs&, Stream&) override {
    return unimplemented("foreign");
  }
  Status prefill_attention(const PrefillAttentionArgs&, Stream&) override {
    return unimplemented("foreign");
  }

 protected:
  void release(void* data, std::size_t, MemoryKind) noexcept override {
    delete[] static_cast<std::uint8_t*>(data);
  }

 private:
  DeviceInfo info_;
};

TEST(FaultBackendOverAnotherBackend, RefusesHostTaskFaultsAndKeepsEnqueueFaults) {
  ForeignBackend foreign;
  FaultBackend fault(foreign);
  EXPECT_EQ(fault.kind(), BackendKind::kCuda);
  EXPECT_EQ(fault.set_plan({.fail_copy_async = 1}).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(fault.set_plan({.copy_delay = std::chrono::milliseconds(1)}).code(),
            StatusCode::kUnimplemented);
  ASSERT_OK(fault.set_plan({.fail_allocate = 2}));
  EXPECT_OK(fault.allocate(MemoryKind::kDevice, 64).status());
  EXPECT_EQ(fault.allocate(MemoryKind::kDevice, 64).status().code(),
            StatusCode::kResourceExhausted);
  // A refused plan leaves the one before in place.
  EXPECT_EQ(fault.set_plan({.fail_copy_async = 1}).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(fault.plan().fail_allocate, 2u);
}

// ---- a Llama runner over the fault backend ----------------------------------------------------

// The last token's logits of one prefill of `prompt` with the tiny model and seed-7 weights.
Status prefill_logits(Backend& backend, std::span<const std::int32_t> prompt,
                      std::vector<float>& logits) {
  const ModelSpec model = *model_preset("tiny");
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<Stream> stream, backend.create_stream());
  TIERKV_ASSIGN_OR_RETURN(LlamaWeights w, random_llama_weights(backend, *stream, model, 7));
  PagePoolOptions po;
  po.model = w.spec;  // the spec the weights carry, identity included
  po.num_pages = 64;
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<PagePool> pool, PagePool::create(backend, po));
  RunnerOptions ro;
  ro.max_step_tokens = 128;
  ro.max_batch = 4;
  ro.max_pages_per_seq = 32;
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<LlamaRunner> runner,
                          LlamaRunner::create(backend, std::move(w), pool->view(), ro));
  Sequence seq;
  const auto pages = std::int32_t((prompt.size() + model.page_tokens - 1) / model.page_tokens);
  TIERKV_ASSIGN_OR_RETURN(seq.pages, pool->allocate(pages));
  TIERKV_RETURN_IF_ERROR(runner->prefill(seq, prompt, 32, *stream, &logits));
  return stream->synchronize();
}

TEST(FaultBackendRunner, PrefillMatchesThePlainCpuBackend) {
  std::mt19937 rng(std::random_device{}());
  const ModelSpec model = *model_preset("tiny");
  std::vector<std::int32_t> prompt(70);
  for (auto& t : prompt)
    t = std::int32_t(rng() % std::uint32_t(model.vocab));

  ASSERT_OK_AND_ASSIGN(auto plain, create_backend(BackendKind::kCpu));
  std::vector<float> expected;
  ASSERT_OK(prefill_logits(*plain, prompt, expected));

  ASSERT_OK_AND_ASSIGN(auto inner, create_backend(BackendKind::kCpu));
  FaultBackend fault(*inner);
  std::vector<float> got;
  ASSERT_OK(prefill_logits(fault, prompt, got));
  ASSERT_EQ(got.size(), std::size_t(model.vocab));
  for (float v : got)
    ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(got, expected);
  const FaultCounts c = fault.counts();
  EXPECT_GT(c.allocations, 0u) << "the runner did not go through the fault backend";
  EXPECT_GT(c.stream_creations, 0u);
  EXPECT_EQ(c.faults, 0u);
}

}  // namespace
}  // namespace tierkv

// The backend seam, exercised identically on every backend; then the CPU backend's async errors.
#include "tierkv/backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_stream.h"
#include "backends.h"

namespace tierkv {
namespace {

using test::BackendTest;

std::vector<std::uint8_t> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v)
    b = static_cast<std::uint8_t>(rng());
  return v;
}

TEST_P(BackendTest, ReportsDevice) {
  const DeviceInfo& info = backend().info();
  EXPECT_EQ(info.backend, GetParam());
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.compute_units, 0);
  EXPECT_GT(info.total_memory, 0u);
  EXPECT_GT(info.l2_bytes, 0u);
  ASSERT_OK_AND_ASSIGN(const std::size_t free, backend().free_memory());
  EXPECT_GT(free, 0u);
}

TEST_P(BackendTest, CopiesRoundTripThroughEveryMemoryKind) {
  const std::size_t n = (1 << 20) + 13;  // not a multiple of anything convenient
  const auto src = random_bytes(n, 1);
  for (MemoryKind staging : {MemoryKind::kPinnedHost, MemoryKind::kPageableHost}) {
    ASSERT_OK_AND_ASSIGN(Buffer host, backend().allocate(staging, n));
    ASSERT_OK_AND_ASSIGN(Buffer dev_a, backend().allocate(MemoryKind::kDevice, n));
    ASSERT_OK_AND_ASSIGN(Buffer dev_b, backend().allocate(MemoryKind::kDevice, n));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(dev_a.data()) % 256, 0u);
    std::memcpy(host.data(), src.data(), n);
    ASSERT_OK(stream().copy(dev_a.data(), host.data(), n));   // host -> device
    ASSERT_OK(stream().copy(dev_b.data(), dev_a.data(), n));  // device -> device
    ASSERT_OK(stream().synchronize());
    std::memset(host.data(), 0, n);
    ASSERT_OK(stream().copy(host.data(), dev_b.data(), n));  // device -> host
    ASSERT_OK(stream().synchronize());
    EXPECT_EQ(std::memcmp(host.data(), src.data(), n), 0) << memory_kind_name(staging);
  }
}

TEST_P(BackendTest, FillSetsBytes) {
  ASSERT_OK_AND_ASSIGN(Buffer dev, backend().allocate(MemoryKind::kDevice, 4096));
  std::vector<std::uint8_t> out(4096, 0);
  ASSERT_OK(stream().fill(dev.data(), 0xab, 4096));
  ASSERT_OK(stream().copy(out.data(), dev.data(), 4096));
  ASSERT_OK(stream().synchronize());
  for (std::uint8_t b : out)
    ASSERT_EQ(b, 0xab);
}

TEST_P(BackendTest, FillUniformIsTheSameFunctionEverywhere) {
  const std::size_t n = 100'003;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    ASSERT_OK_AND_ASSIGN(Buffer dev, backend().allocate(MemoryKind::kDevice, n * dtype_size(t)));
    std::vector<std::uint8_t> out(n * dtype_size(t));
    ASSERT_OK(backend().fill_uniform(dev.data(), n, t, 99, -3.0f, 5.0f, stream()));
    ASSERT_OK(stream().copy(out.data(), dev.data(), out.size()));
    ASSERT_OK(stream().synchronize());
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float got = load_as_float(out.data(), i, t);
      std::uint8_t expected_bits[4];
      store_from_float(expected_bits, 0, t, uniform_at(99, i, -3.0f, 5.0f));
      ASSERT_EQ(got, load_as_float(expected_bits, 0, t)) << "element " << i << " " << dtype_name(t);
      ASSERT_GE(got, -3.0f);
      ASSERT_LE(got, 5.0f);
      sum += got;
    }
    EXPECT_NEAR(sum / n, 1.0, 0.05) << "mean of U[-3, 5)";
  }
}

TEST_P(BackendTest, EventsOrderWorkAcrossStreams) {
  // Stream A produces a buffer; stream B waits on A's event and then consumes it. Repeated, so a
  // missing dependency shows up as a stale value.
  ASSERT_OK_AND_ASSIGN(auto other, backend().create_stream());
  ASSERT_OK_AND_ASSIGN(auto produced, backend().create_event());
  const std::size_t n = 8 << 20;
  ASSERT_OK_AND_ASSIGN(Buffer a, backend().allocate(MemoryKind::kDevice, n));
  ASSERT_OK_AND_ASSIGN(Buffer b, backend().allocate(MemoryKind::kDevice, n));
  ASSERT_OK_AND_ASSIGN(Buffer host, backend().allocate(MemoryKind::kPinnedHost, n));
  for (std::uint8_t round = 1; round <= 5; ++round) {
    ASSERT_OK(stream().fill(a.data(), round, n));
    ASSERT_OK(stream().record(*produced));
    ASSERT_OK(other->wait(*produced));
    ASSERT_OK(other->copy(b.data(), a.data(), n));
    ASSERT_OK(other->copy(host.data(), b.data(), n));
    ASSERT_OK(other->synchronize());
    const auto* p = host.as<std::uint8_t>();
    ASSERT_EQ(p[0], round);
    ASSERT_EQ(p[n - 1], round);
  }
  ASSERT_OK_AND_ASSIGN(const bool done, produced->done());
  EXPECT_TRUE(done);
}

TEST_P(BackendTest, ElapsedTimeCoversTheWork) {
  ASSERT_OK_AND_ASSIGN(auto start, backend().create_event());
  ASSERT_OK_AND_ASSIGN(auto end, backend().create_event());
  const std::size_t n = 64 << 20;
  ASSERT_OK_AND_ASSIGN(Buffer a, backend().allocate(MemoryKind::kDevice, n));
  ASSERT_OK_AND_ASSIGN(Buffer b, backend().allocate(MemoryKind::kDevice, n));
  ASSERT_OK(stream().record(*start));
  for (int i = 0; i < 4; ++i)
    ASSERT_OK(stream().copy(b.data(), a.data(), n));
  ASSERT_OK(stream().record(*end));
  ASSERT_OK(end->synchronize());
  ASSERT_OK_AND_ASSIGN(const double ms, backend().elapsed_ms(*start, *end));
  EXPECT_GT(ms, 0.0);
  EXPECT_LT(ms, 60'000.0);
}

TEST_P(BackendTest, GraphReplaysCapturedWork) {
  const std::size_t n = 1 << 16;
  ASSERT_OK_AND_ASSIGN(Buffer src, backend().allocate(MemoryKind::kDevice, n));
  ASSERT_OK_AND_ASSIGN(Buffer dst, backend().allocate(MemoryKind::kDevice, n));
  ASSERT_OK_AND_ASSIGN(Buffer host, backend().allocate(MemoryKind::kPinnedHost, n));
  ASSERT_OK(stream().begin_capture());
  ASSERT_OK(stream().copy(dst.data(), src.data(), n));
  ASSERT_OK_AND_ASSIGN(auto graph, stream().end_capture());
  for (std::uint8_t v : {7, 9}) {
    ASSERT_OK(stream().fill(src.data(), v, n));  // outside the graph
    ASSERT_OK(graph->launch(stream()));
    ASSERT_OK(stream().copy(host.data(), dst.data(), n));
    ASSERT_OK(stream().synchronize());
    EXPECT_EQ(host.as<std::uint8_t>()[n / 2], v);
  }
}

TEST_P(BackendTest, BadRequestsAreErrorsNotCrashes) {
  EXPECT_EQ(backend().allocate(MemoryKind::kDevice, 0).status().code(),
            StatusCode::kInvalidArgument);
  const auto huge = backend().allocate(MemoryKind::kDevice, std::size_t{1} << 52);  // 4 PiB
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kResourceExhausted) << huge.status().to_string();
  EXPECT_EQ(stream().copy(nullptr, this, 16).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(stream().end_capture().status().code(), StatusCode::kFailedPrecondition);
  // The backend still works after the failures.
  ASSERT_OK_AND_ASSIGN(Buffer ok, backend().allocate(MemoryKind::kDevice, 1024));
  ASSERT_OK(stream().fill(ok.data(), 1, 1024));
  ASSERT_OK(stream().synchronize());
}

TEST_P(BackendTest, CopyRunsGatherAndScatterOnBothPaths) {
  // 64 pages of 4 KiB scattered through a device pool, to and from one contiguous pinned slot.
  constexpr std::size_t kPage = 4096, kPages = 64;
  ASSERT_OK_AND_ASSIGN(Buffer pool, backend().allocate(MemoryKind::kDevice, 4 * kPages * kPage));
  ASSERT_OK_AND_ASSIGN(Buffer slot, backend().allocate(MemoryKind::kPinnedHost, kPages * kPage));
  ASSERT_OK_AND_ASSIGN(Buffer back, backend().allocate(MemoryKind::kPinnedHost, kPages * kPage));
  std::vector<std::size_t> where(4 * kPages);
  std::iota(where.begin(), where.end(), 0);
  std::shuffle(where.begin(), where.end(), std::mt19937(7));
  for (CopyPath path : {CopyPath::kCopyEngine, CopyPath::kSmKernel}) {
    const auto src = random_bytes(kPages * kPage, static_cast<unsigned>(path) + 3);
    std::memcpy(slot.data(), src.data(), src.size());
    std::vector<CopyRun> load, save;
    for (std::size_t p = 0; p < kPages; ++p) {
      void* dev = pool.as<std::uint8_t>() + where[p] * kPage;
      load.push_back({dev, slot.as<std::uint8_t>() + p * kPage, kPage});
      save.push_back({back.as<std::uint8_t>() + p * kPage, dev, kPage});
    }
    ASSERT_OK(backend().copy_runs(load, path, 8, stream()));
    ASSERT_OK(backend().copy_runs(save, path, 8, stream()));
    ASSERT_OK(stream().synchronize());
    EXPECT_EQ(std::memcmp(back.data(), src.data(), src.size()), 0) << copy_path_name(path);
  }
}

TEST_P(BackendTest, CopyRunsRefusesMisalignedRunsWithoutCopying) {
  ASSERT_OK_AND_ASSIGN(Buffer dev, backend().allocate(MemoryKind::kDevice, 1 << 16));
  ASSERT_OK_AND_ASSIGN(Buffer host, backend().allocate(MemoryKind::kPinnedHost, 1 << 16));
  std::memset(host.data(), 0x11, 1 << 16);
  ASSERT_OK(stream().fill(dev.data(), 0, 1 << 16));
  std::vector<CopyRun> runs(1200, CopyRun{dev.data(), host.data(), 256});
  runs.back() = {dev.as<std::uint8_t>() + 4, host.data(), 256};  // the last one is misaligned
  EXPECT_EQ(backend().copy_runs(runs, CopyPath::kSmKernel, 4, stream()).code(),
            StatusCode::kInvalidArgument);
  std::vector<std::uint8_t> out(256, 0xee);
  ASSERT_OK(stream().copy(out.data(), dev.data(), out.size()));
  ASSERT_OK(stream().synchronize());
  EXPECT_EQ(out[0], 0) << "a refused call copied something";
}

TEST_P(BackendTest, BuffersMoveAndFree) {
  ASSERT_OK_AND_ASSIGN(Buffer a, backend().allocate(MemoryKind::kPinnedHost, 4096));
  void* p = a.data();
  Buffer b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.kind(), MemoryKind::kPinnedHost);
  b.reset();
  EXPECT_TRUE(b.empty());
}

TIERKV_INSTANTIATE_BACKENDS(BackendTest);

// ---- asynchronous errors on the CPU backend, which behaves as a device does -----------------

class CpuStreamErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = create_backend(BackendKind::kCpu);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    backend_ = std::move(b).value();
    for (auto* s : {&a_, &b_}) {
      auto made = backend_->create_stream();
      ASSERT_TRUE(made.ok()) << made.status().to_string();
      *s = std::move(made).value();
    }
  }
  // Queues a task on `s` that fails with DeviceError `message` after `delay`.
  static void fail_on(Stream& s, std::string message,
                      std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
    auto* cpu = dynamic_cast<cpu::CpuStream*>(&s.base());
    ASSERT_NE(cpu, nullptr);
    cpu->enqueue([message, delay] {
      std::this_thread::sleep_for(delay);
      return device_error(message);
    });
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Stream> a_, b_;
};

TEST_F(CpuStreamErrors, AFailedTaskReachesEventsRecordedAfterIt) {
  ASSERT_OK_AND_ASSIGN(auto before, backend_->create_event());
  ASSERT_OK_AND_ASSIGN(auto after, backend_->create_event());
  ASSERT_OK_AND_ASSIGN(Buffer buf, backend_->allocate(MemoryKind::kDevice, 4096));
  ASSERT_OK(a_->fill(buf.data(), 1, 4096));
  ASSERT_OK(a_->record(*before));
  fail_on(*a_, "task 2 broke", std::chrono::milliseconds(20));
  ASSERT_OK(a_->fill(buf.data(), 2, 4096));  // later work still runs
  ASSERT_OK(a_->record(*after));
  EXPECT_OK(before->synchronize());
  const Status s = after->synchronize();
  EXPECT_EQ(s.code(), StatusCode::kDeviceError) << s.to_string();
  EXPECT_NE(s.message().find("task 2 broke"), std::string::npos) << s.to_string();
  EXPECT_EQ(after->done().status().code(), StatusCode::kDeviceError);
  ASSERT_OK_AND_ASSIGN(const bool clean_done, before->done());
  EXPECT_TRUE(clean_done);
  EXPECT_EQ(backend_->elapsed_ms(*before, *after).status().code(), StatusCode::kDeviceError);
  EXPECT_EQ(a_->synchronize().code(), StatusCode::kDeviceError);
  EXPECT_EQ(buf.as<std::uint8_t>()[4095], 2);
}

TEST_F(CpuStreamErrors, AStreamWaitingOnAFailedEventFails) {
  ASSERT_OK_AND_ASSIGN(auto failed, backend_->create_event());
  ASSERT_OK_AND_ASSIGN(auto downstream, backend_->create_event());
  fail_on(*a_, "producer broke", std::chrono::milliseconds(20));
  ASSERT_OK(a_->record(*failed));
  ASSERT_OK(b_->wait(*failed));
  ASSERT_OK(b_->record(*downstream));
  const Status d = downstream->synchronize();
  EXPECT_EQ(d.code(), StatusCode::kDeviceError) << d.to_string();
  EXPECT_NE(d.message().find("producer broke"), std::string::npos) << d.to_string();
  const Status w = b_->synchronize();
  EXPECT_EQ(w.code(), StatusCode::kDeviceError) << w.to_string();
  EXPECT_NE(w.message().find("producer broke"), std::string::npos) << w.to_string();
  EXPECT_EQ(a_->synchronize().code(), StatusCode::kDeviceError);
}

TEST_F(CpuStreamErrors, SynchronizeReportsTheFirstErrorAndClearsIt) {
  ASSERT_OK_AND_ASSIGN(auto e, backend_->create_event());
  fail_on(*a_, "first");
  fail_on(*a_, "second");
  const Status s = a_->synchronize();
  EXPECT_EQ(s.code(), StatusCode::kDeviceError);
  EXPECT_EQ(s.message(), "first");
  // Work after the synchronize is clean: the stream, its events and streams waiting on them.
  ASSERT_OK(a_->record(*e));
  EXPECT_OK(e->synchronize());
  ASSERT_OK_AND_ASSIGN(const bool done, e->done());
  EXPECT_TRUE(done);
  ASSERT_OK(b_->wait(*e));
  EXPECT_OK(b_->synchronize());
  EXPECT_OK(a_->synchronize());
  // An event re-recorded after a failed record reports the new, clean state.
  fail_on(*a_, "third");
  ASSERT_OK(a_->record(*e));
  EXPECT_EQ(e->synchronize().code(), StatusCode::kDeviceError);
  EXPECT_EQ(a_->synchronize().code(), StatusCode::kDeviceError);
  ASSERT_OK(a_->record(*e));
  EXPECT_OK(e->synchronize());
}

TEST(BackendRegistry, ParsesNames) {
  EXPECT_EQ(*parse_backend_kind("cpu"), BackendKind::kCpu);
  EXPECT_EQ(*parse_backend_kind("cuda"), BackendKind::kCuda);
  EXPECT_EQ(parse_backend_kind("tpu").status().code(), StatusCode::kInvalidArgument);
}

TEST(BackendRegistry, CudaWithoutDeviceIsUnavailable) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  const auto b = create_backend(BackendKind::kCuda);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.status().code() == StatusCode::kUnavailable ||
              b.status().code() == StatusCode::kUnimplemented)
      << b.status().to_string();
}

}  // namespace
}  // namespace tierkv

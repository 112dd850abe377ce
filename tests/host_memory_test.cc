// The host tier's budget checks (the machine's available memory, the container's limit, read
// from files a test can write) and its background pinning (a large slab pinned in pieces while the
// tier is already in use).
#include "tiers/host/host_memory.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "backends.h"
#include "cache_harness.h"
#include "store_checks.h"
#include "tiers/host/host_tier.h"

namespace tierkv {
namespace {

namespace fs = std::filesystem;
constexpr std::uint64_t kMiB = 1 << 20, kGiB = kMiB << 10;

TEST(HostMemory, ParsesMeminfoAndCgroupLimits) {
  const std::string meminfo =
      "MemTotal:       24683772 kB\nMemFree:         1000000 kB\nMemAvailable:    4814252 kB\n";
  HostMemory m = parse_host_memory(meminfo, "max\n", "9223372036854771712\n");
  EXPECT_EQ(m.available, 4814252ull * 1024);
  EXPECT_EQ(m.limit, 0u) << "'max' and v1's no-limit value are no limit";
  m = parse_host_memory(meminfo, "2147483648\n", "");
  EXPECT_EQ(m.limit, 2 * kGiB);
  EXPECT_NE(m.limit_source.find("v2"), std::string::npos);
  m = parse_host_memory("", "2147483648\n", "1073741824\n");
  EXPECT_EQ(m.available, 0u);
  EXPECT_EQ(m.limit, kGiB) << "the smaller limit binds";
  EXPECT_NE(m.limit_source.find("v1"), std::string::npos);
  m = parse_host_memory("MemAvailable: lots kB\n", "12abc", "-5");
  EXPECT_EQ(m.available, 0u) << "malformed text is unknown, never a limit";
  EXPECT_EQ(m.limit, 0u);
  EXPECT_EQ(host_memory_margin(kGiB), 256 * kMiB);
  EXPECT_EQ(host_memory_margin(64 * kGiB), 4 * kGiB);
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

TEST(HostMemory, ReadsTheFilesOfThisProcessesCgroupAndItsAncestors) {
  test::TempDir dir;
  const fs::path root = dir.path();
  write(root / "proc/meminfo", "MemAvailable:    8388608 kB\n");
  write(root / "proc/self/cgroup", "4:cpu,memory:/x\n0::/a/b\n");
  write(root / "sys/fs/cgroup/a/b/memory.max", "max\n");
  write(root / "sys/fs/cgroup/a/memory.max", "3221225472\n");  // the parent's limit binds
  write(root / "sys/fs/cgroup/memory.max", "max\n");
  HostMemory m = read_host_memory(dir.path());
  EXPECT_EQ(m.available, 8 * kGiB);
  EXPECT_EQ(m.limit, 3 * kGiB);
  EXPECT_NE(m.limit_source.find("a/memory.max"), std::string::npos) << m.limit_source;
  write(root / "sys/fs/cgroup/memory/x/memory.limit_in_bytes", "2147483648\n");
  m = read_host_memory(dir.path() + "/");
  EXPECT_EQ(m.limit, 2 * kGiB) << "cgroup v1's memory controller";
  m = read_host_memory(dir.path() + "/nothing-here");
  EXPECT_EQ(m.available, 0u);
  EXPECT_EQ(m.limit, 0u);
  // This machine: some figure is known, and it is plausible.
  m = read_host_memory();
  EXPECT_GT(m.available, 0u);
}

TEST(HostMemory, BudgetsBeyondTheFiguresAreRefusedWithThem) {
  HostMemory m;
  m.available = 8 * kGiB;
  EXPECT_OK(check_host_budget(7 * kGiB, m, "host tier"));
  Status s = check_host_budget(8 * kGiB - 256 * kMiB, m, "host tier");
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("MemAvailable"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("8192 MiB"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("margin of 512 MiB"), std::string::npos) << s.message();
  m.limit = 2 * kGiB;
  m.limit_source = "/sys/fs/cgroup/memory.max";
  s = check_host_budget(2 * kGiB, m, "host tier");
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("/sys/fs/cgroup/memory.max"), std::string::npos) << s.message();
  EXPECT_OK(check_host_budget(kGiB, m, "host tier"));
  EXPECT_OK(check_host_budget(100 * kGiB, HostMemory{}, "host tier"));  // nothing known
}

// Forwards to the CPU backend; pinned allocations after the first wait for open(), and the
// fail_at-th one fails.
class GatedBackend final : public Backend {
 public:
  explicit GatedBackend(Backend& inner) : inner_(inner) {}
  void open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  std::atomic<int> fail_at{0};
  std::atomic<int> pinned_calls{0};

  const DeviceInfo& info() const override { return inner_.info(); }
  Result<std::size_t> free_memory() override { return inner_.free_memory(); }
  Result<Buffer> allocate(MemoryKind kind, std::size_t bytes) override {
    if (kind == MemoryKind::kPinnedHost) {
      const int n = ++pinned_calls;
      if (n > 1) {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return open_; });
      }
      if (n == fail_at) return resource_exhausted("injected: no more pinned memory");
    }
    return inner_.allocate(kind, bytes);
  }
  Result<std::unique_ptr<Stream>> create_stream() override { return inner_.create_stream(); }
  Result<std::unique_ptr<Event>> create_event() override { return inner_.create_event(); }
  Result<double> elapsed_ms(const Event& a, const Event& b) override {
    return inner_.elapsed_ms(a, b);
  }
  Status fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed, float lo,
                      float hi, Stream& stream) override {
    return inner_.fill_uniform(dst, count, dtype, seed, lo, hi, stream);
  }
  Status copy_runs(std::span<const CopyRun> runs, CopyPath path, int blocks,
                   Stream& stream) override {
    return inner_.copy_runs(runs, path, blocks, stream);
  }
  Status decode_attention(const DecodeAttentionArgs& a, Stream& s) override {
    return inner_.decode_attention(a, s);
  }
  Status prefill_attention(const PrefillAttentionArgs& a, Stream& s) override {
    return inner_.prefill_attention(a, s);
  }

 protected:
  void release(void*, std::size_t, MemoryKind) noexcept override {}  // buffers are the inner's

 private:
  Backend& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

Key key_of(int i) {
  Key k;
  k.bytes[0] = static_cast<std::uint8_t>(i);
  k.bytes[5] = 0x3c;
  return k;
}

class HostTierPinningTest : public ::testing::Test {
 protected:
  static constexpr std::size_t kChunk = 64 << 10;
  void SetUp() override { ASSERT_OK_AND_ASSIGN(cpu_, create_backend(BackendKind::kCpu)); }
  HostTierOptions options(std::size_t slots, std::size_t slots_per_piece) const {
    HostTierOptions o;
    o.budget_bytes = slots * kChunk;
    o.chunk_bytes = kChunk;
    o.piece_bytes = slots_per_piece * kChunk;
    o.memory = HostMemory{.available = 64 * kGiB};
    return o;
  }
  std::unique_ptr<Backend> cpu_;
};

TEST_F(HostTierPinningTest, RefusesBudgetsTheMachineCannotHold) {
  HostTierOptions o = options(8, 8);
  o.memory = HostMemory{.available = 256 * kMiB + 4 * kChunk};
  auto t = HostTier::create(*cpu_, o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(t.status().message().find("lower the budget"), std::string::npos);
  o.memory = HostMemory{.available = 256 * kMiB + 8 * kChunk};
  EXPECT_TRUE(HostTier::create(*cpu_, o).ok());
  // Through the cache, on this machine: more than it has available.
  test::CacheHarness h(*cpu_, 16);
  CacheOptions co = h.options(1);
  co.transfer.calibrate = false;
  co.host_bytes = std::size_t(read_host_memory().available) + kGiB;
  const auto c = Cache::create(*cpu_, co);
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted) << c.status().to_string();
}

// Pieces after the first are pinned in the background: the tier is usable at once, its slots grow
// as pieces land, and reserve() never hands out a slot whose piece is not pinned.
TEST_F(HostTierPinningTest, SlotsBecomeUsableAsTheirPieceIsPinned) {
  GatedBackend gated(*cpu_);
  ASSERT_OK_AND_ASSIGN(auto tier, HostTier::create(gated, options(8, 2)));
  HostTierStats st = tier->stats();
  EXPECT_EQ(st.slots, 8);
  EXPECT_EQ(st.usable_slots, 2);
  EXPECT_EQ(st.usable_bytes, 2 * kChunk);
  EXPECT_EQ(st.allocated_bytes, 8 * kChunk);
  EXPECT_TRUE(st.pinning);
  std::vector<HostTier::Pin> held;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(HostTier::Pin p, tier->reserve(key_of(i)));
    std::memset(p.data(), i, kChunk);  // the first piece's memory is real
    held.push_back(std::move(p));
  }
  const auto none = tier->reserve(key_of(2));
  EXPECT_EQ(none.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(none.status().message().find("being pinned"), std::string::npos);
  const Status early =
      tier->wait_pinned(std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
  EXPECT_EQ(early.code(), StatusCode::kDeadlineExceeded) << "the gate holds the pinning";
  gated.open();
  EXPECT_OK(tier->wait_pinned());
  st = tier->stats();
  EXPECT_EQ(st.usable_slots, 8);
  EXPECT_EQ(st.usable_bytes, 8 * kChunk);
  EXPECT_FALSE(st.pinning);
  EXPECT_OK(tier->pin_status());
  for (int i = 2; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(HostTier::Pin p, tier->reserve(key_of(i)));
    std::memset(p.data(), i, kChunk);  // every slot is inside its own piece
    tier->commit(std::move(p));
  }
  for (auto& p : held)
    tier->commit(std::move(p));
  for (int i = 0; i < 8; ++i) {
    HostTier::Pin p = tier->pin(key_of(i));
    ASSERT_TRUE(p);
    EXPECT_EQ(p.data()[kChunk - 1], i);
  }
}

TEST_F(HostTierPinningTest, APieceThatCannotBePinnedStopsTheGrowth) {
  GatedBackend gated(*cpu_);
  gated.open();
  gated.fail_at = 3;  // pieces 0 and 1 pin, piece 2 fails
  std::atomic<int> reported{0};
  HostTierOptions o = options(8, 2);
  o.on_pin_error = [&](const Status& s) {
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    ++reported;
  };
  ASSERT_OK_AND_ASSIGN(auto tier, HostTier::create(gated, o));
  EXPECT_EQ(tier->wait_pinned().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(tier->stats().usable_slots, 4);
  EXPECT_EQ(tier->pin_status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(reported.load(), 1);
  std::vector<HostTier::Pin> held;
  for (int i = 0; i < 4; ++i)
    held.push_back(std::move(tier->reserve(key_of(i)).value()));
  const auto none = tier->reserve(key_of(9));
  EXPECT_NE(none.status().message().find("could not be pinned"), std::string::npos);
}

// Through the cache: a budget of three pieces is usable in part at once and whole soon after.
TEST_F(HostTierPinningTest, ACacheGrowsItsHostTierInTheBackground) {
  test::CacheHarness h(*cpu_, 16);
  CacheOptions o = h.options(1);
  o.transfer.calibrate = false;
  o.host_bytes = 600 * kMiB;
  if (read_host_memory().available < 2 * kGiB) GTEST_SKIP() << "not enough memory available";
  ASSERT_OK_AND_ASSIGN(auto cache, Cache::create(*cpu_, o));
  CacheStats st = cache->stats();
  EXPECT_EQ(st.host_allocated_bytes, 600 * kMiB / h.chunk_bytes() * h.chunk_bytes());
  EXPECT_GE(st.host_usable_bytes, 256 * kMiB);
  EXPECT_OK(cache->wait_host_tier(std::chrono::steady_clock::now() + std::chrono::seconds(30)));
  st = cache->stats();
  EXPECT_EQ(st.host_usable_bytes, st.host_allocated_bytes);
  // Without a host tier there is nothing to wait for.
  o.host_bytes = 0;
  ASSERT_OK_AND_ASSIGN(auto bare, Cache::create(*cpu_, o));
  EXPECT_OK(bare->wait_host_tier(std::chrono::steady_clock::now()));
}

// Destroying a tier while it still pins waits for the piece in progress and frees everything.
TEST_F(HostTierPinningTest, DestructionStopsThePinning) {
  GatedBackend gated(*cpu_);
  auto tier = HostTier::create(gated, options(16, 1));
  ASSERT_TRUE(tier.ok());
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gated.open();
  });
  tier->reset();  // blocks until the gated allocation returns, then stops
  opener.join();
  EXPECT_LE(gated.pinned_calls.load(), 3);
}

}  // namespace
}  // namespace tierkv

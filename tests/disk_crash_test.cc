// Crash loop: a child process writes records into a disk store and is killed with SIGKILL at a
// random moment; the parent reopens the directory and verifies every record. Hundreds of rounds:
// zero wrong bytes, no temporary file left after the reopen, and every write the child saw succeed
// is there (a killed process loses nothing the kernel already has).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "backends.h"
#include "store_checks.h"
#include "tierkv/disk_store.h"

namespace tierkv {
namespace {

using test::AlignedBuffer;
using test::fill_payload;
using test::TempDir;
using test::wrong_bytes;

constexpr int kKeys = 48;
constexpr int kRounds = 300;

// Key k always has the same shape; version v of it holds the payload of seed(k, v).
constexpr std::size_t kMaxPayload = 4 * (48 << 10);
RecordId key_id(int k) {
  return test::record_id(std::uint64_t(k), 1 + k % 4, (16 << 10) * (1 + k % 3));
}
constexpr std::uint64_t kReady = ~std::uint64_t(0);  // the child's first message: store open

std::uint64_t seed(int k, std::int64_t v) {
  return std::uint64_t(k) * 1000003 + std::uint64_t(v);
}

// The child: writes versions after the last acknowledged ones, from two threads over disjoint
// keys, and reports each write that returned OK on `ack` as (key << 32 | version). Never returns.
[[noreturn]] void child(const DiskStoreOptions& o, const std::vector<std::int64_t>& acked, int ack,
                        std::uint64_t round) {
  auto s = open_disk_store(o);
  if (!s.ok()) ::_exit(3);
  Store& store = **s;
  if (::write(ack, &kReady, sizeof kReady) != sizeof kReady) ::_exit(5);
  auto writer = [&](int part) {
    std::mt19937_64 rng(round * 2 + part);
    std::vector<std::int64_t> next(kKeys);
    for (int k = 0; k < kKeys; ++k)
      next[k] = acked[k] + 1;
    AlignedBuffer buf(kMaxPayload);
    for (;;) {
      const int k = 2 * int(rng() % (kKeys / 2)) + part;
      const RecordId id = key_id(k);
      const std::span<std::uint8_t> p = buf.span().first(id.payload_bytes());
      fill_payload(seed(k, next[k]), p);
      if (!store.write(id, p).ok()) ::_exit(4);
      const std::uint64_t msg = std::uint64_t(k) << 32 | std::uint64_t(next[k]);
      if (::write(ack, &msg, sizeof msg) != sizeof msg) ::_exit(5);
      ++next[k];
    }
  };
  std::thread t(writer, 1);
  writer(0);
  t.join();
  ::_exit(0);
}

TEST(DiskCrashTest, KillDuringWritesThenReopenAndVerify) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  // acked[k]: the newest version of key k known to be complete (-1: none yet).
  std::vector<std::int64_t> acked(kKeys, -1);
  std::uint64_t verified = 0, wrong = 0, lost = 0, acks = 0, tmp_removed = 0, invalid_removed = 0,
                leftover_tmp = 0, child_errors = 0;
  std::mt19937_64 rng(42);
  const auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds; ++round) {
    DiskStoreOptions o;
    o.directory = dir.path() + "/cache";
    o.sync = round % 2 ? DiskSync::kFile : DiskSync::kNone;
    o.io = round % 3 == 2 ? IoBackend::kThreads : IoBackend::kAuto;
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      child(o, acked, fds[1], std::uint64_t(round));
    }
    ::close(fds[1]);
    // Three rounds in four kill while records are written (after the child has opened the store,
    // however long that took in this build); the fourth may kill during the open's recovery.
    std::uint64_t msg = 0;
    if (round % 4 != 3 && ::read(fds[0], &msg, sizeof msg) == sizeof msg && msg != kReady) {
      ADD_FAILURE() << "the child's first message is not kReady";
    }
    std::this_thread::sleep_for(std::chrono::microseconds(1000 + rng() % 15000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) ++child_errors;
    // Acknowledgements: a write acknowledged is complete; the one after it may be too.
    while (::read(fds[0], &msg, sizeof msg) == sizeof msg) {
      if (msg == kReady) continue;
      const int k = int(msg >> 32);
      acked[k] = std::max(acked[k], std::int64_t(msg & 0xffffffffu));
      ++acks;
    }
    ::close(fds[0]);

    DiskRecovery rec;
    auto s = open_disk_store(o, &rec);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    tmp_removed += rec.removed_temporary;
    invalid_removed += rec.removed_invalid;
    for (const auto& e : std::filesystem::directory_iterator(o.directory))
      leftover_tmp += e.path().extension() == ".tmp";
    AlignedBuffer buf(kMaxPayload);
    for (int k = 0; k < kKeys; ++k) {
      const RecordId id = key_id(k);
      const std::span<std::uint8_t> p = buf.span().first(id.payload_bytes());
      const Status r = (*s)->read(id, p);
      if (!r.ok()) {
        ASSERT_EQ(r.code(), StatusCode::kNotFound) << r.to_string();
        lost += acked[k] >= 0;  // an acknowledged record must survive a process kill
        continue;
      }
      ++verified;
      // The newest acknowledged version, or the one in flight after it.
      const std::uint64_t w0 = acked[k] >= 0 ? wrong_bytes(seed(k, acked[k]), p) : ~0ull;
      const std::uint64_t w1 = wrong_bytes(seed(k, acked[k] + 1), p);
      if (w1 == 0) acked[k] += 1;
      wrong += std::min(w0, w1);
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(leftover_tmp, 0u);
  EXPECT_EQ(child_errors, 0u);
  EXPECT_GT(acks, std::uint64_t(kRounds / 10)) << "the child must get writes done between kills";
  std::printf(
      "reliability: crash loop: %d rounds (SIGKILL 1-16 ms after the open, or during it) in %.1f "
      "s, %llu "
      "acknowledged writes, %llu records verified, %llu wrong bytes, %llu acknowledged "
      "records lost, %llu temporary files removed at reopen (%llu left), %llu invalid "
      "records removed\n",
      kRounds, secs, static_cast<unsigned long long>(acks),
      static_cast<unsigned long long>(verified), static_cast<unsigned long long>(wrong),
      static_cast<unsigned long long>(lost), static_cast<unsigned long long>(tmp_removed),
      static_cast<unsigned long long>(leftover_tmp),
      static_cast<unsigned long long>(invalid_removed));
}

}  // namespace
}  // namespace tierkv

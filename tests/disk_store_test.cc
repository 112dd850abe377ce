// The disk tier: reads and writes through both I/O paths, the LRU budget, the index rebuilt after
// a reopen, two openers of one directory, the store shared across threads, O_DIRECT refused
// (tmpfs), and inspect.
#include "tierkv/disk_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "backends.h"
#include "store_checks.h"
#include "tiers/disk/disk_files.h"
#include "tiers/disk/inspect.h"

namespace tierkv {
namespace {

namespace fs = std::filesystem;
using test::AlignedBuffer;
using test::fill_payload;
using test::record_id;
using test::TempDir;
using test::wrong_bytes;

std::unique_ptr<Store> open_store(const DiskStoreOptions& o, DiskRecovery* rec = nullptr) {
  auto s = open_disk_store(o, rec);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

Status put(Store& s, const RecordId& id, std::uint64_t seed) {
  AlignedBuffer b(id.payload_bytes());
  fill_payload(seed, b.span());
  return s.write(id, b.span());
}

// Reads `id` and returns the wrong bytes against `seed`, or -1 when the read failed.
std::int64_t get(Store& s, const RecordId& id, std::uint64_t seed) {
  AlignedBuffer b(id.payload_bytes());
  if (!s.read(id, b.span()).ok()) return -1;
  return std::int64_t(wrong_bytes(seed, b.span()));
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir))
    v.push_back(e.path().filename().string());
  return v;
}

class DiskStoreTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  DiskStoreOptions options() const {
    DiskStoreOptions o;
    o.directory = dir_.path() + "/cache";
    o.io = GetParam();
    o.io_block_bytes = 16 << 10;  // several pieces in flight even for small test records
    return o;
  }
  // A file of record_id(i)'s default shape: its header and payload.
  static std::uint64_t file_bytes() { return 4096 + record_id(0).payload_bytes(); }
  // options() with a budget of `records` such files.
  DiskStoreOptions budget_of(std::uint64_t records) const {
    DiskStoreOptions o = options();
    o.budget_bytes = records * file_bytes();
    return o;
  }
  TempDir dir_;
};

TEST_P(DiskStoreTest, WriteReadEraseThroughBothPaths) {
  auto s = open_store(options());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->capabilities().name, "disk");
  EXPECT_TRUE(s->capabilities().persistent);
  std::printf("description: %s\n", s->capabilities().description.c_str());
  const RecordId id = record_id(1, 4, 64 << 10);
  ASSERT_OK(put(*s, id, 1));
  ASSERT_OK_AND_ASSIGN(bool there, s->contains(id));
  EXPECT_TRUE(there);
  EXPECT_EQ(get(*s, id, 1), 0);
  // Unaligned buffers of odd sizes go through buffered I/O.
  const RecordId odd = record_id(2, 3, 1000);
  std::vector<std::uint8_t> v(odd.payload_bytes() + 1);
  fill_payload(2, std::span(v).subspan(1));
  ASSERT_OK(s->write(odd, std::span(v).subspan(1)));
  std::vector<std::uint8_t> back(odd.payload_bytes() + 1);
  ASSERT_OK(s->read(odd, std::span(back).subspan(1)));
  EXPECT_EQ(wrong_bytes(2, std::span(back).subspan(1)), 0u);
  // Wrong sizes are refused, a rewrite replaces, erase removes the file.
  EXPECT_EQ(s->read(id, std::span(back)).code(), StatusCode::kInvalidArgument);
  ASSERT_OK(put(*s, id, 1));
  ASSERT_OK(s->erase(id));
  ASSERT_OK(s->erase(id));
  EXPECT_EQ(get(*s, id, 1), -1);
  const StoreStats st = s->stats();
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.writes, 3u);
  EXPECT_EQ(st.erases, 1u);
  EXPECT_EQ(st.records, 1u);
  EXPECT_EQ(st.bytes_held, odd.payload_bytes());
  EXPECT_EQ(st.misses[std::size_t(MissReason::kAbsent)], 1u);
}

TEST_P(DiskStoreTest, FilesAreNamedFromKeysWithPrivatePermissions) {
  auto s = open_store(options());
  ASSERT_TRUE(s);
  const RecordId id = record_id(7);
  ASSERT_OK(put(*s, id, 7));
  const std::string dir = options().directory;
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  const std::string name = disk::record_file_name(id);
  EXPECT_EQ(name.size(), 85u);
  EXPECT_EQ(name.substr(0, 16), digest_hex(id.identity).substr(0, 16));
  EXPECT_EQ(name.substr(17, 64), id.chunk_key.hex());
  ASSERT_EQ(::stat((dir + "/" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(std::uint64_t(st.st_size), 4096 + id.payload_bytes());
  for (const std::string& f : files_in(dir))
    EXPECT_TRUE(f == name || f == "LOCK") << f;
}

TEST_P(DiskStoreTest, BudgetEvictsLeastRecentlyUsed) {
  const std::uint64_t file = file_bytes();
  DiskStoreOptions o = budget_of(4);
  auto s = open_store(o);
  ASSERT_TRUE(s);
  for (int i = 0; i < 4; ++i)
    ASSERT_OK(put(*s, record_id(i), i));
  EXPECT_EQ(get(*s, record_id(0), 0), 0);  // 0 becomes the most recent; 1 is now the oldest
  for (int i = 4; i < 6; ++i)
    ASSERT_OK(put(*s, record_id(i), i));
  EXPECT_EQ(get(*s, record_id(1), 1), -1);
  EXPECT_EQ(get(*s, record_id(2), 2), -1);
  for (int i : {0, 3, 4, 5})
    EXPECT_EQ(get(*s, record_id(i), i), 0) << i;
  StoreStats st = s->stats();
  EXPECT_EQ(st.evictions, 2u);
  EXPECT_EQ(st.misses[std::size_t(MissReason::kEvicted)], 2u);
  EXPECT_EQ(st.records, 4u);
  EXPECT_EQ(st.budget_bytes, 4 * file);
  EXPECT_EQ(files_in(o.directory).size(), 5u);  // 4 records and LOCK: evicted files are gone
  const RecordId big = record_id(9, 64, 64 << 10);
  EXPECT_EQ(put(*s, big, 9).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(s->stats().write_failures, 1u);
  // A reopen with a smaller budget evicts the oldest files to fit.
  s.reset();
  o.budget_bytes = 2 * file;
  DiskRecovery rec;
  s = open_store(o, &rec);
  ASSERT_TRUE(s);
  EXPECT_EQ(rec.records, 2u);
  EXPECT_EQ(rec.evicted, 2u);
  EXPECT_EQ(s->stats().records, 2u);
  std::printf(
      "reliability: lru budget: 6 writes into 4 slots, %llu evicted, reopen at 2 slots "
      "evicted %llu\n",
      static_cast<unsigned long long>(st.evictions), static_cast<unsigned long long>(rec.evicted));
}

// A write that must evict takes over the file of a victim of its size (no reader has it open):
// the new record lives in the victim's inode, whose blocks are already allocated and written. The
// victim misses as evicted, and nothing else changes.
TEST_P(DiskStoreTest, AWriteThatEvictsReusesTheVictimsFile) {
  const DiskStoreOptions o = budget_of(4);
  auto s = open_store(o);
  ASSERT_TRUE(s);
  // A file's identity: inode number and birth time (an inode number alone may be handed to a new
  // file right after the old one is removed). {0, 0} when the file is absent.
  const auto identity = [&](int i) -> std::pair<std::uint64_t, std::int64_t> {
    struct statx sx {};
    const std::string p = o.directory + "/" + disk::record_file_name(record_id(i));
    if (::statx(AT_FDCWD, p.c_str(), 0, STATX_INO | STATX_BTIME, &sx) != 0) return {0, 0};
    const std::int64_t born =
        (sx.stx_mask & STATX_BTIME)
            ? std::int64_t(sx.stx_btime.tv_sec) * 1000000000 + sx.stx_btime.tv_nsec
            : -1;
    return {sx.stx_ino, born};
  };
  for (int i = 0; i < 4; ++i)
    ASSERT_OK(put(*s, record_id(i), i));
  const auto oldest = identity(0);
  ASSERT_NE(oldest.first, 0u);
  if (oldest.second < 0)
    std::printf("note: no birth times here; the inode number alone is checked\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a new file would be born later
  ASSERT_OK(put(*s, record_id(4), 4));  // evicts 0, the least recently used
  EXPECT_EQ(identity(4), oldest);
  EXPECT_EQ(identity(0).first, 0u);
  EXPECT_EQ(get(*s, record_id(4), 4), 0);
  EXPECT_EQ(get(*s, record_id(0), 0), -1);
  for (int i = 1; i < 4; ++i)
    EXPECT_EQ(get(*s, record_id(i), i), 0) << i;
  StoreStats st = s->stats();
  EXPECT_EQ(st.evictions, 1u);
  EXPECT_EQ(st.misses[std::size_t(MissReason::kEvicted)], 1u);
  for (const std::string& f : files_in(o.directory))
    EXPECT_FALSE(disk::is_temporary_file_name(f)) << f;
  // The reused file reopens as a valid record.
  s.reset();
  DiskRecovery rec;
  s = open_store(o, &rec);
  ASSERT_TRUE(s);
  EXPECT_EQ(rec.removed_invalid, 0u);
  EXPECT_EQ(rec.records, 4u);
  EXPECT_EQ(get(*s, record_id(4), 4), 0);
  // A record of another size reuses no file: two victims make room, and it reads back whole.
  const RecordId other = record_id(5, 4, 16 << 10);
  ASSERT_OK(put(*s, other, 5));
  EXPECT_EQ(get(*s, other, 5), 0);
  EXPECT_EQ(s->stats().evictions, 2u);
  EXPECT_EQ(s->stats().records, 3u);
}

TEST_P(DiskStoreTest, IndexIsRebuiltAfterReopen) {
  const DiskStoreOptions o = options();
  constexpr int kRecords = 20;
  {
    auto s = open_store(o);
    ASSERT_TRUE(s);
    for (int i = 0; i < kRecords; ++i)
      ASSERT_OK(put(*s, record_id(i, 2 + i % 3, 4096 * (1 + i % 4)), i));
  }
  // Leftovers of a crash and files tierkv does not own.
  std::ofstream(o.directory + "/" + disk::record_file_name(record_id(0)) + ".123.4.tmp") << "x";
  std::ofstream(o.directory + "/" + disk::record_file_name(record_id(99))) << "not a record";
  std::ofstream(o.directory + "/README") << "someone else's";
  DiskRecovery rec;
  auto s = open_store(o, &rec);
  ASSERT_TRUE(s);
  EXPECT_EQ(rec.records, std::uint64_t(kRecords));
  EXPECT_EQ(rec.removed_temporary, 1u);
  EXPECT_EQ(rec.removed_invalid, 1u);
  EXPECT_EQ(rec.other_files, 1u);
  for (int i = 0; i < kRecords; ++i)
    EXPECT_EQ(get(*s, record_id(i, 2 + i % 3, 4096 * (1 + i % 4)), i), 0) << i;
  EXPECT_EQ(s->stats().records, std::uint64_t(kRecords));
  EXPECT_TRUE(fs::exists(o.directory + "/README"));
  std::printf(
      "reliability: rebuild: %llu records indexed, %llu temporary and %llu invalid files "
      "removed, %llu other files kept\n",
      static_cast<unsigned long long>(rec.records),
      static_cast<unsigned long long>(rec.removed_temporary),
      static_cast<unsigned long long>(rec.removed_invalid),
      static_cast<unsigned long long>(rec.other_files));
}

TEST_P(DiskStoreTest, SecondOpenerOfADirectoryIsRefused) {
  const DiskStoreOptions o = options();
  auto s = open_store(o);
  ASSERT_TRUE(s);
  auto second = open_disk_store(o);
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("LOCK"), std::string::npos)
      << second.status().to_string();
  // Another process is refused too.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto other = open_disk_store(o);
    ::_exit(other.status().code() == StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // Once the first store is gone, the directory opens again.
  s.reset();
  EXPECT_TRUE(open_disk_store(o).ok());
  std::printf(
      "reliability: two openers: the second (same process and a forked one) refused "
      "with FailedPrecondition\n");
}

TEST_P(DiskStoreTest, SharedAcrossThreadsEveryReadVerified) {
  DiskStoreOptions o = options();
  const RecordId shape = record_id(0, 4, 16 << 10);
  o.budget_bytes = 12 * (4096 + shape.payload_bytes());  // evictions race with reads too
  auto s = open_store(o);
  ASSERT_TRUE(s);
  constexpr int kThreads = 6, kKeys = 16;
  std::atomic<std::uint64_t> hits{0}, misses{0}, writes{0}, erases{0}, wrong{0}, errors{0};
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      AlignedBuffer buf(shape.payload_bytes());
      while (std::chrono::steady_clock::now() < until) {
        const int k = int(rng() % kKeys);
        const RecordId id = record_id(k, 4, 16 << 10);
        const int op = int(rng() % 10);
        if (op < 5) {
          const Status r = s->read(id, buf.span());
          if (r.ok()) {
            ++hits;
            wrong += wrong_bytes(k, buf.span());  // a key always holds the bytes of seed k
          } else {
            ++misses;
            if (r.code() != StatusCode::kNotFound) ++errors;
          }
        } else if (op < 9) {
          fill_payload(k, buf.span());
          if (s->write(id, buf.span()).ok())
            ++writes;
          else
            ++errors;
        } else {
          if (s->erase(id).ok())
            ++erases;
          else
            ++errors;
        }
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_GT(hits.load(), 0u);
  const StoreStats st = s->stats();
  EXPECT_LE(st.records, 12u);
  std::printf(
      "reliability: threads: %d threads, %llu verified hits, %llu misses, %llu writes, "
      "%llu erases, %llu evictions, %llu wrong bytes\n",
      kThreads, static_cast<unsigned long long>(hits.load()),
      static_cast<unsigned long long>(misses.load()),
      static_cast<unsigned long long>(writes.load()),
      static_cast<unsigned long long>(erases.load()), static_cast<unsigned long long>(st.evictions),
      static_cast<unsigned long long>(wrong.load()));
}

// Records of 4 MiB and more, verified layer by layer as they land (verify_while_reading, the
// default) and after the whole read: the same verdicts on both paths.
TEST_P(DiskStoreTest, LargeRecordsAreVerifiedWhileTheyLand) {
  for (const bool overlap : {true, false}) {
    SCOPED_TRACE(overlap ? "verify while reading" : "verify after reading");
    DiskStoreOptions o = options();
    o.verify_while_reading = overlap;
    auto s = open_store(o);
    ASSERT_TRUE(s);
    const RecordId id = record_id(1, 8, 1 << 20);  // 8 MiB
    ASSERT_OK(put(*s, id, 1));
    EXPECT_EQ(get(*s, id, 1), 0);
    AlignedBuffer b(id.payload_bytes());
    std::vector<std::uint8_t> v(id.payload_bytes() + 8);  // unaligned: the buffered path
    ASSERT_OK(s->read(id, std::span(v).subspan(3, id.payload_bytes())));
    EXPECT_EQ(wrong_bytes(1, std::span(v).subspan(3, id.payload_bytes())), 0u);
    const std::string path = options().directory + "/" + disk::record_file_name(id);
    const auto damage = [&](std::uint64_t at, bool truncate) {
      ASSERT_OK(put(*s, id, 1));
      if (truncate) {
        fs::resize_file(path, at);
      } else {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(std::streamoff(at));
        f.put(char(0x5a ^ test::payload_byte(1, at - 4096)));
      }
      const Status r = s->read(id, b.span());
      EXPECT_EQ(r.code(), StatusCode::kDataLoss) << at << " " << r.to_string();
      EXPECT_FALSE(fs::exists(path));
    };
    for (std::uint64_t layer : {0, 5, 7})
      damage(4096 + layer * (1 << 20) + 12345, false);
    damage(4096 + 3 * (1 << 20), true);
    EXPECT_EQ(s->stats().misses[std::size_t(MissReason::kCorrupt)], 4u);
  }
}

TEST_P(DiskStoreTest, InspectListsAndVerifiesEveryRecord) {
  const DiskStoreOptions o = options();
  {
    auto s = open_store(o);
    ASSERT_TRUE(s);
    for (int i = 0; i < 5; ++i)
      ASSERT_OK(put(*s, record_id(i), i));
  }
  // Corrupt one payload byte of record 1; put record 3's file under record 4's name.
  const std::string f1 = o.directory + "/" + disk::record_file_name(record_id(1));
  {
    std::fstream f(f1, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 + 100);
    f.put(char(0x77 ^ test::payload_byte(1, 100)));
  }
  fs::copy_file(o.directory + "/" + disk::record_file_name(record_id(3)),
                o.directory + "/" + disk::record_file_name(record_id(4)),
                fs::copy_options::overwrite_existing);
  ASSERT_OK_AND_ASSIGN(disk::InspectReport rep, disk::inspect_disk_directory(o.directory));
  disk::print_inspect_report(rep, stdout);
  EXPECT_EQ(rep.ok, 3u);
  EXPECT_EQ(rep.corrupt, 1u);
  EXPECT_EQ(rep.foreign, 1u);
  EXPECT_EQ(rep.records.size(), 5u);
}

INSTANTIATE_TEST_SUITE_P(Io, DiskStoreTest,
                         ::testing::Values(IoBackend::kAuto, IoBackend::kThreads),
                         [](const auto& p) {
                           return std::string(p.param == IoBackend::kAuto ? "Auto" : "Threads");
                         });

// tmpfs refused O_DIRECT before Linux 6.6 and accepts it since: the store's probe must agree with
// what the kernel does, and the store must work either way (and with direct_io off).
TEST(DiskStoreOpenTest, ODirectProbeOnTmpfsAndBufferedIo) {
  struct statfs sf;
  if (::statfs("/dev/shm", &sf) != 0 || sf.f_type != 0x01021994 /* TMPFS_MAGIC */)
    GTEST_SKIP() << "no tmpfs at /dev/shm";
  TempDir dir("/dev/shm");
  ASSERT_FALSE(dir.path().empty());
  const std::string probe = dir.path() + "/probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0600);
  const bool kernel_direct = fd >= 0;
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  for (bool direct_io : {true, false}) {
    auto s =
        open_store({.directory = dir.path() + (direct_io ? "/a" : "/b"), .direct_io = direct_io});
    ASSERT_TRUE(s);
    const std::string& d = s->capabilities().description;
    const bool says_direct = d.find("O_DIRECT,") != std::string::npos;
    EXPECT_EQ(says_direct, direct_io && kernel_direct) << d;
    const RecordId id = record_id(1);
    ASSERT_OK(put(*s, id, 1));
    EXPECT_EQ(get(*s, id, 1), 0);
    std::printf("tmpfs (O_DIRECT %s by this kernel): %s\n", kernel_direct ? "accepted" : "refused",
                d.c_str());
  }
}

TEST(DiskStoreOpenTest, BadOptionsAreRefused) {
  EXPECT_EQ(open_disk_store({}).status().code(), StatusCode::kInvalidArgument);
  TempDir dir;
  EXPECT_EQ(open_disk_store({.directory = dir.path(), .io_threads = 0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(open_disk_store({.directory = dir.path(), .io_block_bytes = 1000}).status().code(),
            StatusCode::kInvalidArgument);
  std::ofstream(dir.path() + "/file") << "x";
  EXPECT_FALSE(open_disk_store({.directory = dir.path() + "/file"}).ok());
}

}  // namespace
}  // namespace tierkv

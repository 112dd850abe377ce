// The disk tier over a fault-injecting file layer: EIO and ENOSPC on every operation, short and
// torn writes, transient and persistent. A failed write is never visible; a later read is a miss
// or the correct bytes; nothing wrong is ever served.
#include <errno.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <random>

#include "backends.h"
#include "store_checks.h"
#include "tiers/disk/disk_files.h"
#include "tiers/disk/fault_file_system.h"

namespace tierkv {
namespace {

using disk::FaultFileSystem;
using disk::FileFault;
using disk::FileFaultKind;
using disk::FileOp;
using test::AlignedBuffer;
using test::fill_payload;
using test::record_id;
using test::TempDir;
using test::wrong_bytes;

class DiskFaultTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(reopen()); }

  // Opens (again) the store over a fresh fault layer; the faults added before are dropped.
  bool reopen(DiskRecovery* rec = nullptr) {
    store_.reset();
    auto base = disk::make_posix_file_system({.io_block_bytes = 16 << 10});
    if (!base.ok()) return false;
    faults_ = std::make_shared<FaultFileSystem>(std::move(base).value());
    DiskStoreOptions o;
    o.directory = dir_.path() + "/cache";
    auto s = disk::open_disk_store_with(o, faults_, rec);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    if (!s.ok()) return false;
    store_ = std::move(s).value();
    return true;
  }

  Status put(const RecordId& id, std::uint64_t seed) {
    AlignedBuffer b(id.payload_bytes());
    fill_payload(seed, b.span());
    return store_->write(id, b.span());
  }
  // Wrong bytes of a hit against `seed`; -1 for a miss (any error).
  std::int64_t get(const RecordId& id, std::uint64_t seed) {
    AlignedBuffer b(id.payload_bytes());
    if (!store_->read(id, b.span()).ok()) return -1;
    return std::int64_t(wrong_bytes(seed, b.span()));
  }
  bool visible(const RecordId& id) {
    auto c = store_->contains(id);
    return c.ok() && *c;
  }
  std::size_t temporary_files() {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path() + "/cache"))
      n += e.path().extension() == ".tmp";
    return n;
  }

  TempDir dir_;
  std::shared_ptr<FaultFileSystem> faults_;
  std::unique_ptr<Store> store_;
};

// One failing operation of a write, transient then persistent: the write fails with `code`,
// nothing is visible, no temporary file is left, and the store works again once the fault is gone.
struct WriteFaultCase {
  const char* name;
  FileOp op;
  int err;
  StatusCode code;
};

TEST_F(DiskFaultTest, FailedWritesAreNeverVisible) {
  const WriteFaultCase cases[] = {
      {"open EIO", FileOp::kOpen, EIO, StatusCode::kIoError},
      {"pwrite EIO", FileOp::kWrite, EIO, StatusCode::kIoError},
      {"pwrite ENOSPC", FileOp::kWrite, ENOSPC, StatusCode::kResourceExhausted},
      {"fsync EIO", FileOp::kSync, EIO, StatusCode::kIoError},
      {"rename EIO", FileOp::kRename, EIO, StatusCode::kIoError},
      {"rename ENOSPC", FileOp::kRename, ENOSPC, StatusCode::kResourceExhausted},
      {"directory fsync EIO", FileOp::kSyncDir, EIO, StatusCode::kIoError},
  };
  int checked = 0;
  for (const WriteFaultCase& c : cases) {
    for (const bool persistent : {false, true}) {
      SCOPED_TRACE(std::string(c.name) + (persistent ? " persistent" : " transient"));
      const RecordId id = record_id(std::uint64_t(100 + checked), 4, 16 << 10);
      // The old record of the key stays readable when a rewrite fails before the rename.
      const RecordId old = record_id(std::uint64_t(200 + checked), 4, 16 << 10);
      ASSERT_OK(put(old, 1));
      // Opens fail for the write's temporary file only, so that the old record stays readable.
      faults_->add({.op = c.op,
                    .err = c.err,
                    .first_call = faults_->calls(c.op) + 1,
                    .times = persistent ? FileFault::kPersistent : 1,
                    .path_contains = c.op == FileOp::kOpen ? ".tmp" : ""});
      const Status w = put(id, 7);
      EXPECT_EQ(w.code(), c.code) << w.to_string();
      EXPECT_FALSE(visible(id));
      EXPECT_EQ(get(id, 7), -1);
      if (persistent) {
        EXPECT_EQ(put(old, 2).code(), c.code);
        EXPECT_EQ(get(old, 1), c.op == FileOp::kSyncDir ? -1 : 0)
            << "a failed rewrite leaves the old record (or, after the rename, none)";
      }
      faults_->clear();
      EXPECT_EQ(temporary_files(), 0u);
      ASSERT_OK(put(id, 7));
      EXPECT_EQ(get(id, 7), 0);
      ++checked;
    }
  }
  const StoreStats st = store_->stats();
  std::printf(
      "reliability: file faults: %d write fault cases (open/pwrite/fsync/rename/dir fsync; "
      "EIO/ENOSPC; transient and persistent): %llu failed writes, none visible, 0 "
      "temporary files left\n",
      checked, static_cast<unsigned long long>(st.write_failures));
}

TEST_F(DiskFaultTest, ShortWritesAreContinued) {
  for (const bool persistent : {false, true}) {
    const RecordId id = record_id(persistent ? 2 : 1, 4, 64 << 10);
    faults_->add({.op = FileOp::kWrite,
                  .kind = FileFaultKind::kShortWrite,
                  .first_call = faults_->calls(FileOp::kWrite) + 1,
                  .times = persistent ? FileFault::kPersistent : 1});
    ASSERT_OK(put(id, 3));
    faults_->clear();
    EXPECT_EQ(get(id, 3), 0);
  }
  EXPECT_GE(faults_->injected(), 3u);
}

TEST_F(DiskFaultTest, TornWritesAreCaughtOnRead) {
  int caught = 0;
  for (int i = 0; i < 8; ++i) {
    const RecordId id = record_id(std::uint64_t(i), 4, 64 << 10);
    // Tear the header (write call 1 of the record) or the payload (call 2).
    faults_->add({.op = FileOp::kWrite,
                  .kind = FileFaultKind::kTornWrite,
                  .first_call = faults_->calls(FileOp::kWrite) + 1 + std::uint64_t(i % 2)});
    ASSERT_OK(put(id, 5));  // a torn write does not know it is torn
    faults_->clear();
    const std::uint64_t corrupt_before = store_->stats().misses[std::size_t(MissReason::kCorrupt)];
    AlignedBuffer b(id.payload_bytes());
    const Status r = store_->read(id, b.span());
    EXPECT_EQ(r.code(), StatusCode::kDataLoss) << r.to_string();
    caught += r.code() == StatusCode::kDataLoss;
    EXPECT_EQ(store_->stats().misses[std::size_t(MissReason::kCorrupt)], corrupt_before + 1);
    EXPECT_FALSE(visible(id)) << "a corrupt record is removed";
    EXPECT_EQ(get(id, 5), -1);
  }
  std::printf("reliability: torn writes: %d of 8 caught on read (header and payload), 0 served\n",
              caught);
}

TEST_F(DiskFaultTest, ReadErrorsAreMissesAndKeepTheRecord) {
  const RecordId id = record_id(1, 4, 16 << 10);
  ASSERT_OK(put(id, 1));
  faults_->add({.op = FileOp::kRead,
                .err = EIO,
                .first_call = faults_->calls(FileOp::kRead) + 1,
                .times = FileFault::kPersistent});
  AlignedBuffer b(id.payload_bytes());
  EXPECT_EQ(store_->read(id, b.span()).code(), StatusCode::kIoError);
  EXPECT_EQ(store_->read(id, b.span()).code(), StatusCode::kIoError);
  EXPECT_TRUE(visible(id)) << "an I/O error says nothing about the record";
  faults_->add({.op = FileOp::kOpen, .err = EIO, .first_call = faults_->calls(FileOp::kOpen) + 1});
  faults_->clear();
  EXPECT_EQ(get(id, 1), 0);
  EXPECT_EQ(store_->stats().misses[std::size_t(MissReason::kUnavailable)], 2u);
}

TEST_F(DiskFaultTest, LargeRecordsUnderFaults) {
  const RecordId id = record_id(1, 8, 1 << 20);  // 8 MiB: several pieces of I/O per write
  for (const FileOp op : {FileOp::kWrite, FileOp::kSync, FileOp::kRename}) {
    faults_->add({.op = op, .err = EIO, .first_call = faults_->calls(op) + 1});
    EXPECT_FALSE(put(id, 1).ok());
    EXPECT_FALSE(visible(id));
    EXPECT_EQ(temporary_files(), 0u);
  }
  // Tear the header or the payload.
  for (std::uint64_t call : {1, 2}) {
    faults_->add({.op = FileOp::kWrite,
                  .kind = FileFaultKind::kTornWrite,
                  .first_call = faults_->calls(FileOp::kWrite) + call});
    ASSERT_OK(put(id, 2));
    faults_->clear();
    AlignedBuffer b(id.payload_bytes());
    EXPECT_EQ(store_->read(id, b.span()).code(), StatusCode::kDataLoss);
    EXPECT_FALSE(visible(id));
  }
  ASSERT_OK(put(id, 3));
  faults_->add({.op = FileOp::kRead, .err = EIO, .first_call = faults_->calls(FileOp::kRead) + 2});
  AlignedBuffer b(id.payload_bytes());
  EXPECT_EQ(store_->read(id, b.span()).code(), StatusCode::kIoError) << "the payload read fails";
  faults_->clear();
  EXPECT_EQ(get(id, 3), 0);
}

TEST_F(DiskFaultTest, LeftoverTemporaryIsRemovedAtReopen) {
  const RecordId id = record_id(1, 4, 16 << 10);
  faults_->add({.op = FileOp::kWrite, .err = EIO});
  faults_->add({.op = FileOp::kRemove, .err = EIO});  // the cleanup fails too
  EXPECT_FALSE(put(id, 1).ok());
  EXPECT_EQ(temporary_files(), 1u);
  EXPECT_FALSE(visible(id));
  DiskRecovery rec;
  ASSERT_TRUE(reopen(&rec));
  EXPECT_EQ(rec.removed_temporary, 1u);
  EXPECT_EQ(temporary_files(), 0u);
  EXPECT_EQ(get(id, 1), -1);
}

// Random faults of every kind over many writes and reads of a few keys. Every read is a miss or
// the bytes of the key's last write that returned OK: a failed write's bytes are never served, and
// after it the key holds the old record or none.
TEST_F(DiskFaultTest, RandomFaultSoak) {
  constexpr int kKeys = 12, kOps = 3000;
  std::mt19937_64 rng(7);
  std::vector<std::int64_t> last_ok(kKeys, -1);  // version of the last OK write, -1: none
  std::vector<std::int64_t> version(kKeys, 0);
  std::uint64_t hits = 0, misses = 0, wrong = 0, failed_writes = 0;
  const FileOp ops[] = {FileOp::kOpen,   FileOp::kRead,   FileOp::kWrite,  FileOp::kSync,
                        FileOp::kRename, FileOp::kRemove, FileOp::kSyncDir};
  const auto seed = [](int k, std::int64_t v) {
    return std::uint64_t(k) * 100000 + std::uint64_t(v);
  };
  for (int i = 0; i < kOps; ++i) {
    if (rng() % 8 == 0) {
      faults_->clear();
      const FileOp op = ops[rng() % std::size(ops)];
      FileFault f{.op = op, .err = rng() % 2 ? EIO : ENOSPC};
      if (op == FileOp::kWrite) f.kind = FileFaultKind(rng() % 3);
      f.first_call = faults_->calls(op) + 1 + rng() % 3;
      f.times = rng() % 4 == 0 ? FileFault::kPersistent : 1 + rng() % 2;
      faults_->add(f);
    }
    const int k = int(rng() % kKeys);
    const RecordId id = record_id(std::uint64_t(k), 2, 16 << 10);
    if (rng() % 2) {
      const std::int64_t v = ++version[k];
      if (put(id, seed(k, v)).ok())
        last_ok[k] = v;
      else
        ++failed_writes;
    } else {
      AlignedBuffer b(id.payload_bytes());
      if (!store_->read(id, b.span()).ok()) {
        ++misses;
        continue;
      }
      ++hits;
      wrong += last_ok[k] < 0 ? b.size : wrong_bytes(seed(k, last_ok[k]), b.span());
    }
  }
  faults_->clear();
  EXPECT_EQ(wrong, 0u);
  EXPECT_GT(hits, 0u);
  EXPECT_GT(failed_writes, 0u);
  std::printf(
      "reliability: random file faults: %d operations, %llu faults injected, %llu failed "
      "writes, %llu verified hits, %llu misses, %llu wrong bytes\n",
      kOps, static_cast<unsigned long long>(faults_->injected()),
      static_cast<unsigned long long>(failed_writes), static_cast<unsigned long long>(hits),
      static_cast<unsigned long long>(misses), static_cast<unsigned long long>(wrong));
}

}  // namespace
}  // namespace tierkv

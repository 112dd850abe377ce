// A file layer (file_system.h) that injects faults into another one, for the disk tier's
// reliability tests: EIO, ENOSPC (or any errno) on any operation, short writes, and torn writes
// (a write that reports success but left only part of its bytes, as a crash or a lying disk can).
//
// Calls of each operation are counted from 1; a fault fires on calls first_call ..
// first_call + times - 1 (times == kPersistent: every call from first_call on) whose path contains
// path_contains (empty: any path). The first matching fault added wins.
//
//   kError       the call fails with `err` (errno), doing nothing
//   kShortWrite  write_at writes the first half of its bytes (4096-aligned for direct files) and
//                reports that count; writes of one block or less pass whole
//   kTornWrite   write_at writes the first half (as above, nothing for one block or less) and
//                reports the whole length written
//
// Ownership: owns the wrapped layer. Thread safety: as FileSystem; add and clear may be called at
// any time from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tiers/disk/file_system.h"

namespace tierkv::disk {

enum class FileOp : std::uint8_t {
  kOpen = 0,
  kRead,
  kWrite,
  kSync,
  kRename,
  kRemove,
  kSyncDir,
  kList,
  kAllocate,
  kCount
};
enum class FileFaultKind : std::uint8_t { kError = 0, kShortWrite, kTornWrite };

struct FileFault {
  static constexpr std::uint64_t kPersistent = std::numeric_limits<std::uint64_t>::max();
  FileOp op = FileOp::kWrite;
  FileFaultKind kind = FileFaultKind::kError;
  int err = 5;  // EIO
  std::uint64_t first_call = 1;
  std::uint64_t times = 1;
  std::string path_contains;
};

class FaultFileSystem final : public FileSystem {
 public:
  explicit FaultFileSystem(std::unique_ptr<FileSystem> base);

  void add(const FileFault& fault);
  void clear();
  std::uint64_t calls(FileOp op) const;
  std::uint64_t injected() const;

  Result<std::unique_ptr<File>> open(const std::string& path, const OpenOptions& o) override;
  Status rename(const std::string& from, const std::string& to) override;
  Status remove(const std::string& path) override;
  Status sync_dir(const std::string& dir) override;
  Result<std::vector<std::string>> list(const std::string& dir) override;
  Status create_dir(const std::string& dir) override { return base_->create_dir(dir); }
  Result<std::unique_ptr<DirLock>> lock(const std::string& path) override {
    return base_->lock(path);
  }
  Result<bool> probe_direct(const std::string& dir) override { return base_->probe_direct(dir); }
  std::string describe() const override { return "faults over " + base_->describe(); }

  // The fault (if any) for the next call of `op` on `path`. Used by the files it opens.
  bool next(FileOp op, const std::string& path, FileFault* fired);

 private:
  std::unique_ptr<FileSystem> base_;
  mutable std::mutex mu_;
  std::vector<FileFault> faults_;                                   // GUARDED_BY(mu_)
  std::array<std::uint64_t, std::size_t(FileOp::kCount)> calls_{};  // GUARDED_BY(mu_)
  std::uint64_t injected_ = 0;                                      // GUARDED_BY(mu_)
};

}  // namespace tierkv::disk

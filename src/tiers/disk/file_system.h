// The disk tier's file layer: every file operation the disk store and inspect make goes through
// this seam, so that tests can put a fault-injecting layer (fault_file_system.h) under a real
// store.
//
// Paths are plain strings; the store builds them from its directory and its own file names.
// Errors are Status: IoError naming the call, the path and errno's text; ResourceExhausted for
// ENOSPC/EDQUOT (the disk is full); NotFound for ENOENT.
//
// Thread safety: a FileSystem may be used from any thread at the same time. A File is used by one
// thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tierkv/disk_store.h"
#include "tierkv/status.h"

namespace tierkv::disk {

// Alignment of buffers, offsets and lengths for direct (O_DIRECT) I/O.
inline constexpr std::size_t kDirectAlign = 4096;

struct OpenOptions {
  bool create = false;  // create a new file, write-only, 0600; AlreadyExists if it exists
  bool overwrite = false;  // open an existing file write-only, its blocks kept (no truncation)
  bool direct = false;  // O_DIRECT: buffers, offsets and lengths aligned to kDirectAlign
};

class File {
 public:
  virtual ~File() = default;  // closes the file
  // Reads up to dst.size() bytes at `offset`; fewer only at the end of the file.
  virtual Result<std::size_t> read_at(std::uint64_t offset, std::span<std::uint8_t> dst) = 0;
  // As read_at, and calls `landed(n)` each time the first n bytes of `dst` have arrived (n
  // grows; the last call is the total read; calls never overlap), so that a caller can use them
  // while the rest is in flight. The default calls it once, at the end.
  virtual Result<std::size_t> read_at_streaming(std::uint64_t offset, std::span<std::uint8_t> dst,
                                                const std::function<void(std::size_t)>& landed) {
    Result<std::size_t> r = read_at(offset, dst);
    if (r.ok()) landed(*r);
    return r;
  }
  // Writes `src` at `offset`. May write fewer bytes than asked (as pwrite(2) may), never zero
  // without an error: the caller continues from where it stopped.
  virtual Result<std::size_t> write_at(std::uint64_t offset, std::span<const std::uint8_t> src) = 0;
  // Writes `parts` back to back from `offset`, as one write_full() of their concatenation would.
  // `in_flight` (optional) is called once while the writes run, so that the caller can compute
  // beside them: the real file layer puts all of the parts' pieces in flight at once and calls it
  // when the first piece has finished (from the thread that reaps completions); the default calls
  // it first, then writes the parts one after the other. It is called even when a write fails.
  virtual Status write_parts(std::uint64_t offset,
                             std::span<const std::span<const std::uint8_t>> parts,
                             const std::function<void()>& in_flight = nullptr);
  virtual Status sync() = 0;  // fsync
  // Reserves `bytes` of space from offset 0 (fallocate), so that writes need not extend the file.
  // OK where the file system cannot (the writes then allocate as they go).
  virtual Status allocate(std::uint64_t bytes) = 0;
  virtual Result<std::uint64_t> size() = 0;
  // Modification time in nanoseconds since the epoch (the LRU order after a reopen).
  virtual Result<std::int64_t> mtime_ns() = 0;
  virtual bool direct() const = 0;
};

// An exclusive lock on a file, held until destroyed.
class DirLock {
 public:
  virtual ~DirLock() = default;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  virtual Result<std::unique_ptr<File>> open(const std::string& path, const OpenOptions& o) = 0;
  // rename(2): replaces `to` atomically.
  virtual Status rename(const std::string& from, const std::string& to) = 0;
  virtual Status remove(const std::string& path) = 0;  // NotFound when absent
  virtual Status sync_dir(const std::string& dir) = 0;
  // Names (not paths) of the regular files in `dir`.
  virtual Result<std::vector<std::string>> list(const std::string& dir) = 0;
  // mkdir -p, the last component 0700. OK when it exists as a directory.
  virtual Status create_dir(const std::string& dir) = 0;
  // An exclusive, non-blocking flock on `path` (created 0600): FailedPrecondition when another
  // holder has it.
  virtual Result<std::unique_ptr<DirLock>> lock(const std::string& path) = 0;
  // Whether `dir`'s file system accepts O_DIRECT reads and writes (a probe file is written and
  // removed); false with no error where it refuses them.
  virtual Result<bool> probe_direct(const std::string& dir) = 0;
  // "io_uring (queue depth 32)" or "threads (4, pread/pwrite)".
  virtual std::string describe() const = 0;
};

struct PosixFsOptions {
  IoBackend io = IoBackend::kAuto;
  int io_threads = 4;
  int queue_depth = 32;
  std::uint64_t io_block_bytes = 1 << 20;
};

// The real file layer: POSIX calls, with large reads and writes split into io_block_bytes pieces
// in flight at once through io_uring or a thread pool (PosixFsOptions::io). Unimplemented for
// IoBackend::kIoUring where io_uring is missing; with kAuto it falls back to threads and says so
// once on stderr.
Result<std::unique_ptr<FileSystem>> make_posix_file_system(const PosixFsOptions& options);

// Helpers over a File: the whole span or an error. read_full returns the bytes read (fewer only at
// the end of the file).
Result<std::size_t> read_full(File& f, std::uint64_t offset, std::span<std::uint8_t> dst);
Status write_full(File& f, std::uint64_t offset, std::span<const std::uint8_t> src);

// errno -> Status, e.g. IoError "pwrite /dir/x.tmp: Input/output error".
Status errno_status(int err, const std::string& call, const std::string& path);

}  // namespace tierkv::disk

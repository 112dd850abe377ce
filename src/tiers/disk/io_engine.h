// Positional reads and writes in flight at once, for the disk tier's file layer: through io_uring
// (liburing) or through a pool of threads doing pread/pwrite. The file layer splits a large
// transfer into pieces and hands them here together.
//
// Thread safety: run() may be called from any thread at the same time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "tierkv/status.h"

namespace tierkv::disk {

struct IoRequest {
  int fd = -1;
  bool write = false;
  std::uint64_t offset = 0;
  std::uint8_t* buf = nullptr;  // for a write, only read from
  std::size_t len = 0;
  // Set by run(): the bytes moved (all of len; fewer only for a read that reached the end of the
  // file), or -errno. A short write is continued until it completes or fails.
  std::int64_t result = 0;
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  // Called once per finished request with its index, as requests finish (from the calling
  // thread or an I/O thread; calls may be concurrent), before run() returns.
  using OnDone = std::function<void(std::size_t)>;
  // Runs every request, in any order and possibly at once; returns when all are done.
  virtual void run(std::span<IoRequest> requests, const OnDone& on_done = nullptr) = 0;
  virtual std::string describe() const = 0;
};

// io_uring rings of `queue_depth` entries, one per thread in run() at a time (kept for reuse).
// Unimplemented when the build has no liburing; Unavailable, with the reason, when the kernel
// refuses io_uring (or a probe operation on it fails).
Result<std::unique_ptr<IoEngine>> make_uring_engine(int queue_depth);

// `threads` threads (at least 1) doing pread/pwrite; a single request runs on the caller's thread.
std::unique_ptr<IoEngine> make_thread_engine(int threads);

}  // namespace tierkv::disk

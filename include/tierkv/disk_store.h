// The disk tier: a Store (tierkv/store.h) that keeps chunk records (docs/record-format.md) in files
// under one cache directory of a local file system.
//
// Layout. One file per record, named from the record's key only, never from a caller's string:
//   <dir>/<identity digest, first 8 bytes in hex>-<chunk key, 64 hex>.rec
// plus <dir>/LOCK. The directory is created 0700 (a directory that exists is used as it is), files
// 0600. A file holds one record: the header (a multiple of 4096 bytes) then the payload, so the
// payload is read with O_DIRECT straight into a 4096-aligned host slot.
//
// Publication is atomic: write() writes the record to a temporary file in the same directory
// (<name>.<pid>.<n>.tmp), syncs it as `sync` says, then renames it over the final name. A reader
// sees a whole record or none; a write that fails (I/O error, disk full, a crash) leaves no
// visible record, and its temporary file is removed (at once, or by the next open after a crash).
// Even a torn record that reached its final name (a power loss with sync = kNone, a lying disk)
// is never served: read() verifies the header, the identity and every layer's checksum, and
// removes a record that fails (DataLoss, counted kCorrupt or kForeign).
//
// Open. open_disk_store() takes an exclusive flock on <dir>/LOCK: one process (one store object)
// per directory. A second opener, in this process or another, gets FailedPrecondition naming the
// directory, until the first store is destroyed or its process exits (the kernel drops the lock
// even after a kill -9). It then rebuilds the index from the directory: every *.rec file's header
// is validated (magic, checksums, its name matches its key, its length matches its header) and
// indexed; files that fail and leftover *.tmp files are removed and counted (DiskRecovery).
// Payload checksums are verified on read, not at open.
//
// I/O. Reads and writes use O_DIRECT where the file system allows it (probed at open: tmpfs
// refuses it) and the caller's buffer is 4096-aligned with a length that is a multiple of 4096
// (host slots are); otherwise buffered I/O. Large transfers are split into io_block_bytes pieces in
// flight at once, through io_uring (liburing) or, where io_uring is missing in the build or the
// kernel, through a pool of threads doing pread/pwrite. Which one is in use is in
// capabilities().description; with IoBackend::kAuto, falling back to threads is also said once
// on stderr.
//
// Budget. Files (header + payload) count against budget_bytes; a write that does not fit evicts
// least recently used records first (reads and writes make a record recent; after a reopen the
// order is the files' modification times). A record larger than the budget is refused
// (ResourceExhausted). A record being read is never torn away: the reader holds its file open,
// and an evicted or replaced file's bytes stay readable until it is closed.
//
// Ownership: the returned Store owns its files' index, its lock and its I/O threads or rings.
// Thread safety: every method may be called from any thread at the same time (store.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tierkv/status.h"
#include "tierkv/store.h"

namespace tierkv {

// When records are flushed to stable storage.
enum class DiskSync : std::uint8_t {
  // No fsync. A record survives a crash of the process (the kernel holds its bytes) but maybe not
  // a power loss; a record torn by a power loss fails its checksums and is a miss.
  kNone = 0,
  // fsync each record file before its rename: after a power loss, a record is whole or absent.
  kFile,
  // kFile, and fsync the directory after the rename: a write that returned OK survives a power
  // loss. The default.
  kFileAndDirectory,
};

enum class IoBackend : std::uint8_t {
  kAuto = 0,  // io_uring when the build has liburing and the kernel allows it, else threads
  kIoUring,   // io_uring or open fails (Unimplemented)
  kThreads,   // a pool of io_threads threads with pread/pwrite
};

struct DiskStoreOptions {
  std::string directory;           // required; created (0700) when missing
  std::uint64_t budget_bytes = 0;  // files' bytes; 0: unbounded
  DiskSync sync = DiskSync::kFileAndDirectory;
  IoBackend io = IoBackend::kAuto;
  int io_threads = 4;                      // the thread pool's size (kThreads or fallback)
  int queue_depth = 32;                    // io_uring entries per ring
  std::uint64_t io_block_bytes = 1 << 20;  // a transfer is split into pieces of this size
  bool direct_io = true;                   // false: never O_DIRECT
  // Verify a record of 4 MiB or more layer by layer as its pieces land, while the rest of it is
  // still being read: through io_uring the thread that reaps completions hashes each layer (no
  // extra thread). false: read the whole payload, then verify it.
  bool verify_while_reading = true;
};

// What open_disk_store() found in the directory.
struct DiskRecovery {
  std::uint64_t records = 0;            // valid records indexed
  std::uint64_t record_bytes = 0;       // their files' bytes
  std::uint64_t removed_invalid = 0;    // *.rec files that failed validation, removed
  std::uint64_t removed_temporary = 0;  // leftover *.tmp files, removed
  std::uint64_t evicted = 0;            // records over the budget, removed
  std::uint64_t other_files = 0;        // files tierkv does not own, left alone
};

// Opens (creating it if needed) the cache directory options.directory. InvalidArgument for
// options out of range; FailedPrecondition when another store holds the directory; IoError when
// the directory cannot be created, listed or locked; Unimplemented for IoBackend::kIoUring where
// io_uring is not available. `recovery`, when given, receives what the index rebuild found.
Result<std::unique_ptr<Store>> open_disk_store(const DiskStoreOptions& options,
                                               DiskRecovery* recovery = nullptr);

}  // namespace tierkv

// The ways a set of runs can cross between host and device, each with the name it carries in
// the report and the JSON Lines (`impl`).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "tierkv/backend.h"
#include "transfer/transfer_engine.h"

namespace tierkv::transfer_bench {

// Names on the cuda backend, then on the cpu backend (where every one of them is a memcpy on the
// stream's worker thread, so the cpu names say "cpu" and which path was asked for, never a CUDA
// call or a GPU part).
enum class CopyImpl : std::uint8_t {
  kLargeCopy,   // "one-large-copy" (both): Stream::copy of one contiguous run (needs one run)
  kMemcpyEach,  // "cudaMemcpyAsync" / "cpu-copy-per-run": one copy call per run
  kCopyEngine,  // "tierkv-copy-engine" / "cpu-copy-engine-path": copy_runs, kCopyEngine
  kSmKernel,    // "tierkv-sm-kernel-<blocks>" / "cpu-sm-kernel-path-<blocks>": copy_runs, kSmKernel
  kEngine,      // "tierkv-engine" / "cpu-engine": the transfer engine's choice of path
};

struct ImplSpec {
  CopyImpl impl = CopyImpl::kCopyEngine;
  int blocks = 0;                    // SM kernel blocks; 0 for the others
  TransferEngine* engine = nullptr;  // kEngine: the engine that chooses
  bool compute_beside = false;       // kEngine: what the engine is told about compute beside it

  // The name rows measured on `backend` carry (see CopyImpl).
  std::string name(BackendKind backend) const;
  // Which hardware moves the bytes: "copy-engine" or "sm-kernel" on the cuda backend (for kEngine,
  // what it chose for the runs given to resolved_for()); "cpu" on the cpu backend.
  std::string_view path(BackendKind backend) const;
  // A copy that records the path the engine chooses for `runs` (kEngine; the others are fixed).
  ImplSpec resolved_for(std::span<const CopyRun> runs) const;

  CopyPath chosen = CopyPath::kCopyEngine;  // kEngine, once resolved
};

// The implementations compared on scattered runs: cudaMemcpyAsync, the copy engine, the SM
// kernel at each of `sm_blocks`, then the engine's choice (told that nothing runs beside it).
std::vector<ImplSpec> scattered_impls(const std::vector<int>& sm_blocks, TransferEngine* engine);

// Queues `runs` on `stream` through `impl`. `to_device` says the direction (the runtime peer
// passes it as the copy kind). Allocation-free on the CUDA backend after the first calls.
Status enqueue_copy(Backend& backend, Stream& stream, const ImplSpec& impl,
                    std::span<const CopyRun> runs, bool to_device);

}  // namespace tierkv::transfer_bench

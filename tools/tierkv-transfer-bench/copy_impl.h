// The ways a set of runs can cross between host and device, each with the name it carries in
// the report and the JSON Lines (`impl`).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "tierkv/backend.h"

namespace tierkv::transfer_bench {

enum class CopyImpl : std::uint8_t {
  kLargeCopy,   // "one-large-copy": Stream::copy of one contiguous run (needs exactly one run)
  kMemcpyEach,  // "cudaMemcpyAsync": one runtime call per run (Stream::copy per run on cpu)
  kCopyEngine,  // "tierkv-copy-engine": Backend::copy_runs, CopyPath::kCopyEngine
  kSmKernel,    // "tierkv-sm-kernel-<blocks>": Backend::copy_runs, CopyPath::kSmKernel
};

struct ImplSpec {
  CopyImpl impl = CopyImpl::kCopyEngine;
  int blocks = 0;  // SM kernel blocks; 0 for the others

  std::string name() const;
  // "copy-engine" or "sm-kernel": which hardware moves the bytes.
  std::string_view path() const;
};

// The implementations compared on scattered runs: cudaMemcpyAsync, the copy engine, then the SM
// kernel at each of `sm_blocks`.
std::vector<ImplSpec> scattered_impls(const std::vector<int>& sm_blocks);

// Queues `runs` on `stream` through `impl`. `to_device` says the direction (the runtime peer
// passes it as the copy kind). Allocation-free on the CUDA backend after the first calls.
Status enqueue_copy(Backend& backend, Stream& stream, const ImplSpec& impl,
                    std::span<const CopyRun> runs, bool to_device);

}  // namespace tierkv::transfer_bench

// The transfer engine: moves sets of contiguous runs between pinned host memory and device memory,
// choosing per transfer between the copy engines and the SM gather/scatter kernel from measured
// costs.
//
// Cost of a transfer of `bytes` in `runs` runs, in microseconds:
//   copy engines  runs * ce_run_us + bytes / ce_bandwidth
//   SM kernel     sm_launch_us     + bytes / sm_bandwidth
// and, when compute runs beside it, each path also costs the compute time it takes away: its own
// time times the fraction by which it slows that compute. The fixed costs and bandwidths are
// measured (calibrate); the slowdown fractions come from tierkv-transfer-bench's measurement. So a
// load of large contiguous runs beside prefill goes to the copy engines, and a scatter of small
// pages with nothing running beside it goes to the kernel.
//
// Thread safety: choose() and costs() may be called from any thread; copy() takes a stream that
// the caller uses from one thread at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "tierkv/backend.h"
#include "tierkv/cache.h"

namespace tierkv {

struct PathCosts {
  double ce_run_us = 1.5;        // fixed cost per run on the copy engines
  double ce_gbps = 50.0;         // copy engines, large runs
  double sm_launch_us = 4.0;     // fixed cost of a kernel launch and its ramp-up
  double sm_gbps = 50.0;         // the SM kernel at its block count
  double ce_compute_slowdown = 0.023;
  double sm_compute_slowdown = 0.40;

  double copy_engine_us(std::size_t runs, std::size_t bytes, bool compute_beside) const;
  double sm_kernel_us(std::size_t bytes, bool compute_beside) const;
};

struct TransferCounters {
  std::uint64_t copy_engine = 0, sm_kernel = 0;
};

class TransferEngine {
 public:
  // With options.calibrate, measures the paths on `backend` first (a few milliseconds).
  static Result<std::unique_ptr<TransferEngine>> create(Backend& backend, const TransferOptions& options);

  CopyPath choose(std::span<const CopyRun> runs, bool compute_beside) const;
  // Queues the runs on `stream` through the chosen path (or the forced one); returns that path.
  Result<CopyPath> copy(std::span<const CopyRun> runs, bool compute_beside, Stream& stream);

  const PathCosts& costs() const { return costs_; }
  TransferCounters counters() const { return {ce_count_.load(), sm_count_.load()}; }

 private:
  TransferEngine(Backend& backend, const TransferOptions& options);
  Status calibrate();

  Backend& backend_;
  TransferOptions options_;
  PathCosts costs_;
  std::atomic<std::uint64_t> ce_count_{0}, sm_count_{0};  // statistics only: relaxed
};

}  // namespace tierkv

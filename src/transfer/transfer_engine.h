// The transfer engine: moves sets of contiguous runs between pinned host memory and device memory,
// choosing per transfer between the copy engines and the SM gather/scatter kernel from measured
// costs.
//
// Cost of a transfer of `bytes` in `runs` runs, in microseconds, for each path:
//   fixed_us + bytes / bandwidth(bytes / runs)
// where the bandwidth of each path is measured at a few run sizes (calibrate) and interpolated:
// the copy engines are fed one run at a time, so small runs starve them (on the H100 test
// machine, 16 KiB runs reach a quarter of the link that 32 KiB runs fill), while the SM kernel
// moves small and large runs alike. When compute runs beside the transfer, each path also costs
// the compute time it takes away: its own time times the fraction by which it slows that compute
// (measured by tierkv-transfer-bench). So a load beside prefill goes to the copy engines, and a
// scatter of small pages with nothing running beside it to the kernel.
//
// The SM kernel must also beat the copy engines by TransferOptions::sm_kernel_min_gain.
//
// Thread safety: choose() and costs() may be called from any thread; copy() takes a stream that
// the caller uses from one thread at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/cache.h"
#include "tierkv/profile.h"

namespace tierkv {

// Each path's cost: its bandwidth by run size and fixed cost (BandwidthCurve, tierkv/profile.h),
// and the fraction by which it slows compute running beside it.
struct PathCosts {
  // Defaults: the H100 test machine (PCIe Gen5 x16), pages scattered through a device pool.
  BandwidthCurve copy_engine{{{16384, 9.0}, {32768, 34.4}, {65536, 54.9}, {1 << 20, 55.0}}, 8.0};
  BandwidthCurve sm_kernel{{{16384, 49.1}, {1 << 20, 49.7}}, 5.0};
  double copy_engine_compute_slowdown = 0.023;
  double sm_kernel_compute_slowdown = 0.50;

  double copy_engine_us(std::size_t runs, std::size_t bytes, bool compute_beside) const;
  double sm_kernel_us(std::size_t runs, std::size_t bytes, bool compute_beside) const;
};

struct TransferCounters {
  std::uint64_t copy_engine = 0, sm_kernel = 0;
};

class TransferEngine {
 public:
  // Costs from options.profile when set (measured by tierkv calibrate); else, with
  // options.calibrate, measured on `backend` first (355 ms on the H100 test machine); else the
  // defaults.
  static Result<std::unique_ptr<TransferEngine>> create(Backend& backend,
                                                        const TransferOptions& options);

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

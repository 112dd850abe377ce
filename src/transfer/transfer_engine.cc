#include "transfer/transfer_engine.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace tierkv {
namespace {

// One layer's load of a 16K-token prefix in pages of 16 tokens is 2048 runs of 32 KiB (64 MiB). The
// copy engines' rate at small runs grows with the runs queued together (on the H100 test machine,
// 32 KiB runs calibrated at 28-37 GB/s in batches of 16 MiB, and move at 37-49 GB/s in batches of
// 32-256 MiB), so the calibration batches are that size. Other backends copy with memcpy, where
// the choice changes nothing: small batches check the flow there.
constexpr std::size_t kCalibrationBytes = std::size_t{64} << 20;
constexpr std::size_t kCalibrationBytesOffDevice = std::size_t{4} << 20;
// The copy engines' curve has a knee between 32 and 64 KiB on the H100 test machine (34 -> 55 GB/s
// for scattered runs): points on both sides of it, or the interpolation puts 64 KiB pages at
// 42 GB/s and hands them to the SM kernel, which then moves them 8% slower.
constexpr std::size_t kCalibrationRuns[] = {std::size_t{16} << 10,  std::size_t{32} << 10,
                                            std::size_t{48} << 10,  std::size_t{64} << 10,
                                            std::size_t{128} << 10, std::size_t{1} << 20};
constexpr int kCalibrationReps = 3;

std::size_t total_bytes(std::span<const CopyRun> runs) {
  std::size_t n = 0;
  for (const CopyRun& r : runs)
    n += r.bytes;
  return n;
}

// Median time in microseconds of copying `runs` by `path`, in steady state: kBatches copies are
// queued back to back between two events, so the host's work to issue one batch overlaps the
// previous batch's transfer, as it does for the layers of a load. An untimed batch goes first, so
// the device is busy while the host queues the first timed one (otherwise the time to issue it,
// hundreds of microseconds for the copy engines' 256 runs of 64 KiB, counts as transfer time and
// the copy engines calibrate 15% below what they reach).
constexpr int kBatches = 4;
Result<double> time_path(Backend& backend, Stream& stream, std::span<const CopyRun> runs,
                         CopyPath path, int blocks) {
  TIERKV_ASSIGN_OR_RETURN(auto start, backend.create_event());
  TIERKV_ASSIGN_OR_RETURN(auto end, backend.create_event());
  TIERKV_RETURN_IF_ERROR(backend.copy_runs(runs, path, blocks, stream));  // warm-up
  std::vector<double> us;
  for (int i = 0; i < kCalibrationReps; ++i) {
    TIERKV_RETURN_IF_ERROR(backend.copy_runs(runs, path, blocks, stream));  // lead, untimed
    TIERKV_RETURN_IF_ERROR(stream.record(*start));
    for (int b = 0; b < kBatches; ++b)
      TIERKV_RETURN_IF_ERROR(backend.copy_runs(runs, path, blocks, stream));
    TIERKV_RETURN_IF_ERROR(stream.record(*end));
    TIERKV_RETURN_IF_ERROR(end->synchronize());
    TIERKV_ASSIGN_OR_RETURN(const double ms, backend.elapsed_ms(*start, *end));
    us.push_back(ms * 1e3 / kBatches);
  }
  std::nth_element(us.begin(), us.begin() + kCalibrationReps / 2, us.end());
  return us[kCalibrationReps / 2];
}

}  // namespace

namespace {
double path_us(const BandwidthCurve& curve, double slowdown, std::size_t runs, std::size_t bytes,
               bool compute_beside) {
  if (runs == 0 || bytes == 0) return 0.0;
  const double t = curve.us(double(bytes), double(bytes) / double(runs));
  return compute_beside ? t * (1.0 + slowdown) : t;
}
}  // namespace

double PathCosts::copy_engine_us(std::size_t runs, std::size_t bytes, bool compute_beside) const {
  return path_us(copy_engine, copy_engine_compute_slowdown, runs, bytes, compute_beside);
}

double PathCosts::sm_kernel_us(std::size_t runs, std::size_t bytes, bool compute_beside) const {
  return path_us(sm_kernel, sm_kernel_compute_slowdown, runs, bytes, compute_beside);
}

TransferEngine::TransferEngine(Backend& backend, const TransferOptions& options)
    : backend_(backend), options_(options) {
  costs_.copy_engine_compute_slowdown = options.copy_engine_compute_slowdown;
  costs_.sm_kernel_compute_slowdown = options.sm_kernel_compute_slowdown;
}

Result<std::unique_ptr<TransferEngine>> TransferEngine::create(Backend& backend,
                                                               const TransferOptions& options) {
  if (options.sm_blocks < 1) return invalid_argument("transfer: sm_blocks must be >= 1");
  if (!(options.copy_engine_compute_slowdown >= 0) || !(options.sm_kernel_compute_slowdown >= 0)) {
    return invalid_argument("transfer: compute slowdown fractions must be >= 0");
  }
  if (!(options.sm_kernel_min_gain >= 0) || !(options.sm_kernel_min_gain < 1)) {
    return invalid_argument("transfer: sm_kernel_min_gain must be in [0, 1)");
  }
  std::unique_ptr<TransferEngine> engine(new TransferEngine(backend, options));
  if (options.profile != nullptr) {
    const CostProfile& p = *options.profile;
    if (p.host_to_device_copy_engine.points.empty() || p.host_to_device_sm_kernel.points.empty())
      return invalid_argument("transfer: the profile has no transfer curves (run tierkv calibrate)");
    engine->costs_.copy_engine = p.host_to_device_copy_engine;
    engine->costs_.sm_kernel = p.host_to_device_sm_kernel;
    engine->costs_.copy_engine_compute_slowdown = p.copy_engine_compute_slowdown;
    engine->costs_.sm_kernel_compute_slowdown = p.sm_kernel_compute_slowdown;
  } else if (options.calibrate) {
    TIERKV_RETURN_IF_ERROR(engine->calibrate());
  }
  return engine;
}

// Measures each path's bandwidth at several run sizes (runs scattered in reverse order through
// the device buffer, as pages of a pool are) and its fixed cost from one small run.
Status TransferEngine::calibrate() {
  const std::size_t total = backend_.info().backend == BackendKind::kCuda
                                ? kCalibrationBytes
                                : kCalibrationBytesOffDevice;
  TIERKV_ASSIGN_OR_RETURN(Buffer host, backend_.allocate(MemoryKind::kPinnedHost, total));
  TIERKV_ASSIGN_OR_RETURN(Buffer dev, backend_.allocate(MemoryKind::kDevice, total));
  TIERKV_ASSIGN_OR_RETURN(auto stream, backend_.create_stream());
  const int blocks = options_.sm_blocks;
  PathCosts measured = costs_;
  measured.copy_engine.points.clear();
  measured.sm_kernel.points.clear();
  std::vector<CopyRun> runs;
  for (const std::size_t run : kCalibrationRuns) {
    runs.clear();
    const std::size_t n = total / run;
    for (std::size_t i = 0; i < n; ++i) {
      runs.push_back(
          {dev.as<std::uint8_t>() + (n - 1 - i) * run, host.as<std::uint8_t>() + i * run, run});
    }
    for (const CopyPath path : {CopyPath::kCopyEngine, CopyPath::kSmKernel}) {
      TIERKV_ASSIGN_OR_RETURN(const double us, time_path(backend_, *stream, runs, path, blocks));
      (path == CopyPath::kCopyEngine ? measured.copy_engine : measured.sm_kernel)
          .points.emplace_back(double(run), double(total) / std::max(us, 1e-3) / 1e3);
    }
  }
  const CopyRun tiny{dev.data(), host.data(), kCalibrationRuns[0]};
  for (const CopyPath path : {CopyPath::kCopyEngine, CopyPath::kSmKernel}) {
    TIERKV_ASSIGN_OR_RETURN(const double us,
                            time_path(backend_, *stream, {&tiny, 1}, path, blocks));
    BandwidthCurve& curve =
        path == CopyPath::kCopyEngine ? measured.copy_engine : measured.sm_kernel;
    curve.fixed_us = std::max(0.0, us - double(tiny.bytes) / (curve.gbps(double(tiny.bytes)) * 1e3));
  }
  TIERKV_RETURN_IF_ERROR(stream->synchronize());
  costs_ = measured;
  return Status::Ok();
}

CopyPath TransferEngine::choose(std::span<const CopyRun> runs, bool compute_beside) const {
  switch (options_.mode) {
    case TransferMode::kCopyEngine:
      return CopyPath::kCopyEngine;
    case TransferMode::kSmKernel:
      return CopyPath::kSmKernel;
    case TransferMode::kAuto:
      break;
  }
  const std::size_t bytes = total_bytes(runs);
  const double ce = costs_.copy_engine_us(runs.size(), bytes, compute_beside);
  const double sm = costs_.sm_kernel_us(runs.size(), bytes, compute_beside);
  return sm < ce * (1.0 - options_.sm_kernel_min_gain) ? CopyPath::kSmKernel
                                                       : CopyPath::kCopyEngine;
}

Result<CopyPath> TransferEngine::copy(std::span<const CopyRun> runs, bool compute_beside,
                                      Stream& stream) {
  const CopyPath path = choose(runs, compute_beside);
  TIERKV_RETURN_IF_ERROR(backend_.copy_runs(runs, path, options_.sm_blocks, stream));
  (path == CopyPath::kSmKernel ? sm_count_ : ce_count_).fetch_add(1, std::memory_order_relaxed);
  return path;
}

}  // namespace tierkv

#include "transfer/transfer_engine.h"

#include <algorithm>
#include <vector>

namespace tierkv {
namespace {

constexpr std::size_t kCalibrationBytes = std::size_t{16} << 20;
constexpr std::size_t kSmallRun = std::size_t{16} << 10;
constexpr int kCalibrationReps = 5;

std::size_t total_bytes(std::span<const CopyRun> runs) {
  std::size_t n = 0;
  for (const CopyRun& r : runs) n += r.bytes;
  return n;
}

// Median time in microseconds of copying `runs` by `path`.
Result<double> time_path(Backend& backend, Stream& stream, std::span<const CopyRun> runs, CopyPath path,
                         int blocks) {
  TIERKV_ASSIGN_OR_RETURN(auto start, backend.create_event());
  TIERKV_ASSIGN_OR_RETURN(auto end, backend.create_event());
  TIERKV_RETURN_IF_ERROR(backend.copy_runs(runs, path, blocks, stream));  // warm-up
  std::vector<double> us;
  for (int i = 0; i < kCalibrationReps; ++i) {
    TIERKV_RETURN_IF_ERROR(stream.record(*start));
    TIERKV_RETURN_IF_ERROR(backend.copy_runs(runs, path, blocks, stream));
    TIERKV_RETURN_IF_ERROR(stream.record(*end));
    TIERKV_RETURN_IF_ERROR(end->synchronize());
    TIERKV_ASSIGN_OR_RETURN(const double ms, backend.elapsed_ms(*start, *end));
    us.push_back(ms * 1e3);
  }
  std::nth_element(us.begin(), us.begin() + kCalibrationReps / 2, us.end());
  return us[kCalibrationReps / 2];
}

}  // namespace

double PathCosts::copy_engine_us(std::size_t runs, std::size_t bytes, bool compute_beside) const {
  const double t = double(runs) * ce_run_us + double(bytes) / (ce_gbps * 1e3);
  return compute_beside ? t * (1.0 + ce_compute_slowdown) : t;
}

double PathCosts::sm_kernel_us(std::size_t bytes, bool compute_beside) const {
  const double t = sm_launch_us + double(bytes) / (sm_gbps * 1e3);
  return compute_beside ? t * (1.0 + sm_compute_slowdown) : t;
}

TransferEngine::TransferEngine(Backend& backend, const TransferOptions& options)
    : backend_(backend), options_(options) {
  costs_.ce_compute_slowdown = options.copy_engine_compute_slowdown;
  costs_.sm_compute_slowdown = options.sm_kernel_compute_slowdown;
}

Result<std::unique_ptr<TransferEngine>> TransferEngine::create(Backend& backend, const TransferOptions& options) {
  if (options.sm_blocks < 1) return invalid_argument("transfer: sm_blocks must be >= 1");
  if (options.copy_engine_compute_slowdown < 0 || options.sm_kernel_compute_slowdown < 0) {
    return invalid_argument("transfer: compute slowdown fractions must be >= 0");
  }
  std::unique_ptr<TransferEngine> engine(new TransferEngine(backend, options));
  if (options.calibrate) TIERKV_RETURN_IF_ERROR(engine->calibrate());
  return engine;
}

Status TransferEngine::calibrate() {
  TIERKV_ASSIGN_OR_RETURN(Buffer host, backend_.allocate(MemoryKind::kPinnedHost, kCalibrationBytes));
  TIERKV_ASSIGN_OR_RETURN(Buffer dev, backend_.allocate(MemoryKind::kDevice, kCalibrationBytes));
  TIERKV_ASSIGN_OR_RETURN(auto stream, backend_.create_stream());
  const CopyRun one{dev.data(), host.data(), kCalibrationBytes};
  std::vector<CopyRun> many;
  for (std::size_t off = 0; off < kCalibrationBytes; off += kSmallRun) {
    many.push_back({dev.as<std::uint8_t>() + off, host.as<std::uint8_t>() + off, kSmallRun});
  }
  const CopyRun tiny{dev.data(), host.data(), kSmallRun};
  const int blocks = options_.sm_blocks;
  TIERKV_ASSIGN_OR_RETURN(const double ce_one, time_path(backend_, *stream, {&one, 1}, CopyPath::kCopyEngine, blocks));
  TIERKV_ASSIGN_OR_RETURN(const double ce_many, time_path(backend_, *stream, many, CopyPath::kCopyEngine, blocks));
  TIERKV_ASSIGN_OR_RETURN(const double sm_one, time_path(backend_, *stream, {&one, 1}, CopyPath::kSmKernel, blocks));
  TIERKV_ASSIGN_OR_RETURN(const double sm_tiny, time_path(backend_, *stream, {&tiny, 1}, CopyPath::kSmKernel, blocks));
  // Bandwidth from one large run; fixed costs from what many small runs (copy engines) or one
  // small run (kernel) take beyond their bytes.
  const double bytes = double(kCalibrationBytes);
  costs_.ce_gbps = bytes / std::max(ce_one, 1e-3) / 1e3;
  costs_.ce_run_us = std::max(0.0, ce_many - bytes / (costs_.ce_gbps * 1e3)) / double(many.size());
  costs_.sm_gbps = bytes / std::max(sm_one, 1e-3) / 1e3;
  costs_.sm_launch_us = std::max(0.0, sm_tiny - double(kSmallRun) / (costs_.sm_gbps * 1e3));
  return stream->synchronize();
}

CopyPath TransferEngine::choose(std::span<const CopyRun> runs, bool compute_beside) const {
  switch (options_.mode) {
    case TransferMode::kCopyEngine: return CopyPath::kCopyEngine;
    case TransferMode::kSmKernel: return CopyPath::kSmKernel;
    case TransferMode::kAuto: break;
  }
  const std::size_t bytes = total_bytes(runs);
  const double ce = costs_.copy_engine_us(runs.size(), bytes, compute_beside);
  const double sm = costs_.sm_kernel_us(bytes, compute_beside);
  return sm < ce ? CopyPath::kSmKernel : CopyPath::kCopyEngine;
}

Result<CopyPath> TransferEngine::copy(std::span<const CopyRun> runs, bool compute_beside, Stream& stream) {
  const CopyPath path = choose(runs, compute_beside);
  TIERKV_RETURN_IF_ERROR(backend_.copy_runs(runs, path, options_.sm_blocks, stream));
  (path == CopyPath::kSmKernel ? sm_count_ : ce_count_).fetch_add(1, std::memory_order_relaxed);
  return path;
}

}  // namespace tierkv

// The SM path of Backend::copy_runs: a kernel that moves many runs between device and pinned host
// memory with 16-byte loads and stores. The runs travel as the kernel's parameter (up to
// kMaxRunsPerLaunch of them, about 25 KB), so a launch needs no descriptor buffer, allocates
// nothing and can be captured in a graph.
#include <algorithm>
#include <cstdint>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace tierkv::cuda {
namespace {

constexpr int kMaxRunsPerLaunch = 1000;
constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // 16-byte loads in flight per thread before the stores
constexpr std::size_t kTileBytes = std::size_t{kThreads} * kUnroll * 16;  // 16 KiB per block step

struct RunBatch {
  int count;
  std::uint32_t tile_begin[kMaxRunsPerLaunch + 1];  // prefix sum of tiles per run
  CopyRun runs[kMaxRunsPerLaunch];
};

__global__ void __launch_bounds__(kThreads)
    copy_runs_kernel(const __grid_constant__ RunBatch batch) {
  const std::uint32_t tiles = batch.tile_begin[batch.count];
  int run = 0;
  for (std::uint32_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    while (batch.tile_begin[run + 1] <= tile)
      ++run;  // tiles only grow: the search moves forward
    const CopyRun& r = batch.runs[run];
    const std::size_t base = std::size_t(tile - batch.tile_begin[run]) * kTileBytes;
    const std::size_t left = r.bytes - base;
    const std::size_t vecs = (left < kTileBytes ? left : kTileBytes) / 16;
    const auto* src = reinterpret_cast<const uint4*>(static_cast<const char*>(r.src) + base);
    auto* dst = reinterpret_cast<uint4*>(static_cast<char*>(r.dst) + base);
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::size_t i = threadIdx.x + std::size_t(u) * kThreads;
      if (i < vecs) v[u] = src[i];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::size_t i = threadIdx.x + std::size_t(u) * kThreads;
      if (i < vecs) dst[i] = v[u];
    }
  }
}

}  // namespace

Status launch_copy_runs_kernel(std::span<const CopyRun> runs, int blocks, cudaStream_t stream) {
  if (blocks < 1) return invalid_argument("copy_runs: sm_blocks must be >= 1");
  // Check every run before queueing anything: a failed call copies nothing.
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const CopyRun& r = runs[i];
    const auto bits =
        reinterpret_cast<std::uintptr_t>(r.dst) | reinterpret_cast<std::uintptr_t>(r.src) | r.bytes;
    if (bits % 16 != 0) {
      return invalid_argument("copy_runs (sm-kernel): run " + std::to_string(i) +
                              " is not 16-byte aligned in address or size");
    }
  }
  RunBatch batch;  // ~28 KB on the host stack, copied into the launch
  std::size_t next = 0;
  while (next < runs.size()) {
    batch.count = 0;
    batch.tile_begin[0] = 0;
    std::uint64_t tiles = 0;
    for (; next < runs.size() && batch.count < kMaxRunsPerLaunch; ++next) {
      const CopyRun& r = runs[next];
      if (r.bytes == 0) continue;
      tiles += (r.bytes + kTileBytes - 1) / kTileBytes;
      if (tiles > UINT32_MAX) return out_of_range("copy_runs: more than 2^32 tiles in one launch");
      batch.runs[batch.count] = r;
      batch.tile_begin[++batch.count] = static_cast<std::uint32_t>(tiles);
    }
    if (batch.count == 0) break;
    const unsigned grid =
        static_cast<unsigned>(std::min<std::uint64_t>(std::uint64_t(blocks), tiles));
    copy_runs_kernel<<<grid, kThreads, 0, stream>>>(batch);
    TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  return Status::Ok();
}

}  // namespace tierkv::cuda

// Host launchers of the CUDA kernels. Each checks its arguments, launches on `stream` and returns
// the launch status; none allocates or synchronizes, so all are graph-capturable.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "tierkv/attention.h"
#include "tierkv/backend.h"
#include "tierkv/dtype.h"
#include "tierkv/prefill.h"
#include "tierkv/status.h"

namespace tierkv::cuda {

Status launch_fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed, float lo,
                           float hi, cudaStream_t stream);

// Whether this build holds machine code for the current device: FailedPrecondition naming the
// build's architectures and the device's compute capability when it does not (an sm_89 card, or a
// 90a-real build on a later architecture), so that the backend refuses at creation instead of
// failing at its first launch.
Status check_kernel_image(const std::string& device_name, int cc_major, int cc_minor);

// Copies the runs with a kernel of `blocks` blocks (the SM path of Backend::copy_runs).
Status launch_copy_runs_kernel(std::span<const CopyRun> runs, int blocks, cudaStream_t stream);

// REQUIRES: validate(args).ok().
Status launch_prefill_attention(const PrefillAttentionArgs& args, int sm_count,
                                cudaStream_t stream);

// REQUIRES: validate(args).ok().
Status launch_decode_attention(const DecodeAttentionArgs& args, int sm_count, cudaStream_t stream);

}  // namespace tierkv::cuda

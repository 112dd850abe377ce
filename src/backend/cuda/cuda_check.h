// CUDA errors become Status values that name the call, the file, the line and the device.
#pragma once

#include <cuda_runtime.h>

#include "tierkv/status.h"

namespace tierkv::cuda {

// A Status for a failed CUDA call. Clears the (non-sticky) error state so that later calls do not
// report it again. Out-of-memory maps to ResourceExhausted, a missing device to Unavailable, the
// rest to DeviceError.
Status cuda_error(cudaError_t err, const char* call, const char* file, int line);

}  // namespace tierkv::cuda

// Evaluates a CUDA call; returns its error as a Status from the enclosing function.
#define TIERKV_CUDA_RETURN_IF_ERROR(call)                                             \
  do {                                                                                \
    const cudaError_t tierkv_cuda_err_ = (call);                                      \
    if (tierkv_cuda_err_ != cudaSuccess) {                                            \
      return ::tierkv::cuda::cuda_error(tierkv_cuda_err_, #call, __FILE__, __LINE__); \
    }                                                                                 \
  } while (0)

// Checks the launch of the kernel just issued.
#define TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR() TIERKV_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError())

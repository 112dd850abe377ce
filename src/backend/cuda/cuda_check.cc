#include "backend/cuda/cuda_check.h"

#include <string>

namespace tierkv::cuda {

Status cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  int device = -1;
  (void)cudaGetDevice(&device);
  (void)cudaGetLastError();  // clear a non-sticky error; a sticky one stays and resurfaces
  std::string msg = std::string(call) + " failed: " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line) +
                    " on device " + std::to_string(device);
  switch (err) {
    case cudaErrorMemoryAllocation:
      return resource_exhausted(std::move(msg));
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return unavailable(std::move(msg));
    case cudaErrorInvalidValue:
      return invalid_argument(std::move(msg));
    default:
      return device_error(std::move(msg));
  }
}

}  // namespace tierkv::cuda

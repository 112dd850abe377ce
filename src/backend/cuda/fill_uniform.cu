#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "core/counter_rng.h"

namespace tierkv::cuda {
namespace {

template <typename T>
__global__ void fill_uniform_kernel(T* dst, std::size_t count, std::uint64_t seed, float lo,
                                    float hi) {
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    dst[i] = from_float<T>(counter_uniform(seed, i, lo, hi));
  }
}

template <typename T>
Status launch(void* dst, std::size_t count, std::uint64_t seed, float lo, float hi,
              cudaStream_t s) {
  constexpr int kThreads = 256;
  const std::size_t blocks = std::min<std::size_t>((count + kThreads - 1) / kThreads, 65536);
  fill_uniform_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(static_cast<T*>(dst),
                                                                            count, seed, lo, hi);
  TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR();
  return Status::Ok();
}

}  // namespace

Status launch_fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed, float lo,
                           float hi, cudaStream_t stream) {
  if (count == 0) return Status::Ok();
  if (dst == nullptr) return invalid_argument("fill_uniform: null pointer");
  switch (dtype) {
    case DType::kF32:
      return launch<float>(dst, count, seed, lo, hi, stream);
    case DType::kF16:
      return launch<__half>(dst, count, seed, lo, hi, stream);
    case DType::kBF16:
      return launch<__nv_bfloat16>(dst, count, seed, lo, hi, stream);
  }
  return invalid_argument("fill_uniform: unknown dtype " + std::to_string(static_cast<int>(dtype)));
}

Status check_kernel_image(const std::string& device_name, int cc_major, int cc_minor) {
  cudaFuncAttributes attributes{};
  const cudaError_t e = cudaFuncGetAttributes(&attributes, fill_uniform_kernel<float>);
  if (e == cudaSuccess) return Status::Ok();
  (void)cudaGetLastError();
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction) {
    const std::string what = "tierkv's CUDA kernels were built for " TIERKV_CUDA_ARCHS
                             " and have no code for " +
                             device_name + " (compute capability " + std::to_string(cc_major) +
                             "." + std::to_string(cc_minor) + ")";
    if (cc_major < 9) {
      return failed_precondition(what +
                                 "; they need compute capability 9.0 or later (thread-block "
                                 "clusters, programmatic dependent launch)");
    }
    return failed_precondition(what + "; rebuild with -DTIERKV_CUDA_ARCHITECTURES=" +
                               std::to_string(cc_major) + std::to_string(cc_minor) + "-real");
  }
  return cuda_error(e, "cudaFuncGetAttributes(fill_uniform_kernel)", __FILE__, __LINE__);
}

}  // namespace tierkv::cuda

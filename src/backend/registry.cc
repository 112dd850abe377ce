#include "backend/cpu/cpu_backend.h"
#include "engine/ops.h"
#include "tierkv/backend.h"

#if TIERKV_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace tierkv {

Result<std::unique_ptr<Backend>> create_backend(BackendKind kind, int device) {
  if (kind == BackendKind::kCpu) return cpu::create_cpu_backend();
#if TIERKV_WITH_CUDA
  return cuda::create_cuda_backend(device);
#else
  (void)device;
  return unimplemented("this build of tierkv has no CUDA backend (configure with TIERKV_CUDA=ON)");
#endif
}

bool cuda_backend_built() {
#if TIERKV_WITH_CUDA
  return true;
#else
  return false;
#endif
}

Result<std::unique_ptr<Ops>> create_ops(Backend& backend) {
  if (backend.kind() == BackendKind::kCpu) return cpu::create_cpu_ops();
#if TIERKV_WITH_CUDA
  return cuda::create_cuda_ops(backend);
#else
  return unimplemented("this build of tierkv has no CUDA backend");
#endif
}

int cuda_device_count() {
#if TIERKV_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

}  // namespace tierkv

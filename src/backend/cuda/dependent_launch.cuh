// Programmatic dependent launch (sm_90): a kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may have its blocks placed while the previous
// kernel on the stream is still running; it must wait for that kernel before touching memory.
#pragma once

#include <cuda_runtime.h>

namespace tierkv::cuda {

// Waits until the grid this one depends on has finished and its memory operations are visible (a
// no-op when the launch had no such dependency). Call it before the first global memory access.
__device__ __forceinline__ void wait_for_prerequisite_grid() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

// Lets the next grid on the stream start placing its blocks.
__device__ __forceinline__ void allow_dependent_grid() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// The launch attribute for a programmatic dependent launch.
inline cudaLaunchAttribute programmatic_launch_attribute() {
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = 1;
  return a;
}

}  // namespace tierkv::cuda

// Marks small functions that the host compiler and nvcc both build, for code the CPU side and the
// CUDA kernels must agree on bit for bit.
#pragma once

#if defined(__CUDACC__)
#define TIERKV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TIERKV_HOST_DEVICE inline
#endif

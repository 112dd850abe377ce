// Warp-level tensor-core products and shared-memory copies (sm_80 instructions) shared by the
// attention kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace tierkv::cuda {

// D += A B with mma.sync.m16n8k16: A (16x16, row-major) in four registers, B (16x8, col-major) in
// two, fp32 accumulators; pack() makes one register of two values in T (bf16 or fp16).
#define TIERKV_MMA_M16N8K16(types)                                            \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." types                 \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])               \
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1))
template <typename T>
struct Mma {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>);
  static constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;

  static __device__ __forceinline__ void run(float (&d)[4], std::uint32_t a0, std::uint32_t a1,
                                             std::uint32_t a2, std::uint32_t a3, std::uint32_t b0,
                                             std::uint32_t b1) {
    if constexpr (kBf16) {
      TIERKV_MMA_M16N8K16("bf16.bf16");
    } else {
      TIERKV_MMA_M16N8K16("f16.f16");
    }
  }
  static __device__ __forceinline__ void run(float (&d)[4], const std::uint32_t (&a)[4],
                                             std::uint32_t b0, std::uint32_t b1) {
    run(d, a[0], a[1], a[2], a[3], b0, b1);
  }
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    std::uint32_t u;
    if constexpr (kBf16) {
      const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
      std::memcpy(&u, &v, 4);
    } else {
      const __half2 v = __floats2half2_rn(lo, hi);
      std::memcpy(&u, &v, 4);
    }
    return u;
  }
};
#undef TIERKV_MMA_M16N8K16

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; zero-fills when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
// The same, asking L2 to fetch the surrounding 256 bytes (a whole head row at dim 128).
__device__ __forceinline__ void cp_async16_l2_256(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices from shared memory, each lane giving one row address.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t addr, std::uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t addr, std::uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

}  // namespace tierkv::cuda

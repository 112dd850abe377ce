// Warpgroup-level tensor-core products (wgmma, sm_90a) for the attention kernels.
//
// TIERKV_WGMMA is 1 in device code compiled for sm_90a (the build's default architecture) and 0
// elsewhere; kernels keep an mma.sync path for the other case. A warpgroup is 4 consecutive warps
// (128 threads) that issue every wgmma together.
//
// Shared-memory operands use the 128-byte swizzle in K-major form: an operand of R rows and K
// elements of 2 bytes is stored as K / 64 column blocks of [R][128 bytes], each a run of 1024-byte
// atoms (8 rows) whose 16-byte chunk c of row r sits at chunk c ^ (r % 8). Atoms must be 1024-byte
// aligned. sw128_offset() gives that layout's element offsets for the copies that fill it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TIERKV_WGMMA 1
#else
#define TIERKV_WGMMA 0
#endif

namespace tierkv::cuda {

// Element offset of 16-byte chunk `chunk` (8 elements) of row `row` in a ROWS-row operand.
template <int ROWS>
__device__ __forceinline__ int sw128_offset(int row, int chunk) {
  return (chunk >> 3) * (ROWS * 64) + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

// Descriptor of a 128-byte-swizzled operand whose first row sits at shared address `addr`, 8-row
// groups 1024 bytes apart. K-major (Q, K): `leading_bytes` is unused (within an atom, + 32 bytes
// per 16 elements of K). MN-major (V): the distance between its 64-element column blocks.
__device__ __forceinline__ std::uint64_t sw128_desc(std::uint32_t addr,
                                                    std::uint32_t leading_bytes = 16) {
  return std::uint64_t((addr & 0x3FFFF) >> 4) |
         (std::uint64_t((leading_bytes >> 4) & 0x3FFF) << 16) | (std::uint64_t{1024 >> 4} << 32) |
         (std::uint64_t{1} << 62);
}

// The helpers below exist in every compilation so that kernels can name them under
// `if constexpr`; their instructions exist only where TIERKV_WGMMA is 1.
__device__ __forceinline__ void wgmma_fence() {
#if TIERKV_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if TIERKV_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if TIERKV_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Makes shared-memory writes of the generic proxy (st.shared, cp.async) visible to wgmma reads;
// each writing thread runs it after its writes complete, before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async_shared() {
#if TIERKV_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Pins accumulator registers in program order around asynchronous wgmma (no instruction).
template <int N>
__device__ __forceinline__ void wgmma_pin(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      asm volatile("" : "+f"(d[i][e])::"memory");
  }
}

#define TIERKV_WGMMA_D32(d)                                                                     \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),     \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), \
      "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
      "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), \
      "+f"(d[7][2]), "+f"(d[7][3])
#define TIERKV_WGMMA_D32_REGS                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"

#define TIERKV_WGMMA_D64(d)                                                                       \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),       \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),   \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),   \
      "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),   \
      "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),   \
      "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),   \
      "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), \
      "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]),             \
      "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),             \
      "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]),             \
      "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]),             \
      "+f"(d[15][2]), "+f"(d[15][3])
#define TIERKV_WGMMA_D64_REGS                                                                  \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19," \
  " %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37," \
  " %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55," \
  " %56, %57, %58, %59, %60, %61, %62, %63}"

// One wgmma with the predicate scale-d (D += A B when set, D = A B when clear) taken from operand
// `pred`: `instr` names shape and types, REGS the accumulators' placeholders, `tail` the operands
// after them; DOPS the macro that lists the accumulators of `d` as operands, then the inputs.
#define TIERKV_WGMMA_ASM(pred, instr, REGS, tail, DOPS, ...)                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " pred                     \
               ", 0;\n"                                                     \
               "wgmma.mma_async.sync.aligned." instr " " REGS tail ";\n}\n" \
               : DOPS(d)                                                    \
               : __VA_ARGS__)

// D (64 x 64, fp32) = A B (ACCUMULATE: D += A B), A 64 x 16 and B 16 x 64 both K-major in shared
// memory. Warp w of the warpgroup holds rows 16w..16w+15 of D in the layout of 8 mma.sync m16n8
// accumulators: d[j] covers columns 8j..8j+7.
template <typename T, bool ACCUMULATE>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[8][4], std::uint64_t a,
                                                   std::uint64_t b) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>);
#if TIERKV_WGMMA
#define TIERKV_SS(types)                                                          \
  TIERKV_WGMMA_ASM("%34", "m64n64k16.f32." types, TIERKV_WGMMA_D32_REGS,          \
                   ", %32, %33, p, 1, 1, 0, 0", TIERKV_WGMMA_D32, "l"(a), "l"(b), \
                   "n"(ACCUMULATE ? 1 : 0))
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    TIERKV_SS("bf16.bf16");
  } else {
    TIERKV_SS("f16.f16");
  }
#undef TIERKV_SS
#else
  __trap();  // kernels call this only where TIERKV_WGMMA is 1
#endif
}

// O (64 x N, fp32) += A B, N = 64 or 128: A (64 x 16) in registers, four per thread in the
// layout of an mma.sync m16n8k16 A fragment (warp w: rows 16w..16w+15); B (16 x N) in shared
// memory MN-major (N contiguous: sw128_desc with the column blocks' distance). d as for
// wgmma_m64n64k16_ss, N / 8 tiles.
template <typename T, int N>
__device__ __forceinline__ void wgmma_m64nNk16_rs(float (&d)[N / 8][4], const std::uint32_t (&a)[4],
                                                  std::uint64_t b) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>);
  static_assert(N == 64 || N == 128);
#if TIERKV_WGMMA
#define TIERKV_RS(pred, instr, REGS, tail, DOPS)                                              \
  TIERKV_WGMMA_ASM(pred, instr, REGS, tail, DOPS, "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), \
                   "l"(b), "r"(1))
#define TIERKV_RS128(types)                                        \
  TIERKV_RS("%69", "m64n128k16.f32." types, TIERKV_WGMMA_D64_REGS, \
            ", {%64, %65, %66, %67}, %68, p, 1, 1, 1", TIERKV_WGMMA_D64)
#define TIERKV_RS64(types)                                        \
  TIERKV_RS("%37", "m64n64k16.f32." types, TIERKV_WGMMA_D32_REGS, \
            ", {%32, %33, %34, %35}, %36, p, 1, 1, 1", TIERKV_WGMMA_D32)
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  if constexpr (N == 128 && kBf16) {
    TIERKV_RS128("bf16.bf16");
  } else if constexpr (N == 128) {
    TIERKV_RS128("f16.f16");
  } else if constexpr (kBf16) {
    TIERKV_RS64("bf16.bf16");
  } else {
    TIERKV_RS64("f16.f16");
  }
#undef TIERKV_RS64
#undef TIERKV_RS128
#undef TIERKV_RS
#else
  __trap();
#endif
}

#undef TIERKV_WGMMA_ASM
#undef TIERKV_WGMMA_D64
#undef TIERKV_WGMMA_D64_REGS
#undef TIERKV_WGMMA_D32
#undef TIERKV_WGMMA_D32_REGS

}  // namespace tierkv::cuda

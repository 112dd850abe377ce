// Causal prefill attention over paged KV (see tierkv/prefill.h for the contract).
//
// FlashAttention structure on the tensor cores with fp32 accumulation. The query rows of one
// sequence and one KV head are packed as (chunk position, head in group) pairs: packed row r is
// position r / G of the chunk, query head kv_head * G + r % G. A CTA of 4 warps owns BLOCK_M = 128
// packed rows, or 64 when the plan finds too few 128-row tiles to fill the device, so every K/V
// tile it gathers from the pages serves all G query heads of the group. It walks KV tiles of
// kBlockN = 64 tokens up to the causal frontier of its last row: Q, K and V arrive by 16-byte
// cp.async into swizzled shared memory, K and V double buffered so the next tile's loads overlap
// this tile's math; the online softmax (base-2 exponents) stays in registers; only tiles that
// cross the diagonal are masked. The byte offsets of a tile's 64 tokens in the pages are computed
// two tiles ahead, from block-table entries that cp.async fetched a tile before that, into a small
// shared table that the K and V loads of the tile both read: no block-table read or division sits
// on the load path.
//
// The products, built for sm_90a (TIERKV_WGMMA): the 4 warps are one warpgroup; S = Q K^T is one
// wgmma.m64n64k16 per 64 rows and 16 dims with Q and K read from shared memory, O += P V one
// wgmma.m64n{D}k16 per 64 rows and 16 keys with the weights in registers (warp w holds rows
// 16w..16w+15 of each 64-row half). Q, K and V then sit in wgmma.cuh's 128-byte-swizzled layout.
// Built for other architectures, mma.sync m16n8k16 from ldmatrix fragments (warp w holds
// BLOCK_M / 4 consecutive rows), with the 64-row kernels keeping Q's fragments in registers.
//
// The 64-row tile halves the math per KV tile (the critical path of a short causal chunk) and
// doubles the CTAs; the plan picks it only for small grids.
//
// When the plan splits the KV range (the CTAs alone would leave SMs idle), split s of a tile
// covers KV tiles [s * per, (s + 1) * per) of its sequence and writes a normalized fp32 partial
// and its log-sum-exp to the workspace; a merge kernel combines the splits of each row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>

#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/wgmma.cuh"

namespace tierkv::cuda {
namespace {

// The tiling; src/core/prefill_plan.cc plans with the same numbers.
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockN = 64;  // KV tokens per tile
constexpr int kNTiles = kBlockN / 8;
// Packed query rows per CTA (the kernels' BLOCK_M): 64 or 128, as the plan's tile_rows says.
constexpr int kSmallBlockM = 64;
constexpr int kLargeBlockM = 128;
constexpr int kMaxSplits = 32;
constexpr float kLog2e = 1.4426950408889634f;

struct Params {
  PrefillAttentionArgs a;
  float scale_log2 = 0;       // sm_scale * log2(e)
  int group = 0;              // query heads per KV head
  int splits = 1;             // KV splits per tile
  int m_blocks = 0;           // CTAs along the longest chunk's packed rows
  int balanced = 0;           // PrefillPlan::balanced_order
  int page_shift = -1;        // log2(page_tokens) when a power of two, else -1
  std::int64_t rows = 0;      // total_q_tokens * num_q_heads
  float* part_o = nullptr;    // [splits][rows][head_dim] when splits > 1
  float* part_lse = nullptr;  // [splits][rows], base 2
};

__device__ __forceinline__ float fast_exp2(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][D] shared tile. The chunk
// index is XORed with row % 8, so the 8 rows an ldmatrix phase reads hit 8 distinct bank groups.
template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

template <int D, int BLOCK_M>
constexpr int smem_bytes() {
  // Q, K[2], V[2], then the token offsets [2][kBlockN] and their pages [2][kBlockN]; 1 KB of slack
  // to start Q at a 1024-byte boundary (the swizzle atom of the wgmma operands).
  return (BLOCK_M + 4 * kBlockN) * D * 2 +
         2 * kBlockN * int(sizeof(std::int64_t) + sizeof(std::int32_t)) + 1024;
}

// Whether the kernels compute S = Q K^T and O += P V with wgmma (built for sm_90a): Q, K and V
// then sit in the 128-byte-swizzled layout of wgmma.cuh, else in that of swizzle().
template <int BLOCK_M>
__device__ constexpr bool uses_wgmma() {
  return TIERKV_WGMMA && BLOCK_M % 64 == 0;
}

// Everything a CTA knows about its tile of packed rows.
struct Tile {
  int b, kv_head, split;
  int q0, n, prefix;  // first q row of the sequence, chunk length, L - n
  int row0;           // first packed row of this CTA within the sequence
  int pos_hi;         // position of the CTA's last real row: keys 0..pos_hi are needed
};

template <typename T, int D, int BLOCK_M>
__device__ __forceinline__ void load_q(const Params& p, const Tile& t, T* sq) {
  constexpr bool kSw128 = uses_wgmma<BLOCK_M>();
  constexpr int kChunks = D / 8, kRowsPerPass = kThreads / kChunks;
  const int chunk = threadIdx.x % kChunks;
  const T* q = static_cast<const T*>(p.a.q);
  const int rows = t.n * p.group;
#pragma unroll
  for (int i = 0; i < BLOCK_M / kRowsPerPass; ++i) {
    const int r = threadIdx.x / kChunks + i * kRowsPerPass;
    const int packed = t.row0 + r;
    const bool valid = packed < rows;
    const T* src = q;
    if (valid) {
      const int j = packed / p.group, h = packed - j * p.group;
      src =
          q + (std::int64_t(t.q0 + j) * p.a.num_q_heads + t.kv_head * p.group + h) * D + chunk * 8;
    }
    cp_async16(smem_addr(sq + (kSw128 ? sw128_offset<BLOCK_M>(r, chunk) : swizzle<D>(r, chunk))),
               src, valid);
  }
}

// The token of tile `tile` whose offset thread threadIdx.x (< kBlockN) looks up. A token past the
// causal frontier maps to token 0: its scores are masked and its weights are exactly 0, and token
// 0 is real data that every row reads anyway, so the loads need neither predicate nor zero-fill.
__device__ __forceinline__ int table_token(const Tile& t, int tile) {
  const int token = tile * kBlockN + int(threadIdx.x);
  return token > t.pos_hi ? 0 : token;
}

// The page holding table_token(t, tile) (threads < kBlockN only).
__device__ __forceinline__ const std::int32_t* page_entry(const Params& p, const Tile& t,
                                                          int tile) {
  const PagedKvLayer& kv = p.a.kv;
  const int token = table_token(t, tile);
  const int page_idx = p.page_shift >= 0 ? token >> p.page_shift : token / kv.page_tokens;
  return kv.block_table + std::int64_t(t.b) * kv.block_table_stride + page_idx;
}

// Copies the block-table entry of table_token(t, tile) to *dst, asynchronously (threads <
// kBlockN only; the thread itself reads it after its group completes).
__device__ __forceinline__ void prefetch_page(const Params& p, const Tile& t, std::int32_t* dst,
                                              int tile) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr(dst)),
               "l"(page_entry(p, t, tile)));
}

// Writes the byte offset (K and V alike) of table_token(t, tile), which sits in `page`, to
// table[threadIdx.x] (threads < kBlockN only). Readers need a barrier after this.
template <typename T>
__device__ __forceinline__ void store_offset(const Params& p, const Tile& t, std::int64_t* table,
                                             int tile, std::int32_t page) {
  const PagedKvLayer& kv = p.a.kv;
  const int token = table_token(t, tile);
  const int in_page = p.page_shift >= 0 ? token & (kv.page_tokens - 1) : token % kv.page_tokens;
  table[threadIdx.x] =
      (std::int64_t(page) * kv.strides.page + std::int64_t(in_page) * kv.strides.token +
       std::int64_t(t.kv_head) * kv.strides.head) *
      std::int64_t(sizeof(T));
}

// Gathers a KV tile from the pages: `src` is K or V advanced by this thread's 16-byte chunk,
// `table` the tile's byte offsets; SW128: in the wgmma operand layout, else swizzle()'s.
template <typename T, int D, bool SW128 = false>
__device__ __forceinline__ void load_kv(const char* src, const std::int64_t* table, T* dst) {
  constexpr int kChunks = D / 8, kRowsPerPass = kThreads / kChunks;
  const int chunk = threadIdx.x % kChunks;
#pragma unroll
  for (int i = 0; i < kBlockN / kRowsPerPass; ++i) {
    const int r = threadIdx.x / kChunks + i * kRowsPerPass;
    const int at = SW128 ? sw128_offset<kBlockN>(r, chunk) : swizzle<D>(r, chunk);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst + at)),
                 "l"(src + table[r]));
  }
}

// POSITIVE_SCALE: scores are scaled inside the exponent (one FFMA) and the row maxima taken on
// raw scores; otherwise the scores are scaled first.
template <typename T, int D, int BLOCK_M, bool POSITIVE_SCALE>
__global__ void __launch_bounds__(kThreads, 2) prefill_kernel(const Params p) {
  constexpr int kWarpM = BLOCK_M / kWarps;  // rows per warp
  constexpr int kMTiles = kWarpM / 16;
  static_assert(kWarpM % 16 == 0 && kMTiles >= 1);
  // With wgmma, warp w holds rows 16w..16w+15 of each 64-row half (m tile mi = half); with
  // mma.sync, its kWarpM consecutive rows. kRowStep: rows from one of its m tiles to the next.
  constexpr bool kWgmma = uses_wgmma<BLOCK_M>();
  static_assert(!kWgmma || BLOCK_M % 64 == 0);
  constexpr int kRowStep = kWgmma ? 64 : 16;
  // The 64-row kernels run where the time is the critical path of single CTAs (small grids): they
  // read the three lengths in one round trip and send Q before reading the block table. The
  // 128-row kernels keep the order they were measured with (on mma.sync their allocation sat at
  // 254 of 255 registers, and the early start moved it).
  constexpr bool kEarlyStart = BLOCK_M == kSmallBlockM;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* const sq = reinterpret_cast<T*>(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
  T* const sk = sq + BLOCK_M * D;
  T* const sv = sk + 2 * kBlockN * D;
  // Pipeline of the KV gather, per 64-token tile j of the loop: its pages are copied into
  // s_page[j & 1] (cp.async, with K of tile j - 2), turned into byte offsets in s_off[j & 1] two
  // iterations ahead, and read by the K and V loads of tile j one iteration ahead.
  std::int64_t* const s_off =
      reinterpret_cast<std::int64_t*>(sv + 2 * kBlockN * D);  // [2][kBlockN]
  std::int32_t* const s_page =
      reinterpret_cast<std::int32_t*>(s_off + 2 * kBlockN);  // [2][kBlockN]
  constexpr int kDTiles = D / 8;                             // n8 tiles of the output

  const PrefillAttentionArgs& a = p.a;
  wait_for_prerequisite_grid();  // nothing before this line touches global memory
  allow_dependent_grid();
  Tile t;
  {
    const int x = blockIdx.x;
    t.split = x % p.splits;
    t.kv_head = (x / p.splits) % a.kv.num_kv_heads;
    t.b = x / (p.splits * a.kv.num_kv_heads);
  }
  {
    // Longest-running tiles first; balanced: the longer half longest first, then the shorter
    // half shortest first (see PrefillPlan::balanced_order).
    const int z = blockIdx.z, half = (p.m_blocks + 1) / 2;
    const int tile = !p.balanced || z < half ? p.m_blocks - 1 - z : z - half;
    t.row0 = tile * BLOCK_M;
  }
  t.q0 = a.q_offsets[t.b];
  t.n = a.q_offsets[t.b + 1] - t.q0;
  int len = 0;
  // Read before the exit test, the length need not wait for the offsets.
  if constexpr (kEarlyStart) len = a.kv.seq_lens[t.b];
  if (t.row0 >= t.n * p.group) return;
  if constexpr (!kEarlyStart) len = a.kv.seq_lens[t.b];
  t.prefix = len - t.n;
  t.pos_hi = t.prefix + min((t.row0 + BLOCK_M - 1) / p.group, t.n - 1);

  const int tiles_all = t.pos_hi / kBlockN + 1;
  int tile_begin = 0, tile_end = tiles_all;
  if (p.splits > 1) {
    const int per = ((t.prefix + t.n + kBlockN - 1) / kBlockN + p.splits - 1) / p.splits;
    tile_begin = min(t.split * per, tiles_all);
    tile_end = min(tile_begin + per, tiles_all);
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sw = lane & 7;  // every ldmatrix row below is congruent to lane mod 8
  const int warp_row0 = kWgmma ? warp * 16 : warp * kWarpM;  // the warp's first row in the CTA
  const int warp_pos_lo = t.prefix + min((t.row0 + warp_row0) / p.group, t.n - 1);

  float o[kMTiles][kDTiles][4];
  float m[kMTiles][2], l[kMTiles][2];
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int dn = 0; dn < kDTiles; ++dn) {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        o[mi][dn][e] = 0.0f;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      m[mi][r] = -INFINITY;
      l[mi][r] = 0.0f;
    }
  }

  const int chunk_bytes = (threadIdx.x % (D / 8)) * 16;
  const char* const gk = static_cast<const char*>(a.kv.k) + chunk_bytes;
  const char* const gv = static_cast<const char*>(a.kv.v) + chunk_bytes;
  const int num_tiles = tile_end - tile_begin;
  if (num_tiles > 0) {
    // Q needs only the offsets: with an early start its copies fly while the block table is
    // read. Either way they complete with K's group.
    if constexpr (kEarlyStart) load_q<T, D, BLOCK_M>(p, t, sq);
    // Offsets of iteration j's tile live in s_off[j & 1], written two iterations ahead.
    if (threadIdx.x < kBlockN) {
      store_offset<T>(p, t, s_off, tile_begin, *page_entry(p, t, tile_begin));
      if (num_tiles > 1)
        store_offset<T>(p, t, s_off + kBlockN, tile_begin + 1, *page_entry(p, t, tile_begin + 1));
    }
    __syncthreads();
    if constexpr (!kEarlyStart) load_q<T, D, BLOCK_M>(p, t, sq);
    load_kv<T, D, kWgmma>(gk, s_off, sk);
    if (num_tiles > 2 && threadIdx.x < kBlockN)
      prefetch_page(p, t, s_page + threadIdx.x, tile_begin + 2);
    cp_async_commit();
    load_kv<T, D, kWgmma>(gv, s_off, sv);
    cp_async_commit();
  }
  const std::uint32_t q_base = smem_addr(sq) + ((warp * kWarpM + (lane & 15)) * D) * 2;
  // On mma.sync, the 64-row kernels keep their Q fragments in registers (D / 4 per thread), read
  // from shared memory once, when Q has landed; the 128-row kernels have no registers to spare and
  // read them again for every KV tile. wgmma reads Q from shared memory itself.
  constexpr bool kQInRegisters = !kWgmma && BLOCK_M == kSmallBlockM;
  std::uint32_t qf[kQInRegisters ? D / 16 : 1][kMTiles][4];
  for (int it = 0; it < num_tiles; ++it) {
    const int tile = tile_begin + it;
    const int stage = it & 1;
    cp_async_wait<1>();                                // K[it] (and Q) landed
    if constexpr (kWgmma) fence_proxy_async_shared();  // ... for wgmma's reads too
    __syncthreads();  // ... for every thread; and all are done with K[it - 1]
    if constexpr (kQInRegisters) {
      if (it == 0) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi) {
            ldmatrix_x4(q_base + mi * 16 * D * 2 + (((2 * kk + (lane >> 4)) ^ sw) << 4),
                        qf[kk][mi]);
          }
        }
      }
    }
    const std::int64_t* next_off = s_off + (stage ^ 1) * kBlockN;
    if (it + 1 < num_tiles) load_kv<T, D, kWgmma>(gk, next_off, sk + (stage ^ 1) * kBlockN * D);
    if (it + 3 < num_tiles && threadIdx.x < kBlockN) {
      prefetch_page(p, t, s_page + (stage ^ 1) * kBlockN + threadIdx.x, tile + 3);
    }
    cp_async_commit();

    // S = Q K^T for this warp's rows x 64 keys.
    float s[kMTiles][kNTiles][4];
    if constexpr (kWgmma) {
      // Each m tile is one 64-row wgmma per 16 dims, with Q and K read from shared memory.
      const std::uint32_t q_at = smem_addr(sq), k_at = smem_addr(sk + stage * kBlockN * D);
      wgmma_fence();  // the previous tile's reads of s come first
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const std::uint64_t b = sw128_desc(k_at + (kk / 4) * (kBlockN * 128) + (kk % 4) * 32);
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          const std::uint64_t a =
              sw128_desc(q_at + (kk / 4) * (BLOCK_M * 128) + mi * 64 * 128 + (kk % 4) * 32);
          if (kk == 0) {
            wgmma_m64n64k16_ss<T, false>(s[mi], a, b);
          } else {
            wgmma_m64n64k16_ss<T, true>(s[mi], a, b);
          }
        }
      }
      wgmma_commit();
      wgmma_wait<0>();  // and the previous tile's P V, left in flight
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
        wgmma_pin(s[mi]);
        wgmma_pin(o[mi]);
      }
    } else {
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e)
            s[mi][nt][e] = 0.0f;
        }
      }
      const std::uint32_t k_base =
          smem_addr(sk + stage * kBlockN * D) + (((lane & 7) + ((lane >> 4) << 3)) * D) * 2;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t qa[kMTiles][4];
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          if constexpr (kQInRegisters) {
#pragma unroll
            for (int e = 0; e < 4; ++e)
              qa[mi][e] = qf[kk][mi][e];
          } else {
            ldmatrix_x4(q_base + mi * 16 * D * 2 + (((2 * kk + (lane >> 4)) ^ sw) << 4), qa[mi]);
          }
        }
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          std::uint32_t kb[4];
          ldmatrix_x4(k_base + np * 16 * D * 2 + (((2 * kk + ((lane >> 3) & 1)) ^ sw) << 4), kb);
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi) {
            Mma<T>::run(s[mi][2 * np], qa[mi], kb[0], kb[1]);
            Mma<T>::run(s[mi][2 * np + 1], qa[mi], kb[2], kb[3]);
          }
        }
      }
    }

    // Scores in base-2 units (m holds scaled maxima); keys past each row's position masked on
    // diagonal tiles.
    const float scale = p.scale_log2;
    const int t0 = tile * kBlockN;
    if (!POSITIVE_SCALE) {
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e)
            s[mi][nt][e] *= scale;
        }
      }
    }
    if (t0 + kBlockN - 1 > warp_pos_lo) {  // a diagonal tile for this warp
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          // The row's position (padding rows past the chunk repeat the last one, so they stay
          // finite), as the last key column of this tile that it sees.
          const int packed = t.row0 + warp_row0 + mi * kRowStep + (lane >> 2) + r * 8;
          const int last = t.prefix + min(packed / p.group, t.n - 1) - t0 - (lane & 3) * 2;
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
            if (nt * 8 > last) s[mi][nt][2 * r] = -INFINITY;
            if (nt * 8 + 1 > last) s[mi][nt][2 * r + 1] = -INFINITY;
          }
        }
      }
    }

    // Online softmax: each row's 64 scores sit in the 4 lanes of a quad; this thread holds 4 rows
    // (m tile mi, half r). The maxima of all 4 first, so their reductions overlap; O and l are
    // rescaled only when a row maximum of the warp moved, which on long prefixes is rare.
    float mx[kMTiles][2];
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float a0 = fmaxf(s[mi][0][2 * r], s[mi][0][2 * r + 1]);
        float a1 = fmaxf(s[mi][1][2 * r], s[mi][1][2 * r + 1]);
#pragma unroll
        for (int nt = 2; nt < kNTiles; nt += 2) {
          a0 = fmaxf(a0, fmaxf(s[mi][nt][2 * r], s[mi][nt][2 * r + 1]));
          a1 = fmaxf(a1, fmaxf(s[mi][nt + 1][2 * r], s[mi][nt + 1][2 * r + 1]));
        }
        mx[mi][r] = fmaxf(a0, a1);
      }
    }
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
        mx[mi][r] = fmaxf(mx[mi][r], __shfl_xor_sync(0xffffffffu, mx[mi][r], 1));
    }
    bool moved = false;
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[mi][r] = fmaxf(mx[mi][r], __shfl_xor_sync(0xffffffffu, mx[mi][r], 2));
        if (POSITIVE_SCALE) mx[mi][r] *= scale;
        mx[mi][r] = fmaxf(mx[mi][r], m[mi][r]);
        moved |= mx[mi][r] != m[mi][r];
      }
    }
    // A moved maximum is finite (it exceeds the old one), so m - mx is -inf or negative.
    if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float alpha = mx[mi][r] == m[mi][r] ? 1.0f : fast_exp2(m[mi][r] - mx[mi][r]);
          l[mi][r] *= alpha;
#pragma unroll
          for (int dn = 0; dn < kDTiles; ++dn) {
            o[mi][dn][2 * r] *= alpha;
            o[mi][dn][2 * r + 1] *= alpha;
          }
        }
      }
    }
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
        m[mi][r] = mx[mi][r];
    }
    // The weights go straight to T pairs: pp[mi][nt][r] holds row half r of n8 tile nt, the
    // layout of an A fragment.
    std::uint32_t pp[kMTiles][kNTiles][2];
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        // A row with no key yet uses base 0, so that exp2(-inf - base) = 0 and never NaN.
        const float base = m[mi][r] == -INFINITY ? 0.0f : m[mi][r];
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          float e[2];
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const float x = s[mi][nt][2 * r + c];
            e[c] = POSITIVE_SCALE ? fast_exp2(fmaf(x, scale, -base)) : fast_exp2(x - base);
            sum += e[c];
          }
          pp[mi][nt][r] = Mma<T>::pack(e[0], e[1]);
        }
        l[mi][r] += sum;
      }
    }

    cp_async_wait<1>();  // V[it] landed
    if constexpr (kWgmma) fence_proxy_async_shared();
    __syncthreads();  // ... for every thread; and all are done with V[it - 1]
    if (it + 1 < num_tiles) load_kv<T, D, kWgmma>(gv, next_off, sv + (stage ^ 1) * kBlockN * D);
    cp_async_commit();
    // Tile it + 2's offsets go where tile it's were: every thread issued those loads in the
    // previous iteration, and the next iteration's first barrier publishes the new ones. Its pages
    // landed with K[it] (the first wait above), copied by this very thread.
    if (it + 2 < num_tiles && threadIdx.x < kBlockN) {
      store_offset<T>(p, t, s_off + stage * kBlockN, tile + 2,
                      s_page[stage * kBlockN + threadIdx.x]);
    }

    // O += P V: the weights in the S accumulators' layout are the A fragments of P.
    if constexpr (kWgmma) {
      const std::uint32_t v_at = smem_addr(sv + stage * kBlockN * D);
      wgmma_fence();  // P written and O rescaled
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        // V is MN-major: its two 64-dim column blocks kBlockN rows apart.
        const std::uint64_t b = sw128_desc(v_at + kk * 16 * 128, kBlockN * 128);
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          const std::uint32_t pa[4] = {pp[mi][2 * kk][0], pp[mi][2 * kk][1], pp[mi][2 * kk + 1][0],
                                       pp[mi][2 * kk + 1][1]};
          wgmma_m64nNk16_rs<T, D>(o[mi], pa, b);
        }
      }
      // Left in flight: it runs through the next tile's barrier and loads into that tile's Q K^T,
      // whose wait covers it (before the softmax touches O or P); after the loop, the wait below.
      wgmma_commit();
    } else {
      const std::uint32_t v_base = smem_addr(sv + stage * kBlockN * D) + ((lane & 15) * D) * 2;
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        std::uint32_t pa[kMTiles][4];
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          pa[mi][0] = pp[mi][2 * kk][0];
          pa[mi][1] = pp[mi][2 * kk][1];
          pa[mi][2] = pp[mi][2 * kk + 1][0];
          pa[mi][3] = pp[mi][2 * kk + 1][1];
        }
#pragma unroll
        for (int np = 0; np < kDTiles / 2; ++np) {
          std::uint32_t vb[4];
          ldmatrix_x4_trans(v_base + kk * 16 * D * 2 + (((2 * np + (lane >> 4)) ^ sw) << 4), vb);
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi) {
            Mma<T>::run(o[mi][2 * np], pa[mi], vb[0], vb[1]);
            Mma<T>::run(o[mi][2 * np + 1], pa[mi], vb[2], vb[3]);
          }
        }
      }
    }
    // Tile it + 2's offsets go where tile it's were: every thread issued those loads in the
    // previous iteration, and the next iteration's first barrier publishes the new ones.
  }

  if constexpr (kWgmma) {
    wgmma_wait<0>();  // the last tile's P V
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi)
      wgmma_pin(o[mi]);
  }
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[mi][r] += __shfl_xor_sync(0xffffffffu, l[mi][r], 1);
      l[mi][r] += __shfl_xor_sync(0xffffffffu, l[mi][r], 2);
    }
  }
  const int rows = t.n * p.group;
  if (p.splits == 1) {
    // Stage the warp's rows in its own part of the Q tile, then store 16 bytes per lane.
    if constexpr (kWgmma) __syncthreads();  // every wgmma read of Q is done
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp_row0 + mi * kRowStep + (lane >> 2) + r * 8;
        const float inv = 1.0f / l[mi][r];  // l >= 1: key 0 is in every row's range
#pragma unroll
        for (int dn = 0; dn < kDTiles; ++dn) {
          *reinterpret_cast<std::uint32_t*>(sq + swizzle<D>(row, dn) + (lane & 3) * 2) =
              Mma<T>::pack(o[mi][dn][2 * r] * inv, o[mi][dn][2 * r + 1] * inv);
        }
      }
    }
    __syncwarp();
    constexpr int kChunks = D / 8;
    T* const out = static_cast<T*>(a.out);
#pragma unroll
    for (int i = lane; i < kWarpM * kChunks; i += 32) {
      const int j = i / kChunks, chunk = i % kChunks;  // j: the warp's j-th row
      const int row = warp_row0 + (j / 16) * kRowStep + j % 16;
      const int packed = t.row0 + row;
      if (packed < rows) {
        const int j = packed / p.group, h = packed - j * p.group;
        T* dst = out + (std::int64_t(t.q0 + j) * a.num_q_heads + t.kv_head * p.group + h) * D +
                 chunk * 8;
        *reinterpret_cast<uint4*>(dst) =
            *reinterpret_cast<const uint4*>(sq + swizzle<D>(row, chunk));
      }
    }
  } else {
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int packed = t.row0 + warp_row0 + mi * kRowStep + (lane >> 2) + r * 8;
        if (packed >= rows) continue;
        const int j = packed / p.group, h = packed - j * p.group;
        const std::int64_t row_id =
            std::int64_t(t.q0 + j) * a.num_q_heads + t.kv_head * p.group + h;
        const std::int64_t part = std::int64_t(t.split) * p.rows + row_id;
        const bool any = l[mi][r] > 0.0f;  // no key of this split at or before the row
        const float inv = any ? 1.0f / l[mi][r] : 0.0f;
        float* dst = p.part_o + part * D + (lane & 3) * 2;
#pragma unroll
        for (int dn = 0; dn < kDTiles; ++dn) {
          *reinterpret_cast<float2*>(dst + dn * 8) =
              make_float2(o[mi][dn][2 * r] * inv, o[mi][dn][2 * r + 1] * inv);
        }
        if ((lane & 3) == 0) p.part_lse[part] = any ? m[mi][r] + __log2f(l[mi][r]) : -INFINITY;
      }
    }
  }
}

// One warp per (q token, q head) row: weights the splits' partials by their log-sum-exps.
template <typename T, int D>
__global__ void __launch_bounds__(128) prefill_merge_kernel(const Params p) {
  constexpr int kPer = D / 32;
  wait_for_prerequisite_grid();
  allow_dependent_grid();
  const std::int64_t row = std::int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= p.rows) return;
  const int lane = threadIdx.x % 32;
  const float lse = lane < p.splits ? p.part_lse[std::int64_t(lane) * p.rows + row] : -INFINITY;
  float mx = lse;
#pragma unroll
  for (int off = 16; off > 0; off /= 2)
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  // Split 0 holds key 0, which every row sees: mx is finite.
  const float w = fast_exp2(lse - mx);
  float sum = w;
#pragma unroll
  for (int off = 16; off > 0; off /= 2)
    sum += __shfl_xor_sync(0xffffffffu, sum, off);
  float acc[kPer] = {};
  for (int s = 0; s < p.splits; ++s) {
    const float ws = __shfl_sync(0xffffffffu, w, s);
    if (ws == 0.0f) continue;  // an empty split's partial is zero; an underflowed one adds nothing
    const float* src = p.part_o + (std::int64_t(s) * p.rows + row) * D + lane * kPer;
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      acc[i] = fmaf(ws, src[i], acc[i]);
  }
  T* dst = static_cast<T*>(p.a.out) + row * D + lane * kPer;
  const float inv = 1.0f / sum;
#pragma unroll
  for (int i = 0; i < kPer; ++i)
    dst[i] = from_float<T>(acc[i] * inv);
}

// Raises the kernel's dynamic shared-memory limit once per device.
template <typename T, int D, int BLOCK_M, bool POSITIVE_SCALE>
Status allow_smem() {
  static std::atomic<std::uint64_t> done{0};
  int device = 0;
  TIERKV_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const std::uint64_t bit = device < 64 ? (std::uint64_t{1} << device) : 0;
  if (bit != 0 && (done.load(std::memory_order_relaxed) & bit) != 0) return Status::Ok();
  TIERKV_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(prefill_kernel<T, D, BLOCK_M, POSITIVE_SCALE>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   smem_bytes<D, BLOCK_M>()));
  done.fetch_or(bit, std::memory_order_relaxed);  // a repeat of the idempotent call is harmless
  return Status::Ok();
}

template <typename T, int D, int BLOCK_M, bool POSITIVE_SCALE>
Status launch_main(const Params& p, cudaStream_t stream) {
  TIERKV_RETURN_IF_ERROR((allow_smem<T, D, BLOCK_M, POSITIVE_SCALE>()));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(p.a.kv.batch * p.a.kv.num_kv_heads * p.splits), 1,
                     static_cast<unsigned>(p.m_blocks));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem_bytes<D, BLOCK_M>();
  cfg.stream = stream;
  cudaLaunchAttribute pdl = programmatic_launch_attribute();
  cfg.attrs = &pdl;
  cfg.numAttrs = p.a.plan.programmatic_launch ? 1 : 0;
  TIERKV_CUDA_RETURN_IF_ERROR(
      cudaLaunchKernelEx(&cfg, prefill_kernel<T, D, BLOCK_M, POSITIVE_SCALE>, p));
  return Status::Ok();
}

template <typename T, int D, int BLOCK_M>
Status launch_tile(const Params& p, cudaStream_t stream) {
  if (p.scale_log2 > 0) return launch_main<T, D, BLOCK_M, true>(p, stream);
  return launch_main<T, D, BLOCK_M, false>(p, stream);
}

template <typename T, int D>
Status launch(const Params& p, cudaStream_t stream) {
  if (p.a.plan.tile_rows == kSmallBlockM) {
    TIERKV_RETURN_IF_ERROR((launch_tile<T, D, kSmallBlockM>(p, stream)));
  } else {
    TIERKV_RETURN_IF_ERROR((launch_tile<T, D, kLargeBlockM>(p, stream)));
  }
  if (p.splits > 1) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>((p.rows + 3) / 4));
    cfg.blockDim = dim3(128);
    cfg.stream = stream;
    cudaLaunchAttribute pdl = programmatic_launch_attribute();
    cfg.attrs = &pdl;
    cfg.numAttrs = 1;  // it waits for the main kernel before reading the partials
    TIERKV_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&cfg, prefill_merge_kernel<T, D>, p));
  }
  return Status::Ok();
}

template <typename T>
Status dispatch_head_dim(const Params& p, cudaStream_t stream) {
  switch (p.a.kv.head_dim) {
    case 64:
      return launch<T, 64>(p, stream);
    case 128:
      return launch<T, 128>(p, stream);
    default:
      return unimplemented("prefill attention: head_dim " + std::to_string(p.a.kv.head_dim) +
                           " (64, 128 supported)");
  }
}

}  // namespace

Status launch_prefill_attention(const PrefillAttentionArgs& args, int /*sm_count*/,
                                cudaStream_t stream) {
  Params p;
  p.a = args;
  p.group = args.num_q_heads / args.kv.num_kv_heads;
  if (!prefill_group_supported(p.group)) {
    return unimplemented("prefill attention: GQA group " + std::to_string(p.group) +
                         " (1..8 supported)");
  }
  p.scale_log2 = args.sm_scale * kLog2e;
  const std::int64_t block_m = args.plan.tile_rows;
  if (block_m != kSmallBlockM && block_m != kLargeBlockM) {
    return invalid_argument("prefill attention: the plan's tile_rows (" + std::to_string(block_m) +
                            ") is neither 64 nor 128");
  }
  // The plan records the grid: m_blocks x batch x kv_heads x splits CTAs.
  const std::int64_t m_blocks =
      (std::int64_t{args.plan.max_q_tokens} * p.group + block_m - 1) / block_m;
  const std::int64_t base = m_blocks * args.kv.batch * args.kv.num_kv_heads;
  if (m_blocks < 1 || m_blocks > 65535 || args.plan.work_items < base ||
      args.plan.work_items % base != 0 || args.plan.work_items / base > kMaxSplits) {
    return invalid_argument(
        "prefill attention: the plan's work items (" + std::to_string(args.plan.work_items) +
        ") do not match this kernel's tiling; make the plan with plan_prefill_attention");
  }
  p.m_blocks = static_cast<int>(m_blocks);
  p.balanced = args.plan.balanced_order ? 1 : 0;
  p.splits = static_cast<int>(args.plan.work_items / base);
  p.rows = std::int64_t{args.plan.total_q_tokens} * args.num_q_heads;
  const int pt = args.kv.page_tokens;
  p.page_shift = (pt & (pt - 1)) == 0 ? __builtin_ctz(static_cast<unsigned>(pt)) : -1;
  if (p.splits > 1) {
    const std::size_t o_bytes =
        (std::size_t(p.splits) * p.rows * args.kv.head_dim * sizeof(float) + 255) / 256 * 256;
    const std::size_t need = o_bytes + std::size_t(p.splits) * p.rows * sizeof(float);
    if (args.workspace == nullptr || args.plan.workspace_bytes < need) {
      return invalid_argument("prefill attention: " + std::to_string(p.splits) +
                              " KV splits need " + std::to_string(need) + " bytes of workspace");
    }
    p.part_o = static_cast<float*>(args.workspace);
    p.part_lse = reinterpret_cast<float*>(static_cast<char*>(args.workspace) + o_bytes);
  }
  switch (args.kv.dtype) {
    case DType::kBF16:
      return dispatch_head_dim<__nv_bfloat16>(p, stream);
    case DType::kF16:
      return dispatch_head_dim<__half>(p, stream);
    default:
      return unimplemented("prefill attention: dtype " + std::string(dtype_name(args.kv.dtype)) +
                           " (bf16, f16 supported)");
  }
}

}  // namespace tierkv::cuda

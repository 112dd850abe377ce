// Decode attention over paged KV (see tierkv/attention.h for the contract, and
// docs/decode-attention-notes.md for the measurements behind the choices here).
//
// One block of four warps handles (split of a sequence, KV head, sequence). Each warp streams its
// own 16-token tiles of K and V through a ring of shared-memory stages with cp.async (16-byte
// copies, no block-wide barrier in the loop), so every warp keeps STAGES - 1 tiles in flight while
// it computes. The GQA group's query heads (up to 8) run against a tile with tensor-core products:
//
//   S   = Q K^T      m16n8k16, M = query heads (rows 8..15 zero), N = tokens, K = head dim
//   O^T = V^T P^T    m16n8k16, M = head dim,  N = query heads,    K = tokens
//
// The accumulator rows 0..7 of S are, register for register, the B operand P^T of the second
// product, so the probabilities never leave registers. V^T comes from ldmatrix.trans. The online
// softmax works in base 2 (scores scaled by sm_scale * log2 e). At the end the warps of a block
// merge through shared memory; the splits of a sequence then merge either inside the launch
// through a thread-block cluster (distributed shared memory), or through the workspace: by a
// small second kernel started as a programmatic dependent launch, or by the last block to finish
// for the (sequence, KV head or head group), in the same launch (see last_to_arrive()).
//
// A second kernel, head-fused, gives each warp a whole KV head and a block 2, 4 or 8 heads of one
// sequence: the block copies whole token rows of its heads (with 8 heads of Llama-8B, whole
// pages) per stage, the read a dense layout would make; with 8 heads it wins once the batch alone
// fills the device (batch 128 of Llama-8B).
//
// Both kernels start with griddepcontrol.wait (no memory is touched before the previous grid on
// the stream has finished) and may be launched as programmatic dependents, so their blocks are
// resident when the previous kernel ends.
#include <cooperative_groups.h>
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
#include "core/decode_workspace.h"

namespace tierkv::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 16;     // tokens per pipeline stage of one warp
constexpr int kMaxGroup = 8;  // query heads per KV head: the N of the second product
constexpr int kMaxClusterSplits = 16;
constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xffffffffu;

enum Mode : int { kSingle = 0, kClusterMerge = 1, kWorkspaceMerge = 2, kLastMerge = 3 };

// Per-launch values derived on the host.
struct Params {
  float scale_log2 = 0;   // sm_scale * log2(e)
  int mode = kSingle;     // Mode
  int splits = 1;         // blocks per (sequence, KV head) along grid x
  int page_shift = -1;    // log2(page_tokens) when it is a power of two, else -1
  int aligned_pages = 0;  // page_tokens % 16 == 0: a tile never crosses a page
  int l2_prefetch = 1;    // ask L2 for whole 256-byte lines on each copy
};

// ---------------------------------------------------------------- device helpers

template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&v)[8]) {
  uint4 u;
  u.x = Mma<T>::pack(v[0], v[1]);
  u.y = Mma<T>::pack(v[2], v[3]);
  u.z = Mma<T>::pack(v[4], v[5]);
  u.w = Mma<T>::pack(v[6], v[7]);
  return u;
}

// acc += wt * src[0..7] (two float4 loads), and the 8 floats stored back as two float4.
__device__ __forceinline__ void add_weighted8(float (&acc)[8], const float4* src, float wt) {
  const float4 x = src[0], y = src[1];
  acc[0] = fmaf(x.x, wt, acc[0]);
  acc[1] = fmaf(x.y, wt, acc[1]);
  acc[2] = fmaf(x.z, wt, acc[2]);
  acc[3] = fmaf(x.w, wt, acc[3]);
  acc[4] = fmaf(y.x, wt, acc[4]);
  acc[5] = fmaf(y.y, wt, acc[5]);
  acc[6] = fmaf(y.z, wt, acc[6]);
  acc[7] = fmaf(y.w, wt, acc[7]);
}
__device__ __forceinline__ void store8(float* dst, const float (&v)[8]) {
  float4* d = reinterpret_cast<float4*>(dst);
  d[0] = make_float4(v[0], v[1], v[2], v[3]);
  d[1] = make_float4(v[4], v[5], v[6], v[7]);
}

// The workspace merges' parts, laid out by core/decode_workspace.h (which the planner sizes by):
// counters[batch][kv_heads] (kLastMerge; zero between runs), o[batch][q_heads][splits][head_dim],
// lse[batch][q_heads][splits] (base 2).
struct Partials {
  unsigned* counters;
  float* o;
  float* lse;
};
__device__ __forceinline__ Partials partials_of(const DecodeAttentionArgs& a) {
  const DecodeWorkspaceLayout l = decode_workspace_layout(
      a.plan.batch, a.kv.num_kv_heads, a.num_q_heads, a.plan.num_splits, a.kv.head_dim);
  auto* base = static_cast<char*>(a.workspace);
  return {reinterpret_cast<unsigned*>(base), reinterpret_cast<float*>(base + l.counter_bytes),
          reinterpret_cast<float*>(base + l.lse_offset)};
}

// Splits of fixed length `tps` that a sequence of `len` tokens has: the blocks of the later
// splits return at once, and the merges read only these.
__device__ __forceinline__ int splits_of(int len, int tps, int planned) {
  return min(planned, (len + tps - 1) / tps);
}

// kLastMerge, called by every thread of a block once its partials are written: counts the block
// in `counter` and tells all its threads whether it was the last of `arrivals` blocks, the one
// that merges. Memory ordering (PTX memory model, the pattern of cooperative_groups' grid sync):
//  - release: each thread's partial stores, then its fence.sc.gpu (__threadfence); bar.sync
//    orders every thread's stores and fences before thread 0's fence and atomic, and a fence is
//    cumulative over what is ordered before it, so once the atomic's increment is visible at GPU
//    scope, so are all the partials of the block;
//  - acquire: thread 0 of the last block reads the full count with its atomic (the atomics on one
//    counter form a single modification order, so it has read every other block's increment),
//    fences, and bar.sync hands that on to its threads, which then read the partials with
//    ld.global.cg: L2, the point of coherence, never a possibly stale L1 line.
// The last block sets the counter back to 0 itself: every block of the group has counted by
// then, so nothing else touches it in this run, and the next run (a programmatic dependent too)
// reads it only after griddepcontrol.wait, when this grid's memory operations are complete.
__device__ __forceinline__ bool last_to_arrive(unsigned* counter, int arrivals) {
  __threadfence();
  __syncthreads();
  int last = 0;
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1u) == unsigned(arrivals - 1);
    if (last) {
      *counter = 0u;
      __threadfence();
    }
  }
  return __syncthreads_or(last) != 0;
}

// The output rows [row0, row0 + rows) of a sequence from its `splits` partials in the workspace
// (normalized outputs and base-2 log-sum-exps): one thread per 4 floats of a row.
template <typename T, int D>
__device__ __forceinline__ void merge_partials(const DecodeAttentionArgs& a, const Partials& parts,
                                               std::size_t row0, int rows, int splits) {
  constexpr int kVecs = D / 4;
  const int planned = a.plan.num_splits;
  for (int v = threadIdx.x; v < rows * kVecs; v += blockDim.x) {
    const std::size_t r = row0 + v / kVecs;
    const int d0 = (v % kVecs) * 4;
    const float* lse = parts.lse + r * planned;
    const float* o = parts.o + r * planned * D + d0;
    float mx = -INFINITY;
#pragma unroll 8
    for (int s = 0; s < splits; ++s)
      mx = fmaxf(mx, __ldcg(lse + s));  // finite: every counted split has tokens
    float sum = 0.0f;
    float acc[4] = {0, 0, 0, 0};
#pragma unroll 8
    for (int s = 0; s < splits; ++s) {
      const float w = exp2f(__ldcg(lse + s) - mx);
      const float4 x = __ldcg(reinterpret_cast<const float4*>(o + std::size_t(s) * D));
      sum += w;
      acc[0] = fmaf(w, x.x, acc[0]);
      acc[1] = fmaf(w, x.y, acc[1]);
      acc[2] = fmaf(w, x.z, acc[2]);
      acc[3] = fmaf(w, x.w, acc[3]);
    }
    const float inv = 1.0f / sum;
    uint2 u;
    u.x = Mma<T>::pack(acc[0] * inv, acc[1] * inv);
    u.y = Mma<T>::pack(acc[2] * inv, acc[3] * inv);
    *reinterpret_cast<uint2*>(static_cast<T*>(a.out) + r * D + d0) = u;
  }
}

// Shared-memory layout of one block.
template <int D, int STAGES>
struct Layout {
  static constexpr int kChunks = D / 8;    // 16-byte chunks per token row
  static constexpr int kRowBytes = D * 2;  // one token's head vector
  static constexpr int kTileBytes = kTile * kRowBytes;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K tile, then V tile
  static constexpr int kWarpBytes = STAGES * kStageBytes;
  static constexpr int kBytes = kWarps * kWarpBytes;
  static constexpr int kMTiles = D / 16;
  // After the loop the stages are reused: the warps' partial results (pitch D + 4 floats keeps
  // the fragment stores free of bank conflicts), then the block's merged result.
  static constexpr int kPitch = D + 4;
  static constexpr int kScratchFloats = kWarps * kMaxGroup * kPitch + 2 * kWarps * kMaxGroup;
  static constexpr int kResultOffset = (kScratchFloats * 4 + 15) / 16 * 16;
  static constexpr int kResultFloats = kMaxGroup * D + kMaxGroup;
  static_assert(kResultOffset + kResultFloats * 4 <= kBytes, "stages too small for the merge");
  static_assert(kChunks >= 8 && kChunks <= 32, "the swizzle needs 8..32 chunks per row");
};

// Byte offset of 16-byte chunk `c` of row `r` in a tile: XOR swizzle so that the eight rows an
// ldmatrix reads at one chunk index fall in eight different bank groups.
template <int D>
__device__ __forceinline__ uint32_t tile_offset(int r, int c) {
  return uint32_t(r * D * 2 + ((c ^ (r & 7)) << 4));
}

// One warp's step over a 16-token tile of K (at sk) and V (at sv) in shared memory: S = Q K^T on
// the tensor cores, the online softmax update, O^T += V^T P^T. `valid` tokens of the tile count.
template <typename T, int D>
__device__ __forceinline__ void tile_step(uint32_t sk, uint32_t sv, const uint32_t (&qa)[D / 16][2],
                                          float (&o)[D / 16][4], float& m, float& l, int valid,
                                          float scale_log2, int lane) {
  constexpr int kMTiles = D / 16;
  const int quad = lane & 3;
  // ldmatrix addressing: lanes 0-7 give rows 0-7 of matrix 0, 8-15 of matrix 1, and so on; the
  // four matrices are (tokens 0-7 | 8-15) x (chunk 2j | 2j + 1).
  const int ld_row = (lane & 7) + ((lane >> 4) << 3);
  const int ld_half = (lane >> 3) & 1;
  // S = Q K^T for 16 tokens: s0 holds tokens 0-7, s1 tokens 8-15.
  float s0[4] = {0, 0, 0, 0}, s1[4] = {0, 0, 0, 0};
#pragma unroll
  for (int ks = 0; ks < kMTiles; ++ks) {
    uint32_t kf[4];
    ldmatrix_x4(sk + tile_offset<D>(ld_row, 2 * ks + ld_half), kf);
    Mma<T>::run(s0, qa[ks][0], 0u, qa[ks][1], 0u, kf[0], kf[1]);
    Mma<T>::run(s1, qa[ks][0], 0u, qa[ks][1], 0u, kf[2], kf[3]);
  }
  // Lane holds (query head `row`, tokens 2q, 2q+1, 8+2q, 9+2q) of the tile.
  const float x0 = 2 * quad < valid ? s0[0] * scale_log2 : -INFINITY;
  const float x1 = 2 * quad + 1 < valid ? s0[1] * scale_log2 : -INFINITY;
  const float x2 = 2 * quad + 8 < valid ? s1[0] * scale_log2 : -INFINITY;
  const float x3 = 2 * quad + 9 < valid ? s1[1] * scale_log2 : -INFINITY;
  float mx = fmaxf(fmaxf(x0, x1), fmaxf(x2, x3));
  mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
  const float m_new = fmaxf(m, mx);  // finite: every tile has a valid token
  const float alpha = exp2f(m - m_new);
  m = m_new;
  const float p0 = exp2f(x0 - m_new), p1 = exp2f(x1 - m_new);
  const float p2 = exp2f(x2 - m_new), p3 = exp2f(x3 - m_new);
  l = l * alpha + (p0 + p1) + (p2 + p3);
  const uint32_t pb0 = Mma<T>::pack(p0, p1);
  const uint32_t pb1 = Mma<T>::pack(p2, p3);
  // O^T columns are query heads 2q and 2q+1: their rescale factors live in lanes 8q and 8q+4.
  const float alpha_lo = __shfl_sync(kFullMask, alpha, 8 * quad);
  const float alpha_hi = __shfl_sync(kFullMask, alpha, 8 * quad + 4);
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    o[mt][0] *= alpha_lo;
    o[mt][1] *= alpha_hi;
    o[mt][2] *= alpha_lo;
    o[mt][3] *= alpha_hi;
    uint32_t vf[4];
    ldmatrix_x4_trans(sv + tile_offset<D>(ld_row, 2 * mt + ld_half), vf);
    Mma<T>::run(o[mt], vf[0], vf[1], vf[2], vf[3], pb0, pb1);
  }
}

// ---------------------------------------------------------------- the main kernel

template <typename T, int D, int STAGES, int MIN_BLOCKS>
__global__ void __launch_bounds__(kThreads, MIN_BLOCKS)
    decode_kernel(const DecodeAttentionArgs a, const Params p) {
  using L = Layout<D, STAGES>;
  extern __shared__ __align__(128) unsigned char smem[];

  wait_for_prerequisite_grid();  // nothing before this line touches global memory
  allow_dependent_grid();

  const PagedKvLayer& kv = a.kv;
  const int split = blockIdx.x;
  const int kvh = blockIdx.y;
  const int b = blockIdx.z;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int row = lane >> 2;  // fragment row: query head in S, head-dim row in O^T
  const int quad = lane & 3;
  const int group = a.num_q_heads / kv.num_kv_heads;
  const std::int32_t* table = kv.block_table + std::int64_t(b) * kv.block_table_stride;
  const auto page_index = [&](int token) {
    return p.page_shift >= 0 ? token >> p.page_shift : token / kv.page_tokens;
  };
  const auto warp_tiles = [&](int tokens) {
    const int n = (tokens + kTile - 1) / kTile;
    return n > warp ? (n - warp + kWarps - 1) / kWarps : 0;
  };
  // Tiles of this block, dealt out to the warps round-robin: warp w takes w, w + 4, ...
  int begin = p.mode == kClusterMerge ? 0 : split * a.plan.tokens_per_split;
  const auto tile_token = [&](int k) { return begin + kTile * (warp + kWarps * k); };
  // Page ids, prefetched 32 tiles at a time: lane j holds the page of tile (32 * block + j).
  const auto load_pages = [&](int block, int tiles) -> std::int32_t {
    const int k = 32 * block + lane;
    return (p.aligned_pages && k < tiles) ? __ldg(table + page_index(tile_token(k))) : 0;
  };
  // A fixed split's range is known before its length arrives: its first page ids load alongside
  // the length (the plan's longest sequence bounds the block-table entries read).
  const int hint_end =
      p.mode == kClusterMerge ? 0 : min(begin + a.plan.tokens_per_split, a.plan.max_seq_len);
  const int hint_tiles = warp_tiles(hint_end - begin);
  std::int32_t pages_cur = load_pages(0, hint_tiles);
  std::int32_t pages_next = hint_tiles > 32 ? load_pages(1, hint_tiles) : 0;
  const int len = kv.seq_lens[b];

  int end;
  // A sequence with one fixed split (kLastMerge) writes its output directly: nothing to merge.
  bool direct = p.mode == kSingle;
  if (p.mode == kWorkspaceMerge || p.mode == kLastMerge) {
    if (begin >= len) return;  // the merges read only the splits a sequence has
    end = min(len, begin + a.plan.tokens_per_split);
    direct = p.mode == kLastMerge && len <= a.plan.tokens_per_split;
  } else if (p.mode == kSingle) {
    end = len;
  } else {
    const int share = ((len + p.splits - 1) / p.splits + kTile - 1) / kTile * kTile;
    begin = min(len, split * share);
    end = min(len, begin + share);
  }

  // The GQA group's queries as the A operand of S = Q K^T (rows >= group are zero).
  uint32_t qa[L::kMTiles][2];
  {
    const bool valid = row < group;
    const auto* q = static_cast<const T*>(a.q) +
                    (std::size_t(b) * a.num_q_heads + kvh * group + (valid ? row : 0)) * D;
#pragma unroll
    for (int ks = 0; ks < L::kMTiles; ++ks) {
      qa[ks][0] = valid ? *reinterpret_cast<const uint32_t*>(q + 16 * ks + 2 * quad) : 0u;
      qa[ks][1] = valid ? *reinterpret_cast<const uint32_t*>(q + 16 * ks + 2 * quad + 8) : 0u;
    }
  }

  float o[L::kMTiles][4];
#pragma unroll
  for (int mt = 0; mt < L::kMTiles; ++mt)
    o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
  float m = -INFINITY;  // running max of this lane's query head (row), base-2 units
  float l = 0.0f;       // this lane's share of the running sum

  const int my_tiles = warp_tiles(end - begin);
  if (end > hint_end) {  // cluster shares, or a plan without a usable bound: load them now
    pages_cur = load_pages(0, my_tiles);
    pages_next = my_tiles > 32 ? load_pages(1, my_tiles) : 0;
  }

  const uint32_t warp_smem = smem_addr(smem) + warp * L::kWarpBytes;
  const T* k_base = static_cast<const T*>(kv.k) + std::int64_t(kvh) * kv.strides.head;
  const T* v_base = static_cast<const T*>(kv.v) + std::int64_t(kvh) * kv.strides.head;
  const int chunk = lane % L::kChunks;
  const int row0 = lane / L::kChunks;
  constexpr int kRowStep = 32 / L::kChunks;
  constexpr int kPerLane = kTile / kRowStep;  // 16-byte chunks of K (and of V) per lane per tile

  // Queues the copies of this warp's k-th tile into `stage`.
  const auto issue = [&](int k, int stage) {
    if ((k & 31) == 0 && k > 0) {
      pages_cur = pages_next;
      pages_next = load_pages((k >> 5) + 1, my_tiles);
    }
    const int t0 = tile_token(k);
    const uint32_t sk = warp_smem + stage * L::kStageBytes;
    const uint32_t sv = sk + L::kTileBytes;
    if (p.aligned_pages) {
      const std::int64_t page = __shfl_sync(kFullMask, pages_cur, k & 31);
      const int in_page = t0 - page_index(t0) * kv.page_tokens;
      const std::int64_t base = page * kv.strides.page + std::int64_t(in_page) * kv.strides.token;
      const T* kt = k_base + base;
      const T* vt = v_base + base;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int r = row0 + kRowStep * i;
        const bool valid = t0 + r < end;
        const std::int64_t off = valid ? std::int64_t(r) * kv.strides.token + chunk * 8 : 0;
        if (p.l2_prefetch) {
          cp_async16_l2_256(sk + tile_offset<D>(r, chunk), kt + off, valid);
          cp_async16_l2_256(sv + tile_offset<D>(r, chunk), vt + off, valid);
        } else {
          cp_async16(sk + tile_offset<D>(r, chunk), kt + off, valid);
          cp_async16(sv + tile_offset<D>(r, chunk), vt + off, valid);
        }
      }
    } else {
      // Pages shorter than a tile, or not a multiple of it: one lookup per token.
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int r = row0 + kRowStep * i;
        const int t = t0 + r;
        const bool valid = t < end;
        std::int64_t off = 0;
        if (valid) {
          const int pi = page_index(t);
          off = std::int64_t(__ldg(table + pi)) * kv.strides.page +
                std::int64_t(t - pi * kv.page_tokens) * kv.strides.token + chunk * 8;
        }
        cp_async16(sk + tile_offset<D>(r, chunk), k_base + off, valid);
        cp_async16(sv + tile_offset<D>(r, chunk), v_base + off, valid);
      }
    }
  };

#pragma unroll
  for (int s = 0; s < STAGES; ++s) {
    if (s < my_tiles) issue(s, s);
    cp_async_commit();
  }
  for (int j = 0; j < my_tiles; ++j) {
    const int stage = j % STAGES;
    cp_async_wait<STAGES - 1>();
    __syncwarp();
    const uint32_t sk = warp_smem + stage * L::kStageBytes;
    const uint32_t sv = sk + L::kTileBytes;

    tile_step<T, D>(sk, sv, qa, o, m, l, end - tile_token(j), p.scale_log2, lane);
    __syncwarp();
    if (j + STAGES < my_tiles) issue(j + STAGES, stage);
    cp_async_commit();
  }
  cp_async_wait<0>();
  l += __shfl_xor_sync(kFullMask, l, 1);
  l += __shfl_xor_sync(kFullMask, l, 2);

  // Merge the four warps through shared memory (the stages are free once every warp is here).
  __syncthreads();
  float* scr_o = reinterpret_cast<float*>(smem);  // [warp][head][pitch]
  float* scr_m = scr_o + kWarps * kMaxGroup * L::kPitch;
  float* scr_l = scr_m + kWarps * kMaxGroup;
#pragma unroll
  for (int mt = 0; mt < L::kMTiles; ++mt) {
    float* lo = scr_o + (warp * kMaxGroup + 2 * quad) * L::kPitch + 16 * mt + row;
    float* hi = lo + L::kPitch;
    lo[0] = o[mt][0];
    hi[0] = o[mt][1];
    lo[8] = o[mt][2];
    hi[8] = o[mt][3];
  }
  if (quad == 0) {
    scr_m[warp * kMaxGroup + row] = m;
    scr_l[warp * kMaxGroup + row] = l;
  }
  __syncthreads();

  float* res_o = reinterpret_cast<float*>(smem + L::kResultOffset);  // [head][D], normalized
  float* res_lse = res_o + kMaxGroup * D;                            // [head], base 2
  constexpr int kVecs = D / 8;                                       // 8-element vectors per head
  for (int v = threadIdx.x; v < group * kVecs; v += kThreads) {
    const int g = v / kVecs;
    const int d0 = (v % kVecs) * 8;
    float mx_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w)
      mx_all = fmaxf(mx_all, scr_m[w * kMaxGroup + g]);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float sum = 0.0f;
    if (mx_all != -INFINITY) {  // -inf: this block has no token (a short sequence's spare split)
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float wt = exp2f(scr_m[w * kMaxGroup + g] - mx_all);  // 0 for a warp with no tile
        sum = fmaf(scr_l[w * kMaxGroup + g], wt, sum);
        add_weighted8(
            acc, reinterpret_cast<const float4*>(scr_o + (w * kMaxGroup + g) * L::kPitch + d0), wt);
      }
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i)
      acc[i] *= inv;
    const std::size_t qrow = std::size_t(b) * a.num_q_heads + kvh * group + g;
    if (direct) {
      *reinterpret_cast<uint4*>(static_cast<T*>(a.out) + qrow * D + d0) = pack8<T>(acc);
    } else if (p.mode == kClusterMerge) {
      store8(res_o + g * D + d0, acc);
      if (d0 == 0) res_lse[g] = sum > 0.0f ? mx_all + log2f(sum) : -INFINITY;
    } else {
      const Partials parts = partials_of(a);
      const std::size_t slot = qrow * a.plan.num_splits + split;
      store8(parts.o + slot * D + d0, acc);
      if (d0 == 0) parts.lse[slot] = mx_all + log2f(sum);  // this split has tokens: sum > 0
    }
  }
  if (p.mode == kLastMerge && !direct) {
    const Partials parts = partials_of(a);
    const int splits = splits_of(len, a.plan.tokens_per_split, a.plan.num_splits);
    if (last_to_arrive(parts.counters + b * kv.num_kv_heads + kvh, splits)) {
      merge_partials<T, D>(a, parts, std::size_t(b) * a.num_q_heads + kvh * group, group, splits);
    }
    return;
  }
  if (p.mode != kClusterMerge) return;

  // The cluster holds the splits of this (sequence, KV head); block r merges the r-th share of the
  // output vectors, reading every block's result through distributed shared memory.
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int nranks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int per = (group * kVecs + nranks - 1) / nranks;
  const int v_end = min(group * kVecs, (rank + 1) * per);
  for (int v = rank * per + threadIdx.x; v < v_end; v += kThreads) {
    const int g = v / kVecs;
    const int d0 = (v % kVecs) * 8;
    float lse[kMaxClusterSplits];
    float mx_all = -INFINITY;
#pragma unroll
    for (int r = 0; r < kMaxClusterSplits; ++r) {
      lse[r] = r < nranks ? *cluster.map_shared_rank(res_lse + g, r) : -INFINITY;
      mx_all = fmaxf(mx_all, lse[r]);  // finite: split 0 always has tokens
    }
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float sum = 0.0f;
#pragma unroll
    for (int r = 0; r < kMaxClusterSplits; ++r) {
      if (r < nranks && lse[r] != -INFINITY) {
        const float wt = exp2f(lse[r] - mx_all);
        sum += wt;
        add_weighted8(
            acc, reinterpret_cast<const float4*>(cluster.map_shared_rank(res_o + g * D + d0, r)),
            wt);
      }
    }
    const float inv = 1.0f / sum;
#pragma unroll
    for (int i = 0; i < 8; ++i)
      acc[i] *= inv;
    const std::size_t qrow = std::size_t(b) * a.num_q_heads + kvh * group + g;
    *reinterpret_cast<uint4*>(static_cast<T*>(a.out) + qrow * D + d0) = pack8<T>(acc);
  }
  cluster.sync();  // no block leaves while another may still read its shared memory
}

// ---------------------------------------------------------------- the head-fused kernel
//
// One block of HB warps handles (split, group of HB KV heads, sequence); warp w owns KV head
// HB * group + w for the whole range of the block. The block copies each 16-token tile of its HB
// heads (in NHD one contiguous run of HB * 256 bytes per token; at HB = 8 and 8 KV heads, a whole
// page per 16 tokens) into a block-wide ring of stages, so DRAM sees long sequential runs; each
// warp then runs tile_step on its head. No merge inside the block: each warp writes its own
// output rows, or its partials (kWorkspace, kLastMerge); with kLastMerge the last block of the
// (sequence, head group) then merges all HB heads' rows.
// Built for HB = 2, 4 and 8 (dispatch_fused has the stage counts of each).

template <int D, int STAGES, int HB>
struct FusedLayout {
  static constexpr int kThreads = HB * 32;
  static constexpr int kHeadTileBytes = kTile * D * 2;         // K (or V) of one head
  static constexpr int kStageBytes = HB * 2 * kHeadTileBytes;  // K and V of HB heads
  static constexpr int kBytes = STAGES * kStageBytes;
  static constexpr int kChunks = D / 8;
  static constexpr int kPerThread = kTile * HB * kChunks / kThreads;
};

template <typename T, int D, int STAGES, int HB>
__global__ void __launch_bounds__(HB * 32, 1)
    decode_fused_kernel(const DecodeAttentionArgs a, const Params p) {
  using F = FusedLayout<D, STAGES, HB>;
  constexpr int kMTiles = D / 16;
  extern __shared__ __align__(128) unsigned char smem[];

  wait_for_prerequisite_grid();
  allow_dependent_grid();

  const PagedKvLayer& kv = a.kv;
  const int split = blockIdx.x;
  const int head0 = blockIdx.y * HB;
  const int b = blockIdx.z;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int row = lane >> 2;
  const int quad = lane & 3;
  const int kvh = head0 + warp;
  const int group = a.num_q_heads / kv.num_kv_heads;
  const std::int32_t* table = kv.block_table + std::int64_t(b) * kv.block_table_stride;
  const auto page_index = [&](int token) {
    return p.page_shift >= 0 ? token >> p.page_shift : token / kv.page_tokens;
  };
  const int tps = p.mode == kSingle ? (1 << 30) : a.plan.tokens_per_split;
  const int begin = split * tps;
  // Page ids of tiles 32 * block + lane; the plan's longest sequence bounds what may be read, so
  // the first ones load alongside the length.
  const auto load_pages = [&](int block, int tiles) -> std::int32_t {
    const int k = 32 * block + lane;
    return (p.aligned_pages && k < tiles) ? __ldg(table + page_index(begin + kTile * k)) : 0;
  };
  const int hint_tiles = (min(begin + tps, a.plan.max_seq_len) - begin + kTile - 1) / kTile;
  std::int32_t pages_cur = load_pages(0, hint_tiles);
  std::int32_t pages_next = hint_tiles > 32 ? load_pages(1, hint_tiles) : 0;
  const int len = kv.seq_lens[b];
  if (begin >= len) return;  // workspace merges only: they read the splits a sequence has
  const int end = min(len, begin + tps);
  // A sequence with one fixed split (kLastMerge) writes its output directly: nothing to merge.
  const bool direct = p.mode == kSingle || (p.mode == kLastMerge && len <= tps);
  const int n_tiles = (end - begin + kTile - 1) / kTile;
  if (n_tiles > hint_tiles) {
    pages_cur = load_pages(0, n_tiles);
    pages_next = n_tiles > 32 ? load_pages(1, n_tiles) : 0;
  }

  uint32_t qa[kMTiles][2];
  {
    const bool valid = row < group;
    const auto* q = static_cast<const T*>(a.q) +
                    (std::size_t(b) * a.num_q_heads + kvh * group + (valid ? row : 0)) * D;
#pragma unroll
    for (int ks = 0; ks < kMTiles; ++ks) {
      qa[ks][0] = valid ? *reinterpret_cast<const uint32_t*>(q + 16 * ks + 2 * quad) : 0u;
      qa[ks][1] = valid ? *reinterpret_cast<const uint32_t*>(q + 16 * ks + 2 * quad + 8) : 0u;
    }
  }
  float o[kMTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
    o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  const uint32_t smem0 = smem_addr(smem);
  const T* k_base = static_cast<const T*>(kv.k) + std::int64_t(head0) * kv.strides.head;
  const T* v_base = static_cast<const T*>(kv.v) + std::int64_t(head0) * kv.strides.head;
  // Thread t copies chunks t, t + 256, ...: chunk fastest, then head, then token, so consecutive
  // threads read consecutive 16 bytes of a token's 8 heads.
  const auto issue = [&](int k, int stage) {
    if ((k & 31) == 0 && k > 0) {
      pages_cur = pages_next;
      pages_next = load_pages((k >> 5) + 1, n_tiles);
    }
    const int t0 = begin + kTile * k;
    const uint32_t st = smem0 + stage * F::kStageBytes;
    std::int64_t page_base = 0;
    if (p.aligned_pages) {
      const std::int64_t page = __shfl_sync(kFullMask, pages_cur, k & 31);
      page_base = page * kv.strides.page +
                  std::int64_t(t0 - page_index(t0) * kv.page_tokens) * kv.strides.token;
    }
#pragma unroll
    for (int i = 0; i < F::kPerThread; ++i) {
      const int idx = threadIdx.x + F::kThreads * i;
      const int c = idx % F::kChunks;
      const int h = (idx / F::kChunks) % HB;
      const int r = idx / (F::kChunks * HB);
      const int t = t0 + r;
      const bool valid = t < end;
      std::int64_t off = 0;
      if (valid) {
        if (p.aligned_pages) {
          off = page_base + std::int64_t(r) * kv.strides.token;
        } else {
          const int pi = page_index(t);
          off = std::int64_t(__ldg(table + pi)) * kv.strides.page +
                std::int64_t(t - pi * kv.page_tokens) * kv.strides.token;
        }
        off += std::int64_t(h) * kv.strides.head + c * 8;
      }
      const uint32_t dst = st + h * 2 * F::kHeadTileBytes + tile_offset<D>(r, c);
      cp_async16_l2_256(dst, k_base + off, valid);
      cp_async16_l2_256(dst + F::kHeadTileBytes, v_base + off, valid);
    }
  };

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < n_tiles) issue(s, s);
    cp_async_commit();
  }
  for (int j = 0; j < n_tiles; ++j) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile j is in; every warp is done with tile j - 1's stage
    if (j + STAGES - 1 < n_tiles) issue(j + STAGES - 1, (j + STAGES - 1) % STAGES);
    cp_async_commit();
    const uint32_t sk = smem0 + (j % STAGES) * F::kStageBytes + warp * 2 * F::kHeadTileBytes;
    tile_step<T, D>(sk, sk + F::kHeadTileBytes, qa, o, m, l, end - (begin + kTile * j),
                    p.scale_log2, lane);
  }
  cp_async_wait<0>();

  // Each lane holds O^T for query heads 2q, 2q+1 at dims 16 mt + row (+8); their m and l live in
  // lanes 8q and 8q + 4.
  l += __shfl_xor_sync(kFullMask, l, 1);
  l += __shfl_xor_sync(kFullMask, l, 2);
  const float l_lo = __shfl_sync(kFullMask, l, 8 * quad);
  const float l_hi = __shfl_sync(kFullMask, l, 8 * quad + 4);
  const float m_lo = __shfl_sync(kFullMask, m, 8 * quad);
  const float m_hi = __shfl_sync(kFullMask, m, 8 * quad + 4);
  const int g_lo = 2 * quad, g_hi = 2 * quad + 1;
  const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
  const std::size_t row_lo = std::size_t(b) * a.num_q_heads + kvh * group + g_lo;
  const std::size_t row_hi = row_lo + 1;
  if (direct) {
    T* out = static_cast<T*>(a.out);
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const int d = 16 * mt + row;
      if (g_lo < group) {
        out[row_lo * D + d] = from_float<T>(o[mt][0] * inv_lo);
        out[row_lo * D + d + 8] = from_float<T>(o[mt][2] * inv_lo);
      }
      if (g_hi < group) {
        out[row_hi * D + d] = from_float<T>(o[mt][1] * inv_hi);
        out[row_hi * D + d + 8] = from_float<T>(o[mt][3] * inv_hi);
      }
    }
  } else {
    const Partials parts = partials_of(a);
    const std::size_t slot_lo = row_lo * a.plan.num_splits + split;
    const std::size_t slot_hi = row_hi * a.plan.num_splits + split;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const int d = 16 * mt + row;
      if (g_lo < group) {
        parts.o[slot_lo * D + d] = o[mt][0] * inv_lo;
        parts.o[slot_lo * D + d + 8] = o[mt][2] * inv_lo;
      }
      if (g_hi < group) {
        parts.o[slot_hi * D + d] = o[mt][1] * inv_hi;
        parts.o[slot_hi * D + d + 8] = o[mt][3] * inv_hi;
      }
    }
    if (row == 0) {
      if (g_lo < group) parts.lse[slot_lo] = m_lo + log2f(l_lo);
      if (g_hi < group) parts.lse[slot_hi] = m_hi + log2f(l_hi);
    }
  }
  if (p.mode == kLastMerge && !direct) {
    const Partials parts = partials_of(a);
    const int splits = splits_of(len, tps, a.plan.num_splits);
    if (last_to_arrive(parts.counters + b * kv.num_kv_heads + head0, splits)) {
      merge_partials<T, D>(a, parts, std::size_t(b) * a.num_q_heads + head0 * group, HB * group,
                           splits);
    }
  }
}

// kWorkspace: one block per (sequence, query head), one thread per output element.
template <typename T, int D>
__global__ void __launch_bounds__(D) decode_merge_kernel(const DecodeAttentionArgs a) {
  __shared__ float sm_lse[1024];
  wait_for_prerequisite_grid();
  allow_dependent_grid();
  const int b = blockIdx.x / a.num_q_heads;
  const std::size_t row_id = blockIdx.x;
  const int splits = splits_of(a.kv.seq_lens[b], a.plan.tokens_per_split, a.plan.num_splits);
  const Partials p = partials_of(a);
  const float* lse = p.lse + row_id * a.plan.num_splits;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += D) {
    const float x = lse[s];
    if (s < 1024) sm_lse[s] = x;
    mx = fmaxf(mx, x);
  }
  // Block-wide max.
  __shared__ float sm_max[D / 32];
  for (int off = 16; off > 0; off /= 2)
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, off));
  if ((threadIdx.x & 31) == 0) sm_max[threadIdx.x >> 5] = mx;
  __syncthreads();
  mx = sm_max[0];
  for (int w = 1; w < D / 32; ++w)
    mx = fmaxf(mx, sm_max[w]);
  const float* o = p.o + row_id * a.plan.num_splits * D + threadIdx.x;
  float sum = 0.0f, out = 0.0f;
#pragma unroll 8
  for (int s = 0; s < splits; ++s) {
    const float w = exp2f((s < 1024 ? sm_lse[s] : lse[s]) - mx);
    sum += w;
    out = fmaf(w, o[std::size_t(s) * D], out);
  }
  const float v = out / sum;
  static_cast<T*>(a.out)[row_id * D + threadIdx.x] = from_float<T>(v);
}

// ---------------------------------------------------------------- launchers

// Kernel attributes are per device: set once per (kernel, device); `done` has one bit per device
// and belongs to one kernel instantiation.
template <typename Kernel>
Status prepare_kernel(Kernel kernel, int smem_bytes, std::atomic<std::uint64_t>& done) {
  int device = 0;
  TIERKV_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const std::uint64_t bit = std::uint64_t{1} << (device & 63);
  if (done.load(std::memory_order_acquire) & bit) return Status::Ok();
  TIERKV_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  TIERKV_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  done.fetch_or(bit, std::memory_order_release);
  return Status::Ok();
}

// Launches `kernel` (the per-head or the head-fused one) and, for kWorkspace, the merge; the
// kLastMerge blocks merge themselves.
template <typename T, int D, typename Kernel>
Status launch_with_merge(Kernel kernel, dim3 grid, dim3 block, int smem_bytes,
                         std::atomic<std::uint64_t>& prepared, const DecodeAttentionArgs& a,
                         const Params& p, cudaStream_t stream) {
  TIERKV_RETURN_IF_ERROR(prepare_kernel(kernel, smem_bytes, prepared));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = static_cast<std::size_t>(smem_bytes);
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  unsigned n = 0;
  if (p.mode == kClusterMerge) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n].val.clusterDim.x = static_cast<unsigned>(p.splits);
    attrs[n].val.clusterDim.y = 1;
    attrs[n].val.clusterDim.z = 1;
    ++n;
  }
  if (a.plan.programmatic_launch) attrs[n++] = programmatic_launch_attribute();
  cfg.attrs = attrs;
  cfg.numAttrs = n;
  TIERKV_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&cfg, kernel, a, p));
  if (p.mode != kWorkspaceMerge) return Status::Ok();

  auto* merge = &decode_merge_kernel<T, D>;
  cudaLaunchConfig_t mcfg{};
  mcfg.gridDim = dim3(static_cast<unsigned>(a.kv.batch * a.num_q_heads));
  mcfg.blockDim = dim3(D);
  mcfg.stream = stream;
  cudaLaunchAttribute pdl = programmatic_launch_attribute();
  mcfg.attrs = &pdl;
  mcfg.numAttrs = 1;
  TIERKV_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&mcfg, merge, a));
  return Status::Ok();
}

template <typename T, int D, int STAGES, int MIN_BLOCKS>
Status launch_main(const DecodeAttentionArgs& a, const Params& p, cudaStream_t stream) {
  static std::atomic<std::uint64_t> prepared{0};
  const dim3 grid(static_cast<unsigned>(p.splits), static_cast<unsigned>(a.kv.num_kv_heads),
                  static_cast<unsigned>(a.kv.batch));
  return launch_with_merge<T, D>(&decode_kernel<T, D, STAGES, MIN_BLOCKS>, grid, dim3(kThreads),
                                 Layout<D, STAGES>::kBytes, prepared, a, p, stream);
}

template <typename T, int D, int STAGES, int HB>
Status launch_fused(const DecodeAttentionArgs& a, const Params& p, cudaStream_t stream) {
  static std::atomic<std::uint64_t> prepared{0};
  const dim3 grid(static_cast<unsigned>(p.splits), static_cast<unsigned>(a.kv.num_kv_heads / HB),
                  static_cast<unsigned>(a.kv.batch));
  return launch_with_merge<T, D>(&decode_fused_kernel<T, D, STAGES, HB>, grid,
                                 dim3(FusedLayout<D, STAGES, HB>::kThreads),
                                 FusedLayout<D, STAGES, HB>::kBytes, prepared, a, p, stream);
}

// Head-fused block-wide stages (a stage: K and V of 16 tokens of HB heads, HB x 8 KiB at head dim
// 128, half that at 64). Pipeline 0, deep: one block per multiprocessor with 128-192 KiB, keeping
// 112-128 KiB in flight per multiprocessor like the per-head deep pipeline (96 KiB) and the
// measured 8-head one. Any other value, shallow: 2-3 blocks per multiprocessor, so one block's
// prologue, epilogue and merge hide behind another's stream, and 2- and 4-warp blocks, which
// may not compute fast enough alone to keep 47 GB/s streaming, share the multiprocessor.
//   HB  deep                     shallow
//   8   3 stages, 192 KiB        2 stages, 128 KiB (one block)
//   4   5 stages, 160 KiB        3 stages,  96 KiB (two blocks)
//   2   8 stages, 128 KiB        4 stages,  64 KiB (three blocks)
template <typename T, int D, int HB, int DEEP, int SHALLOW>
Status dispatch_fused(const DecodeAttentionArgs& a, const Params& p, cudaStream_t stream) {
  if (a.plan.pipeline == 0) return launch_fused<T, D, DEEP, HB>(a, p, stream);
  return launch_fused<T, D, SHALLOW, HB>(a, p, stream);
}

// Pipeline depths of the per-head kernel at head dim 128: 0 deep (4 stages per warp, 128 KiB, one
// block per multiprocessor), 1 shallow (2 stages, three blocks), 2 middle (3 stages, two blocks),
// 3 deepest (6 stages, 192 KiB, one block). The head-fused kernel: see dispatch_fused.
template <typename T, int D>
Status dispatch_pipeline(const DecodeAttentionArgs& a, const Params& p, cudaStream_t stream) {
  if (a.plan.heads_per_block > 1) {
    if constexpr (D <= 128) {
      switch (a.plan.heads_per_block) {
        case 2:
          return dispatch_fused<T, D, 2, 8, 4>(a, p, stream);
        case 4:
          return dispatch_fused<T, D, 4, 5, 3>(a, p, stream);
        case 8:
          return dispatch_fused<T, D, 8, 3, 2>(a, p, stream);
        default:
          break;
      }
    }
    return unimplemented("decode attention: head-fused blocks of " +
                         std::to_string(a.plan.heads_per_block) + " heads at head_dim " +
                         std::to_string(D) + " (2, 4 or 8 heads, head_dim <= 128)");
  }
  constexpr int kDeep = D >= 256 ? 3 : 4;
  if (a.plan.pipeline == 0) return launch_main<T, D, kDeep, 1>(a, p, stream);
  if (a.plan.pipeline == 2)
    return launch_main < T, D, D >= 256 ? 2 : 3, D >= 256 ? 1 : 2 > (a, p, stream);
  if (a.plan.pipeline == 3) return launch_main < T, D, D >= 256 ? 3 : 6, 1 > (a, p, stream);
  return launch_main < T, D, 2, D >= 256 ? 1 : 2 > (a, p, stream);
}

template <typename T>
Status dispatch_head_dim(const DecodeAttentionArgs& a, const Params& p, cudaStream_t stream) {
  switch (a.kv.head_dim) {
    case 64:
      return dispatch_pipeline<T, 64>(a, p, stream);
    case 128:
      return dispatch_pipeline<T, 128>(a, p, stream);
    case 256:
      return dispatch_pipeline<T, 256>(a, p, stream);
    default:
      return unimplemented("decode attention: head_dim " + std::to_string(a.kv.head_dim) +
                           " (64, 128, 256 supported)");
  }
}

}  // namespace

Status launch_decode_attention(const DecodeAttentionArgs& args, int /*sm_count*/,
                               cudaStream_t stream) {
  const DecodePlan& plan = args.plan;
  Params p;
  p.scale_log2 = args.sm_scale * kLog2e;
  p.splits = plan.num_splits;
  switch (plan.merge) {
    case DecodeMerge::kNone:
      p.mode = kSingle;
      p.splits = 1;
      break;
    case DecodeMerge::kCluster:
      if (plan.num_splits < 2 || plan.num_splits > kMaxClusterSplits) {
        return invalid_argument("decode attention: a cluster merge needs 2..16 splits, not " +
                                std::to_string(plan.num_splits));
      }
      p.mode = kClusterMerge;
      break;
    case DecodeMerge::kWorkspace:
    case DecodeMerge::kWorkspaceLast:
      if (plan.tokens_per_split <= 0 || plan.tokens_per_split % kTile != 0) {
        return invalid_argument(
            "decode attention: workspace splits must be positive multiples of " +
            std::to_string(kTile) + " tokens");
      }
      if (args.workspace == nullptr) {
        return invalid_argument("decode attention: a workspace merge needs the workspace");
      }
      p.mode = plan.merge == DecodeMerge::kWorkspace ? kWorkspaceMerge : kLastMerge;
      break;
    default:
      return invalid_argument("decode attention: unknown merge kind");
  }
  if (plan.pipeline < 0 || plan.pipeline > 3) {
    return invalid_argument("decode attention: pipeline must be 0..3");
  }
  p.l2_prefetch = plan.l2_prefetch ? 1 : 0;
  const int hb = plan.heads_per_block;
  if (hb != 1 && ((hb != 2 && hb != 4 && hb != 8) || args.kv.num_kv_heads % hb != 0 ||
                  args.kv.head_dim > 128 || plan.merge == DecodeMerge::kCluster)) {
    return invalid_argument(
        "decode attention: head-fused blocks take 2, 4 or 8 KV heads each (dividing the KV "
        "heads, head_dim <= 128) and no cluster merge");
  }
  const int pt = args.kv.page_tokens;
  p.page_shift = (pt & (pt - 1)) == 0 ? __builtin_ctz(static_cast<unsigned>(pt)) : -1;
  p.aligned_pages = pt % kTile == 0 ? 1 : 0;
  if (args.num_q_heads / args.kv.num_kv_heads > kMaxGroup) {
    return unimplemented("decode attention: GQA group " +
                         std::to_string(args.num_q_heads / args.kv.num_kv_heads) +
                         " (1..8 supported)");
  }
  switch (args.kv.dtype) {
    case DType::kBF16:
      return dispatch_head_dim<__nv_bfloat16>(args, p, stream);
    case DType::kF16:
      return dispatch_head_dim<__half>(args, p, stream);
    default:
      return unimplemented("decode attention: dtype " + std::string(dtype_name(args.kv.dtype)) +
                           " (bf16, f16 supported)");
  }
}

}  // namespace tierkv::cuda

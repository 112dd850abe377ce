// Decode attention over paged KV (see tierkv/attention.h for the contract).
//
// One block handles (sequence b, KV head, split of the sequence). Its threads form rows of
// LANES = head_dim / 8 threads; a row reads one token's K and V head vectors with 16-byte loads,
// so the GROUP query heads that share the KV head reuse every K/V load. Each row keeps its own
// online-softmax state (max, sum, accumulator) in base-2 exponent form; the rows of a block are
// merged through shared memory at the end. With one split per sequence the block writes the
// output; otherwise it writes a partial output and its log-sum-exp, and a merge kernel combines
// the splits of each (sequence, head).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace tierkv::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kVec = 8;  // 16 bytes of 2-byte elements
constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
struct Pack;
template <>
struct Pack<__nv_bfloat16> {
  using Two = __nv_bfloat162;
  static __device__ __forceinline__ float2 to_float2(Two v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) {
    return __float2bfloat16_rn(v);
  }
};
template <>
struct Pack<__half> {
  using Two = __half2;
  static __device__ __forceinline__ float2 to_float2(Two v) { return __half22float2(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&f)[kVec]) {
  const auto* two = reinterpret_cast<const typename Pack<T>::Two*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec / 2; ++i) {
    const float2 x = Pack<T>::to_float2(two[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

__device__ __forceinline__ uint4 load16(const void* p) {
  return __ldg(static_cast<const uint4*>(p));
}

// Tokens a row covers per loop iteration; fewer for wide groups and heads to bound registers.
constexpr int unroll_for(int head_dim, int group) {
  return (group >= 8 || head_dim >= 256) ? 2 : 4;
}

// Partial-result workspace: o[batch][q_heads][splits][head_dim], then lse[batch][q_heads][splits].
struct Partials {
  float* o;
  float* lse;
};
__host__ __device__ inline Partials partials_of(const DecodeAttentionArgs& a) {
  const std::size_t rows = std::size_t(a.plan.batch) * a.num_q_heads * a.plan.num_splits;
  const std::size_t o_bytes = (rows * a.kv.head_dim * sizeof(float) + 255) / 256 * 256;
  auto* base = static_cast<char*>(a.workspace);
  return {reinterpret_cast<float*>(base), reinterpret_cast<float*>(base + o_bytes)};
}

template <typename T, int HEAD_DIM, int GROUP>
__global__ void __launch_bounds__(kThreads) decode_split_kernel(const DecodeAttentionArgs a) {
  constexpr int kLanes = HEAD_DIM / kVec;
  constexpr int kRows = kThreads / kLanes;
  constexpr int kUnroll = unroll_for(HEAD_DIM, GROUP);
  static_assert(kThreads % kLanes == 0 && kLanes <= 32);

  const PagedKvLayer& kv = a.kv;
  const int split = blockIdx.x;
  const int kvh = blockIdx.y;
  const int b = blockIdx.z;
  const int len = kv.seq_lens[b];
  const int begin = split * a.plan.tokens_per_split;
  if (begin >= len) return;  // this sequence is shorter than the longest; the merge skips it
  const int end = min(len, begin + a.plan.tokens_per_split);
  const int group = a.num_q_heads / kv.num_kv_heads;  // runtime group <= GROUP

  const int lane = threadIdx.x % kLanes;
  const int row = threadIdx.x / kLanes;

  // Query heads of this KV head, pre-scaled so that softmax runs on exp2.
  float q[GROUP][kVec];
  const float qscale = a.sm_scale * kLog2e;
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    if (g < group) {
      const std::size_t off =
          (std::size_t(b) * a.num_q_heads + kvh * group + g) * HEAD_DIM + lane * kVec;
      unpack8<T>(load16(static_cast<const T*>(a.q) + off), q[g]);
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        q[g][i] *= qscale;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        q[g][i] = 0.0f;
    }
  }

  float m[GROUP], l[GROUP], acc[GROUP][kVec];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      acc[g][i] = 0.0f;
  }

  const std::int32_t* pages = kv.block_table + std::int64_t(b) * kv.block_table_stride;
  const T* kbase = static_cast<const T*>(kv.k) + lane * kVec;
  const T* vbase = static_cast<const T*>(kv.v) + lane * kVec;

  // Every thread runs the same number of iterations (the shuffles below need the whole warp);
  // tokens past the end are masked.
  for (int t0 = begin + row; t0 - row < end; t0 += kRows * kUnroll) {
    uint4 kraw[kUnroll], vraw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = t0 + u * kRows;
      if (t < end) {
        const std::int64_t off = kv.offset(pages[t / kv.page_tokens], t % kv.page_tokens, kvh);
        kraw[u] = load16(kbase + off);
        vraw[u] = load16(vbase + off);
      } else {
        kraw[u] = make_uint4(0, 0, 0, 0);
        vraw[u] = make_uint4(0, 0, 0, 0);
      }
    }
    float s[GROUP][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[kVec];
      unpack8<T>(kraw[u], kf);
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          dot = fmaf(q[g][i], kf[i], dot);
#pragma unroll
        for (int o = kLanes / 2; o > 0; o /= 2)
          dot += __shfl_xor_sync(0xffffffffu, dot, o);
        s[g][u] = (t0 + u * kRows < end) ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        mx = fmaxf(mx, s[g][u]);
      // A row may not have seen a token yet (mx = -inf): subtract 0 then, so that exp2 of the
      // masked scores gives 0 rather than NaN.
      const float base = mx == -INFINITY ? 0.0f : mx;
      const float alpha = exp2f(m[g] - base);  // 0 when m[g] was -inf
      m[g] = mx;
      l[g] *= alpha;
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        acc[g][i] *= alpha;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float p = exp2f(s[g][u] - base);  // 0 for masked tokens
        l[g] += p;
        float vf[kVec];
        unpack8<T>(vraw[u], vf);
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          acc[g][i] = fmaf(p, vf[i], acc[g][i]);
      }
    }
  }

  // Merge the rows of the block.
  __shared__ float sm_m[kRows][GROUP];
  __shared__ float sm_l[kRows][GROUP];
  __shared__ float sm_acc[kRows][GROUP][HEAD_DIM];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      sm_acc[row][g][lane * kVec + i] = acc[g][i];
    if (lane == 0) {
      sm_m[row][g] = m[g];
      sm_l[row][g] = l[g];
    }
  }
  __syncthreads();

  const bool single = a.plan.num_splits == 1;
  for (int idx = threadIdx.x; idx < group * HEAD_DIM; idx += kThreads) {
    const int g = idx / HEAD_DIM;
    const int d = idx % HEAD_DIM;
    float mx = -INFINITY;
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      mx = fmaxf(mx, sm_m[r][g]);  // finite: row 0 saw a token
    float sum = 0.0f, o = 0.0f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float w = exp2f(sm_m[r][g] - mx);  // rows that saw no token have m = -inf: w = 0
      sum = fmaf(sm_l[r][g], w, sum);
      o = fmaf(sm_acc[r][g][d], w, o);
    }
    const int h = kvh * group + g;
    const std::size_t row_id = std::size_t(b) * a.num_q_heads + h;
    if (single) {
      static_cast<T*>(a.out)[row_id * HEAD_DIM + d] = Pack<T>::from_float(o / sum);
    } else {
      const Partials p = partials_of(a);
      const std::size_t part = row_id * a.plan.num_splits + split;
      p.o[part * HEAD_DIM + d] = o / sum;
      if (d == 0) p.lse[part] = mx + log2f(sum);
    }
  }
}

// One block per (sequence, query head); one thread per output element.
template <typename T, int HEAD_DIM>
__global__ void __launch_bounds__(HEAD_DIM) decode_merge_kernel(const DecodeAttentionArgs a) {
  extern __shared__ float sm_lse[];
  const int b = blockIdx.x / a.num_q_heads;
  const std::size_t row_id = blockIdx.x;
  const int tps = a.plan.tokens_per_split;
  const int splits = (a.kv.seq_lens[b] + tps - 1) / tps;
  const Partials p = partials_of(a);
  const float* lse = p.lse + row_id * a.plan.num_splits;
  for (int s = threadIdx.x; s < splits; s += HEAD_DIM)
    sm_lse[s] = lse[s];
  __syncthreads();
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s)
    mx = fmaxf(mx, sm_lse[s]);
  const float* o = p.o + row_id * a.plan.num_splits * HEAD_DIM + threadIdx.x;
  float sum = 0.0f, out = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float w = exp2f(sm_lse[s] - mx);
    sum += w;
    out = fmaf(w, o[std::size_t(s) * HEAD_DIM], out);
  }
  static_cast<T*>(a.out)[row_id * HEAD_DIM + threadIdx.x] = Pack<T>::from_float(out / sum);
}

template <typename T, int HEAD_DIM, int GROUP>
Status launch(const DecodeAttentionArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.plan.num_splits),
                  static_cast<unsigned>(a.kv.num_kv_heads), static_cast<unsigned>(a.kv.batch));
  decode_split_kernel<T, HEAD_DIM, GROUP><<<grid, kThreads, 0, stream>>>(a);
  TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR();
  if (a.plan.num_splits > 1) {
    const unsigned rows = static_cast<unsigned>(a.kv.batch * a.num_q_heads);
    const std::size_t smem = std::size_t(a.plan.num_splits) * sizeof(float);
    decode_merge_kernel<T, HEAD_DIM><<<rows, HEAD_DIM, smem, stream>>>(a);
    TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  return Status::Ok();
}

// The GQA group is rounded up to a compiled width; unused query slots are masked.
template <typename T, int HEAD_DIM>
Status dispatch_group(const DecodeAttentionArgs& a, cudaStream_t stream) {
  const int group = a.num_q_heads / a.kv.num_kv_heads;
  if (group == 1) return launch<T, HEAD_DIM, 1>(a, stream);
  if (group == 2) return launch<T, HEAD_DIM, 2>(a, stream);
  if (group <= 4) return launch<T, HEAD_DIM, 4>(a, stream);
  if (group <= 8) return launch<T, HEAD_DIM, 8>(a, stream);
  return unimplemented("decode attention: GQA group " + std::to_string(group) +
                       " (1..8 supported)");
}

template <typename T>
Status dispatch_head_dim(const DecodeAttentionArgs& a, cudaStream_t stream) {
  switch (a.kv.head_dim) {
    case 64:
      return dispatch_group<T, 64>(a, stream);
    case 128:
      return dispatch_group<T, 128>(a, stream);
    case 256:
      return dispatch_group<T, 256>(a, stream);
    default:
      return unimplemented("decode attention: head_dim " + std::to_string(a.kv.head_dim) +
                           " (64, 128, 256 supported)");
  }
}

}  // namespace

Status launch_decode_attention(const DecodeAttentionArgs& args, int /*sm_count*/,
                               cudaStream_t stream) {
  if (args.plan.num_splits > 1 && args.plan.tokens_per_split <= 0) {
    return invalid_argument("decode attention: plan has splits of no tokens");
  }
  switch (args.kv.dtype) {
    case DType::kBF16:
      return dispatch_head_dim<__nv_bfloat16>(args, stream);
    case DType::kF16:
      return dispatch_head_dim<__half>(args, stream);
    default:
      return unimplemented("decode attention: dtype " + std::string(dtype_name(args.kv.dtype)) +
                           " (bf16, f16 supported)");
  }
}

}  // namespace tierkv::cuda

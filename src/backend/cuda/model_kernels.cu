// The model's elementwise and reduction kernels (the GEMMs are cuBLASLt's): RMSNorm, residual
// add, rotary embedding fused with the KV store, SwiGLU, embedding lookup, argmax. Storage bf16 or
// fp16, arithmetic fp32, one rounding per output as in the CPU implementation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <string>

#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/model_kernels.h"

namespace tierkv::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w)
    total += warp_sums[w];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(const T* x, const T* w, T* y, int dim, float eps) {
  const std::size_t base = std::size_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    const float v = to_float(x[base + i]);
    ss += v * v;
  }
  const float inv = 1.0f / sqrtf(block_sum(ss) / float(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += kThreads)
    y[base + i] = from_float<T>(to_float(x[base + i]) * inv * to_float(w[i]));
}

template <typename T>
__global__ void add_kernel(T* x, const T* r, std::size_t n) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    x[i] = from_float<T>(to_float(x[i]) + to_float(r[i]));
  }
}

// One thread per (token, head, rotary pair) over q and k heads; v heads are copied by the threads
// of pair index < head_dim / 2 as well (two elements each).
template <typename T>
__global__ void rope_store_kernel(const RopeStoreArgs a) {
  const int half = a.head_dim / 2;
  const int heads = a.num_q_heads + 2 * a.num_kv_heads;
  const std::size_t total = std::size_t(a.tokens) * heads * half;
  for (std::size_t idx = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += std::size_t(gridDim.x) * blockDim.x) {
    const int i = int(idx % half);
    const int h = int((idx / half) % heads);
    const int t = int(idx / (std::size_t(half) * heads));
    const T* in = static_cast<const T*>(a.qkv) + std::size_t(t) * heads * a.head_dim +
                  std::size_t(h) * a.head_dim;
    const int slot = a.slots[t];
    const std::int64_t page = slot / a.kv.page_tokens, off = slot % a.kv.page_tokens;
    if (h >= a.num_q_heads + a.num_kv_heads) {  // v: stored as is
      const int vh = h - a.num_q_heads - a.num_kv_heads;
      T* dst = static_cast<T*>(a.kv.v) + page * a.kv.strides.page + off * a.kv.strides.token +
               std::int64_t(vh) * a.kv.strides.head;
      dst[i] = in[i];
      dst[i + half] = in[i + half];
      continue;
    }
    float sn, c;
    sincosf(float(a.positions[t]) * a.inv_freq[i], &sn, &c);
    const float x1 = to_float(in[i]), x2 = to_float(in[i + half]);
    T* dst;
    if (h < a.num_q_heads) {
      dst = static_cast<T*>(a.q_out) + (std::size_t(t) * a.num_q_heads + h) * a.head_dim;
    } else {
      dst = static_cast<T*>(a.kv.k) + page * a.kv.strides.page + off * a.kv.strides.token +
            std::int64_t(h - a.num_q_heads) * a.kv.strides.head;
    }
    dst[i] = from_float<T>(x1 * c - x2 * sn);
    dst[i + half] = from_float<T>(x2 * c + x1 * sn);
  }
}

template <typename T>
__global__ void silu_mul_kernel(const T* gu, T* out, int rows, int inter) {
  const std::size_t total = std::size_t(rows) * inter;
  for (std::size_t idx = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t r = idx / inter, i = idx % inter;
    const float g = to_float(gu[r * 2 * inter + i]), u = to_float(gu[r * 2 * inter + inter + i]);
    out[idx] = from_float<T>(g / (1.0f + expf(-g)) * u);
  }
}

__global__ void embed_kernel(const std::int32_t* tokens, const uint4* table, uint4* out,
                             int row_vecs) {
  const std::size_t src = std::size_t(tokens[blockIdx.x]) * row_vecs,
                    dst = std::size_t(blockIdx.x) * row_vecs;
  for (int i = threadIdx.x; i < row_vecs; i += blockDim.x)
    out[dst + i] = table[src + i];
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* logits, int vocab, std::int32_t* out) {
  const float* l = logits + std::size_t(blockIdx.x) * vocab;
  float best = -FLT_MAX;
  int index = vocab;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    if (l[i] > best) best = l[i], index = i;  // strides visit increasing indices: first max kept
  }
  for (int o = 16; o > 0; o /= 2) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, index, o);
    if (ob > best || (ob == best && oi < index)) best = ob, index = oi;
  }
  __shared__ float wb[kThreads / 32];
  __shared__ int wi[kThreads / 32];
  if (threadIdx.x % 32 == 0) wb[threadIdx.x / 32] = best, wi[threadIdx.x / 32] = index;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (wb[w] > best || (wb[w] == best && wi[w] < index)) best = wb[w], index = wi[w];
    }
    out[blockIdx.x] = index < vocab ? index : 0;
  }
}

unsigned grid_for(std::size_t n) {
  return unsigned(std::min<std::size_t>((n + kThreads - 1) / kThreads, 65536));
}

template <typename F>
Status by_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::kBF16:
      f(__nv_bfloat16{});
      break;
    case DType::kF16:
      f(__half{});
      break;
    default:
      return unimplemented(std::string(op) + ": dtype " + std::string(dtype_name(t)) +
                           " (bf16, f16 supported)");
  }
  TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR();
  return Status::Ok();
}

}  // namespace

Status launch_rms_norm(const void* x, const void* w, void* y, int rows, int dim, float eps, DType t,
                       cudaStream_t s) {
  if (rows == 0) return Status::Ok();
  return by_dtype(t, "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    rms_norm_kernel<T><<<rows, kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                 static_cast<T*>(y), dim, eps);
  });
}

Status launch_add(void* x, const void* r, std::size_t n, DType t, cudaStream_t s) {
  if (n == 0) return Status::Ok();
  return by_dtype(t, "add", [&](auto tag) {
    using T = decltype(tag);
    add_kernel<T><<<grid_for(n), kThreads, 0, s>>>(static_cast<T*>(x), static_cast<const T*>(r), n);
  });
}

Status launch_rope_store(const RopeStoreArgs& a, cudaStream_t s) {
  if (a.tokens == 0) return Status::Ok();
  const std::size_t n =
      std::size_t(a.tokens) * (a.num_q_heads + 2 * a.num_kv_heads) * (a.head_dim / 2);
  return by_dtype(a.dtype, "rope_store", [&](auto tag) {
    rope_store_kernel<decltype(tag)><<<grid_for(n), kThreads, 0, s>>>(a);
  });
}

Status launch_silu_mul(const void* gu, void* out, int rows, int inter, DType t, cudaStream_t s) {
  if (rows == 0) return Status::Ok();
  return by_dtype(t, "silu_mul", [&](auto tag) {
    using T = decltype(tag);
    silu_mul_kernel<T><<<grid_for(std::size_t(rows) * inter), kThreads, 0, s>>>(
        static_cast<const T*>(gu), static_cast<T*>(out), rows, inter);
  });
}

Status launch_embed(const std::int32_t* tokens, const void* table, void* out, int n, int hidden,
                    DType t, cudaStream_t s) {
  const std::size_t row = std::size_t(hidden) * dtype_size(t);
  if (row % 16 != 0) return invalid_argument("embed: a row must be a multiple of 16 bytes");
  if (n == 0) return Status::Ok();
  embed_kernel<<<n, 128, 0, s>>>(tokens, static_cast<const uint4*>(table), static_cast<uint4*>(out),
                                 int(row / 16));
  TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR();
  return Status::Ok();
}

Status launch_argmax(const float* logits, int rows, int vocab, std::int32_t* out, cudaStream_t s) {
  if (rows == 0) return Status::Ok();
  argmax_kernel<<<rows, kThreads, 0, s>>>(logits, vocab, out);
  TIERKV_CUDA_RETURN_IF_LAUNCH_ERROR();
  return Status::Ok();
}

}  // namespace tierkv::cuda

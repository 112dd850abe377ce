// The model's dense operations behind one seam, with a CPU and a CUDA implementation: the
// reference runner composes a Llama layer from them. Activations are stored in `act` (bf16 on the
// runner's paths) and all arithmetic is fp32; the CPU implementation rounds at the same points as
// the CUDA one, so the two runners can be compared.
//
// Every call queues work on `stream` and returns; pointers are device memory of the backend the
// Ops was made for. Calls allocate nothing after the first call of each GEMM shape (the CUDA
// implementation caches its cuBLASLt algorithm per shape), and may be captured in a graph.
//
// Thread safety: an Ops may be used from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "tierkv/backend.h"
#include "tierkv/dtype.h"
#include "tierkv/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv {

// Where a layer's new K and V go: the page arrays and their strides (elements).
struct KvDestination {
  void* k = nullptr;
  void* v = nullptr;
  KvStrides strides;
  std::int32_t page_tokens = 0;
};

struct RopeStoreArgs {
  const void* qkv = nullptr;  // [tokens][(Hq + 2 * Hkv) * head_dim]: q, then k, then v
  void* q_out = nullptr;      // [tokens][Hq][head_dim], rotated
  const std::int32_t* positions = nullptr;  // [tokens] position of each token in its sequence
  const std::int32_t* slots = nullptr;      // [tokens] page * page_tokens + offset where k and v go
  KvDestination kv;                         // k rotated, v as is
  const float* inv_freq = nullptr;          // [head_dim / 2] rotary frequencies
  std::int32_t tokens = 0, num_q_heads = 0, num_kv_heads = 0, head_dim = 0;
  DType dtype = DType::kBF16;
};

class Ops {
 public:
  virtual ~Ops() = default;

  // y[m][n] = x[m][k] . w[n][k]^T (w as nn.Linear stores it). x and w in `in`, y in `out`
  // (`in` or f32), fp32 accumulation.
  virtual Status linear(const void* x, const void* w, void* y, std::int32_t m, std::int32_t n,
                        std::int32_t k, DType in, DType out, Stream& stream) = 0;
  // y[r] = x[r] / rms(x[r]) * w, rows of `dim`.
  virtual Status rms_norm(const void* x, const void* w, void* y, std::int32_t rows,
                          std::int32_t dim, float eps, DType dtype, Stream& stream) = 0;
  // x[i] += r[i].
  virtual Status add(void* x, const void* r, std::size_t n, DType dtype, Stream& stream) = 0;
  // Rotary embedding (rotate-half pairs i, i + head_dim/2) of q and k; writes q, and k and v into
  // their page slots.
  virtual Status rope_store(const RopeStoreArgs& args, Stream& stream) = 0;
  // out[r][i] = silu(gate_up[r][i]) * gate_up[r][inter + i].
  virtual Status silu_mul(const void* gate_up, void* out, std::int32_t rows, std::int32_t inter,
                          DType dtype, Stream& stream) = 0;
  // out[i] = table[tokens[i]] (rows of `hidden`). Token ids are checked by the caller.
  virtual Status embed(const std::int32_t* tokens, const void* table, void* out, std::int32_t n,
                       std::int32_t hidden, DType dtype, Stream& stream) = 0;
  // out[r] = the first index of the largest logit of row r.
  virtual Status argmax(const float* logits, std::int32_t rows, std::int32_t vocab,
                        std::int32_t* out, Stream& stream) = 0;
};

// The Ops of `backend` (CPU or CUDA). `backend` must outlive it.
Result<std::unique_ptr<Ops>> create_ops(Backend& backend);

namespace cpu {
std::unique_ptr<Ops> create_cpu_ops();
}  // namespace cpu

}  // namespace tierkv

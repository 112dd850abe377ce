// The CPU implementation of the model's operations: plain loops, fp32 arithmetic, results rounded
// to the storage type once, at the same points as the CUDA kernels.
#include <algorithm>
#include <cmath>
#include <vector>
#include <cstring>

#include "backend/cpu/cpu_stream.h"
#include "engine/ops.h"

namespace tierkv::cpu {
namespace {

// Looks through decorating streams (the fault-injecting backend's) to the CpuStream.
Result<CpuStream*> cpu_stream(Stream& s) {
  auto* c = dynamic_cast<CpuStream*>(&s.base());
  if (c == nullptr) return invalid_argument("cpu ops: stream of another backend");
  return c;
}

float silu(float g) {
  return g / (1.0f + std::exp(-g));
}

// y[i][j] = sum over c, in order, of x[i][c] * w[j][c]: each output's sum runs in the same order
// as a plain loop would (so results are bit for bit those of one), but eight outputs advance
// together over a block of w converted to fp32 once, which the compiler vectorizes across them.
Status linear_rows(const void* x, const void* w, void* y, std::int32_t m, std::int32_t n,
                   std::int32_t k, DType in, DType out) {
  constexpr std::int32_t kBlock = 8;
  const std::size_t kk = std::size_t(k);
  std::vector<float> xf(std::size_t(m) * kk), wt(kk * kBlock);
  for (std::size_t e = 0; e < xf.size(); ++e)
    xf[e] = load_as_float(x, e, in);
  for (std::int32_t j0 = 0; j0 < n; j0 += kBlock) {
    const std::int32_t nb = std::min(kBlock, n - j0);
    for (std::int32_t jj = 0; jj < kBlock; ++jj)  // wt[c][jj]: rows j0.. of w, transposed
      for (std::size_t c = 0; c < kk; ++c)
        wt[c * kBlock + jj] = jj < nb ? load_as_float(w, std::size_t(j0 + jj) * kk + c, in) : 0.0f;
    for (std::int32_t i = 0; i < m; ++i) {
      float acc[kBlock] = {};
      const float* xi = xf.data() + std::size_t(i) * kk;
      for (std::size_t c = 0; c < kk; ++c) {
        const float a = xi[c];
        for (std::int32_t jj = 0; jj < kBlock; ++jj)
          acc[jj] += a * wt[c * kBlock + jj];
      }
      for (std::int32_t jj = 0; jj < nb; ++jj)
        store_from_float(y, std::size_t(i) * n + j0 + jj, out, acc[jj]);
    }
  }
  return Status::Ok();
}

class CpuOps final : public Ops {
 public:
  Status linear(const void* x, const void* w, void* y, std::int32_t m, std::int32_t n,
                std::int32_t k, DType in, DType out, Stream& stream) override {
    if (m < 0 || n <= 0 || k <= 0) return invalid_argument("linear: bad shape");
    TIERKV_ASSIGN_OR_RETURN(CpuStream * s, cpu_stream(stream));
    s->enqueue([=] { return linear_rows(x, w, y, m, n, k, in, out); });
    return Status::Ok();
  }

  Status rms_norm(const void* x, const void* w, void* y, std::int32_t rows, std::int32_t dim,
                  float eps, DType t, Stream& stream) override {
    TIERKV_ASSIGN_OR_RETURN(CpuStream * s, cpu_stream(stream));
    s->enqueue([=] {
      for (std::int32_t r = 0; r < rows; ++r) {
        const std::size_t base = std::size_t(r) * dim;
        float ss = 0.0f;
        for (std::int32_t i = 0; i < dim; ++i) {
          const float v = load_as_float(x, base + i, t);
          ss += v * v;
        }
        const float inv = 1.0f / std::sqrt(ss / float(dim) + eps);
        for (std::int32_t i = 0; i < dim; ++i) {
          store_from_float(y, base + i, t,
                           load_as_float(x, base + i, t) * inv * load_as_float(w, i, t));
        }
      }
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status add(void* x, const void* r, std::size_t n, DType t, Stream& stream) override {
    TIERKV_ASSIGN_OR_RETURN(CpuStream * s, cpu_stream(stream));
    s->enqueue([=] {
      for (std::size_t i = 0; i < n; ++i)
        store_from_float(x, i, t, load_as_float(x, i, t) + load_as_float(r, i, t));
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status rope_store(const RopeStoreArgs& a, Stream& stream) override {
    TIERKV_ASSIGN_OR_RETURN(CpuStream * s, cpu_stream(stream));
    s->enqueue([a] {
      const std::int32_t d = a.head_dim, half = d / 2;
      const std::int32_t row = (a.num_q_heads + 2 * a.num_kv_heads) * d;
      for (std::int32_t t = 0; t < a.tokens; ++t) {
        const std::size_t in = std::size_t(t) * row;
        const std::int32_t slot = a.slots[t];
        const std::int64_t page = slot / a.kv.page_tokens, off = slot % a.kv.page_tokens;
        for (std::int32_t h = 0; h < a.num_q_heads + a.num_kv_heads; ++h) {
          const bool is_q = h < a.num_q_heads;
          void* dst = is_q ? a.q_out : a.kv.k;
          const std::int64_t out = is_q ? std::int64_t(t) * a.num_q_heads * d + std::int64_t(h) * d
                                        : page * a.kv.strides.page + off * a.kv.strides.token +
                                              std::int64_t(h - a.num_q_heads) * a.kv.strides.head;
          for (std::int32_t i = 0; i < half; ++i) {
            const float angle = float(a.positions[t]) * a.inv_freq[i];
            const float c = std::cos(angle), sn = std::sin(angle);
            const float x1 = load_as_float(a.qkv, in + std::size_t(h) * d + i, a.dtype);
            const float x2 = load_as_float(a.qkv, in + std::size_t(h) * d + i + half, a.dtype);
            store_from_float(dst, std::size_t(out + i), a.dtype, x1 * c - x2 * sn);
            store_from_float(dst, std::size_t(out + i + half), a.dtype, x2 * c + x1 * sn);
          }
        }
        for (std::int32_t h = 0; h < a.num_kv_heads; ++h) {
          const std::size_t src = in + std::size_t(a.num_q_heads + a.num_kv_heads + h) * d;
          const std::int64_t out = page * a.kv.strides.page + off * a.kv.strides.token +
                                   std::int64_t(h) * a.kv.strides.head;
          std::memcpy(static_cast<std::uint8_t*>(a.kv.v) + out * dtype_size(a.dtype),
                      static_cast<const std::uint8_t*>(a.qkv) + src * dtype_size(a.dtype),
                      std::size_t(d) * dtype_size(a.dtype));
        }
      }
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status silu_mul(const void* gate_up, void* out, std::int32_t rows, std::int32_t inter, DType t,
                  Stream& stream) override {
    TIERKV_ASSIGN_OR_RETURN(CpuStream * s, cpu_stream(stream));
    s->enqueue([=] {
      for (std::int32_t r = 0; r < rows; ++r) {
        const std::size_t in = std::size_t(r) * 2 * inter;
        for (std::int32_t i = 0; i < inter; ++i) {
          const float g = load_as_float(gate_up, in + i, t),
                      u = load_as_float(gate_up, in + inter + i, t);
          store_from_float(out, std::size_t(r) * inter + i, t, silu(g) * u);
        }
      }
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status embed(const std::int32_t* tokens, const void* table, void* out, std::int32_t n,
               std::int32_t hidden, DType t, Stream& stream) override {
    TIERKV_ASSIGN_OR_RETURN(CpuStream * s, cpu_stream(stream));
    s->enqueue([=] {
      const std::size_t row = std::size_t(hidden) * dtype_size(t);
      for (std::int32_t i = 0; i < n; ++i) {
        std::memcpy(static_cast<std::uint8_t*>(out) + std::size_t(i) * row,
                    static_cast<const std::uint8_t*>(table) + std::size_t(tokens[i]) * row, row);
      }
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status argmax(const float* logits, std::int32_t rows, std::int32_t vocab, std::int32_t* out,
                Stream& stream) override {
    TIERKV_ASSIGN_OR_RETURN(CpuStream * s, cpu_stream(stream));
    s->enqueue([=] {
      for (std::int32_t r = 0; r < rows; ++r) {
        const float* l = logits + std::size_t(r) * vocab;
        std::int32_t best = 0;
        for (std::int32_t i = 1; i < vocab; ++i) {
          if (l[i] > l[best]) best = i;
        }
        out[r] = best;
      }
      return Status::Ok();
    });
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Ops> create_cpu_ops() {
  return std::make_unique<CpuOps>();
}

}  // namespace tierkv::cpu

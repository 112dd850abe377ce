// The CPU reference for decode attention: an exact two-pass softmax, read through the same
// PagedKvLayer view the kernels use.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tierkv/attention.h"

namespace tierkv {
namespace {

template <typename Acc>
void reference(const DecodeAttentionArgs& a) {
  const PagedKvLayer& kv = a.kv;
  const std::int32_t d = kv.head_dim;
  const std::int32_t group = a.num_q_heads / kv.num_kv_heads;
  std::vector<Acc> scores;
  std::vector<Acc> acc(static_cast<std::size_t>(d));
  for (std::int32_t b = 0; b < kv.batch; ++b) {
    const std::int32_t len = kv.seq_lens[b];
    const std::int32_t* pages = kv.block_table + std::int64_t{b} * kv.block_table_stride;
    scores.assign(static_cast<std::size_t>(std::max(len, 0)), Acc(0));
    for (std::int32_t h = 0; h < a.num_q_heads; ++h) {
      const std::size_t qo = (std::size_t(b) * a.num_q_heads + h) * d;
      const std::int32_t kvh = h / group;
      Acc max_score = -INFINITY;
      for (std::int32_t t = 0; t < len; ++t) {
        const std::int64_t base = kv.offset(pages[t / kv.page_tokens], t % kv.page_tokens, kvh);
        Acc s = 0;
        for (std::int32_t i = 0; i < d; ++i) {
          s += Acc(load_as_float(a.q, qo + i, kv.dtype)) *
               Acc(load_as_float(kv.k, base + i, kv.dtype));
        }
        scores[t] = s * Acc(a.sm_scale);
        max_score = std::max(max_score, scores[t]);
      }
      Acc sum = 0;
      std::fill(acc.begin(), acc.end(), Acc(0));
      for (std::int32_t t = 0; t < len; ++t) {
        const Acc p = std::exp(scores[t] - max_score);
        sum += p;
        const std::int64_t base = kv.offset(pages[t / kv.page_tokens], t % kv.page_tokens, kvh);
        for (std::int32_t i = 0; i < d; ++i)
          acc[i] += p * Acc(load_as_float(kv.v, base + i, kv.dtype));
      }
      for (std::int32_t i = 0; i < d; ++i) {
        store_from_float(a.out, qo + i, kv.dtype,
                         len > 0 ? static_cast<float>(acc[i] / sum) : 0.0f);
      }
    }
  }
}

}  // namespace

void decode_attention_reference(const DecodeAttentionArgs& args) {
  reference<float>(args);
}
void decode_attention_reference_f64(const DecodeAttentionArgs& args) {
  reference<double>(args);
}

}  // namespace tierkv

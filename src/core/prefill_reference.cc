// The CPU reference for prefill attention: exact two-pass softmax per query row, causal over the
// sequence's pages, read through the same PagedKvLayer view the kernels use.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tierkv/prefill.h"

namespace tierkv {
namespace {

template <typename Acc>
void reference(const PrefillAttentionArgs& a) {
  const PagedKvLayer& kv = a.kv;
  const std::int32_t d = kv.head_dim;
  const std::int32_t group = a.num_q_heads / kv.num_kv_heads;
  std::vector<Acc> scores, acc(static_cast<std::size_t>(d));
  for (std::int32_t b = 0; b < kv.batch; ++b) {
    const std::int32_t len = kv.seq_lens[b];
    const std::int32_t first_row = a.q_offsets[b];
    const std::int32_t n = a.q_offsets[b + 1] - first_row;
    const std::int32_t* pages = kv.block_table + std::int64_t{b} * kv.block_table_stride;
    for (std::int32_t j = 0; j < n; ++j) {
      const std::int32_t pos = len - n + j;  // attends to 0..pos
      scores.assign(static_cast<std::size_t>(pos + 1), Acc(0));
      for (std::int32_t h = 0; h < a.num_q_heads; ++h) {
        const std::size_t qo = (std::size_t(first_row + j) * a.num_q_heads + h) * d;
        const std::int32_t kvh = h / group;
        Acc max_score = -INFINITY;
        for (std::int32_t t = 0; t <= pos; ++t) {
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
        for (std::int32_t t = 0; t <= pos; ++t) {
          const Acc p = std::exp(scores[t] - max_score);
          sum += p;
          const std::int64_t base = kv.offset(pages[t / kv.page_tokens], t % kv.page_tokens, kvh);
          for (std::int32_t i = 0; i < d; ++i)
            acc[i] += p * Acc(load_as_float(kv.v, base + i, kv.dtype));
        }
        for (std::int32_t i = 0; i < d; ++i)
          store_from_float(a.out, qo + i, kv.dtype, static_cast<float>(acc[i] / sum));
      }
    }
  }
}

}  // namespace

void prefill_attention_reference(const PrefillAttentionArgs& args) {
  reference<float>(args);
}
void prefill_attention_reference_f64(const PrefillAttentionArgs& args) {
  reference<double>(args);
}

}  // namespace tierkv

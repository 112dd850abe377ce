// The CPU reference for prefill attention: exact two-pass softmax per query row, causal over the
// sequence's pages, read through the same PagedKvLayer view the kernels use.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/attention_row.h"
#include "tierkv/prefill.h"

namespace tierkv {
namespace {

template <typename Acc>
void reference(const PrefillAttentionArgs& a) {
  const PagedKvLayer& kv = a.kv;
  const std::int32_t group = a.num_q_heads / kv.num_kv_heads;
  std::vector<Acc> scores, acc;
  for (std::int32_t b = 0; b < kv.batch; ++b) {
    const std::int32_t len = kv.seq_lens[b];
    const std::int32_t first_row = a.q_offsets[b];
    const std::int32_t n = a.q_offsets[b + 1] - first_row;
    const std::int32_t* pages = kv.block_table + std::int64_t{b} * kv.block_table_stride;
    for (std::int32_t j = 0; j < n; ++j) {
      const std::int32_t pos = len - n + j;  // attends to 0..pos
      for (std::int32_t h = 0; h < a.num_q_heads; ++h) {
        const std::size_t at = (std::size_t(first_row + j) * a.num_q_heads + h) * kv.head_dim;
        attend_row<Acc>(a.q, at, kv, pages, h / group, pos + 1, a.sm_scale, a.out, at, scores, acc);
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

// The CPU reference for decode attention: an exact two-pass softmax, read through the same
// PagedKvLayer view the kernels use.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/attention_row.h"
#include "tierkv/attention.h"

namespace tierkv {
namespace {

template <typename Acc>
void reference(const DecodeAttentionArgs& a) {
  const PagedKvLayer& kv = a.kv;
  const std::int32_t group = a.num_q_heads / kv.num_kv_heads;
  std::vector<Acc> scores, acc;
  for (std::int32_t b = 0; b < kv.batch; ++b) {
    const std::int32_t len = kv.seq_lens[b];
    const std::int32_t* pages = kv.block_table + std::int64_t{b} * kv.block_table_stride;
    for (std::int32_t h = 0; h < a.num_q_heads; ++h) {
      const std::size_t at = (std::size_t(b) * a.num_q_heads + h) * kv.head_dim;
      if (len < 1) {  // nothing to attend to: zeros, by definition
        for (std::int32_t i = 0; i < kv.head_dim; ++i)
          store_from_float(a.out, at + i, kv.dtype, 0.0f);
        continue;
      }
      attend_row<Acc>(a.q, at, kv, pages, h / group, len, a.sm_scale, a.out, at, scores, acc);
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

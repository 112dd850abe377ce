// One query row of attention over a sequence's paged KV, in accumulator precision Acc: the exact
// two-pass softmax both CPU references (decode and prefill) are made of.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tierkv/paged_kv.h"

namespace tierkv {

// out[out_at .. + head_dim) = softmax(q . K[0..len)^T * scale) . V[0..len) for KV head `kv_head`
// of the sequence whose pages are `pages`. len >= 1. `scores` and `acc` are scratch.
template <typename Acc>
void attend_row(const void* q, std::size_t q_at, const PagedKvLayer& kv, const std::int32_t* pages,
                std::int32_t kv_head, std::int32_t len, float scale, void* out, std::size_t out_at,
                std::vector<Acc>& scores, std::vector<Acc>& acc) {
  const std::int32_t d = kv.head_dim;
  const auto row = [&](std::int32_t t) {
    return kv.offset(pages[t / kv.page_tokens], t % kv.page_tokens, kv_head);
  };
  scores.assign(static_cast<std::size_t>(len), Acc(0));
  Acc max_score = -INFINITY;
  for (std::int32_t t = 0; t < len; ++t) {
    const std::int64_t base = row(t);
    Acc s = 0;
    for (std::int32_t i = 0; i < d; ++i) {
      s += Acc(load_as_float(q, q_at + i, kv.dtype)) * Acc(load_as_float(kv.k, base + i, kv.dtype));
    }
    scores[t] = s * Acc(scale);
    max_score = std::max(max_score, scores[t]);
  }
  Acc sum = 0;
  acc.assign(static_cast<std::size_t>(d), Acc(0));
  for (std::int32_t t = 0; t < len; ++t) {
    const Acc p = std::exp(scores[t] - max_score);
    sum += p;
    const std::int64_t base = row(t);
    for (std::int32_t i = 0; i < d; ++i)
      acc[i] += p * Acc(load_as_float(kv.v, base + i, kv.dtype));
  }
  for (std::int32_t i = 0; i < d; ++i)
    store_from_float(out, out_at + i, kv.dtype, static_cast<float>(acc[i] / sum));
}

}  // namespace tierkv

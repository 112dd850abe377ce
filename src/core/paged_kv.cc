#include "tierkv/paged_kv.h"

#include <string>

namespace tierkv {

KvStrides packed_strides(KvLayout layout, std::int32_t page_tokens, std::int32_t num_kv_heads,
                         std::int32_t head_dim) {
  const std::int64_t page = std::int64_t{page_tokens} * num_kv_heads * head_dim;
  if (layout == KvLayout::kNHD) return {page, std::int64_t{num_kv_heads} * head_dim, head_dim};
  return {page, head_dim, std::int64_t{page_tokens} * head_dim};
}

PagedKvLayer PagedKvView::layer(std::int32_t l) const {
  PagedKvLayer out;
  out.k = k_layers[static_cast<std::size_t>(l)];
  out.v = v_layers[static_cast<std::size_t>(l)];
  out.block_table = block_table;
  out.seq_lens = seq_lens;
  out.strides = strides;
  out.block_table_stride = block_table_stride;
  out.batch = batch;
  out.page_tokens = page_tokens;
  out.num_kv_heads = num_kv_heads;
  out.head_dim = head_dim;
  out.dtype = dtype;
  return out;
}

namespace {

Status bad(const std::string& what) {
  return invalid_argument("PagedKvLayer: " + what);
}

}  // namespace

Status validate(const PagedKvLayer& kv) {
  if (kv.batch <= 0) return bad("batch must be positive, got " + std::to_string(kv.batch));
  if (kv.page_tokens <= 0) return bad("page_tokens must be positive");
  if (kv.num_kv_heads <= 0) return bad("num_kv_heads must be positive");
  if (kv.head_dim <= 0) return bad("head_dim must be positive");
  if (kv.block_table_stride <= 0) return bad("block_table_stride must be positive");
  if (kv.k == nullptr || kv.v == nullptr || kv.block_table == nullptr || kv.seq_lens == nullptr) {
    return bad("k, v, block_table and seq_lens must be set");
  }
  if (kv.dtype == DType::kF32) return bad("KV dtype must be bf16 or f16");
  const KvStrides& st = kv.strides;
  if (st.page <= 0 || st.token <= 0 || st.head <= 0) return bad("strides must be positive");
  // Heads, tokens and pages must not overlap: order the two inner dims by stride; each stride must
  // cover the whole extent of the dims inside it.
  const bool heads_inner = st.head <= st.token;
  const std::int64_t s1 = heads_inner ? st.head : st.token;
  const std::int64_t c1 = heads_inner ? kv.num_kv_heads : kv.page_tokens;
  const std::int64_t s2 = heads_inner ? st.token : st.head;
  const std::int64_t c2 = heads_inner ? kv.page_tokens : kv.num_kv_heads;
  if (s1 < kv.head_dim) return bad("head and token strides must be >= head_dim");
  if (s2 < s1 * c1) return bad("head and token strides overlap");
  if (st.page < s2 * c2) return bad("page stride overlaps the tokens of a page");
  return Status::Ok();
}

}  // namespace tierkv

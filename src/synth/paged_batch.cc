#include "synth/paged_batch.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>

namespace tierkv::synth {

PagedBatchSpec PagedBatchSpec::for_model(const ModelSpec& model, std::vector<std::int32_t> lens) {
  PagedBatchSpec s;
  s.seq_lens = std::move(lens);
  s.num_q_heads = model.num_q_heads;
  s.num_kv_heads = model.num_kv_heads;
  s.head_dim = model.head_dim;
  s.page_tokens = model.page_tokens;
  s.dtype = model.kv_dtype;
  return s;
}

std::int32_t PagedBatchSpec::total_pages() const {
  std::int64_t n = spare_pages;
  for (std::int32_t len : seq_lens)
    n += pages_of(len);
  return static_cast<std::int32_t>(n);
}

std::int32_t PagedBatchSpec::max_pages_per_seq() const {
  std::int32_t m = 1;
  for (std::int32_t len : seq_lens)
    m = std::max(m, pages_of(len));
  return m;
}

std::size_t PagedBatchSpec::page_bytes() const {
  return std::size_t(page_tokens) * num_kv_heads * head_dim * dtype_size(dtype);
}

std::int64_t PagedBatchSpec::q_rows() const {
  if (q_lens.empty()) return batch();
  std::int64_t rows = 0;
  for (std::int32_t n : q_lens)
    rows += n;
  return rows;
}

std::size_t PagedBatchSpec::device_bytes() const {
  const std::size_t qo = 2 * std::size_t(q_rows()) * num_q_heads * head_dim * dtype_size(dtype);
  const std::size_t tables =
      sizeof(std::int32_t) * std::size_t(batch()) * (max_pages_per_seq() + 2);
  return 2 * std::size_t(total_pages()) * page_bytes() + qo + tables;
}

std::size_t PagedBatchSpec::kv_bytes_read() const {
  std::size_t tokens = 0;
  for (std::int32_t len : seq_lens)
    tokens += std::size_t(len);
  return 2 * tokens * num_kv_heads * head_dim * dtype_size(dtype);
}

Status PagedBatchSpec::validate() const {
  if (seq_lens.empty()) return invalid_argument("paged batch: no sequences");
  for (std::int32_t len : seq_lens) {
    if (len < 1) return invalid_argument("paged batch: every sequence needs at least one token");
  }
  if (num_kv_heads <= 0 || num_q_heads <= 0 || head_dim <= 0 || page_tokens <= 0 ||
      spare_pages < 0) {
    return invalid_argument("paged batch: heads, head_dim and page_tokens must be positive");
  }
  std::int64_t pages = spare_pages;
  for (std::int32_t len : seq_lens)
    pages += pages_of(len);
  if (pages > INT32_MAX) return out_of_range("paged batch: more than 2^31 pages");
  if (!q_lens.empty()) {
    if (q_lens.size() != seq_lens.size()) {
      return invalid_argument("paged batch: q_lens needs one entry per sequence");
    }
    for (std::size_t b = 0; b < q_lens.size(); ++b) {
      if (q_lens[b] < 1 || q_lens[b] > seq_lens[b]) {
        return invalid_argument("paged batch: q_lens[" + std::to_string(b) +
                                "] must be in 1..seq_lens[" + std::to_string(b) + "]");
      }
    }
    if (q_rows() > INT32_MAX) return out_of_range("paged batch: more than 2^31 query rows");
  }
  return Status::Ok();
}

Result<PagedBatch> PagedBatch::create(Backend& backend, Stream& stream,
                                      const PagedBatchSpec& spec) {
  TIERKV_RETURN_IF_ERROR(spec.validate());
  PagedBatch b;
  b.spec_ = spec;
  const std::int32_t batch = spec.batch();
  const std::int32_t stride = spec.max_pages_per_seq();
  const std::size_t kv_elems =
      std::size_t(spec.total_pages()) * spec.page_bytes() / dtype_size(spec.dtype);
  const std::size_t qo_elems = std::size_t(spec.q_rows()) * spec.num_q_heads * spec.head_dim;

  // Page ids: a permutation of the pool, dealt out to sequences in order.
  std::vector<std::int32_t> ids(static_cast<std::size_t>(spec.total_pages()));
  std::iota(ids.begin(), ids.end(), 0);
  if (spec.shuffle_pages) std::shuffle(ids.begin(), ids.end(), std::mt19937_64(spec.seed));
  std::vector<std::int32_t> table(std::size_t(batch) * stride, 0);
  std::size_t next = 0;
  for (std::int32_t s = 0; s < batch; ++s) {
    for (std::int32_t p = 0; p < spec.pages_of(spec.seq_lens[s]); ++p)
      table[std::size_t(s) * stride + p] = ids[next++];
  }

  TIERKV_ASSIGN_OR_RETURN(b.k_,
                          backend.allocate(MemoryKind::kDevice, kv_elems * dtype_size(spec.dtype)));
  TIERKV_ASSIGN_OR_RETURN(b.v_,
                          backend.allocate(MemoryKind::kDevice, kv_elems * dtype_size(spec.dtype)));
  TIERKV_ASSIGN_OR_RETURN(b.q_,
                          backend.allocate(MemoryKind::kDevice, qo_elems * dtype_size(spec.dtype)));
  TIERKV_ASSIGN_OR_RETURN(b.out_,
                          backend.allocate(MemoryKind::kDevice, qo_elems * dtype_size(spec.dtype)));
  TIERKV_ASSIGN_OR_RETURN(
      b.block_table_, backend.allocate(MemoryKind::kDevice, table.size() * sizeof(std::int32_t)));
  TIERKV_ASSIGN_OR_RETURN(b.seq_lens_, backend.allocate(MemoryKind::kDevice,
                                                        std::size_t(batch) * sizeof(std::int32_t)));
  std::vector<std::int32_t> offsets;
  if (!spec.q_lens.empty()) {
    offsets.assign(std::size_t(batch) + 1, 0);
    for (std::int32_t s = 0; s < batch; ++s)
      offsets[std::size_t(s) + 1] = offsets[std::size_t(s)] + spec.q_lens[std::size_t(s)];
    TIERKV_ASSIGN_OR_RETURN(
        b.q_offsets_, backend.allocate(MemoryKind::kDevice, offsets.size() * sizeof(std::int32_t)));
    TIERKV_RETURN_IF_ERROR(
        stream.copy(b.q_offsets_.data(), offsets.data(), offsets.size() * sizeof(std::int32_t)));
  }

  const std::uint64_t seed = spec.seed * 4;  // distinct streams of values for K, V, q
  TIERKV_RETURN_IF_ERROR(backend.fill_uniform(b.k_.data(), kv_elems, spec.dtype, seed,
                                              -spec.kv_range, spec.kv_range, stream));
  TIERKV_RETURN_IF_ERROR(backend.fill_uniform(b.v_.data(), kv_elems, spec.dtype, seed + 1,
                                              -spec.kv_range, spec.kv_range, stream));
  TIERKV_RETURN_IF_ERROR(backend.fill_uniform(b.q_.data(), qo_elems, spec.dtype, seed + 2,
                                              -spec.q_range, spec.q_range, stream));
  TIERKV_RETURN_IF_ERROR(stream.fill(b.out_.data(), 0xff, b.out_.size()));  // NaN in bf16 and f16
  TIERKV_RETURN_IF_ERROR(
      stream.copy(b.block_table_.data(), table.data(), table.size() * sizeof(std::int32_t)));
  TIERKV_RETURN_IF_ERROR(stream.copy(b.seq_lens_.data(), spec.seq_lens.data(),
                                     std::size_t(batch) * sizeof(std::int32_t)));
  TIERKV_RETURN_IF_ERROR(stream.synchronize());  // the host vectors above die here
  return b;
}

PagedKvLayer PagedBatch::layer() const {
  PagedKvLayer l;
  l.k = k_.data();
  l.v = v_.data();
  l.block_table = block_table_.as<const std::int32_t>();
  l.seq_lens = seq_lens_.as<const std::int32_t>();
  l.strides = packed_strides(spec_.layout, spec_.page_tokens, spec_.num_kv_heads, spec_.head_dim);
  l.block_table_stride = spec_.max_pages_per_seq();
  l.batch = spec_.batch();
  l.page_tokens = spec_.page_tokens;
  l.num_kv_heads = spec_.num_kv_heads;
  l.head_dim = spec_.head_dim;
  l.dtype = spec_.dtype;
  return l;
}

DecodeAttentionArgs PagedBatch::decode_args(const DecodePlan& plan, void* workspace) const {
  DecodeAttentionArgs a;
  a.kv = layer();
  a.q = q_.data();
  a.out = out_.data();
  a.num_q_heads = spec_.num_q_heads;
  a.sm_scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));
  a.plan = plan;
  a.workspace = workspace;
  return a;
}

Status PagedBatch::download(Stream& stream, HostBatch& host) const {
  host.k.resize(k_.size());
  host.v.resize(v_.size());
  host.q.resize(q_.size());
  host.out.resize(out_.size());
  host.block_table.resize(block_table_.size() / sizeof(std::int32_t));
  host.seq_lens.resize(seq_lens_.size() / sizeof(std::int32_t));
  TIERKV_RETURN_IF_ERROR(stream.copy(host.k.data(), k_.data(), k_.size()));
  TIERKV_RETURN_IF_ERROR(stream.copy(host.v.data(), v_.data(), v_.size()));
  TIERKV_RETURN_IF_ERROR(stream.copy(host.q.data(), q_.data(), q_.size()));
  TIERKV_RETURN_IF_ERROR(stream.copy(host.out.data(), out_.data(), out_.size()));
  TIERKV_RETURN_IF_ERROR(
      stream.copy(host.block_table.data(), block_table_.data(), block_table_.size()));
  TIERKV_RETURN_IF_ERROR(stream.copy(host.seq_lens.data(), seq_lens_.data(), seq_lens_.size()));
  host.q_offsets.resize(q_offsets_.size() / sizeof(std::int32_t));
  if (!host.q_offsets.empty()) {
    TIERKV_RETURN_IF_ERROR(
        stream.copy(host.q_offsets.data(), q_offsets_.data(), q_offsets_.size()));
  }
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  host.layer = layer();
  host.layer.k = host.k.data();
  host.layer.v = host.v.data();
  host.layer.block_table = host.block_table.data();
  host.layer.seq_lens = host.seq_lens.data();
  return Status::Ok();
}

PrefillAttentionArgs PagedBatch::prefill_args(const PrefillPlan& plan, void* workspace) const {
  PrefillAttentionArgs a;
  a.kv = layer();
  a.q = q_.data();
  a.out = out_.data();
  a.q_offsets = q_offsets_.as<const std::int32_t>();
  a.num_q_heads = spec_.num_q_heads;
  a.sm_scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));
  a.plan = plan;
  a.workspace = workspace;
  return a;
}

DecodeAttentionArgs HostBatch::decode_args(std::int32_t num_q_heads, void* out_ptr) const {
  DecodeAttentionArgs a;
  a.kv = layer;
  a.q = q.data();
  a.out = out_ptr;
  a.num_q_heads = num_q_heads;
  a.sm_scale = 1.0f / std::sqrt(static_cast<float>(layer.head_dim));
  a.plan.batch = layer.batch;
  a.plan.num_q_heads = num_q_heads;
  a.plan.num_splits = 1;
  return a;
}

PrefillAttentionArgs HostBatch::prefill_args(std::int32_t num_q_heads, void* out_ptr) const {
  PrefillAttentionArgs a;
  a.kv = layer;
  a.q = q.data();
  a.out = out_ptr;
  a.q_offsets = q_offsets.data();
  a.num_q_heads = num_q_heads;
  a.sm_scale = 1.0f / std::sqrt(static_cast<float>(layer.head_dim));
  a.plan.batch = layer.batch;
  a.plan.num_q_heads = num_q_heads;
  a.plan.total_q_tokens = q_offsets.empty() ? 0 : q_offsets.back();
  return a;
}

Result<std::vector<PagedBatch>> rotating_batches(Backend& backend, Stream& stream,
                                                 PagedBatchSpec spec, std::size_t rotate_bytes,
                                                 std::uint64_t seed, int max_sets) {
  TIERKV_ASSIGN_OR_RETURN(const std::size_t free, backend.free_memory());
  const std::size_t set_bytes = spec.device_bytes();
  const std::size_t by_cache = rotate_bytes == 0 ? 1 : (rotate_bytes + set_bytes - 1) / set_bytes;
  const std::size_t by_memory = std::max<std::size_t>(1, free / 2 / set_bytes);
  const int sets = static_cast<int>(
      std::clamp<std::size_t>(std::min(by_cache, by_memory), 1, std::size_t(max_sets)));
  std::vector<PagedBatch> out;
  for (int i = 0; i < sets; ++i) {
    spec.seed = seed + static_cast<std::uint64_t>(i);
    TIERKV_ASSIGN_OR_RETURN(PagedBatch b, PagedBatch::create(backend, stream, spec));
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace tierkv::synth

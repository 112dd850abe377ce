// Synthetic paged-KV batches for tests and benchmarks: a page pool filled with random values on
// the backend itself, each sequence's pages scattered through the pool like an engine's after
// some churn, a block table, lengths, queries and an output buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tierkv/attention.h"
#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/paged_kv.h"
#include "tierkv/prefill.h"

namespace tierkv::synth {

struct PagedBatchSpec {
  std::vector<std::int32_t> seq_lens;  // tokens of each sequence (>= 1)
  // Prefill: new tokens of each sequence, the last q_lens[b] of its seq_lens[b] (1..seq_lens[b]);
  // q and out then hold sum(q_lens) rows. Empty: one query row per sequence (decode).
  std::vector<std::int32_t> q_lens;
  std::int32_t num_q_heads = 32;
  std::int32_t num_kv_heads = 8;
  std::int32_t head_dim = 128;
  std::int32_t page_tokens = 16;
  DType dtype = DType::kBF16;
  KvLayout layout = KvLayout::kNHD;
  std::int32_t spare_pages = 0;  // pool pages no sequence uses
  bool shuffle_pages = true;     // scatter pages through the pool (else sequential)
  std::uint64_t seed = 1;
  float q_range = 2.0f;   // q uniform in [-q_range, q_range)
  float kv_range = 1.0f;  // K and V uniform in [-kv_range, kv_range)

  // The KV shape of `model` (heads, head dim, dtype, page size).
  static PagedBatchSpec for_model(const ModelSpec& model, std::vector<std::int32_t> seq_lens);

  std::int32_t batch() const { return static_cast<std::int32_t>(seq_lens.size()); }
  std::int64_t q_rows() const;  // rows of q and out
  std::int32_t pages_of(std::int32_t len) const { return (len + page_tokens - 1) / page_tokens; }
  std::int32_t total_pages() const;
  std::int32_t max_pages_per_seq() const;
  std::size_t page_bytes() const;  // one page of K (or V)
  // Bytes of device memory the batch allocates.
  std::size_t device_bytes() const;
  // Bytes of K and V one decode step reads (all tokens of all sequences).
  std::size_t kv_bytes_read() const;
  Status validate() const;
};

// Host copies of a batch, laid out exactly as on the device, with views pointing into them.
struct HostBatch {
  std::vector<std::uint8_t> k, v, q, out;
  std::vector<std::int32_t> block_table, seq_lens;
  std::vector<std::int32_t> q_offsets;  // prefill batches only
  PagedKvLayer layer;                   // points into this object: do not copy or move it after use

  // Arguments for the CPU reference over these copies, writing to `out` (host memory).
  DecodeAttentionArgs decode_args(std::int32_t num_q_heads, void* out) const;
  // Arguments for the CPU prefill reference over these copies (a prefill batch), writing to `out`.
  PrefillAttentionArgs prefill_args(std::int32_t num_q_heads, void* out) const;
};

class PagedBatch {
 public:
  // Allocates and fills the batch on `backend`; returns once the data is in place.
  static Result<PagedBatch> create(Backend& backend, Stream& stream, const PagedBatchSpec& spec);

  const PagedBatchSpec& spec() const { return spec_; }
  PagedKvLayer layer() const;
  // Arguments for a decode over this batch with scale 1/sqrt(head_dim).
  DecodeAttentionArgs decode_args(const DecodePlan& plan, void* workspace) const;
  // Arguments for a prefill over this batch (spec().q_lens set) with scale 1/sqrt(head_dim).
  PrefillAttentionArgs prefill_args(const PrefillPlan& plan, void* workspace) const;
  void* q() const { return q_.data(); }
  std::size_t q_bytes() const { return q_.size(); }
  void* out() const { return out_.data(); }
  std::size_t out_bytes() const { return out_.size(); }

  // Copies everything to the host (after the stream's queued work).
  Status download(Stream& stream, HostBatch& host) const;

 private:
  PagedBatchSpec spec_;
  Buffer k_, v_, q_, out_, block_table_, seq_lens_, q_offsets_;
};

// Copies of a batch (seeds seed, seed + 1, ...) to rotate through when timing, so that every run
// reads its inputs from device memory rather than the cache: enough sets to cover
// `rotate_bytes` (one when 0), at most `max_sets`, and no more than half the free memory holds.
Result<std::vector<PagedBatch>> rotating_batches(Backend& backend, Stream& stream,
                                                 PagedBatchSpec spec, std::size_t rotate_bytes,
                                                 std::uint64_t seed, int max_sets);

}  // namespace tierkv::synth

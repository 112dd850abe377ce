// Decode attention over paged KV: one new query token per sequence attends to all of that
// sequence's cached tokens.
//
//   out[b, h, :] = softmax(q[b, h, :] . K[b, 0:len_b, h / G, :]^T * sm_scale) . V[b, 0:len_b, h /
//   G, :]
//
// with G = num_q_heads / num_kv_heads (grouped-query attention). Storage is bf16 or fp16 (q, out
// and KV share the dtype); all arithmetic is fp32.
//
// Plan, then run: plan_decode_attention() runs on the host from the lengths, decides how the work
// is split across the device, and says how much workspace the run needs. The caller owns the
// workspace. The run (Backend::decode_attention) allocates nothing and may be captured in a graph,
// as long as the lengths it sees on the device are no longer than those the plan was made for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "tierkv/backend.h"
#include "tierkv/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv {

struct DecodePlan {
  std::int32_t batch = 0;
  std::int32_t num_q_heads = 0;
  std::int32_t max_seq_len = 0;       // longest sequence the plan covers
  std::int32_t tokens_per_split = 0;  // each sequence is cut into splits of this many tokens
  std::int32_t num_splits = 0;        // splits of the longest sequence; 1 = no split
  std::size_t workspace_bytes = 0;    // what the run needs in `workspace` (0 when num_splits == 1)
};
static_assert(std::is_trivially_copyable_v<DecodePlan>);

// Plans a decode over `kv` (only its shape fields are read) for sequences of the given host-side
// lengths. InvalidArgument for a bad shape, an unsupported head dim / group / dtype, lengths < 1 or
// a lengths span whose size differs from kv.batch.
Result<DecodePlan> plan_decode_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                         std::int32_t num_q_heads,
                                         std::span<const std::int32_t> seq_lens);

struct DecodeAttentionArgs {
  PagedKvLayer kv;          // one layer's pages, block table and lengths
  const void* q = nullptr;  // [batch][num_q_heads][head_dim], kv.dtype, contiguous
  void* out = nullptr;      // [batch][num_q_heads][head_dim], kv.dtype, contiguous
  std::int32_t num_q_heads = 0;
  float sm_scale = 0.0f;  // usually 1 / sqrt(head_dim)
  DecodePlan plan;
  void* workspace =
      nullptr;  // >= plan.workspace_bytes, device memory, not shared by runs in flight
};
static_assert(std::is_trivially_copyable_v<DecodeAttentionArgs>);

// Head dims and GQA groups the kernels are built for.
bool decode_head_dim_supported(std::int32_t head_dim);
bool decode_group_supported(std::int32_t group);

// Checks args against each other and against the plan; the backends call it before a launch.
Status validate(const DecodeAttentionArgs& args);

// The CPU reference, in accumulator precision Acc (float or double): exact two-pass softmax.
// All pointers in `args` must be host-readable; `args.plan` and `args.workspace` are ignored.
void decode_attention_reference(const DecodeAttentionArgs& args);
void decode_attention_reference_f64(const DecodeAttentionArgs& args);

}  // namespace tierkv

// Prefill attention over paged KV: a chunk of new tokens per sequence attends causally to that
// sequence's cached prefix and to the chunk itself.
//
// For sequence b with L_b = seq_lens[b] tokens in its pages and n_b = q_offsets[b+1] - q_offsets[b]
// new tokens (the last n_b of the L_b, whose K and V are already written to the pages), query row
// q_offsets[b] + j sits at position p = L_b - n_b + j and attends to KV positions 0..p:
//
//   out[r, h, :] = softmax(q[r, h, :] . K[b, 0..p, h / G, :]^T * sm_scale) . V[b, 0..p, h / G, :]
//
// with G = num_q_heads / num_kv_heads. Storage bf16 or fp16 (q, out and KV share the dtype), fp32
// arithmetic. Plan, then run, as for decode: the plan is made on the host from the lengths, the
// run allocates nothing and may be captured in a graph while the lengths it sees are no longer
// than planned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>

#include "tierkv/backend.h"
#include "tierkv/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv {

struct PrefillPlan {
  std::int32_t batch = 0;
  std::int32_t num_q_heads = 0;
  std::int32_t total_q_tokens = 0;  // sum of n_b
  std::int32_t max_q_tokens = 0;    // largest n_b
  std::int32_t max_seq_len = 0;     // largest L_b
  std::int32_t work_items = 0;      // kernel-specific: tiles the run launches
  std::int32_t tile_rows = 128;     // packed query rows per CUDA tile: 64 or 128
  std::size_t workspace_bytes = 0;  // device workspace the run needs (may be 0)
  // CUDA: the order the query tiles start in. false: longest first (best when the grid takes
  // several waves); true, for grids resident at once: the longer half longest first, then the
  // shorter half shortest first, so that the two CTAs sharing a multiprocessor (CTA i and CTA
  // i + SMs in the block scheduler's breadth-first placement) have about equal work together.
  bool balanced_order = false;
  // CUDA: launch as a programmatic dependent of the previous kernel on the stream. The kernels
  // wait for it to finish before touching memory, so stream order is kept; their launch and
  // block placement overlap its tail.
  bool programmatic_launch = false;
};
static_assert(std::is_trivially_copyable_v<PrefillPlan>);

// Overrides of the planner's choices, for tuning and benchmarks; the defaults let it choose.
// Overrides of the planner's choices, for tuning and benchmarks. They shape how the CUDA kernels
// split the work; the CPU backend computes the exact reference whatever the plan says (it checks
// the plan like the CUDA backend, so a plan one backend accepts the other accepts too).
struct PrefillPlanOptions {
  std::int32_t splits = 0;             // > 0: exactly this many KV splits per query tile (1..32)
  std::int32_t tile_rows = 0;          // > 0: query tiles of this many packed rows (64 or 128)
  std::optional<bool> balanced_order;  // see PrefillPlan
  std::optional<bool> programmatic_launch;  // see PrefillPlan
};

// InvalidArgument for a bad shape, K/V strides or base pointers that are not 16-byte aligned,
// q_lens[b] < 1, q_lens[b] > seq_lens[b], spans whose size is not kv.batch, or options out of
// range; Unimplemented for an unsupported head dim, group or dtype. A run with this plan accepts
// the same KV layout; it also needs q and out 16-byte aligned (InvalidArgument otherwise). The CUDA plan depends on device.compute_units (tile size and KV splits fill the
// multiprocessors).
Result<PrefillPlan> plan_prefill_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                           std::int32_t num_q_heads,
                                           std::span<const std::int32_t> q_lens,
                                           std::span<const std::int32_t> seq_lens);
Result<PrefillPlan> plan_prefill_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                           std::int32_t num_q_heads,
                                           std::span<const std::int32_t> q_lens,
                                           std::span<const std::int32_t> seq_lens,
                                           const PrefillPlanOptions& options);

// The KV splits per query tile that a plan from plan_prefill_attention launches (1: unsplit),
// read back from its work items.
std::int32_t prefill_kv_splits(const PrefillPlan& plan, std::int32_t num_kv_heads);

struct PrefillAttentionArgs {
  PagedKvLayer kv;                          // seq_lens[b] = L_b (prefix + chunk)
  const void* q = nullptr;                  // [total_q_tokens][num_q_heads][head_dim], contiguous
  void* out = nullptr;                      // same shape
  const std::int32_t* q_offsets = nullptr;  // [batch + 1], device-readable, q_offsets[0] = 0
  std::int32_t num_q_heads = 0;
  float sm_scale = 0.0f;
  PrefillPlan plan;
  void* workspace = nullptr;  // >= plan.workspace_bytes
};
static_assert(std::is_trivially_copyable_v<PrefillAttentionArgs>);

bool prefill_head_dim_supported(std::int32_t head_dim);
bool prefill_group_supported(std::int32_t group);

// Checks args against each other and the plan; the backends call it before a launch.
Status validate(const PrefillAttentionArgs& args);

// CPU references (exact two-pass softmax) in fp32 and fp64 accumulation; all pointers
// host-readable.
void prefill_attention_reference(const PrefillAttentionArgs& args);
void prefill_attention_reference_f64(const PrefillAttentionArgs& args);

}  // namespace tierkv

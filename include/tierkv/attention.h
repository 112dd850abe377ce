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
// as long as the lengths it sees on the device are no longer than those the plan was made for
// (a graph captured for lengths L may be replayed after the lengths on the device have shrunk, or
// grown up to L: the kernels read the lengths from the device at every run).
//
// How the CUDA backend splits the work (docs/decode-attention-notes.md has the measurements): each
// block streams one (sequence, KV head, split) through shared memory, or with heads_per_block = 2,
// 4 or 8 one (sequence, that many KV heads, split) as whole token rows of those heads, and runs the
// GQA group's query heads against every K/V tile with tensor-core products. A sequence cut into
// several splits is merged in one of three ways, none with a second pass over the KV:
//   kCluster        the splits of a (sequence, KV head) form one thread-block cluster (at most 16
//                   blocks) and merge through distributed shared memory inside the same launch;
//                   each block takes an equal share of that sequence's tokens. No workspace.
//   kWorkspace      each split writes its partial result and log-sum-exp to the workspace and a
//                   second, small kernel merges them (started early as a programmatic dependent
//                   launch). Splits have a fixed length, so a long sequence in a ragged batch gets
//                   many splits and a short one few.
//   kWorkspaceLast  the same fixed splits and partials, in one launch: the last block to finish
//                   for a (sequence, KV head or head group) merges that group's partials. Blocks
//                   count their arrivals in counters kept in the workspace (see
//                   DecodeAttentionArgs::workspace for what that asks of the caller).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

#include "tierkv/backend.h"
#include "tierkv/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv {

// How the splits of one sequence are combined (see the top of this file).
enum class DecodeMerge : std::uint8_t {
  kNone = 0,           // one split per sequence: each block writes its output rows
  kCluster = 1,        // 2..16 splits, merged inside one launch through distributed shared memory
  kWorkspace = 2,      // any number of splits, merged by a second kernel from the workspace
  kWorkspaceLast = 3,  // any number of splits, merged from the workspace by each group's last
                       // block, in the same launch
};
std::string_view decode_merge_name(DecodeMerge m);  // "none", "cluster", "workspace", "last"

struct DecodePlan {
  std::int32_t batch = 0;
  std::int32_t num_q_heads = 0;
  std::int32_t max_seq_len = 0;       // longest sequence the plan covers
  std::int32_t tokens_per_split = 0;  // kWorkspace: splits of this many tokens; otherwise the
                                      // share of the longest sequence (each sequence is cut
                                      // into num_splits equal shares, multiples of 16 tokens)
  std::int32_t num_splits = 0;        // splits of the longest sequence; 1 = no split
  std::size_t workspace_bytes = 0;    // what the run needs in `workspace` (0 unless a workspace
                                      // merge)
  std::size_t workspace_counter_bytes = 0;  // kWorkspaceLast: the first bytes of `workspace`
                                            // are arrival counters (see DecodeAttentionArgs)
  DecodeMerge merge = DecodeMerge::kNone;
  std::int32_t pipeline = 0;         // CUDA pipeline depth: 0 deep (one block per multiprocessor),
                                     // 1 shallow, 2 middle (two blocks), 3 deepest (one block)
  std::int32_t heads_per_block = 1;  // CUDA: 1, a block streams one KV head; 2, 4 or 8, a block
                                     // streams that many KV heads together (one contiguous run
                                     // per token in NHD; needs num_kv_heads a multiple of it,
                                     // head_dim <= 128, no cluster merge)
  bool l2_prefetch = true;           // CUDA: K/V copies ask L2 for whole 256-byte lines
  bool programmatic_launch = false;  // CUDA: launch as a programmatic dependent of the previous
                                     // kernel on the stream (the kernel waits for it to finish
                                     // before touching memory, so stream order is kept)
};
static_assert(std::is_trivially_copyable_v<DecodePlan>);

// Overrides of the planner's choices, for tuning and benchmarks; the defaults let it choose. They
// shape how the CUDA kernels split the work; the CPU backend computes the exact reference whatever
// the plan says (it checks the plan like the CUDA backend, so a plan one backend accepts the other
// accepts too).
struct DecodePlanOptions {
  std::int32_t splits = 0;               // > 0: exactly this many splits of the longest sequence
  std::optional<DecodeMerge> merge;      // with splits: how to merge them (default: kCluster
                                         // up to 16 splits, kWorkspace beyond); the planner
                                         // picks kWorkspaceLast only when asked here
  std::optional<std::int32_t> pipeline;  // 0 deep, 1 shallow, 2 middle, 3 deepest
  std::optional<bool> l2_prefetch;       // see DecodePlan
  std::optional<std::int32_t> heads_per_block;  // 1, 2, 4 or 8 (see DecodePlan)
  std::optional<bool> programmatic_launch;      // see DecodePlan
};

// Plans a decode over `kv` (its shape fields, strides and K/V base pointers are read) for sequences
// of the given host-side lengths. InvalidArgument for a bad shape, K/V strides or base pointers
// that are not 16-byte aligned, lengths < 1 or a lengths span whose size differs from kv.batch, or
// options that contradict each other; Unimplemented for an unsupported head dim, group or dtype.
// A run with this plan accepts the same KV layout; it also needs q and out 16-byte aligned
// (InvalidArgument otherwise).
// The CUDA plan depends on device.compute_units (the split count fills the multiprocessors).
Result<DecodePlan> plan_decode_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                         std::int32_t num_q_heads,
                                         std::span<const std::int32_t> seq_lens);
Result<DecodePlan> plan_decode_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                         std::int32_t num_q_heads,
                                         std::span<const std::int32_t> seq_lens,
                                         const DecodePlanOptions& options);

struct DecodeAttentionArgs {
  PagedKvLayer kv;          // one layer's pages, block table and lengths
  const void* q = nullptr;  // [batch][num_q_heads][head_dim], kv.dtype, contiguous
  void* out = nullptr;      // [batch][num_q_heads][head_dim], kv.dtype, contiguous
  std::int32_t num_q_heads = 0;
  float sm_scale = 0.0f;  // usually 1 / sqrt(head_dim)
  DecodePlan plan;
  // >= plan.workspace_bytes of device memory, not shared by runs in flight. Its first
  // plan.workspace_counter_bytes bytes (kWorkspaceLast) are arrival counters: they must be zero
  // before a run, and every run leaves them zero, so zeroing the workspace once when it is
  // allocated covers every later run and graph replay on it. The rest is scratch, rewritten by
  // every run. Decode runs of any plan for the same or a larger batch (same KV head count) leave
  // those bytes zero (kWorkspace reserves them unused); anything else that writes there between
  // runs (a plan for a smaller batch, another kernel's scratch) must be followed by zeroing them
  // again.
  void* workspace = nullptr;
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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/kv_alignment.h"
#include "core/decode_workspace.h"
#include "tierkv/attention.h"

namespace tierkv {
namespace {

// Mirrors of the CUDA kernels' shapes (src/backend/cuda/decode_attention.cu).
constexpr std::int32_t kTile = 16;       // tokens per pipeline stage; split shares are multiples
constexpr std::int32_t kBlockWarps = 4;  // warps per block of the per-head kernel
constexpr std::int32_t kMaxClusterSplits = 16;
constexpr std::size_t kSmemPerSm = 228 * 1024;  // H100 / H200 shared memory per multiprocessor
constexpr std::size_t kSmemReserved = 1024;     // per block, kept by the driver

// Whether head-fused blocks of `heads` KV heads can run this layer (2, 4 and 8 heads are built).
bool fused_fits(std::int32_t heads, const PagedKvLayer& kv) {
  return (heads == 2 || heads == 4 || heads == 8) && kv.num_kv_heads % heads == 0 &&
         kv.head_dim <= 128;
}

// The workspace merges' layout (core/decode_workspace.h), for a layer shape and a split count.
DecodeWorkspaceLayout workspace_layout(const PagedKvLayer& kv, std::int32_t num_q_heads,
                                       std::int32_t splits) {
  return decode_workspace_layout(kv.batch, kv.num_kv_heads, num_q_heads, splits, kv.head_dim);
}

bool workspace_merge(DecodeMerge m) {
  return m == DecodeMerge::kWorkspace || m == DecodeMerge::kWorkspaceLast;
}

// Blocks of the per-head kernel one multiprocessor holds at once, by shared memory: deep (4
// stages of a K and a V tile per warp) and middle (3 stages; 2 at head dim 256).
std::int32_t per_head_blocks_per_sm(std::int32_t pipeline, std::int32_t head_dim,
                                    std::size_t elem) {
  const std::int32_t stages = pipeline == 0 ? (head_dim >= 256 ? 3 : 4) : (head_dim >= 256 ? 2 : 3);
  const std::size_t bytes =
      std::size_t(kBlockWarps) * stages * 2 * kTile * head_dim * elem + kSmemReserved;
  return static_cast<std::int32_t>(std::clamp<std::size_t>(kSmemPerSm / bytes, 1, 8));
}

std::int32_t round_up(std::int64_t v, std::int32_t q) {
  return static_cast<std::int32_t>((v + q - 1) / q * q);
}

struct Choice {
  DecodeMerge merge = DecodeMerge::kNone;
  std::int32_t splits = 1;
  std::int32_t tokens_per_split = 0;  // 0: the whole longest sequence
  std::int32_t pipeline = 0;
  std::int32_t heads_per_block = 1;
};

// The rules below are the measurements of docs/decode-attention-notes.md (H100, Llama-8B shape),
// written in terms of the multiprocessor count so that they carry to other devices and shapes:
//  - About SMs / 2 blocks of the deep pipeline already stream at ~3 TB/s (one block sustains
//    ~47 GB/s); every split beyond that only adds merge work. So a batch of `units` (sequence,
//    KV head) pairs is cut into round(SMs / 2 / units) splits: 8 at batch 1, 2 at batch 4, none
//    from batch 8 on (8 KV heads).
//  - Two splits merge fastest in clusters of 2 (one partner, any GPC); more splits through the
//    workspace (clusters of 8 crowd a few GPCs and stream 10% slower).
//  - Without splits: the deep pipeline up to one block per multiprocessor, the middle one (two
//    blocks per multiprocessor, so one block's prologue hides behind another's stream) beyond,
//    and head-fused blocks of 8 heads (whole pages, 1-2% faster) once they alone fill the device.
//  - Skewed lengths: the longest sequence in 16 fixed splits, middle pipeline, so that no block
//    of a long sequence streams alone at the end; the last block of a sequence's splits merges
//    them (1-1.5% faster than the second kernel at batch 8 / 32 / 128). Uniform batches keep the
//    second kernel: at batch 1 the two merges are within 1% (docs/decode-attention-notes.md, V4).
Choice choose(const DeviceInfo& device, const PagedKvLayer& kv, std::span<const std::int32_t> lens,
              std::int32_t max_len, const DecodePlanOptions& opt) {
  const std::int32_t sms = std::max(device.compute_units, 1);
  const std::size_t elem = dtype_size(kv.dtype);
  const std::int64_t units = std::int64_t(kv.batch) * kv.num_kv_heads;
  const std::int32_t most_splits = std::max(1, max_len / 64);  // at least 64 tokens a split
  Choice c;
  // Fixed-length splits merge through the workspace: by a second kernel, or by the last block of
  // each sequence's splits where that measured faster (skewed batches) or was asked for.
  const auto fixed = [&](std::int32_t splits, DecodeMerge by_workspace = DecodeMerge::kWorkspace) {
    if (opt.merge && workspace_merge(*opt.merge)) by_workspace = *opt.merge;
    c.merge = splits > 1 ? by_workspace : DecodeMerge::kNone;
    c.tokens_per_split = round_up((max_len + splits - 1) / splits, kTile);
    c.splits = (max_len + c.tokens_per_split - 1) / c.tokens_per_split;
    if (c.splits == 1) c.merge = DecodeMerge::kNone;
  };

  if (opt.splits > 0 || opt.heads_per_block.value_or(1) > 1) {  // asked for
    const std::int32_t splits = std::min(std::max(opt.splits, 1), std::max(1, max_len));
    c.heads_per_block = opt.heads_per_block.value_or(1);
    c.pipeline = opt.pipeline.value_or(0);
    const DecodeMerge merge = opt.merge.value_or(
        splits == 1                                             ? DecodeMerge::kNone
        : splits <= kMaxClusterSplits && c.heads_per_block == 1 ? DecodeMerge::kCluster
                                                                : DecodeMerge::kWorkspace);
    if (merge == DecodeMerge::kCluster && splits > 1) {
      c.merge = DecodeMerge::kCluster;
      c.splits = splits;
      c.tokens_per_split = round_up((max_len + splits - 1) / splits, kTile);
    } else {
      fixed(merge == DecodeMerge::kNone ? 1 : splits);
    }
    return c;
  }

  double mean = 0;
  for (std::int32_t len : lens)
    mean += len;
  mean /= static_cast<double>(lens.size());
  if (max_len > 1.5 * mean && opt.merge != DecodeMerge::kNone &&
      opt.merge != DecodeMerge::kCluster) {
    fixed(std::min(16, most_splits), DecodeMerge::kWorkspaceLast);
    c.pipeline = opt.pipeline.value_or(2);
    return c;
  }

  std::int32_t splits = static_cast<std::int32_t>(
      std::clamp<std::int64_t>((sms / 2 + units / 2) / units, 1, kMaxClusterSplits));
  splits = std::min(splits, most_splits);
  if (opt.merge == DecodeMerge::kNone) splits = 1;
  if (splits == 1) {
    c.tokens_per_split = round_up(max_len, kTile);
    const std::int64_t fused_blocks =
        fused_fits(8, kv) ? std::int64_t(kv.batch) * kv.num_kv_heads / 8 : 0;
    if (fused_blocks * 10 >= std::int64_t(sms) * 9) {
      c.heads_per_block = 8;
      c.pipeline = opt.pipeline.value_or(0);
    } else {
      const bool one_wave =
          units <= std::int64_t(sms) * per_head_blocks_per_sm(0, kv.head_dim, elem);
      c.pipeline = opt.pipeline.value_or(one_wave ? 0 : 2);
    }
    return c;
  }
  c.pipeline = opt.pipeline.value_or(0);
  const bool clusters_fit = units <= sms / 2;  // clusters of 2 at one block per SM
  if ((splits == 2 && clusters_fit && !(opt.merge && workspace_merge(*opt.merge))) ||
      opt.merge == DecodeMerge::kCluster) {
    c.merge = DecodeMerge::kCluster;
    c.splits = splits;
    c.tokens_per_split = round_up((max_len + splits - 1) / splits, kTile);
    return c;
  }
  fixed(splits);
  return c;
}

}  // namespace

std::string_view decode_merge_name(DecodeMerge m) {
  switch (m) {
    case DecodeMerge::kNone:
      return "none";
    case DecodeMerge::kCluster:
      return "cluster";
    case DecodeMerge::kWorkspace:
      return "workspace";
    case DecodeMerge::kWorkspaceLast:
      return "last";
  }
  return "unknown";
}

bool decode_head_dim_supported(std::int32_t head_dim) {
  return head_dim == 64 || head_dim == 128 || head_dim == 256;
}
bool decode_group_supported(std::int32_t group) {
  return group >= 1 && group <= 8;
}

Result<DecodePlan> plan_decode_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                         std::int32_t num_q_heads,
                                         std::span<const std::int32_t> seq_lens) {
  return plan_decode_attention(device, kv, num_q_heads, seq_lens, DecodePlanOptions{});
}

Result<DecodePlan> plan_decode_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                         std::int32_t num_q_heads,
                                         std::span<const std::int32_t> seq_lens,
                                         const DecodePlanOptions& options) {
  if (kv.batch <= 0) return invalid_argument("decode plan: batch must be positive");
  if (seq_lens.size() != static_cast<std::size_t>(kv.batch)) {
    return invalid_argument("decode plan: " + std::to_string(seq_lens.size()) +
                            " lengths for a batch of " + std::to_string(kv.batch));
  }
  if (kv.num_kv_heads <= 0 || num_q_heads <= 0 || num_q_heads % kv.num_kv_heads != 0) {
    return invalid_argument("decode plan: num_q_heads (" + std::to_string(num_q_heads) +
                            ") must be a positive multiple of num_kv_heads (" +
                            std::to_string(kv.num_kv_heads) + ")");
  }
  const std::int32_t group = num_q_heads / kv.num_kv_heads;
  if (!decode_group_supported(group)) {
    return unimplemented("decode attention: GQA group " + std::to_string(group) +
                         " is not supported (1..8 query heads per KV head)");
  }
  if (!decode_head_dim_supported(kv.head_dim)) {
    return unimplemented("decode attention: head_dim " + std::to_string(kv.head_dim) +
                         " is not supported (64, 128, 256)");
  }
  TIERKV_RETURN_IF_ERROR(check_kv_alignment(kv, "decode plan"));
  if (options.splits < 0) return invalid_argument("decode plan: splits must not be negative");
  if (options.pipeline && (*options.pipeline < 0 || *options.pipeline > 3)) {
    return invalid_argument(
        "decode plan: pipeline must be 0 (deep), 1 (shallow), 2 (middle) or 3 "
        "(deepest)");
  }
  if (options.heads_per_block && !fused_fits(*options.heads_per_block, kv) &&
      *options.heads_per_block != 1) {
    return invalid_argument(
        "decode plan: heads_per_block must be 1, or 2, 4 or 8 dividing the KV heads with "
        "head_dim <= 128");
  }
  if (options.heads_per_block.value_or(1) > 1 && options.merge == DecodeMerge::kCluster) {
    return invalid_argument("decode plan: head-fused blocks have no cluster merge");
  }
  if (options.merge == DecodeMerge::kCluster && options.splits > kMaxClusterSplits) {
    return invalid_argument("decode plan: a cluster merge takes at most 16 splits");
  }
  if (options.merge == DecodeMerge::kNone && options.splits > 1) {
    return invalid_argument("decode plan: several splits need a merge");
  }
  std::int32_t max_len = 0;
  for (std::int32_t len : seq_lens) {
    if (len < 1) return invalid_argument("decode plan: every sequence needs at least one token");
    max_len = std::max(max_len, len);
  }
  const std::int64_t capacity = std::int64_t{kv.block_table_stride} * kv.page_tokens;
  if (kv.block_table_stride > 0 && max_len > capacity) {
    return invalid_argument("decode plan: a sequence of " + std::to_string(max_len) +
                            " tokens needs more pages than a block-table row holds (" +
                            std::to_string(kv.block_table_stride) + ")");
  }

  DecodePlan plan;
  plan.batch = kv.batch;
  plan.num_q_heads = num_q_heads;
  plan.max_seq_len = max_len;
  plan.tokens_per_split = max_len;
  plan.num_splits = 1;
  if (device.backend != BackendKind::kCuda) return plan;  // the CPU reference never splits

  const Choice c = choose(device, kv, seq_lens, max_len, options);
  plan.merge = c.merge;
  plan.num_splits = c.splits;
  plan.tokens_per_split = c.tokens_per_split;
  plan.pipeline = c.pipeline;
  plan.heads_per_block = c.heads_per_block;
  plan.l2_prefetch = options.l2_prefetch.value_or(true);
  plan.programmatic_launch = options.programmatic_launch.value_or(true);
  if (workspace_merge(plan.merge)) {
    const DecodeWorkspaceLayout layout = workspace_layout(kv, num_q_heads, plan.num_splits);
    plan.workspace_bytes = layout.bytes;
    if (plan.merge == DecodeMerge::kWorkspaceLast)
      plan.workspace_counter_bytes = layout.counter_bytes;
  }
  return plan;
}

Status validate(const DecodeAttentionArgs& a) {
  TIERKV_RETURN_IF_ERROR(validate(a.kv));
  if (a.q == nullptr || a.out == nullptr)
    return invalid_argument("decode attention: q and out must be set");
  if (a.num_q_heads <= 0 || a.num_q_heads % a.kv.num_kv_heads != 0) {
    return invalid_argument(
        "decode attention: num_q_heads must be a positive multiple of num_kv_heads");
  }
  if (!std::isfinite(a.sm_scale) || a.sm_scale == 0.0f) {
    return invalid_argument("decode attention: sm_scale must be finite and non-zero");
  }
  if (a.plan.batch != a.kv.batch || a.plan.num_q_heads != a.num_q_heads || a.plan.num_splits < 1) {
    return invalid_argument("decode attention: the plan was made for another batch or head count");
  }
  const DecodePlan& p = a.plan;
  const bool consistent =
      (p.merge == DecodeMerge::kNone && p.num_splits == 1) ||
      (p.merge == DecodeMerge::kCluster && p.num_splits >= 2 &&
       p.num_splits <= kMaxClusterSplits) ||
      (workspace_merge(p.merge) && p.tokens_per_split > 0 && p.tokens_per_split % kTile == 0);
  if (!consistent) {
    return invalid_argument("decode attention: the plan's merge (" +
                            std::string(decode_merge_name(p.merge)) + ") does not fit its " +
                            std::to_string(p.num_splits) + " splits of " +
                            std::to_string(p.tokens_per_split) + " tokens");
  }
  if (p.pipeline < 0 || p.pipeline > 3) {
    return invalid_argument("decode attention: the plan's pipeline must be 0..3");
  }
  if (p.heads_per_block != 1 &&
      (!fused_fits(p.heads_per_block, a.kv) || p.merge == DecodeMerge::kCluster)) {
    return invalid_argument("decode attention: the plan's heads_per_block (" +
                            std::to_string(p.heads_per_block) + ") does not fit the layer");
  }
  if (p.workspace_bytes > 0 && a.workspace == nullptr) {
    return invalid_argument("decode attention: the plan needs " +
                            std::to_string(p.workspace_bytes) + " bytes of workspace");
  }
  // The kernels lay the workspace out from the shape, not from the plan's byte counts.
  const DecodeWorkspaceLayout layout = workspace_layout(a.kv, a.num_q_heads, p.num_splits);
  if (workspace_merge(p.merge) &&
      (p.workspace_bytes < layout.bytes || (p.merge == DecodeMerge::kWorkspaceLast &&
                                            p.workspace_counter_bytes != layout.counter_bytes))) {
    return invalid_argument("decode attention: the plan's workspace (" +
                            std::to_string(p.workspace_bytes) + " bytes) does not fit its " +
                            std::to_string(p.num_splits) + " splits");
  }
  return check_run_alignment(a.kv, a.q, a.out, "decode attention");
}

}  // namespace tierkv

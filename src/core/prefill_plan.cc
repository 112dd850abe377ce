#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "tierkv/prefill.h"

namespace tierkv {

bool prefill_head_dim_supported(std::int32_t head_dim) {
  return head_dim == 64 || head_dim == 128;
}
bool prefill_group_supported(std::int32_t group) {
  return group >= 1 && group <= 8;
}

namespace {
// The CUDA kernel's tiling (src/backend/cuda/prefill_attention.cu). A CTA owns kTileRows packed
// query rows, (chunk position, head in group) pairs of one sequence and one KV head, and walks the
// sequence's KV in tiles of kKvTile tokens. The grid covers the longest chunk for every sequence
// and KV head (shorter chunks leave CTAs that exit at once), so
//   work_items = ceil(max_q_tokens * G / kTileRows) * batch * num_kv_heads * splits,
// and the launcher reads the split count back from it. When the CTAs that have rows would fill
// less than one wave of kCtasPerSm per SM, each tile's KV range is split in up to kMaxSplits
// parts of at least kMinKvTilesPerSplit tiles; the parts' fp32 partials and log-sum-exps go to the
// workspace and a second kernel merges them. (On an H100, a 512-token chunk with no prefix ran
// 26.5 us split in two parts of 4 tiles and 27.9 us unsplit, in the same run.)
constexpr std::int64_t kTileRows = 128;
constexpr std::int64_t kKvTile = 64;
constexpr std::int64_t kCtasPerSm = 2;
constexpr std::int64_t kMaxSplits = 32;
constexpr std::int64_t kMinKvTilesPerSplit = 4;

std::int64_t choose_splits(const DeviceInfo& device, std::int64_t busy_ctas,
                           std::int32_t max_seq_len) {
  if (device.backend != BackendKind::kCuda || device.compute_units <= 0 || busy_ctas <= 0) return 1;
  const std::int64_t slots = kCtasPerSm * device.compute_units;
  if (busy_ctas * 2 > slots) return 1;
  const std::int64_t kv_tiles = (max_seq_len + kKvTile - 1) / kKvTile;
  return std::max<std::int64_t>(
      1, std::min({slots / busy_ctas, kMaxSplits, kv_tiles / kMinKvTilesPerSplit}));
}
}  // namespace

Result<PrefillPlan> plan_prefill_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                           std::int32_t num_q_heads,
                                           std::span<const std::int32_t> q_lens,
                                           std::span<const std::int32_t> seq_lens) {
  if (kv.batch <= 0) return invalid_argument("prefill plan: batch must be positive");
  if (q_lens.size() != std::size_t(kv.batch) || seq_lens.size() != std::size_t(kv.batch)) {
    return invalid_argument("prefill plan: q_lens and seq_lens need one entry per sequence (" +
                            std::to_string(kv.batch) + ")");
  }
  if (kv.num_kv_heads <= 0 || num_q_heads <= 0 || num_q_heads % kv.num_kv_heads != 0) {
    return invalid_argument(
        "prefill plan: num_q_heads must be a positive multiple of num_kv_heads");
  }
  if (!prefill_group_supported(num_q_heads / kv.num_kv_heads)) {
    return unimplemented("prefill attention: GQA group " +
                         std::to_string(num_q_heads / kv.num_kv_heads) +
                         " is not supported (1..8)");
  }
  if (!prefill_head_dim_supported(kv.head_dim)) {
    return unimplemented("prefill attention: head_dim " + std::to_string(kv.head_dim) +
                         " is not supported (64, 128)");
  }
  PrefillPlan plan;
  plan.batch = kv.batch;
  plan.num_q_heads = num_q_heads;
  const std::int64_t group = num_q_heads / kv.num_kv_heads;
  std::int64_t total = 0, tiles = 0;
  for (std::size_t b = 0; b < q_lens.size(); ++b) {
    if (q_lens[b] < 1 || q_lens[b] > seq_lens[b]) {
      return invalid_argument("prefill plan: sequence " + std::to_string(b) + " has " +
                              std::to_string(q_lens[b]) + " new tokens of " +
                              std::to_string(seq_lens[b]));
    }
    if (kv.block_table_stride > 0 &&
        std::int64_t{seq_lens[b]} > std::int64_t{kv.block_table_stride} * kv.page_tokens) {
      return invalid_argument("prefill plan: sequence " + std::to_string(b) +
                              " needs more pages than a block-table row holds");
    }
    total += q_lens[b];
    tiles += (q_lens[b] * group + kTileRows - 1) / kTileRows;
    plan.max_q_tokens = std::max(plan.max_q_tokens, q_lens[b]);
    plan.max_seq_len = std::max(plan.max_seq_len, seq_lens[b]);
  }
  if (total > INT32_MAX) return out_of_range("prefill plan: more than 2^31 query tokens");
  plan.total_q_tokens = static_cast<std::int32_t>(total);
  const std::int64_t m_blocks = (plan.max_q_tokens * group + kTileRows - 1) / kTileRows;
  if (m_blocks > 65535) {
    return out_of_range("prefill plan: a chunk of " + std::to_string(plan.max_q_tokens) +
                        " tokens is longer than one launch covers; split it");
  }
  const std::int64_t splits = choose_splits(device, tiles * kv.num_kv_heads, plan.max_seq_len);
  const std::int64_t items = m_blocks * kv.batch * kv.num_kv_heads * splits;
  if (items > INT32_MAX) return out_of_range("prefill plan: more than 2^31 work items");
  plan.work_items = static_cast<std::int32_t>(items);
  if (splits > 1) {
    const std::size_t rows = std::size_t(total) * std::size_t(num_q_heads) * std::size_t(splits);
    const std::size_t o_bytes = (rows * std::size_t(kv.head_dim) * sizeof(float) + 255) / 256 * 256;
    plan.workspace_bytes = o_bytes + rows * sizeof(float);
  }
  return plan;
}

Status validate(const PrefillAttentionArgs& a) {
  TIERKV_RETURN_IF_ERROR(validate(a.kv));
  if (a.q == nullptr || a.out == nullptr || a.q_offsets == nullptr) {
    return invalid_argument("prefill attention: q, out and q_offsets must be set");
  }
  if (a.num_q_heads <= 0 || a.num_q_heads % a.kv.num_kv_heads != 0) {
    return invalid_argument(
        "prefill attention: num_q_heads must be a positive multiple of num_kv_heads");
  }
  if (!std::isfinite(a.sm_scale) || a.sm_scale == 0.0f) {
    return invalid_argument("prefill attention: sm_scale must be finite and non-zero");
  }
  if (a.plan.batch != a.kv.batch || a.plan.num_q_heads != a.num_q_heads ||
      a.plan.total_q_tokens < 1) {
    return invalid_argument("prefill attention: the plan was made for another batch or head count");
  }
  if (a.plan.workspace_bytes > 0 && a.workspace == nullptr) {
    return invalid_argument("prefill attention: the plan needs " +
                            std::to_string(a.plan.workspace_bytes) + " bytes of workspace");
  }
  const auto misaligned = [](const void* p) {
    return reinterpret_cast<std::uintptr_t>(p) % 16 != 0;
  };
  if (misaligned(a.q) || misaligned(a.out) || misaligned(a.kv.k) || misaligned(a.kv.v) ||
      a.kv.strides.page % 8 != 0 || a.kv.strides.token % 8 != 0 || a.kv.strides.head % 8 != 0) {
    return invalid_argument(
        "prefill attention: q, out, K, V and their strides must be 16-byte aligned");
  }
  return Status::Ok();
}

}  // namespace tierkv

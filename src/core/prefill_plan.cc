#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/kv_alignment.h"
#include "tierkv/prefill.h"

namespace tierkv {

bool prefill_head_dim_supported(std::int32_t head_dim) {
  return head_dim == 64 || head_dim == 128;
}
bool prefill_group_supported(std::int32_t group) {
  return group >= 1 && group <= 8;
}

namespace {
// The CUDA kernel's tiling (src/backend/cuda/prefill_attention.cu). A CTA owns tile_rows (64 or
// 128) packed query rows, (chunk position, head in group) pairs of one sequence and one KV head,
// and walks the sequence's KV in tiles of kKvTile tokens. The grid covers the longest chunk for
// every sequence and KV head (shorter chunks leave CTAs that exit at once), so
//   work_items = ceil(max_q_tokens * G / tile_rows) * batch * num_kv_heads * splits,
// and the launcher reads the split count back from it.
//
// Tile size: 128 rows use the tensor cores best (each K and V fragment read from shared memory
// feeds two m16 tiles) and stay the choice whenever their grid fills a wave of kCtasPerSm CTAs
// per SM, or the KV is long enough for splits to fill the device. Below a wave with a short KV
// (at most kShortKvTiles tiles, a causal chunk over a small prefix) the time is the critical path
// of the longest query tile, at 1-2 CTAs per SM, latency-bound (on an H100, a 512-token chunk with
// no prefix: 128 CTAs, 27.9 us unsplit, 26.5 split in two parts of 4 tiles, in the same run; flash
// took 21.1 with the same 128 CTAs); there 64-row tiles halve the math on that path and double
// the CTAs without a merge.
//
// Splits: when the CTAs that have rows would fill at most one CTA per SM, each tile's KV range is
// split in up to kMaxSplits parts of at least kMinKvTilesPerSplit tiles; the parts' fp32 partials
// and log-sum-exps go to the workspace and a second kernel merges them.
constexpr std::int64_t kLargeTileRows = 128;
constexpr std::int64_t kSmallTileRows = 64;
constexpr std::int64_t kKvTile = 64;
constexpr std::int64_t kCtasPerSm = 2;
constexpr std::int64_t kMaxSplits = 32;
constexpr std::int64_t kMinKvTilesPerSplit = 4;
constexpr std::int64_t kShortKvTiles = 16;

std::int64_t kv_tiles(std::int32_t max_seq_len) {
  return (max_seq_len + kKvTile - 1) / kKvTile;
}

bool plans_for_cuda(const DeviceInfo& device) {
  return device.backend == BackendKind::kCuda && device.compute_units > 0;
}

std::int64_t choose_splits(const DeviceInfo& device, std::int64_t busy_ctas,
                           std::int32_t max_seq_len) {
  if (!plans_for_cuda(device) || busy_ctas <= 0) return 1;
  const std::int64_t slots = kCtasPerSm * device.compute_units;
  if (busy_ctas * 2 > slots) return 1;
  return std::max<std::int64_t>(
      1, std::min({slots / busy_ctas, kMaxSplits, kv_tiles(max_seq_len) / kMinKvTilesPerSplit}));
}

// busy_large: the CTAs that have rows with 128-row tiles.
std::int64_t choose_tile_rows(const DeviceInfo& device, std::int64_t busy_large,
                              std::int32_t max_seq_len) {
  if (!plans_for_cuda(device)) return kLargeTileRows;
  const bool below_a_wave = busy_large < kCtasPerSm * device.compute_units;
  return below_a_wave && kv_tiles(max_seq_len) <= kShortKvTiles ? kSmallTileRows : kLargeTileRows;
}

// Query tiles with rows, over all sequences, for tiles of `rows` packed rows.
std::int64_t busy_tiles(std::span<const std::int32_t> q_lens, std::int64_t group,
                        std::int64_t rows) {
  std::int64_t tiles = 0;
  for (std::int32_t n : q_lens)
    tiles += (n * group + rows - 1) / rows;
  return tiles;
}
}  // namespace

std::int32_t prefill_kv_splits(const PrefillPlan& plan, std::int32_t num_kv_heads) {
  if (plan.tile_rows <= 0 || plan.num_q_heads <= 0 || num_kv_heads <= 0) return 0;
  const std::int64_t group = plan.num_q_heads / num_kv_heads;
  const std::int64_t m_blocks = (plan.max_q_tokens * group + plan.tile_rows - 1) / plan.tile_rows;
  const std::int64_t base = m_blocks * plan.batch * num_kv_heads;
  return base > 0 ? static_cast<std::int32_t>(plan.work_items / base) : 0;
}

Result<PrefillPlan> plan_prefill_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                           std::int32_t num_q_heads,
                                           std::span<const std::int32_t> q_lens,
                                           std::span<const std::int32_t> seq_lens) {
  return plan_prefill_attention(device, kv, num_q_heads, q_lens, seq_lens, PrefillPlanOptions{});
}

Result<PrefillPlan> plan_prefill_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                           std::int32_t num_q_heads,
                                           std::span<const std::int32_t> q_lens,
                                           std::span<const std::int32_t> seq_lens,
                                           const PrefillPlanOptions& options) {
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
  TIERKV_RETURN_IF_ERROR(check_kv_alignment(kv, "prefill plan"));
  if (options.splits < 0 || options.splits > kMaxSplits) {
    return invalid_argument("prefill plan: splits must be 0 (the planner's choice) or 1.." +
                            std::to_string(kMaxSplits));
  }
  if (options.tile_rows != 0 && options.tile_rows != kSmallTileRows &&
      options.tile_rows != kLargeTileRows) {
    return invalid_argument("prefill plan: tile_rows must be 0 (the planner's choice), 64 or 128");
  }
  PrefillPlan plan;
  plan.batch = kv.batch;
  plan.num_q_heads = num_q_heads;
  const std::int64_t group = num_q_heads / kv.num_kv_heads;
  std::int64_t total = 0;
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
    plan.max_q_tokens = std::max(plan.max_q_tokens, q_lens[b]);
    plan.max_seq_len = std::max(plan.max_seq_len, seq_lens[b]);
  }
  if (total > INT32_MAX) return out_of_range("prefill plan: more than 2^31 query tokens");
  plan.total_q_tokens = static_cast<std::int32_t>(total);
  const std::int64_t tile_rows =
      options.tile_rows > 0
          ? options.tile_rows
          : choose_tile_rows(device, busy_tiles(q_lens, group, kLargeTileRows) * kv.num_kv_heads,
                             plan.max_seq_len);
  plan.tile_rows = static_cast<std::int32_t>(tile_rows);
  const std::int64_t m_blocks = (plan.max_q_tokens * group + tile_rows - 1) / tile_rows;
  if (m_blocks > 65535) {
    return out_of_range("prefill plan: a chunk of " + std::to_string(plan.max_q_tokens) +
                        " tokens is longer than one launch covers; split it");
  }
  const std::int64_t splits =
      options.splits > 0
          ? options.splits
          : choose_splits(device, busy_tiles(q_lens, group, tile_rows) * kv.num_kv_heads,
                          plan.max_seq_len);
  const std::int64_t items = m_blocks * kv.batch * kv.num_kv_heads * splits;
  if (items > INT32_MAX) return out_of_range("prefill plan: more than 2^31 work items");
  plan.work_items = static_cast<std::int32_t>(items);
  // Grids resident at once start long tiles beside short ones. Where that pairing decides the time
  // (more CTAs than multiprocessors), no dependent launch: it would place the next kernel's CTAs
  // into the slots the first short tiles free and undo the pairing (512 over 0 on the H100:
  // 21.4 us without, 24.4 us with). Elsewhere it hides the launch (256 and 1024 over 0: -0.3 and
  // -0.5 us).
  const bool cuda = device.backend == BackendKind::kCuda && device.compute_units > 0;
  const std::int64_t sms = device.compute_units;
  const bool resident = cuda && items <= kCtasPerSm * sms;
  plan.balanced_order = options.balanced_order.value_or(resident);
  plan.programmatic_launch =
      options.programmatic_launch.value_or(cuda && !(plan.balanced_order && items > sms));
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
  if (a.plan.tile_rows != kSmallTileRows && a.plan.tile_rows != kLargeTileRows) {
    return invalid_argument("prefill attention: the plan's tile_rows (" +
                            std::to_string(a.plan.tile_rows) + ") is neither 64 nor 128");
  }
  if (a.plan.workspace_bytes > 0 && a.workspace == nullptr) {
    return invalid_argument("prefill attention: the plan needs " +
                            std::to_string(a.plan.workspace_bytes) + " bytes of workspace");
  }
  return check_run_alignment(a.kv, a.q, a.out, "prefill attention");
}

}  // namespace tierkv

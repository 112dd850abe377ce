#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "tierkv/attention.h"

namespace tierkv {
namespace {

// Splits shorter than this cost more in partial-result traffic than they gain in parallelism.
constexpr std::int32_t kMinSplitTokens = 64;
// Split lengths are multiples of this (tokens one kernel iteration covers at every head dim).
constexpr std::int32_t kSplitQuantum = 64;
// Resident blocks per multiprocessor (the decode kernel's occupancy at group 4, head dim 128).
constexpr std::int32_t kBlocksPerUnit = 4;

constexpr std::size_t kWorkspaceAlign = 256;

std::size_t align_up(std::size_t v, std::size_t a) {
  return (v + a - 1) / a * a;
}

// A split costs its tokens plus a fixed overhead (query load, block merge, partial write), in
// tokens' worth of time.
constexpr std::int64_t kSplitOverheadTokens = 32;

struct SplitChoice {
  std::int32_t tokens;
  std::int32_t splits;
};

// Picks the split length that minimizes the time of the slowest block slot: the number of waves
// of blocks times the length of one block's work. Waves matter: 640 blocks on 528 slots take two
// rounds, and then fewer, longer splits finish sooner.
SplitChoice choose_split(std::int64_t blocks, std::int64_t slots, std::int32_t max_len) {
  SplitChoice best{max_len, 1};
  std::int64_t best_cost = (blocks + slots - 1) / slots * (max_len + kSplitOverheadTokens);
  const std::int64_t max_splits = (max_len + kMinSplitTokens - 1) / kMinSplitTokens;
  for (std::int64_t s = 2; s <= max_splits && blocks * (s - 1) < 4 * slots; ++s) {
    std::int64_t tokens = (max_len + s - 1) / s;
    tokens = std::max<std::int64_t>(kMinSplitTokens,
                                    (tokens + kSplitQuantum - 1) / kSplitQuantum * kSplitQuantum);
    const std::int64_t splits = (max_len + tokens - 1) / tokens;
    const std::int64_t waves = (blocks * splits + slots - 1) / slots;
    const std::int64_t cost = waves * (tokens + kSplitOverheadTokens);
    if (cost < best_cost) {
      best_cost = cost;
      best = {static_cast<std::int32_t>(tokens), static_cast<std::int32_t>(splits)};
    }
  }
  return best;
}

}  // namespace

bool decode_head_dim_supported(std::int32_t head_dim) {
  return head_dim == 64 || head_dim == 128 || head_dim == 256;
}
bool decode_group_supported(std::int32_t group) {
  return group >= 1 && group <= 8;
}

Result<DecodePlan> plan_decode_attention(const DeviceInfo& device, const PagedKvLayer& kv,
                                         std::int32_t num_q_heads,
                                         std::span<const std::int32_t> seq_lens) {
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
  if (device.backend == BackendKind::kCuda) {
    const SplitChoice c =
        choose_split(std::int64_t{kv.batch} * kv.num_kv_heads,
                     std::int64_t{kBlocksPerUnit} * std::max(device.compute_units, 1), max_len);
    plan.tokens_per_split = c.tokens;
    plan.num_splits = c.splits;
  }
  if (plan.num_splits > 1) {
    const std::size_t rows = std::size_t(kv.batch) * num_q_heads * plan.num_splits;
    plan.workspace_bytes = align_up(rows * kv.head_dim * sizeof(float), kWorkspaceAlign) +
                           align_up(rows * sizeof(float), kWorkspaceAlign);
  } else {
    plan.tokens_per_split = max_len;
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
  if (a.plan.num_splits > 1 && (a.workspace == nullptr)) {
    return invalid_argument("decode attention: the plan needs " +
                            std::to_string(a.plan.workspace_bytes) + " bytes of workspace");
  }
  // 16-byte vector access: pointers and strides aligned to 8 elements of 2 bytes.
  const auto misaligned = [](const void* p) {
    return reinterpret_cast<std::uintptr_t>(p) % 16 != 0;
  };
  if (misaligned(a.q) || misaligned(a.out) || misaligned(a.kv.k) || misaligned(a.kv.v) ||
      a.kv.strides.page % 8 != 0 || a.kv.strides.token % 8 != 0 || a.kv.strides.head % 8 != 0) {
    return invalid_argument(
        "decode attention: q, out, K, V and their strides must be 16-byte aligned");
  }
  return Status::Ok();
}

}  // namespace tierkv

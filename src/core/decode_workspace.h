// The workspace of decode attention's workspace merges, one layout for the planner that sizes it
// and the kernels that address it: arrival counters first (one 32-bit counter per (sequence, KV
// head), enough for any heads_per_block; used by the last-block merge), then the partial outputs
// [batch][q_heads][splits][head_dim] and their base-2 log-sum-exps [batch][q_heads][splits], the
// first two parts rounded up to 256 bytes. The counters come first and their size depends only on
// the batch, so that the plans of one layer shape, whatever their splits, never write partials
// over another plan's counters.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/host_device.h"

namespace tierkv {

struct DecodeWorkspaceLayout {
  std::size_t counter_bytes = 0;  // also the byte offset of the partial outputs
  std::size_t lse_offset = 0;     // byte offset of the log-sum-exps
  std::size_t bytes = 0;          // the whole workspace
};

TIERKV_HOST_DEVICE DecodeWorkspaceLayout decode_workspace_layout(std::int32_t batch,
                                                                 std::int32_t num_kv_heads,
                                                                 std::int32_t num_q_heads,
                                                                 std::int32_t splits,
                                                                 std::int32_t head_dim) {
  const auto align = [](std::size_t bytes) { return (bytes + 255) / 256 * 256; };
  DecodeWorkspaceLayout l;
  l.counter_bytes = align(std::size_t(batch) * num_kv_heads * sizeof(std::uint32_t));
  const std::size_t rows = std::size_t(batch) * num_q_heads * splits;
  l.lse_offset = l.counter_bytes + align(rows * head_dim * sizeof(float));
  l.bytes = l.lse_offset + rows * sizeof(float);
  return l;
}

}  // namespace tierkv

// One prefill case measured: graph replays timed with device events, the output checked against
// the CPU reference on sampled rows.
#pragma once

#include <cstdint>
#include <string>

#include "common/memory_check.h"
#include "options.h"
#include "tierkv/backend.h"

namespace tierkv::prefill_bench {

struct Measurement {
  std::int32_t chunk = 0, prefix = 0;
  double flops = 0;  // 4 * n * (prefix + (n + 1) / 2) * q_heads * head_dim
  double us = 0;     // median time of one call
  double us_min = 0;
  int sets = 0;   // input sets rotated through
  int calls = 0;  // launches per replay
  std::int32_t work_items = 0;
  std::int32_t tile_rows = 0;        // packed query rows per tile of the plan
  std::int32_t splits = 0;           // KV splits per query tile of the plan
  bool balanced_order = false;       // the plan's tile order
  bool programmatic_launch = false;  // the plan's launch
  std::size_t workspace_bytes = 0;
  double rel_l2_error = 0;  // sampled rows against the CPU reference
  std::string error;        // why the output failed its check (the timing is kept)
  double tflops() const { return flops / us / 1e6; }
};

double prefill_flops(const ModelSpec& model, std::int32_t chunk, std::int32_t prefix);

// What one case holds at once: one input set on the device (more are made only while they fit),
// and the host copy of it that the check against the CPU reference reads.
bench::MemoryNeed case_memory(const Options& opts, std::int32_t chunk, std::int32_t prefix);

Result<Measurement> measure_prefill(Backend& backend, Stream& stream, const Options& opts,
                                    std::int32_t chunk, std::int32_t prefix);

}  // namespace tierkv::prefill_bench

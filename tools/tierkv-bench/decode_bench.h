// Decode attention over paged KV: one case = (batch, KV length), timed from a captured graph that
// rotates through enough input sets to defeat the L2, and per call without a graph.
#pragma once

#include <cstddef>
#include <cstdint>

#include "measure.h"
#include "options.h"

namespace tierkv::bench {

struct DecodeMeasurement {
  std::int32_t batch = 0;
  std::int32_t kv_tokens = 0;
  std::size_t kv_bytes = 0;  // K and V bytes one call reads
  double us_graph = 0;       // median per call, replayed from a graph
  double us_eager = 0;       // median per call, launched one by one
  int sets = 0;              // input sets rotated through
  int calls = 0;             // calls per timed repetition
  int splits = 0;            // splits per sequence the plan chose
  double rel_l2_error = 0;   // of the first sequence's output against the CPU reference

  double gbps() const { return us_graph > 0 ? kv_bytes / us_graph / 1e3 : 0; }
};

Result<DecodeMeasurement> measure_decode(Backend& backend, Stream& stream, const Options& opts,
                                         std::int32_t batch, std::int32_t kv_tokens);

}  // namespace tierkv::bench

// Decode attention over paged KV: one case = a batch of sequence lengths (uniform or ragged),
// timed from a captured graph that rotates through enough input sets to defeat the L2, and per
// call without a graph.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/measure.h"
#include "options.h"
#include "tierkv/attention.h"

namespace tierkv::bench {

struct DecodeMeasurement {
  std::int32_t batch = 0;
  std::int32_t kv_tokens = 0;          // tokens per sequence (ragged: the mean, rounded)
  std::vector<std::int32_t> seq_lens;  // ragged cases only: every sequence's length
  std::size_t kv_bytes = 0;            // K and V bytes one call reads
  double us_graph = 0;                 // median per call, replayed from a graph
  double us_eager = 0;                 // median per call, launched one by one
  int sets = 0;                        // input sets rotated through
  int calls = 0;                       // calls per timed repetition
  DecodePlan plan;                     // what the planner chose
  double rel_l2_error = 0;             // worst checked sequence against the CPU reference

  double gbps() const { return us_graph > 0 ? kv_bytes / us_graph / 1e3 : 0; }
};

// One uniform case: `batch` sequences of `kv_tokens` tokens.
Result<DecodeMeasurement> measure_decode(Backend& backend, Stream& stream, const Options& opts,
                                         std::int32_t batch, std::int32_t kv_tokens);
// Any lengths.
Result<DecodeMeasurement> measure_decode(Backend& backend, Stream& stream, const Options& opts,
                                         const std::vector<std::int32_t>& seq_lens);

// The lengths of the ragged case of `batch` sequences: drawn from a skewed (log-normal) law with
// a seed, clamped to 1..max_len, and always holding a sequence of 1 token and two that end
// mid-page. The same arguments give the same lengths.
std::vector<std::int32_t> ragged_lengths(std::int32_t batch, std::int32_t max_len,
                                         std::int32_t page_tokens, std::uint64_t seed);

// Bytes of device memory a case needs (all its input sets are at least one).
std::size_t decode_case_bytes(const Options& opts, const std::vector<std::int32_t>& seq_lens);

}  // namespace tierkv::bench

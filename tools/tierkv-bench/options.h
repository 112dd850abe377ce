// tierkv-bench's options: one struct, filled from the command line in one place and checked
// before anything runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tierkv/attention.h"
#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/paged_kv.h"

namespace tierkv::bench {

struct Options {
  BackendKind backend = BackendKind::kCuda;
  bool backend_from_flag = false;
  int device = 0;
  std::string model_name = "llama-3.1-8b";
  ModelSpec model;
  KvLayout layout = KvLayout::kNHD;
  std::vector<std::int32_t> kv_lens;         // batch-1 sweep (and per-length transfers)
  std::vector<std::int32_t> batches;         // batched sweep
  std::int32_t batch_kv = 0;                 // KV length of the batched sweep
  std::vector<std::int32_t> grid_batches;    // grid: every batch size ...
  std::vector<std::int32_t> grid_kv;         // ... times every KV length
  std::vector<std::int32_t> ragged_batches;  // ragged: one skewed case per batch size
  std::int32_t ragged_max_len = 32768;       // longest sequence of a ragged case
  DecodePlanOptions plan;                    // overrides of the decode planner (tuning)
  std::vector<std::string> sections;  // decode, batched, grid, ragged, transfer, reference, prefill
  int warmup = 3;
  int reps = 0;
  int min_calls = 0;             // decode launches per timed graph replay
  std::size_t rotate_bytes = 0;  // input bytes to rotate through per case (defeats caches)
  std::uint64_t seed = 1;
  std::string json_path = "tierkv-bench.jsonl";
  std::string report_path;
  bool quiet = false;

  bool has_section(const std::string& s) const;
};

// Parses argv. Returns the exit code to use when the program should stop now (help printed: 0; a
// bad flag reported on stderr: kExitUsage), or -1 to go on.
int parse_options(int argc, char** argv, Options& opts);

// Applies backend-dependent defaults (sizes, repetitions) to fields the user left unset.
void apply_defaults(const DeviceInfo& device, Options& opts);

// Whether one decode case (one input set) fits in the memory available now (as check_memory()
// counts it); the grid and ragged sections skip the cases that do not.
bool case_fits(Backend& backend, const Options& opts, const std::vector<std::int32_t>& seq_lens);

// Checks, before anything is allocated, that every case of the decode and batched sections (one
// input set each) and the transfer section (device target, pinned and pageable sources) fits in
// the memory available now. ResourceExhausted naming the case, the bytes needed and available,
// and the flags that make it smaller.
Status check_fits(Backend& backend, const Options& opts);

}  // namespace tierkv::bench

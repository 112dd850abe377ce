// tierkv-prefill-bench's options: one struct, filled from the command line in one place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/paged_kv.h"
#include "tierkv/prefill.h"

namespace tierkv::prefill_bench {

struct Options {
  BackendKind backend = BackendKind::kCuda;
  int device = 0;
  std::string model_name = "llama-3.1-8b";
  ModelSpec model;  // KV shape measured (heads, head dim, dtype, page size)
  KvLayout layout = KvLayout::kNHD;
  std::vector<std::int32_t> chunks;    // new tokens per case [cuda: 256,512,1024,2048]
  std::vector<std::int32_t> prefixes;  // cached tokens per case [cuda: 0,4096,16384]
  PrefillPlanOptions plan;             // overrides of the prefill planner (tuning)
  int warmup = 3;
  int reps = 0;                  // timed graph replays per case (median reported)
  int min_calls = 0;             // launches per graph replay, at least
  std::size_t rotate_bytes = 0;  // input bytes to rotate through per case (defeats the L2)
  double peak_tflops = 800;      // the card's measured bf16 matrix rate, for the floor column
  std::uint64_t seed = 1;
  std::string json_path = "tierkv-prefill-bench.jsonl";
  std::string report_path;
  bool quiet = false;
};

// Parses argv. Returns the exit code to stop with (help printed: 0; bad flag: bench::kExitUsage),
// or -1 to go on.
int parse_options(int argc, char** argv, Options& opts);

// Applies backend-dependent defaults to the fields the user left unset.
void apply_defaults(const DeviceInfo& device, Options& opts);

}  // namespace tierkv::prefill_bench

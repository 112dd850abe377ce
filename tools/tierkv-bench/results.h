// Everything one tierkv-bench run measured, and its JSON Lines form (schema:
// bench/peers/README.md).
#pragma once

#include <string>
#include <optional>
#include <vector>

#include "engine/calibrate.h"

#include "common/bench_io.h"
#include "decode_bench.h"
#include "options.h"
#include "transfer_bench.h"

namespace tierkv::bench {

struct RunInfo {
  std::string card;     // device name as the driver reports it
  std::string date;     // UTC YYYY-MM-DD
  std::string backend;  // cpu or cuda
  DeviceInfo device;
};
RunInfo make_run_info(const DeviceInfo& device, BackendKind backend);

struct BenchData {
  std::vector<DecodeMeasurement> batch1;   // decode at batch 1 over opts.kv_lens
  std::vector<DecodeMeasurement> batched;  // decode at opts.batch_kv over opts.batches
  std::vector<DecodeMeasurement> grid;     // opts.grid_batches x opts.grid_kv
  std::vector<DecodeMeasurement> ragged;   // one skewed case per opts.ragged_batches
  std::vector<std::string> skipped;        // grid / ragged cases that did not fit, and why
  std::vector<TransferMeasurement> kv_transfers;
  std::vector<TransferMeasurement> ceilings;
  // prefill: the model's measured prefill grid and the link (a profile), and the analysis of it.
  std::optional<CostProfile> prefill_profile;
  std::vector<std::int32_t> prefill_prefixes;
  std::vector<HideRow> hide_rows;
  std::string prefill_model;  // the model measured (tiny on the CPU backend)
};

// One JSON object per measured figure.
std::vector<std::string> to_jsonl(const RunInfo& run, const Options& opts, const BenchData& data);

}  // namespace tierkv::bench

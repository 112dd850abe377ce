// The run's table and its JSON Lines (schema: bench/peers/README.md, bench prefill_attention).
#pragma once

#include <string>
#include <vector>

#include "common/bench_io.h"
#include "common/measure.h"
#include "measure.h"
#include "options.h"

namespace tierkv::prefill_bench {

struct RunInfo {
  std::string card;  // device name as the driver reports it
  std::string date;  // UTC YYYY-MM-DD
  std::string backend;
  BackendKind kind = BackendKind::kCpu;
};
RunInfo make_run_info(const DeviceInfo& device, BackendKind backend);

std::string render_table(const RunInfo& run, const Options& opts,
                         const std::vector<Measurement>& ms);
std::vector<std::string> to_jsonl(const RunInfo& run, const Options& opts,
                                  const std::vector<Measurement>& ms);

}  // namespace tierkv::prefill_bench

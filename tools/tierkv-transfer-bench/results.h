// One run's figures as JSON Lines (schema: bench/peers/README.md, benches "transfer",
// "transfer_bidir", "gemm", "gemm_beside_load") and as the readable report.
#pragma once

#include <string>
#include <vector>

#include "common/bench_io.h"
#include "sections.h"

namespace tierkv::transfer_bench {

struct RunInfo {
  std::string card;     // device name as the driver reports it
  std::string date;     // UTC YYYY-MM-DD
  std::string backend;  // cpu or cuda
  BackendKind kind = BackendKind::kCpu;
};
RunInfo make_run_info(const DeviceInfo& device);

// One JSON object per measured figure.
std::vector<std::string> to_jsonl(const RunInfo& run, const Options& opts, const Results& r);

// The report: fixed-width tables, each row against the same run's one large copy, then (on the
// cuda backend only: they are a GPU's) the targets of shared/TARGETS.md with met / missed.
std::string render_report(const RunInfo& run, const Options& opts, const Results& r);

}  // namespace tierkv::transfer_bench

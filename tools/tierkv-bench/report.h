// The human-readable report, in the layout of the seed microbenchmark and extended: every figure
// and every sentence of the analysis is computed from this run's measurements.
#pragma once

#include <string>

#include "options.h"
#include "results.h"

namespace tierkv::bench {

std::string render_report(const RunInfo& run, const Options& opts, const BenchData& data);

}  // namespace tierkv::bench

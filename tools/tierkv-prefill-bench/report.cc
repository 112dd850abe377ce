#include "report.h"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace tierkv::prefill_bench {
namespace {
bool overridden(const PrefillPlanOptions& o) {
  return o.tile_rows > 0 || o.splits > 0 || o.balanced_order || o.programmatic_launch;
}
}  // namespace

RunInfo make_run_info(const DeviceInfo& device, BackendKind backend) {
  RunInfo r;
  r.card = device.name;
  r.backend = std::string(backend_kind_name(backend));
  r.kind = backend;
  r.date = bench::utc_date();
  return r;
}

std::string render_table(const RunInfo& run, const Options& opts,
                         const std::vector<Measurement>& ms) {
  std::string out;
  char line[256];
  const bool gpu = run.kind == BackendKind::kCuda;
  std::snprintf(line, sizeof line,
                "prefill attention, %s (%s backend), %s: %d q heads, %d KV heads, head dim %d, %s, "
                "pages of %d (%s), batch 1\n",
                run.card.c_str(), run.backend.c_str(), run.date.c_str(), opts.model.num_q_heads,
                opts.model.num_kv_heads, opts.model.head_dim,
                std::string(dtype_name(opts.model.kv_dtype)).c_str(), opts.model.page_tokens,
                opts.layout == KvLayout::kNHD ? "nhd" : "hnd");
  out += line;
  if (gpu) {
    std::snprintf(line, sizeof line,
                  "floor = FLOPs / %.0f TFLOP/s; median of %d graph replays, L2 defeated by "
                  "rotating input sets\n\n",
                  opts.peak_tflops, opts.reps);
  } else {
    // --peak-tflops is a GPU's rate: a floor from it says nothing about this CPU.
    std::snprintf(line, sizeof line,
                  "cpu backend: the CPU reference kernel on one input set, median of %d replays;\n"
                  "no floor (--peak-tflops is a GPU's rate), the figures say nothing about a "
                  "GPU\n\n",
                  opts.reps);
  }
  out += line;
  if (overridden(opts.plan)) {
    const auto flag = [](const std::optional<bool>& v, const char* on, const char* off) {
      return v ? (*v ? on : off) : "auto";
    };
    std::snprintf(line, sizeof line,
                  "plan overridden: tile rows %s, splits %s, order %s, dependent launch %s\n\n",
                  opts.plan.tile_rows > 0 ? std::to_string(opts.plan.tile_rows).c_str() : "auto",
                  opts.plan.splits > 0 ? std::to_string(opts.plan.splits).c_str() : "auto",
                  flag(opts.plan.balanced_order, "balanced", "longest"),
                  flag(opts.plan.programmatic_launch, "on", "off"));
    out += line;
  }
  out +=
      "  chunk  prefix      GFLOP      us  TFLOP/s  floor us  x floor  tile  splits  CTAs  sets  "
      "rel err\n";
  for (const Measurement& m : ms) {
    const double floor_us = m.flops / (opts.peak_tflops * 1e6);
    char floor_cells[32] = "        -        -";
    if (gpu)
      std::snprintf(floor_cells, sizeof floor_cells, "%9.1f %8.2f", floor_us, m.us / floor_us);
    std::snprintf(line, sizeof line, "%7d %7d %10.2f %7.1f %8.1f %s %5d %7d %5d %5d %8.1e\n",
                  m.chunk, m.prefix, m.flops / 1e9, m.us, m.tflops(), floor_cells, m.tile_rows,
                  m.splits, m.work_items, m.sets, m.rel_l2_error);
    out += line;
    if (!m.error.empty()) out += "        ^ WRONG OUTPUT: " + m.error + "\n";
  }
  return out;
}

std::vector<std::string> to_jsonl(const RunInfo& run, const Options& opts,
                                  const std::vector<Measurement>& ms) {
  std::vector<std::string> lines;
  for (const Measurement& m : ms) {
    nlohmann::json j{{"bench", "prefill_attention"},
                     {"impl", "tierkv"},
                     {"card", run.card},
                     {"date", run.date},
                     {"backend", run.backend},
                     {"model", opts.model.name},
                     {"batch", 1},
                     {"chunk_tokens", m.chunk},
                     {"prefix_tokens", m.prefix},
                     {"num_q_heads", opts.model.num_q_heads},
                     {"num_kv_heads", opts.model.num_kv_heads},
                     {"head_dim", opts.model.head_dim},
                     {"dtype", std::string(dtype_name(opts.model.kv_dtype))},
                     {"page_tokens", opts.model.page_tokens},
                     {"layout", opts.layout == KvLayout::kNHD ? "nhd" : "hnd"},
                     {"graph", true},
                     {"work_items", m.work_items},
                     {"tile_rows", m.tile_rows},
                     {"kv_splits", m.splits},
                     {"balanced_order", m.balanced_order},
                     {"programmatic_launch", m.programmatic_launch},
                     {"workspace_bytes", m.workspace_bytes},
                     {"sets", m.sets},
                     {"calls", m.calls},
                     {"flops", m.flops},
                     {"us", m.us},
                     {"us_min", m.us_min},
                     {"tflops", m.tflops()},
                     {"rel_l2_error", m.rel_l2_error}};
    // Against a GPU's rate: on the cuda backend only.
    if (run.kind == BackendKind::kCuda) j["floor_us"] = m.flops / (opts.peak_tflops * 1e6);
    // Set only when the run overrode the planner (0: its choice).
    if (overridden(opts.plan)) {
      j["plan_override"] = {{"tile_rows", opts.plan.tile_rows}, {"splits", opts.plan.splits}};
      if (opts.plan.balanced_order)
        j["plan_override"]["balanced_order"] = *opts.plan.balanced_order;
      if (opts.plan.programmatic_launch) {
        j["plan_override"]["programmatic_launch"] = *opts.plan.programmatic_launch;
      }
    }
    if (!m.error.empty()) j["error"] = m.error;
    lines.push_back(j.dump());
  }
  return lines;
}

}  // namespace tierkv::prefill_bench

#include "options.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>

#include "common/bench_io.h"
#include "common/shape_flags.h"
#include "tierkv/prefill.h"

namespace tierkv::prefill_bench {
namespace {

constexpr std::int32_t kMaxTokens = 1 << 20;

void sort_unique(std::vector<std::int32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

}  // namespace

int parse_options(int argc, char** argv, Options& opts) {
  CLI::App app{
      "tierkv-prefill-bench: causal prefill attention of a chunk of new tokens over a paged\n"
      "prefix (batch 1), at a model's KV shape. Timing: device events around replays of a "
      "captured\n"
      "graph that rotates through input sets larger than the L2 cache, warm-up first, medians.\n"
      "Each case is checked against the CPU reference on sampled rows. Prints a table and writes\n"
      "one JSON object per case (bench: prefill_attention)."};
  bench::ShapeFlags shape;
  bench::add_shape_flags(app, shape);
  app.add_option("--chunks", opts.chunks,
                 "new tokens per case, comma separated [cuda: 256,512,1024,2048; cpu: 16,64]")
      ->delimiter(',')
      ->check(CLI::Range(1, kMaxTokens));
  app.add_option("--prefixes", opts.prefixes,
                 "cached tokens before the chunk, comma separated [cuda: 0,4096,16384; cpu: 0,128]")
      ->delimiter(',')
      ->check(CLI::Range(0, kMaxTokens));
  app.add_option("--tile-rows", opts.plan.tile_rows,
                 "packed query rows per CUDA tile: 64, 128, or 0 for the planner's choice")
      ->capture_default_str()
      ->check(CLI::IsMember({0, 64, 128}));
  app.add_option("--splits", opts.plan.splits,
                 "KV splits per query tile: 1..32, or 0 for the planner's choice")
      ->capture_default_str()
      ->check(CLI::Range(0, 32));
  std::string order = "auto", pdl = "auto";
  app.add_option("--order", order,
                 "query tiles start longest first (longest), paired long with short "
                 "(balanced), or as planned (auto)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "longest", "balanced"}));
  app.add_option("--pdl", pdl, "programmatic dependent launch on, off, or as planned (auto)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_option("--warmup", opts.warmup, "untimed graph replays before each measurement")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_option("--reps", opts.reps, "timed graph replays per case [cuda: 20, cpu: 2]")
      ->check(CLI::Range(1, 100000));
  app.add_option("--min-calls", opts.min_calls,
                 "launches per graph replay, at least [cuda: 4, cpu: 1]")
      ->check(CLI::Range(1, 100000));
  app.add_option("--peak-tflops", opts.peak_tflops,
                 "measured bf16 matrix rate of the card, for the floor column")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e6));
  app.add_option("--seed", opts.seed, "seed of the random inputs")->capture_default_str();
  app.add_option("--json", opts.json_path, "where to write the JSON Lines figures ('' = nowhere)")
      ->capture_default_str();
  app.add_option("--report", opts.report_path, "also write the table to this file");
  app.add_flag("--quiet", opts.quiet, "no progress on stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return bench::parse_error_exit(app, e);
  }
  if (order != "auto") opts.plan.balanced_order = order == "balanced";
  if (pdl != "auto") opts.plan.programmatic_launch = pdl == "on";

  auto resolved = bench::resolve_shape(shape);
  if (!resolved.ok()) {
    std::fprintf(stderr, "tierkv-prefill-bench: %s\n", resolved.status().message().c_str());
    return bench::kExitUsage;
  }
  opts.backend = resolved->backend;
  opts.device = shape.device;
  opts.model_name = shape.model;
  opts.model = resolved->model;
  opts.layout = resolved->layout;
  if (!prefill_head_dim_supported(opts.model.head_dim) ||
      !prefill_group_supported(opts.model.gqa_group())) {
    std::fprintf(
        stderr,
        "tierkv-prefill-bench: model %s has head_dim %d and GQA group %d; prefill supports "
        "head_dim 64/128 and groups 1..8\n",
        opts.model_name.c_str(), opts.model.head_dim, opts.model.gqa_group());
    return bench::kExitUsage;
  }
  return -1;
}

void apply_defaults(const DeviceInfo& device, Options& opts) {
  const bool gpu = device.backend == BackendKind::kCuda;
  if (opts.chunks.empty()) {
    opts.chunks =
        gpu ? std::vector<std::int32_t>{256, 512, 1024, 2048} : std::vector<std::int32_t>{16, 64};
  }
  if (opts.prefixes.empty()) {
    opts.prefixes =
        gpu ? std::vector<std::int32_t>{0, 4096, 16384} : std::vector<std::int32_t>{0, 128};
  }
  if (opts.reps == 0) opts.reps = gpu ? 20 : 2;
  if (opts.min_calls == 0) opts.min_calls = gpu ? 4 : 1;
  // Rotating through 4x the L2 makes every call read its KV from HBM; the CPU run is functional.
  opts.rotate_bytes = gpu ? 4 * device.l2_bytes : 0;
  sort_unique(opts.chunks);
  sort_unique(opts.prefixes);
}

}  // namespace tierkv::prefill_bench

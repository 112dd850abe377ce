#include "options.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>

#include "common/bench_io.h"
#include "common/memory_check.h"
#include "common/shape_flags.h"
#include "decode_bench.h"
#include "synth/paged_batch.h"

namespace tierkv::bench {
namespace {

constexpr std::int32_t kMaxKvTokens = 1 << 22;
constexpr std::int32_t kMaxBatch = 65535;
const std::vector<std::string> kSections = {"decode",   "batched",   "grid",   "ragged",
                                            "transfer", "reference", "prefill"};
// Run when --sections is not given; grid and ragged are asked for by name.
const std::vector<std::string> kDefaultSections = {"decode", "batched", "transfer", "reference",
                                                   "prefill"};

}  // namespace

bool Options::has_section(const std::string& s) const {
  return std::find(sections.begin(), sections.end(), s) != sections.end();
}

int parse_options(int argc, char** argv, Options& opts) {
  CLI::App app{
      "tierkv-bench: decode attention over paged KV and host<->device KV transfers, measured on\n"
      "this machine and printed as a report (with every figure also written as JSON Lines).\n"
      "Timing: device events, warm-up runs, medians; decode is replayed from captured graphs that\n"
      "rotate through input sets larger than the L2 cache."};
  ShapeFlags shape;
  add_shape_flags(app, shape);
  app.add_option("--kv-lens", opts.kv_lens,
                 "KV lengths of the batch-1 sweep and the transfers, comma separated "
                 "[cuda: 512..32768, cpu: 128..1024]")
      ->delimiter(',')
      ->check(CLI::Range(1, kMaxKvTokens));
  app.add_option("--batches", opts.batches,
                 "batch sizes of the batched sweep, comma separated [cuda: 1..128, cpu: 1..8]")
      ->delimiter(',')
      ->check(CLI::Range(1, kMaxBatch));
  app.add_option("--batch-kv", opts.batch_kv,
                 "KV length of the batched sweep [cuda: 2048, cpu: 512]")
      ->check(CLI::Range(1, kMaxKvTokens));
  app.add_option("--grid-batches", opts.grid_batches,
                 "batch sizes of the grid section, comma separated [cuda: 1,4,8,16,32,64,128]")
      ->delimiter(',')
      ->check(CLI::Range(1, kMaxBatch));
  app.add_option("--grid-kv", opts.grid_kv,
                 "KV lengths of the grid section, comma separated [cuda: 512..32768, doubling]")
      ->delimiter(',')
      ->check(CLI::Range(1, kMaxKvTokens));
  app.add_option("--ragged-batches", opts.ragged_batches,
                 "batch sizes of the ragged section (skewed lengths) [cuda: 8,32,128, cpu: 4]")
      ->delimiter(',')
      ->check(CLI::Range(4, kMaxBatch));
  app.add_option("--ragged-max-len", opts.ragged_max_len,
                 "longest sequence of a ragged case [cuda: 32768, cpu: 4096]")
      ->check(CLI::Range(4096, kMaxKvTokens));
  int splits = 0, pipeline = -1;
  std::string merge = "auto", pdl = "auto";
  app.add_option("--splits", splits, "decode plan override: splits per sequence (0 = planner's)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  app.add_option("--merge", merge,
                 "decode plan override: auto, none, cluster, workspace (a second kernel merges), "
                 "last (each group's last block merges, one launch)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "none", "cluster", "workspace", "last"}));
  app.add_option("--pipeline", pipeline,
                 "decode plan override: 0 deep, 1 shallow, 2 middle, 3 deepest (-1 = planner's)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 3));
  std::string l2 = "auto";
  app.add_option("--l2-prefetch", l2, "decode plan override: 256-byte L2 fetches on, off, auto")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  int heads_per_block = 0;
  app.add_option("--heads-per-block", heads_per_block,
                 "decode plan override: 1, 2, 4 or 8 KV heads per block (0 = planner's)")
      ->capture_default_str()
      ->check(CLI::IsMember({0, 1, 2, 4, 8}));
  app.add_option("--pdl", pdl, "decode plan override: programmatic dependent launch on, off, auto")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  opts.sections = kDefaultSections;
  app.add_option("--sections", opts.sections,
                 "sections to run: decode, batched, grid, ragged, transfer, reference, prefill "
                 "(per-layer prefill beside per-layer load) [decode,batched,transfer,reference,"
                 "prefill]")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember(kSections));
  app.add_option("--warmup", opts.warmup, "untimed runs before each measurement")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_option("--reps", opts.reps,
                 "timed repetitions per case (median reported) [cuda: 30, cpu: 5]")
      ->check(CLI::Range(1, 100000));
  app.add_option("--min-calls", opts.min_calls,
                 "decode launches per timed graph replay, at least [cuda: 20, cpu: 1]")
      ->check(CLI::Range(1, 100000));
  app.add_option("--seed", opts.seed, "seed of the random inputs")->capture_default_str();
  app.add_option("--json", opts.json_path, "where to write the JSON Lines figures ('' = nowhere)")
      ->capture_default_str();
  app.add_option("--report", opts.report_path, "also write the text report to this file");
  app.add_flag("--quiet", opts.quiet, "no progress line on stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return parse_error_exit(app, e);
  }

  auto resolved = resolve_shape(shape);
  if (!resolved.ok()) {
    std::fprintf(stderr, "tierkv-bench: %s\n", resolved.status().message().c_str());
    return kExitUsage;
  }
  opts.backend = resolved->backend;
  opts.backend_from_flag = resolved->backend_from_flag;
  opts.device = shape.device;
  opts.model_name = shape.model;
  opts.model = resolved->model;
  opts.layout = resolved->layout;
  opts.plan.splits = splits;
  if (merge == "none") opts.plan.merge = DecodeMerge::kNone;
  if (merge == "cluster") opts.plan.merge = DecodeMerge::kCluster;
  if (merge == "workspace") opts.plan.merge = DecodeMerge::kWorkspace;
  if (merge == "last") opts.plan.merge = DecodeMerge::kWorkspaceLast;
  if (pipeline >= 0) opts.plan.pipeline = pipeline;
  if (heads_per_block > 0) opts.plan.heads_per_block = heads_per_block;
  if (l2 != "auto") opts.plan.l2_prefetch = l2 == "on";
  if (pdl != "auto") opts.plan.programmatic_launch = pdl == "on";
  if (!decode_head_dim_supported(opts.model.head_dim) ||
      !decode_group_supported(opts.model.gqa_group())) {
    std::fprintf(stderr,
                 "tierkv-bench: model %s has head_dim %d and GQA group %d; decode supports "
                 "head_dim 64/128/256 and groups 1..8\n",
                 opts.model_name.c_str(), opts.model.head_dim, opts.model.gqa_group());
    return kExitUsage;
  }
  return -1;
}

void apply_defaults(const DeviceInfo& device, Options& opts) {
  const bool gpu = device.backend == BackendKind::kCuda;
  if (opts.kv_lens.empty()) {
    opts.kv_lens = gpu ? std::vector<std::int32_t>{512, 1024, 2048, 4096, 8192, 16384, 32768}
                       : std::vector<std::int32_t>{128, 256, 512, 1024};
  }
  if (opts.batches.empty()) {
    opts.batches = gpu ? std::vector<std::int32_t>{1, 2, 4, 8, 16, 32, 64, 128}
                       : std::vector<std::int32_t>{1, 2, 4, 8};
  }
  if (opts.batch_kv == 0) opts.batch_kv = gpu ? 2048 : 512;
  if (opts.grid_batches.empty()) {
    opts.grid_batches =
        gpu ? std::vector<std::int32_t>{1, 4, 8, 16, 32, 64, 128} : std::vector<std::int32_t>{1, 4};
  }
  if (opts.grid_kv.empty()) {
    opts.grid_kv = gpu ? std::vector<std::int32_t>{512, 1024, 2048, 4096, 8192, 16384, 32768}
                       : std::vector<std::int32_t>{128, 512};
  }
  if (opts.ragged_batches.empty()) {
    opts.ragged_batches =
        gpu ? std::vector<std::int32_t>{8, 32, 128} : std::vector<std::int32_t>{4};
  }
  if (!gpu) opts.ragged_max_len = std::min(opts.ragged_max_len, 4096);
  if (opts.reps == 0) opts.reps = gpu ? 30 : 5;
  if (opts.min_calls == 0) opts.min_calls = gpu ? 20 : 1;
  // Rotating through 4x the L2 makes every decode read its KV from HBM. The CPU run is a
  // functional run at small sizes; it does not rotate.
  opts.rotate_bytes = gpu ? 4 * device.l2_bytes : 0;
  std::sort(opts.kv_lens.begin(), opts.kv_lens.end());
  opts.kv_lens.erase(std::unique(opts.kv_lens.begin(), opts.kv_lens.end()), opts.kv_lens.end());
  std::sort(opts.batches.begin(), opts.batches.end());
  opts.batches.erase(std::unique(opts.batches.begin(), opts.batches.end()), opts.batches.end());
}

bool case_fits(Backend& backend, const Options& opts, const std::vector<std::int32_t>& seq_lens) {
  return check_memory(backend, MemoryNeed{decode_case_bytes(opts, seq_lens), 0}, "", "").ok();
}

Status check_fits(Backend& backend, const Options& opts) {
  const std::string_view advice = "Choose smaller --kv-lens, --batches or --batch-kv.";
  auto check_case = [&](std::int32_t batch, std::int32_t kv, const char* section) -> Status {
    MemoryNeed need;
    need.device = decode_case_bytes(opts, std::vector<std::int32_t>(std::size_t(batch), kv));
    return check_memory(backend, need,
                        std::string(section) + " case batch " + std::to_string(batch) + " x KV " +
                            std::to_string(kv),
                        advice);
  };
  if (opts.has_section("decode")) {
    for (std::int32_t kv : opts.kv_lens)
      TIERKV_RETURN_IF_ERROR(check_case(1, kv, "decode"));
  }
  if (opts.has_section("batched")) {
    for (std::int32_t b : opts.batches)
      TIERKV_RETURN_IF_ERROR(check_case(b, opts.batch_kv, "batched"));
  }
  if (opts.has_section("transfer") && !opts.kv_lens.empty()) {
    // One layer's KV of the longest length: on the device, and pinned and pageable on the host.
    const std::size_t bytes =
        opts.model.kv_bytes_per_token_layer() * std::size_t(opts.kv_lens.back());
    const MemoryNeed need{bytes, 2 * bytes};
    TIERKV_RETURN_IF_ERROR(
        check_memory(backend, need,
                     "the transfer section at KV " + std::to_string(opts.kv_lens.back()), advice));
  }
  return Status::Ok();
}

}  // namespace tierkv::bench

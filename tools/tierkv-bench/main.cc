// tierkv-bench: the microbenchmark report (decode attention over paged KV, KV transfers, the
// machine's ceilings), printed and written as JSON Lines.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/bench_io.h"
#include "common/measure.h"
#include "decode_bench.h"
#include "engine/planner.h"
#include "options.h"
#include "report.h"
#include "results.h"
#include "transfer_bench.h"

namespace tierkv::bench {
namespace {

constexpr std::string_view kTool = "tierkv-bench";

// The seed report's open question: per layer, loading a prefix against computing a chunk of new
// tokens over it, on the model's shape (the runner with random weights), and the smallest chunk
// whose compute hides the load. Prefixes are the batch-1 KV lengths the model's positions allow.
Status measure_prefill_vs_load(Backend& backend, const Options& opts, BenchData& data) {
  const bool gpu = backend.kind() == BackendKind::kCuda;
  CalibrateOptions co;
  // The model's full prefill runs here: on the CPU backend, whose reference kernels would take
  // hours over an 8B shape, the tiny model stands in (and the report says so).
  co.model = gpu ? opts.model : *model_preset("tiny");
  co.new_tokens = gpu ? std::vector<std::int32_t>(std::begin(kPlannerChunkSizes), std::end(kPlannerChunkSizes))
                      : std::vector<std::int32_t>{16, 64};
  co.prefix_tokens = {0};
  for (std::int32_t p : opts.kv_lens)
    if (p + co.new_tokens.back() <= co.model.max_positions) co.prefix_tokens.push_back(p);
  std::sort(co.prefix_tokens.begin(), co.prefix_tokens.end());
  co.prefix_tokens.erase(std::unique(co.prefix_tokens.begin(), co.prefix_tokens.end()),
                         co.prefix_tokens.end());
  co.reps = gpu ? 3 : 1;
  TIERKV_ASSIGN_OR_RETURN(CostProfile p, calibrate(backend, co));
  data.prefill_prefixes = co.prefix_tokens;
  data.hide_rows = hide_analysis(p, co.model, co.prefix_tokens, kPlannerChunkSizes);
  data.prefill_model = co.model.name;
  data.prefill_profile = std::move(p);
  return Status::Ok();
}

Status run_sections(Backend& backend, Stream& stream, const Options& opts, BenchData& data) {
  Progress progress("tierkv-bench", opts.quiet);
  int total = 0;
  if (opts.has_section("decode")) total += static_cast<int>(opts.kv_lens.size());
  if (opts.has_section("batched")) total += static_cast<int>(opts.batches.size());
  if (opts.has_section("grid"))
    total += static_cast<int>(opts.grid_batches.size() * opts.grid_kv.size());
  if (opts.has_section("ragged")) total += static_cast<int>(opts.ragged_batches.size());
  if (opts.has_section("transfer")) total += 1;
  if (opts.has_section("reference")) total += 1;
  if (opts.has_section("prefill")) total += 1;
  progress.set_total(total);
  if (opts.has_section("decode")) {
    for (std::int32_t kv : opts.kv_lens) {
      progress.step("decode batch 1, KV " + std::to_string(kv));
      TIERKV_ASSIGN_OR_RETURN(DecodeMeasurement m, measure_decode(backend, stream, opts, 1, kv));
      data.batch1.push_back(m);
    }
  }
  if (opts.has_section("batched")) {
    for (std::int32_t b : opts.batches) {
      progress.step("decode batch " + std::to_string(b) + ", KV " + std::to_string(opts.batch_kv));
      TIERKV_ASSIGN_OR_RETURN(DecodeMeasurement m,
                              measure_decode(backend, stream, opts, b, opts.batch_kv));
      data.batched.push_back(m);
    }
  }
  const bool grid = opts.has_section("grid"), ragged = opts.has_section("ragged");
  if ((grid || ragged) && !opts.has_section("reference")) {
    // The copy ceiling the grid's bandwidths are set against, from this run.
    TIERKV_ASSIGN_OR_RETURN(TransferMeasurement hbm, measure_hbm_copy(backend, stream, opts));
    data.ceilings.push_back(std::move(hbm));
  }
  auto measure_case = [&](const std::vector<std::int32_t>& lens, const std::string& what,
                          std::vector<DecodeMeasurement>& into) -> Status {
    progress.step(what);
    if (!case_fits(backend, opts, lens)) {
      data.skipped.push_back(what + ": needs more device memory than is free");
      return Status::Ok();
    }
    auto m = measure_decode(backend, stream, opts, lens);
    if (!m.ok()) {  // reported with the case; the other cases still run
      data.skipped.push_back(what + ": " + m.status().to_string());
      std::fprintf(stderr, "tierkv-bench: %s: %s\n", what.c_str(), m.status().to_string().c_str());
      return stream.synchronize();
    }
    if (std::all_of(lens.begin(), lens.end(), [&](auto l) { return l == lens[0]; }))
      m->seq_lens.clear();
    into.push_back(std::move(*m));
    return Status::Ok();
  };
  if (grid) {
    for (std::int32_t b : opts.grid_batches) {
      for (std::int32_t kv : opts.grid_kv) {
        TIERKV_RETURN_IF_ERROR(measure_case(
            std::vector<std::int32_t>(std::size_t(b), kv),
            "grid batch " + std::to_string(b) + ", KV " + std::to_string(kv), data.grid));
      }
    }
  }
  if (ragged) {
    for (std::int32_t b : opts.ragged_batches) {
      const auto lens = ragged_lengths(b, opts.ragged_max_len, opts.model.page_tokens, opts.seed);
      TIERKV_RETURN_IF_ERROR(measure_case(lens, "ragged batch " + std::to_string(b), data.ragged));
    }
  }
  if (opts.has_section("transfer")) {
    progress.step("KV transfers, pinned and pageable");
    TIERKV_ASSIGN_OR_RETURN(data.kv_transfers, measure_kv_transfers(backend, stream, opts));
  }
  if (opts.has_section("reference")) {
    progress.step("reference bandwidths");
    TIERKV_ASSIGN_OR_RETURN(data.ceilings, measure_ceilings(backend, stream, opts));
  }
  if (opts.has_section("prefill")) {
    progress.step("prefill per layer beside load per layer");
    TIERKV_RETURN_IF_ERROR(measure_prefill_vs_load(backend, opts, data));
  }
  progress.finish();
  return Status::Ok();
}

int run(int argc, char** argv) {
  Options opts;
  if (const int code = parse_options(argc, argv, opts); code >= 0) return code;
  // Everything that can refuse the command line comes before the first measurement.
  auto report_file = OutputFile::open(opts.report_path, "--report");
  if (!report_file.ok()) return report_error(kTool, report_file.status(), kExitUsage);
  auto json_file = OutputFile::open(opts.json_path, "--json");
  if (!json_file.ok()) return report_error(kTool, json_file.status(), kExitUsage);
  auto backend = create_backend(opts.backend, opts.device);
  if (!backend.ok()) {
    return report_error(
        kTool,
        backend.status().with_context("cannot use the " +
                                      std::string(backend_kind_name(opts.backend)) + " backend"),
        kExitUsage);
  }
  apply_defaults((*backend)->info(), opts);
  if (const Status s = check_fits(**backend, opts); !s.ok())
    return report_error(kTool, s, kExitUsage);

  auto stream = (*backend)->create_stream();
  if (!stream.ok()) return report_error(kTool, stream.status(), kExitFailure);
  BenchData data;
  if (const Status s = run_sections(**backend, **stream, opts, data); !s.ok())
    return report_error(kTool, s, kExitFailure);

  const RunInfo info = make_run_info((*backend)->info(), opts.backend);
  const std::string report = render_report(info, opts, data);
  std::fputs(report.c_str(), stdout);
  std::fflush(stdout);
  if (const Status s = report_file->commit(report); !s.ok())
    return report_error(kTool, s, kExitFailure);
  if (const Status s = json_file->commit_lines(to_jsonl(info, opts, data)); !s.ok())
    return report_error(kTool, s, kExitFailure);
  if (json_file->enabled() && !opts.quiet)
    std::fprintf(stderr, "tierkv-bench: figures written to %s\n", opts.json_path.c_str());
  return 0;
}

}  // namespace
}  // namespace tierkv::bench

int main(int argc, char** argv) {
  return tierkv::bench::run(argc, argv);
}

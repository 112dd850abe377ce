// tierkv-transfer-bench: KV page moves between pinned host memory and a device page pool through
// every copy path, both directions at once, and a prefill GEMM beside a load. Prints a report and
// writes JSON Lines (--json).
#include <chrono>
#include <cstdio>
#include <string>

#include "common/bench_io.h"
#include "common/memory_check.h"
#include "options.h"
#include "results.h"
#include "sections.h"

namespace tierkv::transfer_bench {
namespace {

constexpr std::string_view kTool = "tierkv-transfer-bench";

Status run_sections(Bench& b, Results& r) {
  const Options& o = b.opts;
  b.progress.set_total(2 + (o.has_section("pages") ? pages_steps(o) : 0) +
                       (o.has_section("bidir") ? bidir_steps(o) : 0) +
                       (o.has_section("gemm") ? gemm_steps(o) : 0));
  TIERKV_RETURN_IF_ERROR(run_ceilings(b, r));
  if (o.has_section("pages")) TIERKV_RETURN_IF_ERROR(run_pages(b, r));
  if (o.has_section("bidir")) TIERKV_RETURN_IF_ERROR(run_bidir(b, r));
  if (o.has_section("gemm")) TIERKV_RETURN_IF_ERROR(run_gemm(b, r));
  b.progress.finish();
  return Status::Ok();
}

Status run(Backend& backend, const Options& opts, Results& r) {
  TIERKV_ASSIGN_OR_RETURN(auto stream, backend.create_stream());
  TIERKV_ASSIGN_OR_RETURN(auto other, backend.create_stream());
  TIERKV_ASSIGN_OR_RETURN(
      Arena arena, make_arena(backend, *stream, opts.total_bytes(), opts.pool_bytes(), opts.seed));
  bench::Progress progress("tierkv-transfer-bench", opts.quiet);
  const auto created = std::chrono::steady_clock::now();
  TIERKV_ASSIGN_OR_RETURN(auto engine, TransferEngine::create(backend, TransferOptions{}));
  r.engine_create_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - created).count();
  r.engine_costs = engine->costs();
  Bench b{backend, *stream, *other, opts, arena, progress, engine.get()};
  const Status s = run_sections(b, r);
  progress.finish();
  return s;
}

int main_impl(int argc, char** argv) {
  using bench::kExitFailure;
  using bench::kExitUsage;
  using bench::report_error;
  Options opts;
  if (const int code = parse_options(argc, argv, opts); code >= 0) return code;
  // Everything that can refuse the command line comes before the first measurement.
  auto json_file = bench::OutputFile::open(opts.json_path, "--json");
  if (!json_file.ok()) return report_error(kTool, json_file.status(), kExitUsage);
  auto backend = create_backend(opts.backend, opts.device);
  if (!backend.ok()) {
    return report_error(
        kTool,
        backend.status().with_context("cannot use the " +
                                      std::string(backend_kind_name(opts.backend)) + " backend"),
        kExitUsage);
  }
  if (const Status s = finish_options((*backend)->info(), opts); !s.ok())
    return report_error(kTool, s, kExitUsage);
  if (const Status s =
          bench::check_memory(**backend, memory_need(opts, (*backend)->kind()), "this run",
                              "Choose a smaller --total-mib or --pool-mib.");
      !s.ok())
    return report_error(kTool, s, kExitUsage);

  Results results;
  if (const Status s = run(**backend, opts, results); !s.ok())
    return report_error(kTool, s, kExitFailure);
  const RunInfo info = make_run_info((*backend)->info());
  std::fputs(render_report(info, opts, results).c_str(), stdout);
  std::fflush(stdout);
  if (const Status s = json_file->commit_lines(to_jsonl(info, opts, results)); !s.ok())
    return report_error(kTool, s, kExitFailure);
  if (json_file->enabled() && !opts.quiet)
    std::fprintf(stderr, "tierkv-transfer-bench: figures written to %s\n", opts.json_path.c_str());
  return 0;
}

}  // namespace
}  // namespace tierkv::transfer_bench

int main(int argc, char** argv) {
  return tierkv::transfer_bench::main_impl(argc, argv);
}

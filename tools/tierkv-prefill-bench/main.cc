// tierkv-prefill-bench: causal prefill attention over a paged prefix at a model's KV shape, timed
// on this machine, printed as a table and written as JSON Lines.
#include <cstdio>
#include <string>
#include <vector>

#include "common/bench_io.h"
#include "common/memory_check.h"
#include "measure.h"
#include "options.h"
#include "report.h"

namespace tierkv::prefill_bench {
namespace {

constexpr std::string_view kTool = "tierkv-prefill-bench";

// Checks every case against the memory available now, before the first is measured.
Status check_fits(Backend& backend, const Options& opts) {
  for (std::int32_t prefix : opts.prefixes) {
    for (std::int32_t chunk : opts.chunks) {
      TIERKV_RETURN_IF_ERROR(bench::check_memory(
          backend, case_memory(opts, chunk, prefix),
          "chunk " + std::to_string(chunk) + " over prefix " + std::to_string(prefix),
          "Choose smaller --chunks or --prefixes."));
    }
  }
  return Status::Ok();
}

int run(int argc, char** argv) {
  using bench::kExitFailure;
  using bench::kExitUsage;
  using bench::report_error;
  Options opts;
  if (const int code = parse_options(argc, argv, opts); code >= 0) return code;
  // Everything that can refuse the command line comes before the first measurement.
  auto report_file = bench::OutputFile::open(opts.report_path, "--report");
  if (!report_file.ok()) return report_error(kTool, report_file.status(), kExitUsage);
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
  apply_defaults((*backend)->info(), opts);
  if (const Status s = check_fits(**backend, opts); !s.ok())
    return report_error(kTool, s, kExitUsage);

  auto stream = (*backend)->create_stream();
  if (!stream.ok()) return report_error(kTool, stream.status(), kExitFailure);
  std::vector<Measurement> ms;
  bench::Progress progress("tierkv-prefill-bench", opts.quiet);
  progress.set_total(static_cast<int>(opts.chunks.size() * opts.prefixes.size()));
  for (std::int32_t prefix : opts.prefixes) {
    for (std::int32_t chunk : opts.chunks) {
      progress.step("chunk " + std::to_string(chunk) + " over prefix " + std::to_string(prefix));
      auto m = measure_prefill(**backend, **stream, opts, chunk, prefix);
      if (!m.ok()) return report_error(kTool, m.status(), kExitFailure);
      ms.push_back(*m);
    }
  }

  const RunInfo info = make_run_info((*backend)->info(), opts.backend);
  const std::string table = render_table(info, opts, ms);
  std::fputs(table.c_str(), stdout);
  std::fflush(stdout);
  if (const Status s = report_file->commit(table); !s.ok())
    return report_error(kTool, s, kExitFailure);
  if (const Status s = json_file->commit_lines(to_jsonl(info, opts, ms)); !s.ok())
    return report_error(kTool, s, kExitFailure);
  if (json_file->enabled() && !opts.quiet)
    std::fprintf(stderr, "tierkv-prefill-bench: figures written to %s\n", opts.json_path.c_str());
  for (const Measurement& m : ms) {
    if (!m.error.empty()) return kExitFailure;  // a wrong output makes its timing worthless
  }
  return 0;
}

}  // namespace
}  // namespace tierkv::prefill_bench

int main(int argc, char** argv) {
  return tierkv::prefill_bench::run(argc, argv);
}

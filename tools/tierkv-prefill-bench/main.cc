// tierkv-prefill-bench: causal prefill attention over a paged prefix at a model's KV shape, timed
// on this machine, printed as a table and written as JSON Lines.
#include <cstdio>
#include <string>
#include <vector>

#include "measure.h"
#include "options.h"
#include "report.h"

namespace tierkv::prefill_bench {
namespace {

int fail(const Status& s) {
  std::fprintf(stderr, "tierkv-prefill-bench: %s\n", s.to_string().c_str());
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kResourceExhausted ? 2
                                                                                                : 1;
}

int run(int argc, char** argv) {
  Options opts;
  if (const int code = parse_options(argc, argv, opts); code >= 0) return code;
  auto backend = create_backend(opts.backend, opts.device);
  if (!backend.ok()) {
    std::fprintf(stderr, "tierkv-prefill-bench: cannot use the %s backend: %s\n",
                 std::string(backend_kind_name(opts.backend)).c_str(),
                 backend.status().to_string().c_str());
    return 2;
  }
  apply_defaults((*backend)->info(), opts);
  auto stream = (*backend)->create_stream();
  if (!stream.ok()) return fail(stream.status());

  std::vector<Measurement> ms;
  bench::Progress progress("tierkv-prefill-bench", opts.quiet);
  progress.set_total(static_cast<int>(opts.chunks.size() * opts.prefixes.size()));
  for (std::int32_t prefix : opts.prefixes) {
    for (std::int32_t chunk : opts.chunks) {
      progress.step("chunk " + std::to_string(chunk) + " over prefix " + std::to_string(prefix));
      auto m = measure_prefill(**backend, **stream, opts, chunk, prefix);
      if (!m.ok()) return fail(m.status());
      ms.push_back(*m);
    }
  }

  const RunInfo info = make_run_info((*backend)->info(), opts.backend);
  const std::string table = render_table(info, opts, ms);
  std::fputs(table.c_str(), stdout);
  std::fflush(stdout);
  if (!opts.report_path.empty()) {
    if (const Status s = bench::write_lines(opts.report_path, {table}); !s.ok()) return fail(s);
  }
  if (!opts.json_path.empty()) {
    if (const Status s = bench::write_lines(opts.json_path, to_jsonl(info, opts, ms)); !s.ok())
      return fail(s);
    if (!opts.quiet)
      std::fprintf(stderr, "tierkv-prefill-bench: figures written to %s\n", opts.json_path.c_str());
  }
  for (const Measurement& m : ms) {
    if (!m.error.empty()) return 1;  // a wrong output makes its timing worthless
  }
  return 0;
}

}  // namespace
}  // namespace tierkv::prefill_bench

int main(int argc, char** argv) {
  return tierkv::prefill_bench::run(argc, argv);
}

// tierkv-transfer-bench: KV page moves between pinned host memory and a device page pool through
// every copy path, both directions at once, and a prefill GEMM beside a load. Prints a report and
// writes JSON Lines (--json).
#include <chrono>
#include <cstdio>
#include <string>

#include "options.h"
#include "results.h"
#include "sections.h"

namespace tierkv::transfer_bench {
namespace {

int fail(const Status& s) {
  std::fprintf(stderr, "tierkv-transfer-bench: %s\n", s.to_string().c_str());
  const bool usage = s.code() == StatusCode::kInvalidArgument ||
                     s.code() == StatusCode::kResourceExhausted ||
                     s.code() == StatusCode::kUnavailable;
  return usage ? 2 : 1;
}

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
  Options opts;
  if (const int code = parse_options(argc, argv, opts); code >= 0) return code;
  auto backend = create_backend(opts.backend, opts.device);
  if (!backend.ok()) {
    std::fprintf(stderr, "tierkv-transfer-bench: cannot use the %s backend: %s\n",
                 std::string(backend_kind_name(opts.backend)).c_str(),
                 backend.status().to_string().c_str());
    return 2;
  }
  if (const Status s = finish_options((*backend)->info(), opts); !s.ok()) return fail(s);
  Results results;
  if (const Status s = run(**backend, opts, results); !s.ok()) return fail(s);

  const RunInfo info = make_run_info((*backend)->info());
  std::fputs(render_report(info, opts, results).c_str(), stdout);
  std::fflush(stdout);
  if (!opts.json_path.empty()) {
    if (const Status s = bench::write_lines(opts.json_path, to_jsonl(info, opts, results)); !s.ok())
      return fail(s);
    if (!opts.quiet)
      std::fprintf(stderr, "tierkv-transfer-bench: figures written to %s\n",
                   opts.json_path.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace tierkv::transfer_bench

int main(int argc, char** argv) {
  return tierkv::transfer_bench::main_impl(argc, argv);
}

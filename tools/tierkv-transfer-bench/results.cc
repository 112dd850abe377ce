#include "results.h"

#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

namespace tierkv::transfer_bench {
namespace {

using nlohmann::json;

json common(const RunInfo& run, const char* bench, const std::string& impl) {
  return json{{"bench", bench},    {"impl", impl},           {"card", run.card},
              {"date", run.date},  {"backend", run.backend}, {"model", "llama-3.1-8b"},
              {"memory", "pinned"}};
}

double ratio(double a, double b) {
  return b > 0 ? a / b : 0;
}

const char* holds(const LayoutSpec& l) {
  return l.kase == LayoutCase::kLarge ? "contiguous" : "k_or_v";
}

json case_fields(const RunInfo& run, const LayoutSpec& l, const ImplSpec& i, std::size_t runs,
                 std::size_t pool) {
  return json{{"case", std::string(layout_case_name(l.kase))},
              {"page_tokens", l.page_tokens},
              {"page_bytes", l.run_bytes},
              {"run_holds", holds(l)},
              {"runs", runs},
              {"pool_bytes", pool},
              {"path", std::string(i.path(run.kind))},
              {"blocks", i.blocks}};
}

json transfer_json(const RunInfo& run, const Options& opts, const Results& r,
                   const TransferRow& t) {
  json j = common(run, "transfer", t.impl.name(run.kind));
  j.update(case_fields(run, t.layout, t.impl, t.runs, opts.pool_bytes()));
  j.update(json{{"direction", t.to_device ? "h2d" : "d2h"},
                {"bytes", t.bytes},
                {"us", t.us},
                {"gbps", t.gbps()},
                {"ratio_to_large_copy", ratio(t.gbps(), r.large_gbps(t.to_device))}});
  return j;
}

json bidir_json(const RunInfo& run, const Options& opts, const BidirRow& b, double large_bidir) {
  json j = common(run, "transfer_bidir", b.impl.name(run.kind));
  j.update(case_fields(run, b.layout, b.impl, b.runs, opts.pool_bytes()));
  j.update(json{{"direction", "bidir"},
                {"bytes", b.bytes},
                {"us", b.us},
                {"gbps", b.gbps()},
                {"gbps_h2d_alone", b.h2d_gbps},
                {"gbps_d2h_alone", b.d2h_gbps},
                {"gbps_one_direction", b.one_direction_gbps()},
                {"ratio_to_one_direction", b.ratio_to_one_direction()},
                {"ratio_to_large_copy", ratio(b.gbps(), large_bidir)}});
  return j;
}

json gemm_shape(const GemmShape& s) {
  return json{{"m", s.m}, {"n", s.n}, {"k", s.k}, {"dtype", "bf16"}, {"accumulate", "f32"}};
}

json gemm_row_json(const RunInfo& run, const Options& opts, const Results& r, const GemmRow& g) {
  json j = common(run, "gemm_beside_load", g.impl.name(run.kind));
  j.update(json{{"path", std::string(g.impl.path(run.kind))},
                {"blocks", g.impl.blocks},
                {"page_tokens", g.page_tokens},
                {"page_bytes", g.run_bytes},
                {"run_holds", g.run_holds},
                {"direction", "h2d"},
                {"bytes", g.load_bytes},
                {"us", g.load_us},
                {"gbps", g.load_gbps()},
                {"load_gbps", g.load_gbps()},
                {"load_iterations", g.load_iterations},
                {"load_iteration_bytes", opts.gemm_load_bytes()},
                {"rounds", g.rounds},
                {"gemm_reps", opts.gemm_reps},
                {"ratio_to_large_copy", ratio(g.load_gbps(), r.large_gbps(true))},
                {"gemm_us_alone", g.gemm_us_alone},
                {"gemm_us_beside", g.gemm_us_beside},
                {"slowdown_pct", g.slowdown_pct()},
                {"gemm_shape", gemm_shape(r.gemm->shape)}});
  return j;
}

}  // namespace

RunInfo make_run_info(const DeviceInfo& device) {
  RunInfo r;
  r.card = device.name;
  r.backend = std::string(backend_kind_name(device.backend));
  r.kind = device.backend;
  r.date = bench::utc_date();
  return r;
}

std::vector<std::string> to_jsonl(const RunInfo& run, const Options& opts, const Results& r) {
  std::vector<std::string> lines;
  for (const auto* list : {&r.ceilings, &r.transfers}) {
    for (const TransferRow& t : *list)
      lines.push_back(transfer_json(run, opts, r, t).dump());
  }
  double large_bidir = 0;
  for (const BidirRow& b : r.bidir) {
    if (b.layout.kase == LayoutCase::kLarge) large_bidir = b.gbps();
  }
  for (const BidirRow& b : r.bidir)
    lines.push_back(bidir_json(run, opts, b, large_bidir).dump());
  if (r.gemm) {
    json j = common(run, "gemm", "cublasLt");
    j.update(json{{"gemm_shape", gemm_shape(r.gemm->shape)},
                  {"us", r.gemm->us},
                  {"tflops", r.gemm->tflops()},
                  {"rel_l2_error", r.gemm->rel_err}});
    lines.push_back(j.dump());
    for (const GemmRow& g : r.gemm_rows)
      lines.push_back(gemm_row_json(run, opts, r, g).dump());
  }
  return lines;
}

}  // namespace tierkv::transfer_bench

#include "results.h"

#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/planner.h"

#include "card_specs.h"

namespace tierkv::bench {
namespace {

using nlohmann::json;

json common(const RunInfo& run, const Options& opts, const char* bench) {
  return json{{"bench", bench},   {"impl", "tierkv"},       {"card", run.card},
              {"date", run.date}, {"backend", run.backend}, {"model", opts.model.name}};
}

// The HBM copy ceiling measured in this run (0 when the run did not measure it).
double copy_ceiling_gbps(const BenchData& d) {
  for (const auto& t : d.ceilings) {
    if (t.what == "hbm_copy") return t.gbps();
  }
  return 0;
}

json decode_json(const RunInfo& run, const Options& opts, const BenchData& data,
                 const DecodeMeasurement& m, const char* section, bool graph) {
  json j = common(run, opts, "decode");
  j.update(json{{"section", section},
                {"batch", m.batch},
                {"kv_tokens", m.kv_tokens},
                {"page_tokens", opts.model.page_tokens},
                {"layout", opts.layout == KvLayout::kNHD ? "nhd" : "hnd"},
                {"num_q_heads", opts.model.num_q_heads},
                {"num_kv_heads", opts.model.num_kv_heads},
                {"head_dim", opts.model.head_dim},
                {"dtype", std::string(dtype_name(opts.model.kv_dtype))},
                {"bytes", m.kv_bytes},
                {"graph", graph},
                {"splits", m.plan.num_splits},
                {"tokens_per_split", m.plan.tokens_per_split},
                {"merge", std::string(decode_merge_name(m.plan.merge))},
                {"pipeline", m.plan.pipeline},
                {"heads_per_block", m.plan.heads_per_block},
                {"l2_prefetch", m.plan.l2_prefetch},
                {"programmatic_launch", m.plan.programmatic_launch},
                {"sets", m.sets},
                {"calls", m.calls},
                {"rel_l2_error", m.rel_l2_error}});
  if (!m.seq_lens.empty()) j["seq_lens"] = m.seq_lens;
  const double us = graph ? m.us_graph : m.us_eager;
  const double gbps = m.kv_bytes / us / 1e3;
  j["us"] = us;
  j["gbps"] = gbps;
  if (const auto spec = find_card_spec(run.device)) {
    j["datasheet_gbps"] = spec->hbm_gbps;
    j["pct_datasheet"] = 100.0 * gbps / spec->hbm_gbps;
  }
  if (const double copy = copy_ceiling_gbps(data); copy > 0) {
    j["copy_gbps"] = copy;
    j["pct_copy"] = 100.0 * gbps / copy;
  }
  return j;
}

json transfer_json(const RunInfo& run, const Options& opts, const TransferMeasurement& m) {
  const bool ceiling = m.what == "hbm_copy";
  json j = common(run, opts, ceiling ? "ceiling" : "transfer");
  j.update(json{{"what", std::string(row_name(m, run.device.backend))},
                {"memory", m.memory},
                {"direction", m.direction},
                {"bytes", m.bytes},
                {"us", m.us},
                {"gbps", m.gbps()}});
  if (!ceiling) j["case"] = m.what == "kv_layer" ? "kv_layer" : "large";
  if (m.kv_tokens > 0) j["kv_tokens"] = m.kv_tokens;
  return j;
}

}  // namespace

RunInfo make_run_info(const DeviceInfo& device, BackendKind backend) {
  RunInfo r;
  r.card = device.name;
  r.backend = std::string(backend_kind_name(backend));
  r.device = device;
  r.date = utc_date();
  return r;
}

std::vector<std::string> to_jsonl(const RunInfo& run, const Options& opts, const BenchData& data) {
  std::vector<std::string> lines;
  for (const auto& [section, list] :
       {std::pair{"batch1", &data.batch1}, std::pair{"batched", &data.batched},
        std::pair{"grid", &data.grid}, std::pair{"ragged", &data.ragged}}) {
    for (const DecodeMeasurement& m : *list) {
      lines.push_back(decode_json(run, opts, data, m, section, true).dump());
      lines.push_back(decode_json(run, opts, data, m, section, false).dump());
    }
  }
  for (const auto* list : {&data.kv_transfers, &data.ceilings}) {
    for (const TransferMeasurement& m : *list)
      lines.push_back(transfer_json(run, opts, m).dump());
  }
  for (const HideRow& r : data.hide_rows) {
    for (std::size_t i = 0; i < r.compute_us.size(); ++i) {
      json j = common(run, opts, "prefill_vs_load");
      j.update(json{{"prefix_tokens", r.prefix_tokens},
                    {"new_tokens", kPlannerChunkSizes[i]},
                    {"compute_us_per_layer", r.compute_us[i]},
                    {"load_us_per_layer", r.load_us},
                    {"hides", r.compute_us[i] >= r.load_us},
                    {"model", data.prefill_model}});
      lines.push_back(j.dump());
    }
  }
  return lines;
}

}  // namespace tierkv::bench

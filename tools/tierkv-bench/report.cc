#include "report.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <optional>

#include "card_specs.h"
#include "engine/planner.h"

namespace tierkv::bench {
namespace {

const std::string kRule(80, '=');
const std::string kThin(80, '-');

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

void title(std::string& out, const std::string& t) {
  out += "\n" + kRule + "\n" + t + "\n" + kRule + "\n";
}

const TransferMeasurement* find_transfer(const BenchData& d, const std::string& memory,
                                         std::int32_t kv) {
  for (const auto& t : d.kv_transfers) {
    if (t.memory == memory && t.kv_tokens == kv) return &t;
  }
  return nullptr;
}

const TransferMeasurement* find_ceiling(const BenchData& d, const std::string& what) {
  for (const auto& t : d.ceilings) {
    if (t.what == what) return &t;
  }
  return nullptr;
}

void header(std::string& out, const RunInfo& run, const Options& opts) {
  const ModelSpec& m = opts.model;
  const DeviceInfo& dev = run.device;
  out += kRule + "\n";
  out += fmt("tierkv-bench: decode attention over paged KV and KV transfer (%s)\n", m.name.c_str());
  out += kRule + "\n";
  out +=
      fmt("Config: %d Q heads, %d KV heads, %d head dim (GQA group %d), %s KV, pages of %d tokens "
          "(%s)\n",
          m.num_q_heads, m.num_kv_heads, m.head_dim, m.gqa_group(),
          std::string(dtype_name(m.kv_dtype)).c_str(), m.page_tokens,
          opts.layout == KvLayout::kNHD ? "NHD" : "HND");
  if (dev.backend == BackendKind::kCuda) {
    out += fmt("GPU: %s (%d SMs, %.0f MiB L2, compute %d.%d, %.1f GiB)\n", run.card.c_str(),
               dev.compute_units, dev.l2_bytes / 1048576.0, dev.cc_major, dev.cc_minor,
               dev.total_memory / 1073741824.0);
    out += fmt(
        "Timing: CUDA events, %d warm-ups, median of %d; decode replayed from CUDA graphs of up to "
        "%d calls (>= 300 µs a replay, every input set once)\n"
        "        rotating through input sets of >= %.0f MiB (4x L2); pages scattered at random\n",
        opts.warmup, opts.reps, opts.min_calls, opts.rotate_bytes / 1048576.0);
  } else {
    out += fmt("CPU: %s (%d threads)\n", run.card.c_str(), dev.compute_units);
    out +=
        "Backend: cpu. No GPU is in use, so this runs the CPU backend at small sizes: the figures\n"
        "         describe this CPU's reference kernels and memcpy, not a GPU or a PCIe link.\n";
    out += fmt("Timing: stream events, %d warm-ups, median of %d\n", opts.warmup, opts.reps);
  }
  out += fmt("Date: %s\n", run.date.c_str());
}

void batch1_table(std::string& out, const BenchData& d) {
  title(out, "Results (batch_size=1)");
  out +=
      "  KV Len |    KV Size |  Attn (µs) |  Xfer (µs) |    Attn BW |    Xfer BW |  Xfer/Attn |  "
      "no graph\n";
  out +=
      "         |       (KB) |            |   (pinned) |     (GB/s) |     (GB/s) |      ratio |    "
      "  (µs)\n";
  out += std::string(101, '-') + "\n";
  for (const DecodeMeasurement& m : d.batch1) {
    const TransferMeasurement* x = find_transfer(d, "pinned", m.kv_tokens);
    const std::size_t layer_bytes = x ? x->bytes : m.kv_bytes;
    out += fmt("%8d | %10.1f | %10.2f | %10s | %10.1f | %10s | %10s | %9.2f\n", m.kv_tokens,
               layer_bytes / 1024.0, m.us_graph, x ? fmt("%.2f", x->us).c_str() : "-", m.gbps(),
               x ? fmt("%.1f", x->gbps()).c_str() : "-",
               x ? fmt("%.2fx", x->us / m.us_graph).c_str() : "-", m.us_eager);
  }
}

void batched_table(std::string& out, const Options& opts, const BenchData& d) {
  title(out, "Batched Decode (showing how attention time scales)");
  out += fmt("\nKV Length = %d\n", opts.batch_kv);
  out += "   Batch |    Attn (µs) |   µs/request |       Throughput |    Attn BW |  no graph\n";
  out += "         |              |              |                  |     (GB/s) |      (µs)\n";
  out += std::string(83, '-') + "\n";
  for (const DecodeMeasurement& m : d.batched) {
    out += fmt("%8d | %12.2f | %12.2f | %10.0f req/s | %10.1f | %9.2f\n", m.batch, m.us_graph,
               m.us_graph / m.batch, m.batch * 1e6 / m.us_graph, m.gbps(), m.us_eager);
  }
}

// Bandwidth columns: against the datasheet HBM figure and against this run's copy ceiling.
struct Ceilings {
  double datasheet = 0;
  double copy = 0;
};
Ceilings ceilings_of(const RunInfo& run, const BenchData& d) {
  Ceilings c;
  if (const auto spec = find_card_spec(run.device)) c.datasheet = spec->hbm_gbps;
  if (const TransferMeasurement* t = find_ceiling(d, "hbm_copy")) c.copy = t->gbps();
  return c;
}
std::string pct(double gbps, double ceiling) {
  return ceiling > 0 ? fmt("%.1f%%", 100.0 * gbps / ceiling) : std::string("-");
}
std::string plan_cell(const DecodePlan& p) {
  static const char* const kPipelines[] = {"deep", "shallow", "middle", "deepest"};
  return fmt("%d %s %s%s%s", p.num_splits, std::string(decode_merge_name(p.merge)).c_str(),
             kPipelines[std::clamp(p.pipeline, 0, 3)],
             p.heads_per_block > 1 ? fmt(" fused%d", p.heads_per_block).c_str() : "",
             p.programmatic_launch ? " pdl" : "");
}

void grid_table(std::string& out, const RunInfo& run, const BenchData& d) {
  const Ceilings c = ceilings_of(run, d);
  title(out, "Decode grid: batch x KV length (graph replays; bandwidth = KV bytes / time)");
  out += fmt("Ceilings: datasheet HBM %s, HBM copy measured in this run %s\n\n",
             c.datasheet > 0 ? fmt("%.0f GB/s", c.datasheet).c_str() : "-",
             c.copy > 0 ? fmt("%.1f GB/s", c.copy).c_str() : "-");
  out +=
      "   Batch |  KV Len |   Attn (µs) |  no graph |    Attn BW |  % sheet |   % copy | "
      "plan (splits merge pipeline)\n";
  out += std::string(110, '-') + "\n";
  for (const DecodeMeasurement& m : d.grid) {
    out += fmt("%8d | %7d | %11.2f | %9.2f | %10.1f | %8s | %8s | %s\n", m.batch, m.kv_tokens,
               m.us_graph, m.us_eager, m.gbps(), pct(m.gbps(), c.datasheet).c_str(),
               pct(m.gbps(), c.copy).c_str(), plan_cell(m.plan).c_str());
  }
}

void ragged_table(std::string& out, const RunInfo& run, const BenchData& d) {
  const Ceilings c = ceilings_of(run, d);
  title(out, "Ragged batches: skewed (log-normal) lengths, incl. 1 token and mid-page ends");
  out +=
      "   Batch |  tokens | shortest | longest |   Attn (µs) |  no graph |    Attn BW |  "
      "% sheet |   % copy | plan\n";
  out += std::string(118, '-') + "\n";
  for (const DecodeMeasurement& m : d.ragged) {
    std::int64_t tokens = 0;
    std::int32_t lo = m.seq_lens.empty() ? m.kv_tokens : m.seq_lens[0], hi = lo;
    for (std::int32_t l : m.seq_lens) {
      tokens += l;
      lo = std::min(lo, l);
      hi = std::max(hi, l);
    }
    out += fmt("%8d | %7lld | %8d | %7d | %11.2f | %9.2f | %10.1f | %8s | %8s | %s\n", m.batch,
               static_cast<long long>(tokens), lo, hi, m.us_graph, m.us_eager, m.gbps(),
               pct(m.gbps(), c.datasheet).c_str(), pct(m.gbps(), c.copy).c_str(),
               plan_cell(m.plan).c_str());
  }
  for (const DecodeMeasurement& m : d.ragged) {
    out += fmt("  lengths (batch %d):", m.batch);
    for (std::size_t i = 0; i < m.seq_lens.size(); ++i)
      out += fmt("%s%d", i % 16 == 0 ? "\n    " : " ", m.seq_lens[i]);
    out += "\n";
  }
}

void pinned_vs_pageable(std::string& out, const BenchData& d) {
  out += "\nPinned vs Pageable transfer (one layer's KV, host to device):\n";
  for (const auto& p : d.kv_transfers) {
    if (p.memory != "pinned") continue;
    const TransferMeasurement* q = find_transfer(d, "pageable", p.kv_tokens);
    if (q == nullptr) continue;
    out += fmt("  KV=%5d: pinned=%.1fµs (%.1f GB/s), pageable=%.1fµs (%.1f GB/s), speedup=%.2fx\n",
               p.kv_tokens, p.us, p.gbps(), q->us, q->gbps(), q->us / p.us);
  }
}

// Sentences whose content, and whose direction, come from the figures. The conclusions about a
// GPU system's design are drawn from GPU runs only: a cpu run has no host link, HBM or pinned
// memory to draw them from.
void findings(std::string& out, const BenchData& d, bool gpu) {
  out += "\nFindings (computed from the figures above):\n";
  std::vector<std::pair<std::int32_t, double>> ratios;
  for (const DecodeMeasurement& m : d.batch1) {
    if (const TransferMeasurement* x = find_transfer(d, "pinned", m.kv_tokens))
      ratios.push_back({m.kv_tokens, x->us / m.us_graph});
  }
  if (!ratios.empty()) {
    const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end(),
                                              [](auto& a, auto& b) { return a.second < b.second; });
    out +=
        fmt("  - Moving one layer's KV %s takes %.2fx (KV %d) to %.2fx (KV %d)\n"
            "    the time of decode attention over the same KV.\n",
            gpu ? "over the host link" : "host to device (a memcpy here)", lo->second, lo->first,
            hi->second, hi->first);
    if (!gpu) {
      // No conclusion about hiding loads: neither figure is a GPU's.
    } else if (lo->second > 1.0) {
      out +=
          "    Transfer/attention > 1 at every length: a load cannot hide behind decode attention; "
          "it has\n"
          "    to overlap with prefill compute (warm prefill, layer by layer).\n";
    } else if (hi->second < 1.0) {
      out +=
          "    Transfer/attention < 1 at every length: at these sizes a load hides behind decode "
          "attention.\n";
    } else {
      out +=
          "    Transfer/attention crosses 1 inside the measured range: only the shorter loads hide "
          "behind\n"
          "    decode attention; the longer ones need prefill compute to overlap with.\n";
    }
  }
  std::vector<double> speedups;
  for (const auto& p : d.kv_transfers) {
    if (p.memory != "pinned") continue;
    if (const TransferMeasurement* q = find_transfer(d, "pageable", p.kv_tokens))
      speedups.push_back(q->us / p.us);
  }
  if (!speedups.empty()) {
    const auto [lo, hi] = std::minmax_element(speedups.begin(), speedups.end());
    out +=
        fmt("  - Pinned over pageable host memory: %.2fx to %.2fx the transfer speed.", *lo, *hi);
    if (!gpu) {
      out += " On the cpu backend both are\n    ordinary memory.\n";
    } else if (*lo >= 1.2) {
      out += " Only pinned memory reaches the\n    link's speed: the host tier must be pinned.\n";
    } else if (*hi < 1.2) {
      out += " Here the two perform alike.\n";
    } else {
      out += "\n";
    }
  }
  const TransferMeasurement* h2d = find_ceiling(d, "pcie_h2d");
  if (h2d != nullptr && !d.kv_transfers.empty()) {
    const TransferMeasurement* biggest = nullptr;
    for (const auto& t : d.kv_transfers) {
      if (t.memory == "pinned" && (biggest == nullptr || t.bytes > biggest->bytes)) biggest = &t;
    }
    if (biggest != nullptr) {
      out +=
          fmt("  - One layer's KV at %d tokens (%.1f MiB) moves at %.0f%% of the large-copy "
              "ceiling (%.1f GB/s).\n",
              biggest->kv_tokens, biggest->bytes / 1048576.0, 100.0 * biggest->gbps() / h2d->gbps(),
              h2d->gbps());
    }
  }
  if (!d.batch1.empty()) {
    const DecodeMeasurement& s = d.batch1.front();
    const DecodeMeasurement& l = d.batch1.back();
    out +=
        fmt("  - Decode attention at batch 1 reads KV at %.1f GB/s for %d tokens and %.1f GB/s for "
            "%d tokens",
            s.gbps(), s.kv_tokens, l.gbps(), l.kv_tokens);
    if (const TransferMeasurement* hbm = find_ceiling(d, "hbm_copy")) {
      out += fmt("\n    (%.0f%% of the %s copy ceiling)", 100.0 * l.gbps() / hbm->gbps(),
                 gpu ? "HBM" : "device");
    }
    out += ".\n";
    if (gpu && s.gbps() < 0.5 * l.gbps()) {
      out +=
          "    Short contexts do not fill the memory system: their time is dominated by fixed "
          "costs.\n";
    }
  }
  if (d.batched.size() > 1) {
    const auto best = std::min_element(d.batched.begin(), d.batched.end(), [](auto& a, auto& b) {
      return a.us_graph / a.batch < b.us_graph / b.batch;
    });
    out +=
        fmt("  - Batched decode: µs per request goes from %.2f at batch %d to %.2f at batch %d "
            "(best: %.2f at batch\n"
            "    %d, %.0f req/s).\n",
            d.batched.front().us_graph / d.batched.front().batch, d.batched.front().batch,
            d.batched.back().us_graph / d.batched.back().batch, d.batched.back().batch,
            best->us_graph / best->batch, best->batch, best->batch * 1e6 / best->us_graph);
  }
  const TransferMeasurement* bidir = find_ceiling(d, "pcie_bidir");
  if (h2d != nullptr && bidir != nullptr) {
    out += fmt("  - Both directions at once move %.1f GB/s, %.2fx one direction.\n", bidir->gbps(),
               bidir->gbps() / h2d->gbps());
  }
}

void reference_bandwidths(std::string& out, const RunInfo& run, const BenchData& d) {
  const std::optional<CardSpec> spec = find_card_spec(run.device);
  const DeviceInfo& dev = run.device;
  const bool gpu = dev.backend == BackendKind::kCuda;
  out += fmt("\nReference bandwidths (measured here | datasheet%s%s):\n", spec ? " of " : "",
             spec  ? std::string(spec->label).c_str()
             : gpu ? ": card not in tierkv's table"
                   : ": none, this is the cpu backend");
  auto sheet_hbm = [&]() -> std::string {
    std::string s = spec ? fmt("%.0f GB/s", spec->hbm_gbps) : "-";
    if (dev.memory_gbps_theoretical > 0)
      s += fmt(" (from memory clock x bus width: %.0f GB/s)", dev.memory_gbps_theoretical);
    return s;
  };
  const int gen = dev.pcie_gen > 0 ? dev.pcie_gen : (spec ? spec->pcie_gen : 0);
  const int width = dev.pcie_width > 0 ? dev.pcie_width : (spec ? spec->pcie_width : 0);
  const std::string link =
      gen > 0 ? fmt("PCIe Gen%d x%d: %.1f GB/s per direction%s", gen, width, pcie_gbps(gen, width),
                    dev.pcie_gen > 0 ? "" : " (datasheet link)")
              : std::string("-");
  if (const auto* t = find_ceiling(d, "hbm_copy")) {
    out += fmt("  %s copy (read + write, %4.0f MiB):%s %9.1f GB/s | %s\n", gpu ? "HBM" : "Device",
               t->bytes / 2 / 1048576.0, gpu ? "  " : "", t->gbps(), sheet_hbm().c_str());
  }
  const DecodeMeasurement* best = nullptr;
  for (const auto* list : {&d.batch1, &d.batched}) {
    for (const auto& m : *list) {
      if (best == nullptr || m.gbps() > best->gbps()) best = &m;
    }
  }
  if (best != nullptr) {
    out += fmt(
        "  Decode attention, best case:        %9.1f GB/s | batch %d x KV %d%s\n", best->gbps(),
        best->batch, best->kv_tokens,
        spec ? fmt(", %.0f%% of the datasheet HBM", 100.0 * best->gbps() / spec->hbm_gbps).c_str()
             : "");
  }
  const char* names[][2] = {{"pcie_h2d", "Host -> device, pinned, one copy: "},
                            {"pcie_d2h", "Device -> host, pinned, one copy: "},
                            {"pcie_bidir", "Both directions at once:          "}};
  for (const auto& [what, label] : names) {
    if (const auto* t = find_ceiling(d, what)) {
      out += fmt("  %s %9.1f GB/s | %s\n", label, t->gbps(),
                 std::string(what) == "pcie_bidir" && gen > 0
                     ? fmt("%.1f GB/s both ways", 2 * pcie_gbps(gen, width)).c_str()
                     : link.c_str());
    }
  }
  if (spec && spec->nvlink_gbps > 0)
    out += fmt("  NVLink (datasheet, not measured here): %.0f GB/s\n", spec->nvlink_gbps);
}

}  // namespace

std::string render_report(const RunInfo& run, const Options& opts, const BenchData& data) {
  std::string out;
  header(out, run, opts);
  if (!data.batch1.empty()) batch1_table(out, data);
  if (!data.batched.empty()) batched_table(out, opts, data);
  if (!data.grid.empty()) grid_table(out, run, data);
  if (!data.ragged.empty()) ragged_table(out, run, data);
  for (const std::string& s : data.skipped)
    out += "  skipped: " + s + "\n";
  title(out, "Analysis for Multi-Tier KV Cache");
  if (!data.kv_transfers.empty()) pinned_vs_pageable(out, data);
  findings(out, data, run.device.backend == BackendKind::kCuda);
  if (!data.ceilings.empty()) reference_bandwidths(out, run, data);
  if (!data.hide_rows.empty()) {
    out += "\nPrefill compute beside the load it must hide, per layer (us): loading a prefix from\n"
           "pinned host memory over the copy engines against computing a chunk of new tokens over\n"
           "it, measured on the model's shape; the smallest chunk whose compute hides the load.\n"
           "Below that chunk a warm prefill waits for the link; above it the load costs nothing.\n" +
           std::string("Model: ") + data.prefill_model +
           (run.device.backend == BackendKind::kCuda ? "" : " (the CPU backend: the tiny model)") +
           "\n";
    out += format_hide_analysis(data.hide_rows, kPlannerChunkSizes);
  }
  return out;
}

}  // namespace tierkv::bench

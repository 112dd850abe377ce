// The readable report: one table per section, each figure against the same run's one large
// copy, then the targets of shared/TARGETS.md with what this run met (cuda runs only).
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <map>

#include "results.h"

namespace tierkv::transfer_bench {
namespace {

constexpr double kPagesTarget = 0.90;   // scattered pages, % of one large copy
constexpr double kChunkTarget = 0.95;   // copy engine over chunk layers
constexpr double kBidirTarget = 1.6;    // both ways over one way
constexpr double kSlowdownTarget = 10;  // % GEMM slowdown beside a load
constexpr double kLoadTarget = 0.90;    // that load, % of link

void add(std::string& out, const char* format, ...) __attribute__((format(printf, 2, 3)));
void add(std::string& out, const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  out += buf;
}

double pct(double a, double b) {
  return b > 0 ? 100.0 * a / b : 0;
}
const char* verdict(bool met) {
  return met ? "met" : "MISSED";
}
const char* dir(bool to_device) {
  return to_device ? "h2d" : "d2h";
}

std::string size_label(std::size_t bytes);

void header(std::string& out, const RunInfo& run, const Options& opts, const Results& r) {
  add(out, "tierkv-transfer-bench  card: %s  backend: %s  date: %s\n", run.card.c_str(),
      run.backend.c_str(), run.date.c_str());
  add(out,
      "A page is one layer's K (or V) of Llama-3.1-8B: tokens x 8 KV heads x 128 x 2 B; K and V\n"
      "are separate runs, so one page-layer's K+V is two runs. A chunk layer is 256 tokens of K\n"
      "(or V), contiguous on both sides. Each case moves %zu MiB each way; device runs sit at\n"
      "random slots of a %zu MiB pool, the host side is contiguous pinned memory.\n",
      opts.total_mib, opts.pool_mib);
  add(out,
      "Medians of %d runs after %d warm-ups, device events; every timed copy checked byte for\n"
      "byte afterwards (loads: untouched pool slots too).\n",
      opts.reps, opts.warmup);
  if (run.backend == "cpu") {
    add(out,
        "On the cpu backend every path is a memcpy on a stream's worker thread: this run checks\n"
        "the flow and the bytes, its figures say nothing about a GPU. Rows are named cpu-<the\n"
        "path asked for>.\n");
  }
  add(out, "\nOne large copy (%zu MiB, the ceiling): h2d %.2f GB/s, d2h %.2f GB/s\n",
      opts.total_mib, r.large_gbps(true), r.large_gbps(false));
  const PathCosts& c = r.engine_costs;
  add(out, "Transfer engine's calibration (h2d GB/s by run size; fixed cost; %.0f ms in all):\n",
      r.engine_create_ms);
  const bool cpu = run.kind != BackendKind::kCuda;
  for (const auto* curve : {&c.copy_engine, &c.sm_kernel}) {
    const bool ce = curve == &c.copy_engine;
    add(out, "  %-*s", cpu ? 22 : 12,
        cpu ? (ce ? "copy-engine path (cpu)" : "sm-kernel path (cpu)")
            : (ce ? "copy engine" : "SM kernel"));
    for (const auto& [bytes, gbps] : curve->points)
      add(out, "  %s: %.1f", size_label(std::size_t(bytes)).c_str(), gbps);
    add(out, "; %.1f us\n", curve->fixed_us);
  }
}

void pages_table(std::string& out, const RunInfo& run, const Results& r) {
  if (r.transfers.empty()) return;
  add(out, "\n1. Each direction alone\n");
  add(out, "%-4s %-36s %-22s %6s %11s %8s %8s\n", "dir", "case", "impl", "runs", "us", "GB/s",
      "% large");
  for (const TransferRow& t : r.transfers) {
    add(out, "%-4s %-36s %-22s %6zu %11.1f %8.2f %7.1f%%\n", dir(t.to_device),
        t.layout.label().c_str(), t.impl.name(run.kind).c_str(), t.runs, t.us, t.gbps(),
        pct(t.gbps(), r.large_gbps(t.to_device)));
  }
}

double large_bidir_gbps(const Results& r) {
  for (const BidirRow& b : r.bidir) {
    if (b.layout.kase == LayoutCase::kLarge) return b.gbps();
  }
  return 0;
}

std::string size_label(std::size_t bytes) {
  if (bytes >= (std::size_t{1} << 20)) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes >> 10) + " KiB";
}

void bidir_table(std::string& out, const RunInfo& run, const Results& r) {
  if (r.bidir.empty()) return;
  add(out, "\n2. Both directions at once (a load and a save of the same case, two streams)\n");
  add(out, "%-36s %-22s %9s %9s %9s %8s %8s\n", "case", "impl", "both GB/s", "h2d alone",
      "d2h alone", "both/one", "% large");
  const double large = large_bidir_gbps(r);
  for (const BidirRow& b : r.bidir) {
    add(out, "%-36s %-22s %9.2f %9.2f %9.2f %7.2fx %7.1f%%\n", b.layout.label().c_str(),
        b.impl.name(run.kind).c_str(), b.gbps(), b.h2d_gbps, b.d2h_gbps, b.ratio_to_one_direction(),
        pct(b.gbps(), large));
  }
  add(out,
      "both/one: both at once over the same load and save one after the other\n"
      "(2 / (1/h2d + 1/d2h)); %% large: of one large copy each way at once.\n");
}

void gemm_table(std::string& out, const RunInfo& run, const Options& opts, const Results& r) {
  if (!r.gemm_skipped.empty()) {
    add(out, "\n3. GEMM beside a load: skipped (%s)\n", r.gemm_skipped.c_str());
    return;
  }
  if (!r.gemm) return;
  const GemmAlone& g = *r.gemm;
  add(out, "\n3. bf16 GEMM %d x %d x %d (fp32 accumulate, cuBLASLt) beside a host->device load\n",
      g.shape.m, g.shape.n, g.shape.k);
  add(out, "GEMM alone: %.1f us (%.0f TFLOP/s), sampled relative error %.1e.\n", g.us, g.tflops(),
      g.rel_err);
  add(out,
      "Per path: windows of %d GEMMs, alone then beside the load, alternating; each window\n"
      "after the same idle pause (the card's clock depends on how long the GEMM has run);\n"
      "medians over all windows. The load repeats %zu MiB iterations until the GEMMs end;\n"
      "its GB/s counts the iterations wholly inside the GEMM windows. %% link: of the one\n"
      "large copy h2d alone.\n",
      opts.gemm_reps, opts.gemm_load_mib);
  add(out, "%-22s %-28s %9s %9s %9s %9s %7s\n", "load impl", "runs", "GEMM us", "beside",
      "slowdown", "load GB/s", "% link");
  for (const GemmRow& row : r.gemm_rows) {
    const std::string runs = row.runs_label + " " + size_label(row.run_bytes);
    add(out, "%-22s %-28s %9.1f %9.1f %8.1f%% %9.2f %6.1f%%\n", row.impl.name(run.kind).c_str(),
        runs.c_str(), row.gemm_us_alone, row.gemm_us_beside, row.slowdown_pct(), row.load_gbps(),
        pct(row.load_gbps(), r.large_gbps(true)));
  }
}

// Best % of one large copy per (direction, layout) among tierkv's paths.
void pages_verdicts(std::string& out, const RunInfo& run, const Results& r) {
  std::map<std::pair<bool, std::size_t>, const TransferRow*> best;
  for (const TransferRow& t : r.transfers) {
    if (t.layout.kase != LayoutCase::kPages || t.impl.impl == CopyImpl::kMemcpyEach) continue;
    const TransferRow*& b = best[{t.to_device, t.layout.run_bytes}];
    if (b == nullptr || t.gbps() > b->gbps()) b = &t;
  }
  for (const auto& [key, t] : best) {
    const double p = pct(t->gbps(), r.large_gbps(key.first));
    add(out, "  %-6s %s, %-36s best %-22s %5.1f%% of one large copy (>= 90%%)\n",
        verdict(p >= 100 * kPagesTarget), dir(key.first), t->layout.label().c_str(),
        t->impl.name(run.kind).c_str(), p);
  }
  for (const TransferRow& t : r.transfers) {
    if (t.layout.kase != LayoutCase::kChunkLayer || t.impl.impl != CopyImpl::kCopyEngine) continue;
    const double p = pct(t.gbps(), r.large_gbps(t.to_device));
    add(out, "  %-6s %s, %-36s %-27s %5.1f%% of one large copy (>= 95%%, no SMs)\n",
        verdict(p >= 100 * kChunkTarget), dir(t.to_device), t.layout.label().c_str(),
        t.impl.name(run.kind).c_str(), p);
  }
}

void bidir_verdicts(std::string& out, const RunInfo& run, const Results& r) {
  for (const BidirRow& b : r.bidir) {
    if (b.impl.impl == CopyImpl::kMemcpyEach) continue;
    add(out, "  %-6s both ways, %-36s %-22s %5.2fx one direction (>= 1.6x)\n",
        verdict(b.ratio_to_one_direction() >= kBidirTarget), b.layout.label().c_str(),
        b.impl.name(run.kind).c_str(), b.ratio_to_one_direction());
  }
}

void gemm_verdicts(std::string& out, const RunInfo& run, const Results& r) {
  for (const GemmRow& g : r.gemm_rows) {
    const double link = pct(g.load_gbps(), r.large_gbps(true));
    const bool met = g.slowdown_pct() <= kSlowdownTarget && link >= 100 * kLoadTarget;
    const std::string runs = g.runs_label + " " + size_label(g.run_bytes);
    add(out,
        "  %-6s GEMM beside %-20s %-28s slowed %5.1f%% (<= 10%%), load %5.1f%% of link "
        "(>= 90%%)\n",
        verdict(met), g.impl.name(run.kind).c_str(), runs.c_str(), g.slowdown_pct(), link);
  }
}

}  // namespace

std::string render_report(const RunInfo& run, const Options& opts, const Results& r) {
  std::string out;
  header(out, run, opts, r);
  pages_table(out, run, r);
  bidir_table(out, run, r);
  gemm_table(out, run, opts, r);
  if (run.kind != BackendKind::kCuda) {
    // The targets are a GPU's (an H100's copy engines, PCIe link and SMs): a cpu run meets or
    // misses none of them.
    add(out,
        "\nTargets (shared/TARGETS.md): not graded; they are GPU targets and this run used "
        "the %s backend.\n",
        run.backend.c_str());
    return out;
  }
  add(out, "\nTargets (shared/TARGETS.md), this run:\n");
  pages_verdicts(out, run, r);
  bidir_verdicts(out, run, r);
  gemm_verdicts(out, run, r);
  return out;
}

}  // namespace tierkv::transfer_bench

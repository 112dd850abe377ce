// The measured sections of tierkv-transfer-bench, what each one records, and what they share.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/measure.h"
#include "copy_impl.h"
#include "layout.h"
#include "options.h"
#include "peers.h"

namespace tierkv::transfer_bench {

// One direction of one case through one implementation.
struct TransferRow {
  LayoutSpec layout;
  ImplSpec impl;
  bool to_device = true;  // h2d (a load) or d2h (a save)
  std::size_t bytes = 0;
  std::size_t runs = 0;
  double us = 0;  // median per repetition
  double gbps() const { return us > 0 ? double(bytes) / us / 1e3 : 0; }
};

// A load and a save of the same case at the same time, on two streams.
struct BidirRow {
  LayoutSpec layout;
  ImplSpec impl;
  std::size_t bytes = 0;  // both directions together
  std::size_t runs = 0;   // per direction
  double us = 0;
  double h2d_gbps = 0, d2h_gbps = 0;  // the same impl and case, one direction alone
  double gbps() const { return us > 0 ? double(bytes) / us / 1e3 : 0; }
  // GB/s of the same load and save one after the other: 2 / (1/h2d + 1/d2h).
  double one_direction_gbps() const;
  // gbps() over one_direction_gbps(): 2.0 when both directions run at full speed at once.
  double ratio_to_one_direction() const;
};

struct GemmAlone {
  GemmShape shape;
  double us = 0;
  double rel_err = 0;  // sampled ||C - ref|| / ||ref||
  double tflops() const { return us > 0 ? shape.flops() / us / 1e6 : 0; }
};

// The GEMM timed beside a host->device load through one path.
struct GemmRow {
  ImplSpec impl;
  std::size_t run_bytes = 0;
  std::string runs_label;      // what the runs are, e.g. "K+V chunk layer"
  int page_tokens = 0;         // tokens per run (0: one run per iteration)
  std::string run_holds;       // "k_or_v", "k_and_v" (a chunk layer's K then V), "contiguous"
  int rounds = 0;              // alone / beside windows, alternating, each after an idle pause
  double gemm_us_alone = 0;    // median per GEMM over this row's alone windows
  double gemm_us_beside = 0;   // median per GEMM over its windows beside the load
  std::size_t load_bytes = 0;  // bytes of the load iterations wholly inside the GEMM window
  double load_us = 0;          // time those iterations took
  int load_iterations = 0;
  double slowdown_pct() const { return (gemm_us_beside / gemm_us_alone - 1.0) * 100.0; }
  double load_gbps() const { return load_us > 0 ? double(load_bytes) / load_us / 1e3 : 0; }
};

struct Results {
  std::vector<TransferRow> ceilings;   // one-large-copy each way
  std::vector<TransferRow> transfers;  // scattered pages and chunk layers
  std::vector<BidirRow> bidir;
  std::optional<GemmAlone> gemm;
  std::vector<GemmRow> gemm_rows;
  std::string gemm_skipped;     // why the GEMM section did not run, when it did not
  PathCosts engine_costs;       // what the transfer engine measured when it was created
  double engine_create_ms = 0;  // wall time of creating it, calibration included

  // GB/s of the one large copy in that direction (0 when not measured).
  double large_gbps(bool to_device) const;
  // The row of pages/chunk-layer results for that case, impl and direction, if measured.
  const TransferRow* find(const LayoutSpec& l, const ImplSpec& i, bool to_device) const;
};

// What every section works with.
struct Bench {
  Backend& backend;
  Stream& stream;  // the main stream; loads run here
  Stream& other;   // a second stream: saves beside loads, the GEMM beside a load
  const Options& opts;
  Arena& arena;
  bench::Progress& progress;
  TransferEngine* engine;  // calibrated on this machine; chooses a path per transfer
};

// The median time in µs of `enqueue` on `stream` (opts.warmup untimed, opts.reps timed).
Result<double> median_us(Bench& b, Stream& stream, const std::function<Status()>& enqueue);

// The case layouts of the pages section: pages of each of opts.page_tokens, then the chunk layer.
std::vector<LayoutSpec> scattered_layouts(const Options& opts);

// One direction of one case, timed and then checked byte for byte.
Result<TransferRow> measure_direction(Bench& b, const LayoutSpec& layout, const Placement& p,
                                      const ImplSpec& impl, bool to_device);

// Progress steps each section will take.
int pages_steps(const Options& opts);
int bidir_steps(const Options& opts);
int gemm_steps(const Options& opts);

Status run_ceilings(Bench& b, Results& r);  // one large copy each way: always measured
Status run_pages(Bench& b, Results& r);
Status run_bidir(Bench& b, Results& r);
Status run_gemm(Bench& b, Results& r);  // records why in r.gemm_skipped when it cannot run

}  // namespace tierkv::transfer_bench

// Section 3: a prefill-sized bf16 GEMM alone, then beside a host->device load through each
// path. The GEMM runs on Bench::other, the load on Bench::stream.
//
// A GEMM that runs for tens of milliseconds drives the card to its power limit, and its clock
// (and so its time) depends on how long it has been running. Alone and beside are therefore
// measured alike: each window starts after the same idle pause and times the same number of
// GEMMs, and the two alternate for kRounds rounds; the medians are over all rounds.
#include <algorithm>
#include <chrono>
#include <memory>
#include <span>
#include <thread>

#include "common/measure.h"
#include "overlap.h"
#include "sections.h"

namespace tierkv::transfer_bench {
namespace {

constexpr int kCheckSamples = 64;
constexpr double kMaxRelErr = 2e-2;  // bf16 output of a k = 14336 dot product: about 2e-3
constexpr int kRounds = 3;
constexpr auto kIdle = std::chrono::milliseconds(100);

struct LoadPath {
  ImplSpec impl;
  std::size_t run_bytes = 0;  // 0: one run of the whole iteration
  int page_tokens = 0;        // tokens per run
  const char* holds = "";     // "k_or_v", "k_and_v" or "contiguous"
  const char* what = "";
};

// The paths of TARGETS.md's table, plus two that tell the batch call from the run size apart:
// the copy-engine batch over one run, and the runtime peer over the same 1 MiB runs.
std::vector<LoadPath> load_paths(const Options& opts, TransferEngine* engine) {
  const std::size_t page16 = 16 * kKOrVBytesPerToken;
  const std::size_t chunk_kv = 2 * kChunkTokens * kKOrVBytesPerToken;
  const CopyImpl ce = CopyImpl::kCopyEngine;
  std::vector<LoadPath> out = {
      {{CopyImpl::kLargeCopy, 0}, 0, 0, "contiguous", "one run"},
      {{ce, 0}, 0, 0, "contiguous", "one run"},
      {{CopyImpl::kMemcpyEach, 0}, chunk_kv, kChunkTokens, "k_and_v", "K+V chunk layer"},
      {{ce, 0}, chunk_kv, kChunkTokens, "k_and_v", "K+V chunk layer"},
      {{ce, 0}, page16, 16, "k_or_v", "16-token K|V page"},
      {{ce, 0}, page16 / 2, 8, "k_or_v", "8-token K|V page"},
  };
  for (int b : opts.sm_blocks)
    out.push_back({{CopyImpl::kSmKernel, b}, page16, 16, "k_or_v", "16-token K|V page"});
  // What the cache does: the engine, told that compute runs beside the load, picks the path.
  const ImplSpec auto_path{CopyImpl::kEngine, 0, engine, true};
  out.push_back({auto_path, chunk_kv, kChunkTokens, "k_and_v", "K+V chunk layer"});
  out.push_back({auto_path, page16, 16, "k_or_v", "16-token K|V page"});
  return out;
}

// Waits until both streams are idle, then lets the card idle for kIdle.
Status settle(Bench& b) {
  TIERKV_RETURN_IF_ERROR(b.stream.synchronize());
  TIERKV_RETURN_IF_ERROR(b.other.synchronize());
  std::this_thread::sleep_for(kIdle);
  return Status::Ok();
}

// opts.gemm_reps GEMMs back to back on b.other, each between its own pair of events.
Result<std::vector<double>> gemm_window_ms(Bench& b, Gemm& gemm) {
  const int reps = b.opts.gemm_reps;
  std::vector<std::unique_ptr<Event>> ev;
  for (int i = 0; i <= reps; ++i) {
    TIERKV_ASSIGN_OR_RETURN(auto e, b.backend.create_event());
    ev.push_back(std::move(e));
  }
  TIERKV_RETURN_IF_ERROR(b.other.record(*ev[0]));
  for (int i = 0; i < reps; ++i) {
    TIERKV_RETURN_IF_ERROR(gemm.enqueue(b.other));
    TIERKV_RETURN_IF_ERROR(b.other.record(*ev[static_cast<std::size_t>(i) + 1]));
  }
  TIERKV_RETURN_IF_ERROR(b.other.synchronize());
  std::vector<double> ms;
  for (std::size_t i = 0; i + 1 < ev.size(); ++i) {
    TIERKV_ASSIGN_OR_RETURN(const double t, b.backend.elapsed_ms(*ev[i], *ev[i + 1]));
    ms.push_back(t);
  }
  return ms;
}

struct Samples {
  std::vector<double> alone_ms, beside_ms;
  std::size_t load_bytes = 0;
  double load_ms = 0;
  int iterations = 0;
};

// One round: the GEMM window alone, then the same window beside the load.
Status one_round(Bench& b, Gemm& gemm, const LoadPath& path, std::span<const CopyRun> runs,
                 Samples& s) {
  TIERKV_RETURN_IF_ERROR(settle(b));
  TIERKV_ASSIGN_OR_RETURN(const std::vector<double> alone, gemm_window_ms(b, gemm));
  s.alone_ms.insert(s.alone_ms.end(), alone.begin(), alone.end());
  TIERKV_RETURN_IF_ERROR(settle(b));
  OverlapPlan plan;
  plan.foreground_reps = b.opts.gemm_reps;
  TIERKV_ASSIGN_OR_RETURN(
      const OverlapTiming t,
      run_overlap(
          b.backend, b.stream, b.other,
          [&] { return enqueue_copy(b.backend, b.stream, path.impl, runs, true); },
          [&] { return gemm.enqueue(b.other); }, plan));
  s.beside_ms.insert(s.beside_ms.end(), t.foreground_ms.begin(), t.foreground_ms.end());
  s.iterations += t.iterations_inside;
  s.load_bytes += std::size_t(t.iterations_inside) * b.opts.gemm_load_bytes();
  s.load_ms += t.inside_ms;
  return Status::Ok();
}

Result<GemmRow> measure_beside(Bench& b, Gemm& gemm, const LoadPath& path) {
  Arena& a = b.arena;
  const std::size_t bytes = b.opts.gemm_load_bytes();
  const LayoutSpec layout =
      path.run_bytes == 0 ? LayoutSpec::large(bytes) : LayoutSpec::runs_of(path.run_bytes);
  const Placement p = place(layout, bytes, a.pool.size(), b.opts.seed);
  const std::vector<CopyRun> runs = load_runs(p, a);
  TIERKV_RETURN_IF_ERROR(poison_pool(a, b.stream));
  Samples s;
  for (int round = 0; round < kRounds; ++round)
    TIERKV_RETURN_IF_ERROR(one_round(b, gemm, path, runs, s));
  if (const Status ok = verify_load(p, a, b.stream, true); !ok.ok())
    return ok.with_context(path.impl.name(b.backend.kind()) + " load beside the GEMM");
  GemmRow row;
  row.impl = path.impl.resolved_for(runs);
  row.run_bytes = p.run_bytes;
  row.runs_label = path.what;
  row.page_tokens = path.page_tokens;
  row.run_holds = path.holds;
  row.rounds = kRounds;
  row.gemm_us_alone = bench::median(s.alone_ms) * 1e3;
  row.gemm_us_beside = bench::median(s.beside_ms) * 1e3;
  row.load_iterations = s.iterations;
  row.load_bytes = s.load_bytes;
  row.load_us = s.load_ms * 1e3;
  return row;
}

}  // namespace

int gemm_steps(const Options& opts) {
  return 1 + static_cast<int>(load_paths(opts, nullptr).size());
}

Status run_gemm(Bench& b, Results& r) {
  b.progress.step("GEMM alone");
  const GemmShape shape;
  auto made = make_gemm(b.backend, b.other, shape, b.opts.seed + 7);
  if (!made.ok()) {
    if (made.status().code() != StatusCode::kUnimplemented) return made.status();
    r.gemm_skipped = made.status().message();
    return Status::Ok();
  }
  Gemm& gemm = **made;
  TIERKV_ASSIGN_OR_RETURN(const double err, gemm.check(b.other, kCheckSamples));
  if (!(err <= kMaxRelErr)) {
    return data_loss("the GEMM's sampled relative error is " + std::to_string(err) + " (over " +
                     std::to_string(kMaxRelErr) + ")");
  }
  TIERKV_RETURN_IF_ERROR(settle(b));
  TIERKV_ASSIGN_OR_RETURN(const std::vector<double> alone, gemm_window_ms(b, gemm));
  GemmAlone g;
  g.shape = shape;
  g.rel_err = err;
  g.us = bench::median(alone) * 1e3;
  r.gemm = g;
  for (const LoadPath& path : load_paths(b.opts, b.engine)) {
    b.progress.step("GEMM beside " + path.impl.name(b.backend.kind()) + " (" + path.what + ")");
    TIERKV_ASSIGN_OR_RETURN(GemmRow row, measure_beside(b, gemm, path));
    r.gemm_rows.push_back(row);
  }
  return Status::Ok();
}

}  // namespace tierkv::transfer_bench

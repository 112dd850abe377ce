// Section 1: scattered pages and chunk layers, each direction alone, every implementation; and
// the one large copy each way that every figure is compared with.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/measure.h"
#include "sections.h"

namespace tierkv::transfer_bench {

double BidirRow::one_direction_gbps() const {
  return h2d_gbps > 0 && d2h_gbps > 0 ? 2.0 / (1.0 / h2d_gbps + 1.0 / d2h_gbps) : 0;
}

double BidirRow::ratio_to_one_direction() const {
  const double one = one_direction_gbps();
  return one > 0 ? gbps() / one : 0;
}

double Results::large_gbps(bool to_device) const {
  for (const TransferRow& t : ceilings) {
    if (t.to_device == to_device) return t.gbps();
  }
  return 0;
}

const TransferRow* Results::find(const LayoutSpec& l, const ImplSpec& i, bool to_device) const {
  for (const TransferRow& t : transfers) {
    if (t.layout.kase == l.kase && t.layout.run_bytes == l.run_bytes && t.impl.impl == i.impl &&
        t.impl.blocks == i.blocks && t.to_device == to_device)
      return &t;
  }
  return nullptr;
}

Result<double> median_us(Bench& b, Stream& stream, const std::function<Status()>& enqueue) {
  TIERKV_ASSIGN_OR_RETURN(
      const bench::Timing t,
      bench::time_events(b.backend, stream, b.opts.warmup, b.opts.reps, enqueue));
  return t.median_ms * 1e3;
}

std::vector<LayoutSpec> scattered_layouts(const Options& opts) {
  std::vector<LayoutSpec> out;
  for (int t : opts.page_tokens)
    out.push_back(LayoutSpec::pages(t));
  out.push_back(LayoutSpec::chunk_layer());
  return out;
}

Result<TransferRow> measure_direction(Bench& b, const LayoutSpec& layout, const Placement& p,
                                      const ImplSpec& impl, bool to_device) {
  Arena& a = b.arena;
  const std::vector<CopyRun> runs = to_device ? load_runs(p, a) : save_runs(p, a);
  if (to_device) {
    TIERKV_RETURN_IF_ERROR(poison_pool(a, b.stream));
  } else {
    TIERKV_RETURN_IF_ERROR(b.stream.synchronize());
    std::memset(a.host_save.data(), kPoison, a.host_save.size());
  }
  TIERKV_ASSIGN_OR_RETURN(const double us, median_us(b, b.stream, [&] {
                            return enqueue_copy(b.backend, b.stream, impl, runs, to_device);
                          }));
  const Status ok = to_device ? verify_load(p, a, b.stream, true) : verify_save(p, a);
  if (!ok.ok())
    return ok.with_context(impl.name(b.backend.kind()) + " " + (to_device ? "h2d" : "d2h") + " " +
                           layout.label());
  TransferRow row;
  row.layout = layout;
  row.impl = impl.resolved_for(runs);
  row.to_device = to_device;
  row.runs = runs.size();
  row.bytes = runs.size() * p.run_bytes;
  row.us = us;
  return row;
}

namespace {

// Every impl over one layout: loads first (pool poisoned before each), then saves from a pool
// of random bytes (snapshotted once, as the reference the saves are checked against).
Status measure_layout(Bench& b, const LayoutSpec& layout, const std::vector<ImplSpec>& impls,
                      std::vector<TransferRow>& out) {
  const Placement p = place(layout, b.arena.total_bytes, b.arena.pool.size(), b.opts.seed);
  for (const ImplSpec& impl : impls) {
    b.progress.step("h2d " + layout.label() + " " + impl.name(b.backend.kind()));
    TIERKV_ASSIGN_OR_RETURN(TransferRow row, measure_direction(b, layout, p, impl, true));
    out.push_back(row);
  }
  TIERKV_RETURN_IF_ERROR(randomize_pool(b.backend, b.arena, b.stream, b.opts.seed));
  TIERKV_RETURN_IF_ERROR(snapshot_pool(b.arena, b.stream));
  for (const ImplSpec& impl : impls) {
    b.progress.step("d2h " + layout.label() + " " + impl.name(b.backend.kind()));
    TIERKV_ASSIGN_OR_RETURN(TransferRow row, measure_direction(b, layout, p, impl, false));
    out.push_back(row);
  }
  return Status::Ok();
}

}  // namespace

int pages_steps(const Options& opts) {
  const int impls = 2 + static_cast<int>(opts.sm_blocks.size());
  return 2 * impls * static_cast<int>(scattered_layouts(opts).size());
}

Status run_ceilings(Bench& b, Results& r) {
  const LayoutSpec large = LayoutSpec::large(b.arena.total_bytes);
  return measure_layout(b, large, {{CopyImpl::kLargeCopy, 0}}, r.ceilings);
}

Status run_pages(Bench& b, Results& r) {
  const std::vector<ImplSpec> impls = scattered_impls(b.opts.sm_blocks, b.engine);
  for (const LayoutSpec& layout : scattered_layouts(b.opts))
    TIERKV_RETURN_IF_ERROR(measure_layout(b, layout, impls, r.transfers));
  return Status::Ok();
}

}  // namespace tierkv::transfer_bench

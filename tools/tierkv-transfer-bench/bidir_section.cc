// Section 2: a load and a save of the same case at the same time on two streams, per path,
// against the same path's one-direction figures.
#include <cstring>
#include <thread>

#include "sections.h"

namespace tierkv::transfer_bench {
namespace {

struct BothWays {
  std::span<const CopyRun> load, save;
  Event* forked = nullptr;
  Event* joined = nullptr;
};

// Queues the load on b.stream and the save on b.other, each from its own host thread so that
// neither direction waits for the other's calls to be queued. b.stream goes on after both.
Status enqueue_both(Bench& b, const ImplSpec& impl, const BothWays& w) {
  TIERKV_RETURN_IF_ERROR(b.stream.record(*w.forked));
  TIERKV_RETURN_IF_ERROR(b.other.wait(*w.forked));
  Status saved;
  std::thread saver([&] {
    saved = use_backend_device(b.backend);
    if (saved.ok()) saved = enqueue_copy(b.backend, b.other, impl, w.save, false);
    if (saved.ok()) saved = b.other.record(*w.joined);
  });
  const Status loaded = enqueue_copy(b.backend, b.stream, impl, w.load, true);
  saver.join();
  TIERKV_RETURN_IF_ERROR(loaded);
  TIERKV_RETURN_IF_ERROR(saved);
  return b.stream.wait(*w.joined);
}

// The one-direction figures of this impl and case: from the pages section when it ran, else
// measured now.
Status one_direction(Bench& b, const Results& r, const LayoutSpec& layout, const Placement& p,
                     const ImplSpec& impl, BidirRow& row) {
  const bool large = layout.kase == LayoutCase::kLarge;
  const TransferRow* h2d = large ? nullptr : r.find(layout, impl, true);
  const TransferRow* d2h = large ? nullptr : r.find(layout, impl, false);
  if (large) {
    row.h2d_gbps = r.large_gbps(true);
    row.d2h_gbps = r.large_gbps(false);
    return Status::Ok();
  }
  if (h2d != nullptr && d2h != nullptr) {
    row.h2d_gbps = h2d->gbps();
    row.d2h_gbps = d2h->gbps();
    return Status::Ok();
  }
  TIERKV_ASSIGN_OR_RETURN(const TransferRow in, measure_direction(b, layout, p, impl, true));
  TIERKV_RETURN_IF_ERROR(randomize_pool(b.backend, b.arena, b.stream, b.opts.seed));
  TIERKV_RETURN_IF_ERROR(snapshot_pool(b.arena, b.stream));
  TIERKV_ASSIGN_OR_RETURN(const TransferRow out, measure_direction(b, layout, p, impl, false));
  row.h2d_gbps = in.gbps();
  row.d2h_gbps = out.gbps();
  return Status::Ok();
}

Result<BidirRow> measure_both(Bench& b, const Results& r, const LayoutSpec& layout,
                              const ImplSpec& impl) {
  Arena& a = b.arena;
  const Placement p = place(layout, a.total_bytes, a.pool.size(), b.opts.seed);
  BidirRow row;
  row.layout = layout;
  row.impl = impl;
  TIERKV_RETURN_IF_ERROR(one_direction(b, r, layout, p, impl, row));

  const std::vector<CopyRun> load = load_runs(p, a), save = save_runs(p, a);
  row.impl = impl.resolved_for(load);
  // Random bytes everywhere: the save's source is snapshotted; the load's targets differ from
  // host_load until the load lands.
  TIERKV_RETURN_IF_ERROR(randomize_pool(b.backend, a, b.stream, b.opts.seed));
  TIERKV_RETURN_IF_ERROR(snapshot_pool(a, b.stream));
  std::memset(a.host_save.data(), kPoison, a.host_save.size());
  TIERKV_ASSIGN_OR_RETURN(auto forked, b.backend.create_event());
  TIERKV_ASSIGN_OR_RETURN(auto joined, b.backend.create_event());
  const BothWays w{load, save, forked.get(), joined.get()};
  TIERKV_ASSIGN_OR_RETURN(row.us, median_us(b, b.stream, [&] { return enqueue_both(b, impl, w); }));
  TIERKV_RETURN_IF_ERROR(b.other.synchronize());
  Status ok = verify_save(p, a);
  if (ok.ok()) ok = verify_load(p, a, b.stream, false);
  if (!ok.ok()) return ok.with_context(impl.name(b.backend.kind()) + " bidir " + layout.label());
  row.runs = load.size();
  row.bytes = 2 * load.size() * p.run_bytes;
  return row;
}

}  // namespace

int bidir_steps(const Options& opts) {
  const int impls = 2 + static_cast<int>(opts.sm_blocks.size());
  return 1 + impls * static_cast<int>(scattered_layouts(opts).size());
}

Status run_bidir(Bench& b, Results& r) {
  const LayoutSpec large = LayoutSpec::large(b.arena.total_bytes);
  b.progress.step("bidir " + large.label() + " one-large-copy");
  TIERKV_ASSIGN_OR_RETURN(BidirRow row, measure_both(b, r, large, {CopyImpl::kLargeCopy, 0}));
  r.bidir.push_back(row);
  for (const LayoutSpec& layout : scattered_layouts(b.opts)) {
    for (const ImplSpec& impl : scattered_impls(b.opts.sm_blocks, b.engine)) {
      b.progress.step("bidir " + layout.label() + " " + impl.name(b.backend.kind()));
      TIERKV_ASSIGN_OR_RETURN(row, measure_both(b, r, layout, impl));
      r.bidir.push_back(row);
    }
  }
  return Status::Ok();
}

}  // namespace tierkv::transfer_bench

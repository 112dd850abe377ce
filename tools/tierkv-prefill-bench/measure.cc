#include "measure.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "synth/paged_batch.h"
#include "tierkv/prefill.h"

namespace tierkv::prefill_bench {
namespace {

constexpr int kMaxSets = 64;
constexpr std::int32_t kSampledRows = 4;  // at each end of the chunk
// A bf16 output may differ from the reference by a rounding step or two; more is a broken kernel.
constexpr double kMaxRelL2 = 2e-2;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t mid = v.size() / 2;
  return v.size() % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

// Checks every output element for NaN, and the first and last kSampledRows rows of the chunk
// against the CPU reference (each row on its own thread: a row of a 16K prefix is a lot of work
// for the single-threaded reference).
Result<double> verify(Stream& stream, const synth::PagedBatch& batch) {
  synth::HostBatch host;
  TIERKV_RETURN_IF_ERROR(batch.download(stream, host));
  const DType t = host.layer.dtype;
  const std::size_t n_out = host.out.size() / dtype_size(t);
  for (std::size_t i = 0; i < n_out; ++i) {
    if (!std::isfinite(load_as_float(host.out.data(), i, t))) {
      return internal_error("prefill output element " + std::to_string(i) + " is not finite");
    }
  }
  const std::int32_t heads = batch.spec().num_q_heads;
  const std::int32_t n = batch.spec().q_lens[0], len = batch.spec().seq_lens[0];
  std::vector<std::int32_t> rows;
  for (std::int32_t j = 0; j < n; ++j) {
    if (j < kSampledRows || j >= n - kSampledRows) rows.push_back(j);
  }
  const std::size_t row_elems = std::size_t(heads) * host.layer.head_dim;
  std::vector<std::uint8_t> ref(rows.size() * row_elems * dtype_size(t));
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    threads.emplace_back([&, i] {
      const std::int32_t j = rows[i];
      const std::int32_t cut = len - n + j + 1;  // the sequence ending at row j
      const std::int32_t offsets[2] = {0, 1};
      PrefillAttentionArgs a = host.prefill_args(heads, ref.data() + i * row_elems * dtype_size(t));
      a.kv.seq_lens = &cut;
      a.q = host.q.data() + std::size_t(j) * row_elems * dtype_size(t);
      a.q_offsets = offsets;
      a.plan.total_q_tokens = 1;
      prefill_attention_reference(a);
    });
  }
  for (std::thread& th : threads)
    th.join();
  double diff2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    for (std::size_t e = 0; e < row_elems; ++e) {
      const double g = load_as_float(host.out.data(), std::size_t(rows[i]) * row_elems + e, t);
      const double r = load_as_float(ref.data(), i * row_elems + e, t);
      diff2 += (g - r) * (g - r);
      ref2 += r * r;
    }
  }
  const double rel = std::sqrt(diff2 / std::max(ref2, 1e-30));
  if (!(rel <= kMaxRelL2)) {
    return internal_error("prefill output differs from the CPU reference: relative L2 error " +
                          std::to_string(rel));
  }
  return rel;
}

}  // namespace

double prefill_flops(const ModelSpec& model, std::int32_t chunk, std::int32_t prefix) {
  return 4.0 * chunk * (prefix + (chunk + 1) / 2.0) * model.num_q_heads * model.head_dim;
}

namespace {

synth::PagedBatchSpec case_spec(const Options& opts, std::int32_t chunk, std::int32_t prefix) {
  synth::PagedBatchSpec spec = synth::PagedBatchSpec::for_model(opts.model, {prefix + chunk});
  spec.q_lens = {chunk};
  spec.layout = opts.layout;
  return spec;
}

}  // namespace

bench::MemoryNeed case_memory(const Options& opts, std::int32_t chunk, std::int32_t prefix) {
  const std::size_t set_bytes = case_spec(opts, chunk, prefix).device_bytes();
  return bench::MemoryNeed{set_bytes, set_bytes};
}

Result<Measurement> measure_prefill(Backend& backend, Stream& stream, const Options& opts,
                                    std::int32_t chunk, std::int32_t prefix) {
  const synth::PagedBatchSpec spec = case_spec(opts, chunk, prefix);
  TIERKV_ASSIGN_OR_RETURN(const std::size_t free, backend.free_memory());
  const std::size_t set_bytes = spec.device_bytes();
  if (set_bytes > free / 10 * 9) {
    return resource_exhausted("chunk " + std::to_string(chunk) + " over prefix " +
                              std::to_string(prefix) + " needs " + std::to_string(set_bytes >> 20) +
                              " MiB of device memory; " + std::to_string(free >> 20) +
                              " MiB are free");
  }
  TIERKV_ASSIGN_OR_RETURN(std::vector<synth::PagedBatch> inputs,
                          synth::rotating_batches(backend, stream, spec, opts.rotate_bytes,
                                                  opts.seed * 1000003, kMaxSets));
  const int sets = static_cast<int>(inputs.size());
  TIERKV_ASSIGN_OR_RETURN(
      const PrefillPlan plan,
      plan_prefill_attention(backend.info(), inputs[0].layer(), spec.num_q_heads, spec.q_lens,
                             spec.seq_lens, opts.plan));
  Buffer workspace;  // calls on one stream run one after another: one workspace serves them all
  if (plan.workspace_bytes > 0) {
    TIERKV_ASSIGN_OR_RETURN(workspace, backend.allocate(MemoryKind::kDevice, plan.workspace_bytes));
  }
  const int calls = (std::max(opts.min_calls, sets) + sets - 1) / sets * sets;
  auto enqueue_calls = [&]() -> Status {
    for (int c = 0; c < calls; ++c) {
      TIERKV_RETURN_IF_ERROR(backend.prefill_attention(
          inputs[std::size_t(c % sets)].prefill_args(plan, workspace.data()), stream));
    }
    return Status::Ok();
  };
  TIERKV_RETURN_IF_ERROR(enqueue_calls());  // first launches (module load) outside the capture
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  TIERKV_RETURN_IF_ERROR(stream.begin_capture());
  const Status captured = enqueue_calls();
  auto graph = stream.end_capture();
  TIERKV_RETURN_IF_ERROR(captured);
  if (!graph.ok()) return graph.status();

  for (int i = 0; i < opts.warmup; ++i)
    TIERKV_RETURN_IF_ERROR((*graph)->launch(stream));
  std::vector<std::unique_ptr<Event>> events;
  for (int i = 0; i <= opts.reps; ++i) {
    TIERKV_ASSIGN_OR_RETURN(auto e, backend.create_event());
    events.push_back(std::move(e));
  }
  TIERKV_RETURN_IF_ERROR(stream.record(*events[0]));
  for (int i = 0; i < opts.reps; ++i) {
    TIERKV_RETURN_IF_ERROR((*graph)->launch(stream));
    TIERKV_RETURN_IF_ERROR(stream.record(*events[std::size_t(i) + 1]));
  }
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  std::vector<double> us;
  for (int i = 0; i < opts.reps; ++i) {
    TIERKV_ASSIGN_OR_RETURN(
        const double ms, backend.elapsed_ms(*events[std::size_t(i)], *events[std::size_t(i) + 1]));
    us.push_back(ms * 1e3 / calls);
  }

  Measurement m;
  m.chunk = chunk;
  m.prefix = prefix;
  m.flops = prefill_flops(opts.model, chunk, prefix);
  m.us = median(us);
  m.us_min = *std::min_element(us.begin(), us.end());
  m.sets = sets;
  m.calls = calls;
  m.work_items = plan.work_items;
  m.tile_rows = plan.tile_rows;
  m.splits = prefill_kv_splits(plan, spec.num_kv_heads);
  m.balanced_order = plan.balanced_order;
  m.programmatic_launch = plan.programmatic_launch;
  m.workspace_bytes = plan.workspace_bytes;
  auto checked = verify(stream, inputs[0]);
  if (checked.ok()) {
    m.rel_l2_error = *checked;
  } else {
    m.error = checked.status().message();
  }
  return m;
}

}  // namespace tierkv::prefill_bench

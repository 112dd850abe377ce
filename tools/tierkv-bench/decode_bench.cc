#include "decode_bench.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "synth/paged_batch.h"
#include "tierkv/attention.h"

namespace tierkv::bench {
namespace {

constexpr int kMaxSets = 512;
// A bf16 output may differ from the reference by a rounding step; more means a broken kernel.
constexpr double kMaxRelL2 = 2e-2;

// Checks the first sequence of `batch` against the CPU reference and every output for NaN.
Result<double> verify(Stream& stream, const synth::PagedBatch& batch) {
  synth::HostBatch host;
  TIERKV_RETURN_IF_ERROR(batch.download(stream, host));
  const DType t = host.layer.dtype;
  const std::size_t n_out = host.out.size() / dtype_size(t);
  for (std::size_t i = 0; i < n_out; ++i) {
    if (!std::isfinite(load_as_float(host.out.data(), i, t))) {
      return internal_error("decode output element " + std::to_string(i) + " is not finite");
    }
  }
  host.layer.batch = 1;  // the first row of the block table and lengths
  const std::int32_t heads = batch.spec().num_q_heads;
  std::vector<std::uint8_t> ref(std::size_t(heads) * host.layer.head_dim * dtype_size(t));
  decode_attention_reference(host.decode_args(heads, ref.data()));
  double diff2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < ref.size() / dtype_size(t); ++i) {
    const double g = load_as_float(host.out.data(), i, t), r = load_as_float(ref.data(), i, t);
    diff2 += (g - r) * (g - r);
    ref2 += r * r;
  }
  const double rel = std::sqrt(diff2 / std::max(ref2, 1e-30));
  if (!(rel <= kMaxRelL2)) {
    return internal_error("decode output differs from the CPU reference: relative L2 error " +
                          std::to_string(rel));
  }
  return rel;
}

}  // namespace

Result<DecodeMeasurement> measure_decode(Backend& backend, Stream& stream, const Options& opts,
                                         std::int32_t batch_size, std::int32_t kv_tokens) {
  synth::PagedBatchSpec spec = synth::PagedBatchSpec::for_model(
      opts.model, std::vector<std::int32_t>(std::size_t(batch_size), kv_tokens));
  spec.layout = opts.layout;
  TIERKV_ASSIGN_OR_RETURN(const std::size_t free, backend.free_memory());
  const std::size_t set_bytes = spec.device_bytes();
  const std::size_t by_cache =
      opts.rotate_bytes == 0 ? 1 : (opts.rotate_bytes + set_bytes - 1) / set_bytes;
  const std::size_t by_memory = std::max<std::size_t>(1, free / 2 / set_bytes);
  const int sets =
      static_cast<int>(std::clamp<std::size_t>(std::min(by_cache, by_memory), 1, kMaxSets));

  std::vector<synth::PagedBatch> inputs;
  for (int i = 0; i < sets; ++i) {
    spec.seed = opts.seed * 1000003 + static_cast<std::uint64_t>(i);
    TIERKV_ASSIGN_OR_RETURN(synth::PagedBatch b, synth::PagedBatch::create(backend, stream, spec));
    inputs.push_back(std::move(b));
  }
  TIERKV_ASSIGN_OR_RETURN(
      const DecodePlan plan,
      plan_decode_attention(backend.info(), inputs[0].layer(), spec.num_q_heads, spec.seq_lens));
  Buffer workspace;  // calls on one stream run one after another: one workspace serves them all
  if (plan.workspace_bytes > 0) {
    TIERKV_ASSIGN_OR_RETURN(workspace, backend.allocate(MemoryKind::kDevice, plan.workspace_bytes));
  }
  const int calls = (std::max(opts.min_calls, sets) + sets - 1) / sets * sets;
  auto enqueue_calls = [&]() -> Status {
    for (int c = 0; c < calls; ++c) {
      TIERKV_RETURN_IF_ERROR(backend.decode_attention(
          inputs[std::size_t(c % sets)].decode_args(plan, workspace.data()), stream));
    }
    return Status::Ok();
  };

  DecodeMeasurement m;
  m.batch = batch_size;
  m.kv_tokens = kv_tokens;
  m.kv_bytes = spec.kv_bytes_read();
  m.sets = sets;
  m.calls = calls;
  m.splits = plan.num_splits;

  TIERKV_RETURN_IF_ERROR(stream.begin_capture());
  const Status captured = enqueue_calls();
  auto graph = stream.end_capture();
  TIERKV_RETURN_IF_ERROR(captured);
  if (!graph.ok()) return graph.status();
  TIERKV_ASSIGN_OR_RETURN(const Timing tg, time_events(backend, stream, opts.warmup, opts.reps,
                                                       [&] { return (*graph)->launch(stream); }));
  TIERKV_ASSIGN_OR_RETURN(const Timing te,
                          time_events(backend, stream, opts.warmup, opts.reps, enqueue_calls));
  m.us_graph = tg.median_ms * 1e3 / calls;
  m.us_eager = te.median_ms * 1e3 / calls;
  TIERKV_ASSIGN_OR_RETURN(m.rel_l2_error, verify(stream, inputs[0]));
  return m;
}

}  // namespace tierkv::bench

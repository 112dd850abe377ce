#include "decode_bench.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "synth/paged_batch.h"
#include "tierkv/attention.h"

namespace tierkv::bench {
namespace {

constexpr int kMaxSets = 512;
// A bf16 output may differ from the reference by a rounding step; more means a broken kernel.
constexpr double kMaxRelL2 = 2e-2;
// A timed graph replay lasts at least this long (µs at 2.5 TB/s), so events resolve it.
constexpr double kMinReplayUs = 300;
// Sequences checked against the CPU reference per case: the first ones and the longest.
constexpr std::size_t kCheckedSequences = 3;

synth::PagedBatchSpec spec_for(const Options& opts, std::vector<std::int32_t> lens) {
  synth::PagedBatchSpec spec = synth::PagedBatchSpec::for_model(opts.model, std::move(lens));
  spec.layout = opts.layout;
  return spec;
}

// Checks every output for NaN and a few sequences against the CPU reference; returns the worst
// relative L2 error. Only the checked sequences' pages come to the host (a case can hold 16 GiB).
Result<double> verify(Stream& stream, const synth::PagedBatch& batch) {
  const synth::PagedBatchSpec& spec = batch.spec();
  const PagedKvLayer dev = batch.layer();
  const DType t = dev.dtype;
  const std::size_t elem = dtype_size(t);
  std::vector<std::uint8_t> out(batch.out_bytes()), q(batch.q_bytes());
  std::vector<std::int32_t> table(std::size_t(dev.batch) * dev.block_table_stride);
  TIERKV_RETURN_IF_ERROR(stream.copy(out.data(), batch.out(), out.size()));
  TIERKV_RETURN_IF_ERROR(stream.copy(q.data(), batch.q(), q.size()));
  TIERKV_RETURN_IF_ERROR(
      stream.copy(table.data(), dev.block_table, table.size() * sizeof(std::int32_t)));
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  for (std::size_t i = 0; i < out.size() / elem; ++i) {
    if (!std::isfinite(load_as_float(out.data(), i, t))) {
      return internal_error("decode output element " + std::to_string(i) + " is not finite");
    }
  }
  // Uniform batches: the first sequence; ragged ones: the first few and the longest.
  const auto& lens = spec.seq_lens;
  const bool uniform = std::all_of(lens.begin(), lens.end(), [&](auto l) { return l == lens[0]; });
  std::vector<std::size_t> check;
  for (std::size_t b = 0; b < std::min(uniform ? 1 : kCheckedSequences, lens.size()); ++b)
    check.push_back(b);
  const std::size_t longest =
      static_cast<std::size_t>(std::max_element(lens.begin(), lens.end()) - lens.begin());
  if (std::find(check.begin(), check.end(), longest) == check.end()) check.push_back(longest);

  const std::int32_t heads = spec.num_q_heads;
  const std::size_t row_elems = std::size_t(heads) * dev.head_dim;
  const std::size_t page_bytes = std::size_t(dev.strides.page) * elem;
  double worst = 0;
  for (std::size_t b : check) {
    // Sequence b alone, its pages copied to slots 0..n-1 of a compact host pool.
    const std::int32_t len = lens[b];
    const std::int32_t pages = spec.pages_of(len);
    std::vector<std::uint8_t> k(std::size_t(pages) * page_bytes), v(k.size());
    std::vector<std::int32_t> row(static_cast<std::size_t>(pages));
    for (std::int32_t i = 0; i < pages; ++i) {
      const std::size_t id = std::size_t(table[b * dev.block_table_stride + i]);
      TIERKV_RETURN_IF_ERROR(stream.copy(k.data() + i * page_bytes,
                                         static_cast<const std::uint8_t*>(dev.k) + id * page_bytes,
                                         page_bytes));
      TIERKV_RETURN_IF_ERROR(stream.copy(v.data() + i * page_bytes,
                                         static_cast<const std::uint8_t*>(dev.v) + id * page_bytes,
                                         page_bytes));
      row[std::size_t(i)] = i;
    }
    TIERKV_RETURN_IF_ERROR(stream.synchronize());
    DecodeAttentionArgs args;
    args.kv = dev;
    args.kv.k = k.data();
    args.kv.v = v.data();
    args.kv.batch = 1;
    args.kv.block_table = row.data();
    args.kv.block_table_stride = pages;
    args.kv.seq_lens = &len;
    args.q = q.data() + b * row_elems * elem;
    std::vector<std::uint8_t> ref(row_elems * elem);
    args.out = ref.data();
    args.num_q_heads = heads;
    args.sm_scale = 1.0f / std::sqrt(static_cast<float>(dev.head_dim));
    args.plan.batch = 1;
    args.plan.num_q_heads = heads;
    args.plan.num_splits = 1;
    decode_attention_reference(args);
    double diff2 = 0, ref2 = 0;
    for (std::size_t i = 0; i < row_elems; ++i) {
      const double g = load_as_float(out.data(), b * row_elems + i, t);
      const double r = load_as_float(ref.data(), i, t);
      diff2 += (g - r) * (g - r);
      ref2 += r * r;
    }
    const double rel = std::sqrt(diff2 / std::max(ref2, 1e-30));
    if (!(rel <= kMaxRelL2)) {
      return internal_error("decode output of sequence " + std::to_string(b) +
                            " differs from the CPU reference: relative L2 error " +
                            std::to_string(rel));
    }
    worst = std::max(worst, rel);
  }
  return worst;
}

}  // namespace

std::vector<std::int32_t> ragged_lengths(std::int32_t batch, std::int32_t max_len,
                                         std::int32_t page_tokens, std::uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ull + std::uint64_t(batch));
  // Median 1536 tokens, a long tail: most sequences are short, a few carry most of the KV.
  std::lognormal_distribution<double> law(std::log(1536.0), 1.1);
  std::vector<std::int32_t> lens(static_cast<std::size_t>(batch));
  for (auto& l : lens)
    l = static_cast<std::int32_t>(std::clamp(law(rng), 1.0, double(max_len)));
  if (batch >= 1) lens[0] = 1;
  if (batch >= 2) lens[1] = page_tokens + 1;          // one token into its second page
  if (batch >= 3) lens[2] = std::min(max_len, 4095);  // one short of a page boundary
  if (batch >= 4) lens[3] = max_len;                  // the longest possible
  std::shuffle(lens.begin(), lens.end(), rng);
  return lens;
}

std::size_t decode_case_bytes(const Options& opts, const std::vector<std::int32_t>& seq_lens) {
  return spec_for(opts, seq_lens).device_bytes();
}

Result<DecodeMeasurement> measure_decode(Backend& backend, Stream& stream, const Options& opts,
                                         std::int32_t batch_size, std::int32_t kv_tokens) {
  TIERKV_ASSIGN_OR_RETURN(
      DecodeMeasurement m,
      measure_decode(backend, stream, opts,
                     std::vector<std::int32_t>(std::size_t(batch_size), kv_tokens)));
  m.seq_lens.clear();
  return m;
}

Result<DecodeMeasurement> measure_decode(Backend& backend, Stream& stream, const Options& opts,
                                         const std::vector<std::int32_t>& seq_lens) {
  synth::PagedBatchSpec spec = spec_for(opts, seq_lens);
  TIERKV_ASSIGN_OR_RETURN(std::vector<synth::PagedBatch> inputs,
                          synth::rotating_batches(backend, stream, spec, opts.rotate_bytes,
                                                  opts.seed * 1000003, kMaxSets));
  const int sets = static_cast<int>(inputs.size());
  TIERKV_ASSIGN_OR_RETURN(const DecodePlan plan,
                          plan_decode_attention(backend.info(), inputs[0].layer(), spec.num_q_heads,
                                                spec.seq_lens, opts.plan));
  Buffer workspace;  // calls on one stream run one after another: one workspace serves them all
  if (plan.workspace_bytes > 0) {
    TIERKV_ASSIGN_OR_RETURN(workspace, backend.allocate(MemoryKind::kDevice, plan.workspace_bytes));
    // Zeroed once: the last-block merge's counters must start at zero, and every run leaves them
    // so (tierkv/attention.h).
    TIERKV_RETURN_IF_ERROR(stream.fill(workspace.data(), 0, plan.workspace_bytes));
  }
  // Enough calls per replay for the events to resolve it, and every set at least once.
  const double est_us = static_cast<double>(spec.kv_bytes_read()) / 2.5e6 + 3.0;
  const int wanted = std::min(opts.min_calls, static_cast<int>(std::ceil(kMinReplayUs / est_us)));
  const int calls = (std::max({wanted, sets, 1}) + sets - 1) / sets * sets;
  auto enqueue_calls = [&]() -> Status {
    for (int c = 0; c < calls; ++c) {
      TIERKV_RETURN_IF_ERROR(backend.decode_attention(
          inputs[std::size_t(c % sets)].decode_args(plan, workspace.data()), stream));
    }
    return Status::Ok();
  };

  DecodeMeasurement m;
  m.batch = spec.batch();
  m.seq_lens = spec.seq_lens;
  const std::int64_t tokens = std::accumulate(seq_lens.begin(), seq_lens.end(), std::int64_t{0});
  m.kv_tokens = static_cast<std::int32_t>((tokens + m.batch / 2) / m.batch);
  m.kv_bytes = spec.kv_bytes_read();
  m.sets = sets;
  m.calls = calls;
  m.plan = plan;

  // Eager first: the first launch sets kernel attributes, which stays out of the capture.
  TIERKV_ASSIGN_OR_RETURN(const Timing te,
                          time_events(backend, stream, opts.warmup, opts.reps, enqueue_calls));
  TIERKV_RETURN_IF_ERROR(stream.begin_capture());
  const Status captured = enqueue_calls();
  auto graph = stream.end_capture();
  TIERKV_RETURN_IF_ERROR(captured);
  if (!graph.ok()) return graph.status();
  // Poison the outputs the check reads, so that the replays must write them.
  TIERKV_RETURN_IF_ERROR(stream.fill(inputs[0].out(), 0xff, inputs[0].out_bytes()));
  TIERKV_ASSIGN_OR_RETURN(const Timing tg, time_events(backend, stream, opts.warmup, opts.reps,
                                                       [&] { return (*graph)->launch(stream); }));
  m.us_graph = tg.median_ms * 1e3 / calls;
  m.us_eager = te.median_ms * 1e3 / calls;
  TIERKV_ASSIGN_OR_RETURN(m.rel_l2_error, verify(stream, inputs[0]));
  return m;
}

}  // namespace tierkv::bench

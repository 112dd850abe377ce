#include "engine/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/sha256.h"
#include "engine/rope.h"
#include "tierkv/attention.h"
#include "tierkv/prefill.h"

namespace tierkv {
namespace {

std::size_t bytes_of(DType t, std::size_t elems) {
  return elems * dtype_size(t);
}

std::size_t pad16(std::size_t bytes) {
  return (bytes + 15) / 16 * 16;
}

Status fill(Backend& b, Stream& s, Buffer& buf, DType t, std::size_t elems, std::uint64_t seed,
            float lo, float hi) {
  return b.fill_uniform(buf.data(), elems, t, seed, lo, hi, s);
}

Result<Buffer> random_matrix(Backend& b, Stream& s, DType t, std::size_t rows, std::size_t cols,
                             std::uint64_t seed) {
  TIERKV_ASSIGN_OR_RETURN(Buffer m, b.allocate(MemoryKind::kDevice, bytes_of(t, rows * cols)));
  const float bound = std::sqrt(3.0f / float(cols));  // variance 1 / fan_in
  TIERKV_RETURN_IF_ERROR(fill(b, s, m, t, rows * cols, seed, -bound, bound));
  return m;
}

Result<Buffer> random_norm(Backend& b, Stream& s, DType t, std::size_t n, std::uint64_t seed) {
  TIERKV_ASSIGN_OR_RETURN(Buffer m, b.allocate(MemoryKind::kDevice, bytes_of(t, n)));
  TIERKV_RETURN_IF_ERROR(fill(b, s, m, t, n, seed, 0.9f, 1.1f));
  return m;
}

}  // namespace

Result<LlamaWeights> random_llama_weights(Backend& b, Stream& s, const ModelSpec& m,
                                          std::uint64_t seed) {
  TIERKV_RETURN_IF_ERROR(m.validate());
  if (m.hidden <= 0 || m.intermediate <= 0 || m.vocab <= 0) {
    return invalid_argument("random weights: the model needs hidden, intermediate and vocab sizes");
  }
  LlamaWeights w;
  w.spec = m;
  w.dtype = m.kv_dtype;
  {
    Sha256 d;
    d.str("tierkv.random-weights.v1").u64(seed);
    for (std::int32_t v : {m.num_layers, m.num_q_heads, m.num_kv_heads, m.head_dim, m.hidden,
                           m.intermediate, m.vocab})
      d.u32(static_cast<std::uint32_t>(v));
    d.u32(static_cast<std::uint32_t>(m.kv_dtype));
    w.digest = "random-v1:" + digest_hex(d.finish());
  }
  if (!m.identity.weights.empty() && m.identity.weights != w.digest) {
    return invalid_argument("random weights: the spec's identity.weights " + m.identity.weights +
                            " is not these weights' digest " + w.digest);
  }
  w.spec.identity.weights = w.digest;
  const DType t = w.dtype;
  const std::size_t h = std::size_t(m.hidden), d = std::size_t(m.head_dim);
  const std::size_t q = std::size_t(m.num_q_heads) * d, kv = std::size_t(m.num_kv_heads) * d;
  std::uint64_t next = seed * 1000;
  TIERKV_ASSIGN_OR_RETURN(w.embed,
                          b.allocate(MemoryKind::kDevice, bytes_of(t, std::size_t(m.vocab) * h)));
  TIERKV_RETURN_IF_ERROR(fill(b, s, w.embed, t, std::size_t(m.vocab) * h, next++, -1.0f, 1.0f));
  TIERKV_ASSIGN_OR_RETURN(w.final_norm, random_norm(b, s, t, h, next++));
  TIERKV_ASSIGN_OR_RETURN(w.lm_head, random_matrix(b, s, t, std::size_t(m.vocab), h, next++));
  for (std::int32_t l = 0; l < m.num_layers; ++l) {
    LayerWeights lw;
    TIERKV_ASSIGN_OR_RETURN(lw.input_norm, random_norm(b, s, t, h, next++));
    TIERKV_ASSIGN_OR_RETURN(lw.qkv, random_matrix(b, s, t, q + 2 * kv, h, next++));
    TIERKV_ASSIGN_OR_RETURN(lw.o, random_matrix(b, s, t, h, q, next++));
    TIERKV_ASSIGN_OR_RETURN(lw.post_norm, random_norm(b, s, t, h, next++));
    TIERKV_ASSIGN_OR_RETURN(lw.gate_up,
                            random_matrix(b, s, t, 2 * std::size_t(m.intermediate), h, next++));
    TIERKV_ASSIGN_OR_RETURN(lw.down,
                            random_matrix(b, s, t, h, std::size_t(m.intermediate), next++));
    w.layers.push_back(std::move(lw));
  }
  TIERKV_RETURN_IF_ERROR(s.synchronize());
  return w;
}

// ---- the runner ---------------------------------------------------------------------------------

namespace {

// The inputs of one forward step, packed back to back (staged in pinned memory, then copied to
// the device in one copy of exactly `elems` integers).
struct StepIndex {
  std::int32_t* tokens;
  std::int32_t* positions;
  std::int32_t* slots;
  std::int32_t* block_table;
  std::int32_t* seq_lens;
  std::int32_t* q_offsets;
  std::size_t elems;
};

// Layout for n tokens of `batch` sequences whose block-table rows hold `stride` pages.
StepIndex index_at(void* base, std::size_t n, std::size_t batch, std::size_t stride) {
  auto* p = static_cast<std::int32_t*>(base);
  StepIndex ix;
  ix.tokens = p;
  ix.positions = p + n;
  ix.slots = p + 2 * n;
  ix.seq_lens = p + 3 * n;
  ix.q_offsets = ix.seq_lens + batch;
  ix.block_table = ix.q_offsets + batch + 1;
  ix.elems = 3 * n + 2 * batch + 1 + batch * stride;
  return ix;
}

}  // namespace

struct LlamaRunner::State {
  Backend& backend;
  std::unique_ptr<Ops> ops;
  LlamaWeights w;
  PagedKvView kv;
  RunnerOptions opts;
  DType t = DType::kBF16;

  // Activations for up to max_step_tokens tokens.
  Buffer x, xn, qkv, q, attn, tmp, gate_up, act;
  Buffer logits, next, inv_freq, workspace;
  // Step inputs: device copies and their pinned staging.
  Buffer dev_index, host_index, host_out;
  std::unique_ptr<Event> staged;  // the last upload of host_index finished
  StepIndex dev_ix{};             // the current step's inputs on the device

  State(Backend& b, LlamaWeights weights, const PagedKvView& view, const RunnerOptions& o)
      : backend(b), w(std::move(weights)), kv(view), opts(o), t(w.dtype) {}

  const ModelSpec& m() const { return w.spec; }
  std::size_t index_elems() const {
    const std::size_t n = std::size_t(opts.max_step_tokens), b = std::size_t(opts.max_batch);
    return 3 * n + b * std::size_t(opts.max_pages_per_seq) + 2 * b + 1;
  }

  Status allocate();
  // A step's small transfers (its inputs up, the next tokens and logits down) through the SM copy
  // path: a copy-engine transfer on the compute stream would queue behind a load's layers on the
  // copy engines and hold the step up for them. REQUIRES: both buffers hold pad16(bytes).
  Status small_copy(void* dst, const void* src, std::size_t bytes, Stream& s) {
    const CopyRun run{dst, src, pad16(bytes)};
    return backend.copy_runs({&run, 1}, CopyPath::kSmKernel, 1, s);
  }
  Status ensure_workspace(std::size_t bytes, Stream& s);
  Status layer(std::int32_t l, std::int32_t n, const PagedKvLayer& kv_layer, const void* attn_plan,
               bool prefill, Stream& s, const LayerHooks* hooks);
  Status step(std::span<Sequence* const> seqs, std::span<const std::int32_t> tokens, bool prefill,
              Stream& s, std::vector<float>* logits, std::vector<std::int32_t>* next,
              const LayerHooks* hooks = nullptr);
};

Status LlamaRunner::State::allocate() {
  const ModelSpec& s = m();
  const std::size_t n = std::size_t(opts.max_step_tokens), h = std::size_t(s.hidden);
  const std::size_t qd = std::size_t(s.num_q_heads) * s.head_dim;
  const std::size_t qkv_d = qd + 2 * std::size_t(s.num_kv_heads) * s.head_dim;
  const auto dev = [&](Buffer& b, std::size_t bytes) -> Status {
    TIERKV_ASSIGN_OR_RETURN(b, backend.allocate(MemoryKind::kDevice, bytes));
    return Status::Ok();
  };
  TIERKV_RETURN_IF_ERROR(dev(x, bytes_of(t, n * h)));
  TIERKV_RETURN_IF_ERROR(dev(xn, bytes_of(t, n * h)));
  TIERKV_RETURN_IF_ERROR(dev(qkv, bytes_of(t, n * qkv_d)));
  TIERKV_RETURN_IF_ERROR(dev(q, bytes_of(t, n * qd)));
  TIERKV_RETURN_IF_ERROR(dev(attn, bytes_of(t, n * qd)));
  TIERKV_RETURN_IF_ERROR(dev(tmp, bytes_of(t, n * h)));
  TIERKV_RETURN_IF_ERROR(dev(gate_up, bytes_of(t, n * 2 * std::size_t(s.intermediate))));
  TIERKV_RETURN_IF_ERROR(dev(act, bytes_of(t, n * std::size_t(s.intermediate))));
  const std::size_t rows = std::size_t(std::max(opts.max_batch, 1));
  TIERKV_RETURN_IF_ERROR(dev(logits, pad16(rows * std::size_t(s.vocab) * sizeof(float))));
  TIERKV_RETURN_IF_ERROR(dev(next, pad16(rows * sizeof(std::int32_t))));
  // Sizes padded to 16 bytes: the step's transfers go through the SM copy path (small_copy).
  TIERKV_RETURN_IF_ERROR(dev(dev_index, pad16(index_elems() * sizeof(std::int32_t))));
  TIERKV_ASSIGN_OR_RETURN(host_index, backend.allocate(MemoryKind::kPinnedHost,
                                                       pad16(index_elems() * sizeof(std::int32_t))));
  TIERKV_ASSIGN_OR_RETURN(host_out, backend.allocate(MemoryKind::kPinnedHost,
                                                     pad16(rows * std::size_t(s.vocab) * sizeof(float)) +
                                                         pad16(rows * sizeof(std::int32_t))));
  const std::vector<float> freq = rope_inv_freq(s);
  TIERKV_RETURN_IF_ERROR(dev(inv_freq, freq.size() * sizeof(float)));
  TIERKV_ASSIGN_OR_RETURN(staged, backend.create_event());
  TIERKV_ASSIGN_OR_RETURN(auto stream, backend.create_stream());
  TIERKV_RETURN_IF_ERROR(stream->copy(inv_freq.data(), freq.data(), freq.size() * sizeof(float)));
  return stream->synchronize();
}

Status LlamaRunner::State::ensure_workspace(std::size_t bytes, Stream& s) {
  if (bytes <= workspace.size()) return Status::Ok();
  TIERKV_RETURN_IF_ERROR(s.synchronize());  // the old workspace may still be in use
  workspace.reset();
  TIERKV_ASSIGN_OR_RETURN(workspace, backend.allocate(MemoryKind::kDevice, bytes));
  // Zeroed once: decode's last-block merge counts in the workspace and needs its counters zero
  // (tierkv/attention.h).
  return s.fill(workspace.data(), 0, bytes);
}

// One transformer layer over the step's n tokens (rows of x).
Status LlamaRunner::State::layer(std::int32_t l, std::int32_t n, const PagedKvLayer& kv_layer,
                                 const void* attn_plan, bool prefill, Stream& s,
                                 const LayerHooks* hooks) {
  const ModelSpec& ms = m();
  const LayerWeights& lw = w.layers[std::size_t(l)];
  const std::int32_t h = ms.hidden, qd = ms.num_q_heads * ms.head_dim;
  const std::int32_t qkv_d = qd + 2 * ms.num_kv_heads * ms.head_dim;
  TIERKV_RETURN_IF_ERROR(
      ops->rms_norm(x.data(), lw.input_norm.data(), xn.data(), n, h, ms.rms_eps, t, s));
  TIERKV_RETURN_IF_ERROR(ops->linear(xn.data(), lw.qkv.data(), qkv.data(), n, qkv_d, h, t, t, s));

  RopeStoreArgs r;
  r.qkv = qkv.data();
  r.q_out = q.data();
  r.positions = dev_ix.positions;
  r.slots = dev_ix.slots;
  r.kv = KvDestination{const_cast<void*>(kv_layer.k), const_cast<void*>(kv_layer.v),
                       kv_layer.strides, kv_layer.page_tokens};
  r.inv_freq = inv_freq.as<const float>();
  r.tokens = n;
  r.num_q_heads = ms.num_q_heads;
  r.num_kv_heads = ms.num_kv_heads;
  r.head_dim = ms.head_dim;
  r.dtype = t;
  TIERKV_RETURN_IF_ERROR(ops->rope_store(r, s));

  const float scale = 1.0f / std::sqrt(float(ms.head_dim));
  if (hooks != nullptr && hooks->before_attention) TIERKV_RETURN_IF_ERROR(hooks->before_attention(l, s));
  if (prefill) {
    PrefillAttentionArgs a;
    a.kv = kv_layer;
    a.q = q.data();
    a.out = attn.data();
    a.q_offsets = dev_ix.q_offsets;
    a.num_q_heads = ms.num_q_heads;
    a.sm_scale = scale;
    a.plan = *static_cast<const PrefillPlan*>(attn_plan);
    a.workspace = workspace.data();
    TIERKV_RETURN_IF_ERROR(backend.prefill_attention(a, s));
  } else {
    DecodeAttentionArgs a;
    a.kv = kv_layer;
    a.q = q.data();
    a.out = attn.data();
    a.num_q_heads = ms.num_q_heads;
    a.sm_scale = scale;
    a.plan = *static_cast<const DecodePlan*>(attn_plan);
    a.workspace = workspace.data();
    TIERKV_RETURN_IF_ERROR(backend.decode_attention(a, s));
  }
  TIERKV_RETURN_IF_ERROR(ops->linear(attn.data(), lw.o.data(), tmp.data(), n, h, qd, t, t, s));
  TIERKV_RETURN_IF_ERROR(ops->add(x.data(), tmp.data(), std::size_t(n) * h, t, s));
  TIERKV_RETURN_IF_ERROR(
      ops->rms_norm(x.data(), lw.post_norm.data(), xn.data(), n, h, ms.rms_eps, t, s));
  TIERKV_RETURN_IF_ERROR(ops->linear(xn.data(), lw.gate_up.data(), gate_up.data(), n,
                                     2 * ms.intermediate, h, t, t, s));
  TIERKV_RETURN_IF_ERROR(ops->silu_mul(gate_up.data(), act.data(), n, ms.intermediate, t, s));
  TIERKV_RETURN_IF_ERROR(
      ops->linear(act.data(), lw.down.data(), tmp.data(), n, h, ms.intermediate, t, t, s));
  TIERKV_RETURN_IF_ERROR(ops->add(x.data(), tmp.data(), std::size_t(n) * h, t, s));
  if (hooks != nullptr && hooks->after_layer) return hooks->after_layer(l, s);
  return Status::Ok();
}

// A forward step. Prefill: one sequence, all of `tokens`. Decode: one token per sequence.
Status LlamaRunner::State::step(std::span<Sequence* const> seqs,
                                std::span<const std::int32_t> tokens, bool prefill, Stream& s,
                                std::vector<float>* logits_out,
                                std::vector<std::int32_t>* next_out, const LayerHooks* hooks) {
  const ModelSpec& ms = m();
  const std::int32_t n = std::int32_t(tokens.size()), batch = std::int32_t(seqs.size());
  const std::int32_t page = ms.page_tokens;
  // Every check before anything is queued: a refused step changes nothing.
  std::int32_t table_stride = 1;
  for (std::int32_t b = 0; b < batch; ++b) {
    const Sequence& sq = *seqs[std::size_t(b)];
    const std::int32_t end = sq.len + (prefill ? n : 1);
    if (end > ms.max_positions) {
      return invalid_argument("sequence " + std::to_string(b) + " would reach position " +
                              std::to_string(end) + ", beyond the model's " +
                              std::to_string(ms.max_positions));
    }
    if (std::int64_t(sq.pages.size()) * page < end) {
      return invalid_argument("sequence " + std::to_string(b) + " has pages for " +
                              std::to_string(sq.pages.size() * std::size_t(page)) +
                              " tokens, needs " + std::to_string(end));
    }
    table_stride = std::max(table_stride, (end + page - 1) / page);
    for (std::int32_t p = 0; p < (end + page - 1) / page; ++p) {
      const std::int32_t id = sq.pages[std::size_t(p)];
      if (id < 0 || id >= kv.num_pages) {
        return invalid_argument("sequence " + std::to_string(b) + ": page id " +
                                std::to_string(id) + " outside [0, " +
                                std::to_string(kv.num_pages) + ")");
      }
    }
  }
  if (table_stride > opts.max_pages_per_seq)
    return invalid_argument("a sequence needs more pages than max_pages_per_seq");
  for (std::int32_t id : tokens) {
    if (id < 0 || id >= ms.vocab) {
      return invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary (" +
                              std::to_string(ms.vocab) + ")");
    }
  }

  // The previous step's upload has left host_index. Its error, if any, was that step's to report
  // (through its stream): here only its completion matters.
  staged->synchronize().ignore();
  const StepIndex ix =
      index_at(host_index.data(), std::size_t(n), std::size_t(batch), std::size_t(table_stride));
  std::memcpy(ix.tokens, tokens.data(), tokens.size() * sizeof(std::int32_t));
  for (std::int32_t i = 0; i < n; ++i) {
    const Sequence& sq = *seqs[prefill ? 0 : std::size_t(i)];
    const std::int32_t pos = prefill ? sq.len + i : sq.len;
    ix.positions[i] = pos;
    ix.slots[i] = sq.pages[std::size_t(pos / page)] * page + pos % page;
  }
  ix.q_offsets[0] = 0;
  std::vector<std::int32_t> q_lens(static_cast<std::size_t>(batch)),
      seq_lens(static_cast<std::size_t>(batch));
  for (std::int32_t b = 0; b < batch; ++b) {
    const Sequence& sq = *seqs[std::size_t(b)];
    q_lens[std::size_t(b)] = prefill ? n : 1;
    seq_lens[std::size_t(b)] = ix.seq_lens[b] = sq.len + q_lens[std::size_t(b)];
    ix.q_offsets[b + 1] = ix.q_offsets[b] + q_lens[std::size_t(b)];
    const std::int32_t used = (seq_lens[std::size_t(b)] + page - 1) / page;
    std::memcpy(ix.block_table + std::size_t(b) * table_stride, sq.pages.data(),
                std::size_t(used) * sizeof(std::int32_t));
  }
  dev_ix =
      index_at(dev_index.data(), std::size_t(n), std::size_t(batch), std::size_t(table_stride));
  TIERKV_RETURN_IF_ERROR(
      small_copy(dev_index.data(), host_index.data(), ix.elems * sizeof(std::int32_t), s));
  TIERKV_RETURN_IF_ERROR(s.record(*staged));

  PagedKvView view = kv;
  view.block_table = dev_ix.block_table;
  view.seq_lens = dev_ix.seq_lens;
  view.block_table_stride = table_stride;
  view.batch = batch;
  PrefillPlan prefill_plan;
  DecodePlan decode_plan;
  const DeviceInfo& dev = backend.info();
  if (prefill) {
    TIERKV_ASSIGN_OR_RETURN(
        prefill_plan, plan_prefill_attention(dev, view.layer(0), ms.num_q_heads, q_lens, seq_lens));
    TIERKV_RETURN_IF_ERROR(ensure_workspace(prefill_plan.workspace_bytes, s));
  } else {
    TIERKV_ASSIGN_OR_RETURN(decode_plan,
                            plan_decode_attention(dev, view.layer(0), ms.num_q_heads, seq_lens));
    TIERKV_RETURN_IF_ERROR(ensure_workspace(decode_plan.workspace_bytes, s));
    // The workspace is also prefill's scratch and that of decode plans of other batch sizes,
    // which may lie over the last-block merge's counters: zero them once per step (the layers'
    // runs then leave them zero for each other).
    if (decode_plan.workspace_counter_bytes > 0) {
      TIERKV_RETURN_IF_ERROR(s.fill(workspace.data(), 0, decode_plan.workspace_counter_bytes));
    }
  }
  const void* plan =
      prefill ? static_cast<const void*>(&prefill_plan) : static_cast<const void*>(&decode_plan);

  TIERKV_RETURN_IF_ERROR(ops->embed(dev_ix.tokens, w.embed.data(), x.data(), n, ms.hidden, t, s));
  for (std::int32_t l = 0; l < ms.num_layers; ++l)
    TIERKV_RETURN_IF_ERROR(layer(l, n, view.layer(l), plan, prefill, s, hooks));
  for (Sequence* seq : seqs)
    seq->len += prefill ? n : 1;
  if (logits_out == nullptr && next_out == nullptr) return Status::Ok();

  // Logits of the last token of each sequence: the last row for a prefill chunk, every row for
  // decode.
  const std::int32_t rows = prefill ? 1 : n;
  const std::size_t first = prefill ? std::size_t(n - 1) : 0;
  const void* last = x.as<std::uint8_t>() + bytes_of(t, first * std::size_t(ms.hidden));
  TIERKV_RETURN_IF_ERROR(
      ops->rms_norm(last, w.final_norm.data(), xn.data(), rows, ms.hidden, ms.rms_eps, t, s));
  TIERKV_RETURN_IF_ERROR(ops->linear(xn.data(), w.lm_head_weights(), logits.data(), rows, ms.vocab,
                                     ms.hidden, t, DType::kF32, s));
  TIERKV_RETURN_IF_ERROR(
      ops->argmax(logits.as<const float>(), rows, ms.vocab, next.as<std::int32_t>(), s));
  const std::size_t logit_bytes = std::size_t(rows) * ms.vocab * sizeof(float);
  auto* host_logits = host_out.as<float>();
  auto* host_next = reinterpret_cast<std::int32_t*>(host_out.as<std::uint8_t>() + pad16(logit_bytes));
  if (logits_out != nullptr) TIERKV_RETURN_IF_ERROR(small_copy(host_logits, logits.data(), logit_bytes, s));
  TIERKV_RETURN_IF_ERROR(
      small_copy(host_next, next.data(), std::size_t(rows) * sizeof(std::int32_t), s));
  TIERKV_RETURN_IF_ERROR(s.synchronize());
  if (logits_out != nullptr)
    logits_out->assign(host_logits, host_logits + std::size_t(rows) * ms.vocab);
  if (next_out != nullptr) next_out->assign(host_next, host_next + rows);
  return Status::Ok();
}

Result<std::unique_ptr<LlamaRunner>> LlamaRunner::create(Backend& backend, LlamaWeights weights,
                                                         const PagedKvView& kv,
                                                         const RunnerOptions& o) {
  const ModelSpec& m = weights.spec;
  TIERKV_RETURN_IF_ERROR(m.validate());
  if (kv.num_layers() != m.num_layers || kv.num_kv_heads != m.num_kv_heads ||
      kv.head_dim != m.head_dim || kv.page_tokens != m.page_tokens || kv.dtype != weights.dtype) {
    return invalid_argument(
        "runner: the KV view does not match the model (layers, KV heads, head dim, page size, "
        "dtype)");
  }
  if (weights.layers.size() != std::size_t(m.num_layers))
    return invalid_argument("runner: weights for another depth");
  if (kv.num_pages <= 0)
    return invalid_argument("runner: the KV view does not say how many pages it has (num_pages)");
  if (weights.digest.empty() || m.identity.weights != weights.digest) {
    return invalid_argument(
        "runner: the weights carry no digest, or the spec's identity.weights is not it (make "
        "weights with random_llama_weights or load_llama_weights)");
  }
  if (o.max_step_tokens < 1 || o.max_batch < 1 || o.max_pages_per_seq < 1) {
    return invalid_argument(
        "runner: max_step_tokens, max_batch and max_pages_per_seq must be positive");
  }
  auto st = std::make_unique<State>(backend, std::move(weights), kv, o);
  TIERKV_ASSIGN_OR_RETURN(st->ops, create_ops(backend));
  TIERKV_RETURN_IF_ERROR(st->allocate());
  return std::unique_ptr<LlamaRunner>(new LlamaRunner(std::move(st)));
}

LlamaRunner::LlamaRunner(std::unique_ptr<State> s) : state_(std::move(s)) {}
LlamaRunner::~LlamaRunner() = default;

const ModelSpec& LlamaRunner::spec() const {
  return state_->m();
}

Status LlamaRunner::prefill_chunk(Sequence& seq, std::span<const std::int32_t> tokens,
                                  Stream& stream, std::vector<float>* logits,
                                  const LayerHooks* hooks) {
  TIERKV_RETURN_IF_ERROR(check_chunk(tokens));
  Sequence* one[] = {&seq};
  return state_->step(one, tokens, true, stream, logits, nullptr, hooks);
}

Status LlamaRunner::prefill_chunk_next(Sequence& seq, std::span<const std::int32_t> tokens,
                                       Stream& stream, std::int32_t* next,
                                       const LayerHooks* hooks) {
  TIERKV_RETURN_IF_ERROR(check_chunk(tokens));
  Sequence* one[] = {&seq};
  std::vector<std::int32_t> out;
  TIERKV_RETURN_IF_ERROR(state_->step(one, tokens, true, stream, nullptr, &out, hooks));
  if (next != nullptr) *next = out.at(0);
  return Status::Ok();
}

Status LlamaRunner::check_chunk(std::span<const std::int32_t> tokens) const {
  if (tokens.empty()) return invalid_argument("prefill: empty chunk");
  if (std::int64_t(tokens.size()) > state_->opts.max_step_tokens) {
    return invalid_argument("prefill: a chunk of " + std::to_string(tokens.size()) +
                            " tokens exceeds max_step_tokens (" +
                            std::to_string(state_->opts.max_step_tokens) + ")");
  }
  return Status::Ok();
}

std::int32_t LlamaRunner::max_step_tokens() const {
  return state_->opts.max_step_tokens;
}

Status LlamaRunner::prefill(Sequence& seq, std::span<const std::int32_t> tokens,
                            std::int32_t chunk_tokens, Stream& stream, std::vector<float>* logits) {
  if (tokens.empty()) return invalid_argument("prefill: empty prompt");
  if (chunk_tokens < 1) return invalid_argument("prefill: chunk_tokens must be positive");
  for (std::size_t at = 0; at < tokens.size(); at += std::size_t(chunk_tokens)) {
    const std::size_t n = std::min(tokens.size() - at, std::size_t(chunk_tokens));
    const bool last = at + n == tokens.size();
    TIERKV_RETURN_IF_ERROR(
        prefill_chunk(seq, tokens.subspan(at, n), stream, last ? logits : nullptr));
  }
  return Status::Ok();
}

Status LlamaRunner::decode(std::span<Sequence* const> seqs, std::span<const std::int32_t> tokens,
                           Stream& stream, std::vector<float>* logits,
                           std::vector<std::int32_t>* next) {
  if (seqs.empty() || seqs.size() != tokens.size()) {
    return invalid_argument("decode: one token per sequence, and at least one sequence");
  }
  if (std::int64_t(seqs.size()) > state_->opts.max_batch ||
      std::int64_t(seqs.size()) > state_->opts.max_step_tokens) {
    return invalid_argument("decode: a batch of " + std::to_string(seqs.size()) +
                            " exceeds max_batch");
  }
  return state_->step(seqs, tokens, false, stream, logits, next);
}

}  // namespace tierkv

// The reference Llama-3.1 runner: token embedding, RMSNorm, rotary embedding with Llama 3 scaling,
// grouped-query attention over paged KV, SwiGLU MLP, final norm, LM head, greedy sampling.
//
// Its purpose is honest end-to-end numbers and a correctness oracle for the cache: the compute is
// the real model's (the same GEMMs, attention and memory traffic), with weights read from
// safetensors or drawn at random from a seed. KV lives in the pages of a PagedKvView (the page
// pool's, or an engine's) in the layout the view describes.
//
// Ownership: the runner owns its weights and scratch buffers; it borrows the Backend and the KV
// view, which must outlive it. Thread safety: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/paged_kv.h"
#include "tierkv/warm_prefill.h"

namespace tierkv {

struct LayerWeights {
  Buffer input_norm;  // [hidden]
  Buffer qkv;         // [(q_heads + 2 kv_heads) * head_dim][hidden]: q_proj, k_proj, v_proj rows
  Buffer o;           // [hidden][q_heads * head_dim]
  Buffer post_norm;   // [hidden]
  Buffer gate_up;     // [2 * intermediate][hidden]: gate_proj rows, then up_proj rows
  Buffer down;        // [hidden][intermediate]
};

struct LlamaWeights {
  // The model; spec.identity.weights equals `digest` (the loaders set it), so spec is what a
  // Cache of this model's KV is created with.
  ModelSpec spec;
  // What the weights are, derived from their bytes as loaded: "xxh3-128:<hex>" over every tensor
  // of a checkpoint in load order, or "random-v1:<hex>" naming the seed and shapes of random
  // weights. Equal digests mean the same weights.
  std::string digest;
  DType dtype = DType::kBF16;  // of weights and activations
  Buffer embed;                // [vocab][hidden]
  Buffer final_norm;           // [hidden]
  Buffer lm_head;              // [vocab][hidden]; empty when tied to `embed`
  std::vector<LayerWeights> layers;

  const void* lm_head_weights() const { return lm_head.empty() ? embed.data() : lm_head.data(); }
};

// Weights drawn uniformly with a seed, on the backend's device: linear layers with variance
// 1 / fan_in, norms near 1, embeddings in [-1, 1). InvalidArgument when spec.identity.weights is
// set and is not the digest of these weights.
Result<LlamaWeights> random_llama_weights(Backend& backend, Stream& stream, const ModelSpec& spec,
                                          std::uint64_t seed);

// A sequence as the runner sees it: the pages that hold (and will hold) its KV, and how many
// tokens are in them.
struct Sequence {
  std::vector<std::int32_t> pages;
  std::int32_t len = 0;
};

struct RunnerOptions {
  std::int32_t max_step_tokens =
      2048;                      // tokens per forward step (a prefill chunk or a decode batch)
  std::int32_t max_batch = 128;  // sequences per decode step
  std::int32_t max_pages_per_seq = 8192;
};

class LlamaRunner {
 public:
  // InvalidArgument when the view does not match the model (layers, heads, head dim, dtype) or
  // does not say how many pages it has (num_pages), or the weights carry no digest.
  static Result<std::unique_ptr<LlamaRunner>> create(Backend& backend, LlamaWeights weights,
                                                     const PagedKvView& kv,
                                                     const RunnerOptions& options);
  ~LlamaRunner();

  // Runs tokens [seq.len, seq.len + tokens.size()) of one sequence, writes their KV into its pages
  // and advances seq.len. With `logits`, fills it with the last token's logits (vocab floats).
  // InvalidArgument for an empty chunk, token ids outside the vocabulary, a chunk longer than
  // max_step_tokens, pages that do not cover the tokens, page ids outside the view's
  // [0, num_pages), or positions past max_positions. A refused step changes nothing.
  // With `hooks`, calls hooks->before_attention(l, stream) right before layer l's attention is
  // queued (after the layer's own K and V are stored), and hooks->after_layer(l, stream) after the
  // layer (tierkv/warm_prefill.h): a caller makes the attention wait for KV that arrives from
  // elsewhere. A hook's error stops the step (the tokens' KV is then incomplete).
  Status prefill_chunk(Sequence& seq, std::span<const std::int32_t> tokens, Stream& stream,
                       std::vector<float>* logits, const LayerHooks* hooks = nullptr);
  // Like prefill_chunk, and fills `next` with the greedy next token (without copying the logits
  // back).
  Status prefill_chunk_next(Sequence& seq, std::span<const std::int32_t> tokens, Stream& stream,
                            std::int32_t* next, const LayerHooks* hooks = nullptr);

  // prefill_chunk over `tokens` in chunks of `chunk_tokens`.
  Status prefill(Sequence& seq, std::span<const std::int32_t> tokens, std::int32_t chunk_tokens,
                 Stream& stream, std::vector<float>* logits);

  // One decode step: sequence i takes tokens[i] at position seqs[i]->len. Fills `logits` (batch x
  // vocab) and `next` (greedy choice per sequence) when given.
  Status decode(std::span<Sequence* const> seqs, std::span<const std::int32_t> tokens,
                Stream& stream, std::vector<float>* logits, std::vector<std::int32_t>* next);

  const ModelSpec& spec() const;
  std::int32_t max_step_tokens() const;

 private:
  Status check_chunk(std::span<const std::int32_t> tokens) const;
  struct State;
  explicit LlamaRunner(std::unique_ptr<State> s);
  std::unique_ptr<State> state_;
};

}  // namespace tierkv

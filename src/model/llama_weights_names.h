// The Hugging Face Llama checkpoint layout: which tensors a model of a given ModelSpec holds, under
// which names and with which shapes, and a check of a checkpoint against it.
//
// Shapes are [out_features, in_features] for projections, as the checkpoints store them:
//   model.embed_tokens.weight                     [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight       [hidden]
//   model.layers.{i}.self_attn.q_proj.weight      [q_heads * head_dim, hidden]
//   model.layers.{i}.self_attn.k_proj.weight      [kv_heads * head_dim, hidden]  (v_proj alike)
//   model.layers.{i}.self_attn.o_proj.weight      [hidden, q_heads * head_dim]
//   model.layers.{i}.post_attention_layernorm.weight [hidden]
//   model.layers.{i}.mlp.gate_proj.weight         [intermediate, hidden]  (up_proj alike)
//   model.layers.{i}.mlp.down_proj.weight         [hidden, intermediate]
//   model.norm.weight                             [hidden]
//   lm_head.weight                                [vocab, hidden]; absent when the output
//                                                 projection is tied to the embeddings
//
// Thread safety: free functions over values; safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/safetensors.h"
#include "tierkv/model_spec.h"
#include "tierkv/status.h"

namespace tierkv {

inline constexpr std::string_view kLlamaLmHead = "lm_head.weight";

// A tensor of the layout: its name and expected shape.
struct LlamaTensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
};

// Every tensor of a checkpoint for `spec`, in the order above: embeddings, then each layer's, then
// the final norm, and lm_head last (the one a tied checkpoint leaves out).
// REQUIRES: spec.hidden, spec.intermediate and spec.vocab are positive.
std::vector<LlamaTensorSpec> llama_tensor_specs(const ModelSpec& spec);

// Views of one decoder layer's weights.
struct LlamaCheckpointLayer {
  TensorView input_norm;  // input_layernorm
  TensorView q_proj, k_proj, v_proj, o_proj;
  TensorView post_attn_norm;  // post_attention_layernorm
  TensorView gate_proj, up_proj, down_proj;
};

// Views of a whole checkpoint; they point into the SafetensorsSet and live as long as it does.
struct LlamaCheckpoint {
  TensorView embed_tokens;
  std::vector<LlamaCheckpointLayer> layers;  // spec.num_layers of them
  TensorView final_norm;                     // model.norm
  TensorView lm_head;                        // the embed_tokens view when tied
  bool tied_embeddings = false;              // the checkpoint has no lm_head.weight
};

// Finds every tensor of the layout in `weights` and checks its shape and that its dtype is
// `expected`. Reports all problems at once: InvalidArgument whose message lists each missing
// tensor, wrong shape and wrong or unsupported dtype, one per line (at most 20 lines, then a count
// of the rest). Tensors outside the layout (say rotary_emb.inv_freq) are ignored.
// InvalidArgument as well when `spec` fails validate() or lacks hidden, intermediate or vocab.
Result<LlamaCheckpoint> check_llama_weights(const SafetensorsSet& weights, const ModelSpec& spec,
                                            DType expected);

}  // namespace tierkv

#include "model/llama_weights_names.h"

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace tierkv {
namespace {

using Dims = std::vector<std::int64_t>;

std::int64_t q_width(const ModelSpec& s) {
  return static_cast<std::int64_t>(s.num_q_heads) * s.head_dim;
}
std::int64_t kv_width(const ModelSpec& s) {
  return static_cast<std::int64_t>(s.num_kv_heads) * s.head_dim;
}

// Shapes, [out_features, in_features] for projections.
Dims norm_shape(const ModelSpec& s) {
  return {s.hidden};
}
Dims q_shape(const ModelSpec& s) {
  return {q_width(s), s.hidden};
}
Dims kv_shape(const ModelSpec& s) {
  return {kv_width(s), s.hidden};
}
Dims o_shape(const ModelSpec& s) {
  return {s.hidden, q_width(s)};
}
Dims gate_up_shape(const ModelSpec& s) {
  return {s.intermediate, s.hidden};
}
Dims down_shape(const ModelSpec& s) {
  return {s.hidden, s.intermediate};
}

// One tensor of a decoder layer: its name after "model.layers.{i}.", where its view goes, and its
// shape.
struct LayerSlot {
  std::string_view suffix;
  TensorView LlamaCheckpointLayer::*field;
  Dims (*shape)(const ModelSpec&);
};

constexpr LayerSlot kLayerSlots[] = {
    {"input_layernorm.weight", &LlamaCheckpointLayer::input_norm, norm_shape},
    {"self_attn.q_proj.weight", &LlamaCheckpointLayer::q_proj, q_shape},
    {"self_attn.k_proj.weight", &LlamaCheckpointLayer::k_proj, kv_shape},
    {"self_attn.v_proj.weight", &LlamaCheckpointLayer::v_proj, kv_shape},
    {"self_attn.o_proj.weight", &LlamaCheckpointLayer::o_proj, o_shape},
    {"post_attention_layernorm.weight", &LlamaCheckpointLayer::post_attn_norm, norm_shape},
    {"mlp.gate_proj.weight", &LlamaCheckpointLayer::gate_proj, gate_up_shape},
    {"mlp.up_proj.weight", &LlamaCheckpointLayer::up_proj, gate_up_shape},
    {"mlp.down_proj.weight", &LlamaCheckpointLayer::down_proj, down_shape},
};

// Collects problem lines, keeping the first kMaxLines.
class Problems {
 public:
  static constexpr std::size_t kMaxLines = 20;

  void add(std::string line) {
    if (lines_.size() < kMaxLines) lines_.push_back(std::move(line));
    ++count_;
  }
  bool empty() const { return count_ == 0; }

  Status to_status(std::string_view what) const {
    std::string m = std::string(what) + " (" + std::to_string(count_) + " problems):";
    for (const std::string& line : lines_)
      m += "\n  " + line;
    if (count_ > lines_.size())
      m += "\n  ... and " + std::to_string(count_ - lines_.size()) + " more";
    return invalid_argument(std::move(m));
  }

 private:
  std::vector<std::string> lines_;
  std::size_t count_ = 0;
};

// The view of `want` in `weights`, with any problem noted; an empty view when it is unusable.
TensorView take(const SafetensorsSet& weights, const LlamaTensorSpec& want, DType expected,
                Problems& problems) {
  Result<TensorView> t = weights.tensor(want.name);
  if (!t.ok()) {
    problems.add(t.status().code() == StatusCode::kNotFound ? "missing " + want.name
                                                            : t.status().message());
    return {};
  }
  std::string wrong;
  if (!std::ranges::equal(t->shape, want.shape)) {
    wrong = "shape " + format_shape(t->shape) + ", expected " + format_shape(want.shape);
  }
  if (t->dtype != expected) {
    wrong += (wrong.empty() ? "" : "; ") + std::string("dtype ") +
             std::string(dtype_name(t->dtype)) + ", expected " + std::string(dtype_name(expected));
  }
  if (!wrong.empty()) problems.add(want.name + ": " + wrong);
  return *t;
}

Status check_spec(const ModelSpec& spec) {
  TIERKV_RETURN_IF_ERROR(spec.validate());
  if (spec.hidden <= 0 || spec.intermediate <= 0 || spec.vocab <= 0) {
    return invalid_argument("ModelSpec '" + spec.name +
                            "' needs positive hidden, intermediate and vocab to name its weights");
  }
  return Status::Ok();
}

}  // namespace

std::vector<LlamaTensorSpec> llama_tensor_specs(const ModelSpec& spec) {
  std::vector<LlamaTensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {spec.vocab, spec.hidden}});
  for (std::int32_t i = 0; i < spec.num_layers; ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    for (const LayerSlot& slot : kLayerSlots) {
      specs.push_back({prefix + std::string(slot.suffix), slot.shape(spec)});
    }
  }
  specs.push_back({"model.norm.weight", norm_shape(spec)});
  specs.push_back({std::string(kLlamaLmHead), {spec.vocab, spec.hidden}});
  return specs;
}

Result<LlamaCheckpoint> check_llama_weights(const SafetensorsSet& weights, const ModelSpec& spec,
                                            DType expected) {
  TIERKV_RETURN_IF_ERROR(check_spec(spec));
  // Taken in the order llama_tensor_specs() lists them.
  const std::vector<LlamaTensorSpec> specs = llama_tensor_specs(spec);
  auto want = specs.begin();
  Problems problems;
  auto take_next = [&] { return take(weights, *want++, expected, problems); };

  LlamaCheckpoint w;
  w.embed_tokens = take_next();
  w.layers.resize(static_cast<std::size_t>(spec.num_layers));
  for (LlamaCheckpointLayer& layer : w.layers) {
    for (const LayerSlot& slot : kLayerSlots)
      layer.*slot.field = take_next();
  }
  w.final_norm = take_next();
  w.tied_embeddings = !weights.contains(kLlamaLmHead);
  w.lm_head = w.tied_embeddings ? w.embed_tokens : take_next();
  if (!problems.empty()) {
    return problems.to_status("weights in " + weights.dir() + " do not fit Llama model '" +
                              spec.name + "' in " + std::string(dtype_name(expected)));
  }
  return w;
}

}  // namespace tierkv

#include "tierkv/model_spec.h"

#include <string>

#include "core/sha256.h"

namespace tierkv {
namespace {

ModelSpec llama_31_8b() {
  ModelSpec s;
  s.name = "llama-3.1-8b";
  s.num_layers = 32;
  s.num_q_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.kv_dtype = DType::kBF16;
  s.hidden = 4096;
  s.intermediate = 14336;
  s.vocab = 128256;
  s.max_positions = 131072;
  s.rms_eps = 1e-5f;
  s.rope_theta = 500000.0f;
  s.rope_scaling = RopeScaling{8.0f, 1.0f, 4.0f, 8192};
  s.identity.model = "meta-llama/Llama-3.1-8B";
  return s;
}

ModelSpec tiny() {
  ModelSpec s;
  s.name = "tiny";
  s.num_layers = 2;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.kv_dtype = DType::kBF16;
  s.hidden = 256;
  s.intermediate = 512;
  s.vocab = 512;
  s.max_positions = 4096;
  s.rms_eps = 1e-5f;
  s.rope_theta = 500000.0f;
  s.rope_scaling = RopeScaling{8.0f, 1.0f, 4.0f, 1024};
  s.identity.model = "tierkv/tiny";
  return s;
}

Status field_error(std::string_view field, std::string_view why) {
  return invalid_argument("ModelSpec." + std::string(field) + " " + std::string(why));
}

}  // namespace

std::string digest_hex(const Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * d.size());
  for (std::uint8_t b : d) {
    s += kHex[b >> 4];
    s += kHex[b & 15];
  }
  return s;
}

Status ModelSpec::validate() const {
  const auto in = [](std::int32_t v, std::int32_t lo, std::int32_t hi) { return v >= lo && v <= hi; };
  if (!in(num_layers, 1, kMaxLayers)) return field_error("num_layers", "must be in [1, 1024]");
  if (!in(num_kv_heads, 1, kMaxHeads)) return field_error("num_kv_heads", "must be in [1, 1024]");
  if (!in(num_q_heads, 1, kMaxHeads) || num_q_heads % num_kv_heads != 0) {
    return field_error("num_q_heads", "must be a multiple of num_kv_heads in [1, 1024]");
  }
  if (!in(head_dim, 8, kMaxHeadDim) || head_dim % 8 != 0) {
    return field_error("head_dim", "must be a multiple of 8 in [8, 512]");
  }
  if (kv_dtype != DType::kBF16 && kv_dtype != DType::kF16) {
    return field_error("kv_dtype", "must be bf16 or f16 (got value " +
                                       std::to_string(static_cast<int>(kv_dtype)) + ")");
  }
  if (!in(page_tokens, 1, kMaxPageTokens)) return field_error("page_tokens", "must be in [1, 1024]");
  if (!in(hidden, 0, kMaxHidden)) return field_error("hidden", "must be in [0, 131072]");
  if (!in(intermediate, 0, kMaxIntermediate))
    return field_error("intermediate", "must be in [0, 524288]");
  if (!in(vocab, 0, kMaxVocab)) return field_error("vocab", "must be in [0, 4194304]");
  if (!in(max_positions, 0, kMaxPositions))
    return field_error("max_positions", "must be in [0, 16777216]");
  if (identity.tp_size <= 0 || identity.tp_rank < 0 || identity.tp_rank >= identity.tp_size) {
    return field_error("identity.tp_rank", "must be in [0, tp_size)");
  }
  if (identity.model.empty()) {
    return field_error("identity.model", "must name the model (e.g. \"meta-llama/Llama-3.1-8B\")");
  }
  for (const std::string* str :
       {&name, &identity.model, &identity.revision, &identity.weights, &identity.tokenizer}) {
    if (str->size() > kMaxIdentityString)
      return field_error("identity", "strings must be at most 4096 bytes");
  }
  return Status::Ok();
}

Status require_weights_digest(const ModelIdentity& identity) {
  if (identity.weights.empty()) {
    return invalid_argument(
        "ModelSpec.identity.weights is empty: the cache needs a digest of the weights that "
        "produce the KV (the runner's LlamaWeights::digest, or a content hash of your checkpoint), "
        "so that KV of other weights of the same shape is never served");
  }
  return Status::Ok();
}

Digest ModelSpec::identity_digest() const {
  Sha256 h;
  h.str("tierkv.model-identity.v2");
  h.str(identity.model).str(identity.revision).str(identity.weights).str(identity.tokenizer);
  h.u64(identity.epoch);
  h.u32(static_cast<std::uint32_t>(identity.tp_rank))
      .u32(static_cast<std::uint32_t>(identity.tp_size));
  h.u32(identity.layout_version);
  for (std::int32_t v : {num_layers, num_q_heads, num_kv_heads, head_dim, page_tokens, hidden,
                         intermediate, vocab, max_positions}) {
    h.u32(static_cast<std::uint32_t>(v));
  }
  h.u32(static_cast<std::uint32_t>(kv_dtype));
  h.f32(rms_eps).f32(rope_theta);
  h.f32(rope_scaling.factor).f32(rope_scaling.low_freq_factor).f32(rope_scaling.high_freq_factor);
  h.u32(static_cast<std::uint32_t>(rope_scaling.original_max_positions));
  return h.finish();
}

Result<ModelSpec> model_preset(std::string_view name) {
  if (name == "llama-3.1-8b") return llama_31_8b();
  if (name == "tiny") return tiny();
  std::string known;
  for (std::string_view n : model_preset_names())
    known += (known.empty() ? "" : ", ") + std::string(n);
  return invalid_argument("unknown model preset '" + std::string(name) + "' (known: " + known +
                          ")");
}

std::vector<std::string_view> model_preset_names() {
  return {"llama-3.1-8b", "tiny"};
}

}  // namespace tierkv

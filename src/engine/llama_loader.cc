#include "engine/llama_loader.h"

#include <cstring>
#include <string>

#include "model/llama_weights_names.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace tierkv {
namespace {

// Copies `parts` (host views) back to back into one new device buffer, hashing them into `digest`.
Result<Buffer> upload(Backend& backend, Stream& stream, XXH3_state_t& digest,
                      std::initializer_list<const TensorView*> parts) {
  std::size_t bytes = 0;
  for (const TensorView* p : parts)
    bytes += p->bytes.size();
  TIERKV_ASSIGN_OR_RETURN(Buffer b, backend.allocate(MemoryKind::kDevice, bytes));
  std::size_t at = 0;
  for (const TensorView* p : parts) {
    const std::uint64_t n = p->bytes.size();
    XXH3_128bits_update(&digest, &n, sizeof n);
    XXH3_128bits_update(&digest, p->bytes.data(), p->bytes.size());
    TIERKV_RETURN_IF_ERROR(
        stream.copy(b.as<std::uint8_t>() + at, p->bytes.data(), p->bytes.size()));
    at += p->bytes.size();
  }
  return b;
}

}  // namespace

Result<LlamaWeights> load_llama_weights(Backend& backend, Stream& stream, const ModelSpec& spec,
                                        const SafetensorsSet& checkpoint) {
  TIERKV_ASSIGN_OR_RETURN(const LlamaCheckpoint ck,
                          check_llama_weights(checkpoint, spec, spec.kv_dtype));
  LlamaWeights w;
  w.spec = spec;
  w.dtype = spec.kv_dtype;
  XXH3_state_t h;
  XXH3_128bits_reset(&h);
  const std::uint8_t tied = ck.tied_embeddings ? 1 : 0;
  XXH3_128bits_update(&h, &tied, 1);
  TIERKV_ASSIGN_OR_RETURN(w.embed, upload(backend, stream, h, {&ck.embed_tokens}));
  TIERKV_ASSIGN_OR_RETURN(w.final_norm, upload(backend, stream, h, {&ck.final_norm}));
  if (!ck.tied_embeddings) {
    TIERKV_ASSIGN_OR_RETURN(w.lm_head, upload(backend, stream, h, {&ck.lm_head}));
  }
  for (const LlamaCheckpointLayer& l : ck.layers) {
    LayerWeights lw;
    TIERKV_ASSIGN_OR_RETURN(lw.input_norm, upload(backend, stream, h, {&l.input_norm}));
    TIERKV_ASSIGN_OR_RETURN(lw.qkv,
                            upload(backend, stream, h, {&l.q_proj, &l.k_proj, &l.v_proj}));
    TIERKV_ASSIGN_OR_RETURN(lw.o, upload(backend, stream, h, {&l.o_proj}));
    TIERKV_ASSIGN_OR_RETURN(lw.post_norm, upload(backend, stream, h, {&l.post_attn_norm}));
    TIERKV_ASSIGN_OR_RETURN(lw.gate_up, upload(backend, stream, h, {&l.gate_proj, &l.up_proj}));
    TIERKV_ASSIGN_OR_RETURN(lw.down, upload(backend, stream, h, {&l.down_proj}));
    w.layers.push_back(std::move(lw));
  }
  TIERKV_RETURN_IF_ERROR(stream.synchronize());  // the copies read the checkpoint's map
  const XXH128_hash_t d = XXH3_128bits_digest(&h);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, d);
  static constexpr char kHex[] = "0123456789abcdef";
  w.digest = "xxh3-128:";
  for (unsigned char b : c.digest) {
    w.digest += kHex[b >> 4];
    w.digest += kHex[b & 15];
  }
  if (!spec.identity.weights.empty() && spec.identity.weights != w.digest) {
    return invalid_argument("checkpoint: its weights digest " + w.digest +
                            " differs from the spec's identity.weights " + spec.identity.weights);
  }
  w.spec.identity.weights = w.digest;
  return w;
}

Status save_llama_weights(Stream& stream, const LlamaWeights& w, const std::string& path) {
  const ModelSpec& m = w.spec;
  std::vector<std::vector<std::byte>> storage;  // host copies, alive until written
  std::vector<TensorToWrite> tensors;
  const std::int64_t h = m.hidden, d = m.head_dim, q = std::int64_t(m.num_q_heads) * d,
                     kv = std::int64_t(m.num_kv_heads) * d;
  const std::int64_t inter = m.intermediate;
  // Downloads `rows` x `cols` elements starting at row `first` of `b` as tensor `name`.
  auto add = [&](std::string name, const Buffer& b, std::int64_t first, std::int64_t rows,
                 std::int64_t cols) -> Status {
    const std::size_t row_bytes = std::size_t(cols) * dtype_size(w.dtype);
    storage.emplace_back(std::size_t(rows) * row_bytes);
    TIERKV_RETURN_IF_ERROR(stream.copy(storage.back().data(),
                                       b.as<std::uint8_t>() + std::size_t(first) * row_bytes,
                                       storage.back().size()));
    tensors.push_back(
        {std::move(name),
         w.dtype,
         cols == 1 ? std::vector<std::int64_t>{rows} : std::vector<std::int64_t>{rows, cols},
         {}});
    return Status::Ok();
  };
  TIERKV_RETURN_IF_ERROR(add("model.embed_tokens.weight", w.embed, 0, m.vocab, h));
  TIERKV_RETURN_IF_ERROR(add("model.norm.weight", w.final_norm, 0, h, 1));
  if (!w.lm_head.empty())
    TIERKV_RETURN_IF_ERROR(add(std::string(kLlamaLmHead), w.lm_head, 0, m.vocab, h));
  for (std::int32_t i = 0; i < m.num_layers; ++i) {
    const LayerWeights& l = w.layers[std::size_t(i)];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    TIERKV_RETURN_IF_ERROR(add(p + "input_layernorm.weight", l.input_norm, 0, h, 1));
    TIERKV_RETURN_IF_ERROR(add(p + "self_attn.q_proj.weight", l.qkv, 0, q, h));
    TIERKV_RETURN_IF_ERROR(add(p + "self_attn.k_proj.weight", l.qkv, q, kv, h));
    TIERKV_RETURN_IF_ERROR(add(p + "self_attn.v_proj.weight", l.qkv, q + kv, kv, h));
    TIERKV_RETURN_IF_ERROR(add(p + "self_attn.o_proj.weight", l.o, 0, h, q));
    TIERKV_RETURN_IF_ERROR(add(p + "post_attention_layernorm.weight", l.post_norm, 0, h, 1));
    TIERKV_RETURN_IF_ERROR(add(p + "mlp.gate_proj.weight", l.gate_up, 0, inter, h));
    TIERKV_RETURN_IF_ERROR(add(p + "mlp.up_proj.weight", l.gate_up, inter, inter, h));
    TIERKV_RETURN_IF_ERROR(add(p + "mlp.down_proj.weight", l.down, 0, h, inter));
  }
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  for (std::size_t i = 0; i < tensors.size(); ++i)
    tensors[i].bytes = storage[i];
  return write_safetensors(path, tensors);
}

}  // namespace tierkv

// What a model's KV looks like, and who it belongs to.
//
// A ModelSpec carries the shape of a transformer's KV (layers, heads, head dim, dtype), the
// shape of the rest of the model (for the reference runner), and an identity. The identity digest
// goes into every cache key and every stored record, so KV produced by another model, revision,
// dtype, page size, tensor-parallel slice or layout version is never served.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/dtype.h"
#include "tierkv/status.h"

namespace tierkv {

// Version of the KV byte layout tierkv writes (page and chunk layouts, record format). Bumping it
// makes every stored record foreign.
inline constexpr std::uint32_t kKvLayoutVersion = 1;

using Digest = std::array<std::uint8_t, 32>;  // SHA-256
std::string digest_hex(const Digest& d);

// Who produced the KV. Two specs with different identities never share cache entries.
struct ModelIdentity {
  std::string model;         // e.g. "meta-llama/Llama-3.1-8B"
  std::string revision;      // weights revision (commit or tag); "" when unknown
  std::string tokenizer;     // tokenizer name or revision; "" = same as model
  std::int32_t tp_rank = 0;  // tensor-parallel rank whose KV slice this is
  std::int32_t tp_size = 1;  // tensor-parallel world size
  std::uint32_t layout_version = kKvLayoutVersion;
};

struct RopeScaling {  // Llama-3 style frequency scaling; factor 0 disables it
  float factor = 0.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  std::int32_t original_max_positions = 8192;
};

struct ModelSpec {
  std::string name;  // preset name, e.g. "llama-3.1-8b"
  // KV shape.
  std::int32_t num_layers = 0;
  std::int32_t num_q_heads = 0;
  std::int32_t num_kv_heads = 0;  // divides num_q_heads (GQA)
  std::int32_t head_dim = 0;
  DType kv_dtype = DType::kBF16;
  std::int32_t page_tokens = 16;  // tokens per GPU page
  // Rest of the model (used by the reference runner; part of the identity digest).
  std::int32_t hidden = 0;
  std::int32_t intermediate = 0;
  std::int32_t vocab = 0;
  std::int32_t max_positions = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  ModelIdentity identity;

  // Query heads that share one KV head.
  std::int32_t gqa_group() const { return num_q_heads / num_kv_heads; }
  // Bytes of K plus V for one token in one layer.
  std::size_t kv_bytes_per_token_layer() const {
    return 2 * static_cast<std::size_t>(num_kv_heads) * head_dim * dtype_size(kv_dtype);
  }
  // Bytes of K plus V for one token across all layers.
  std::size_t kv_bytes_per_token() const { return kv_bytes_per_token_layer() * num_layers; }

  // OK, or InvalidArgument naming the first field that is out of range.
  Status validate() const;

  // SHA-256 over an unambiguous (length-prefixed, fixed-width) encoding of the KV shape, the model
  // shape, page size and identity. Equal digests mean interchangeable KV.
  Digest identity_digest() const;
};

// Presets: "llama-3.1-8b" (32 layers, 32/8 heads, head dim 128, bf16) and "tiny" (a small model
// for the CPU backend and tests). Unknown names give InvalidArgument listing the known ones.
Result<ModelSpec> model_preset(std::string_view name);
std::vector<std::string_view> model_preset_names();

}  // namespace tierkv

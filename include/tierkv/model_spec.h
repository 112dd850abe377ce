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
//
// The KV of a token depends on every weight of the model, so the identity must name the weights
// themselves, not only the model's name: a same-shaped fine-tune, a re-quantization or a reload of
// other files all change `weights`. The reference runner derives it from the bytes it loaded
// (LlamaWeights::digest); an engine with its own loader must supply its own (a content hash of
// the checkpoint, or at least the checkpoint's commit hash). The cache refuses an empty one.
// `epoch` is for weights that change in place while the process runs (an online update, a
// hot-swapped adapter merged into the base weights): bump it, and every earlier entry becomes
// foreign.
struct ModelIdentity {
  std::string model;         // e.g. "meta-llama/Llama-3.1-8B"; required
  std::string revision;      // weights revision (commit or tag); "" when unknown
  std::string weights;       // digest of the weights' bytes (e.g. "xxh3-128:<hex>"); required by
                             // the cache
  std::uint64_t epoch = 0;   // bumped by the caller whenever the weights change in place
  std::string tokenizer;     // tokenizer name or revision; "" = same as model
  std::int32_t tp_rank = 0;  // tensor-parallel rank whose KV slice this is
  std::int32_t tp_size = 1;  // tensor-parallel world size
  std::uint32_t layout_version = kKvLayoutVersion;
};

// Upper bounds that ModelSpec::validate() enforces. They are far past any real model and keep
// every size tierkv derives from a spec (bytes per token, per page, per chunk) inside 64 bits
// and every token count inside 32 bits.
inline constexpr std::int32_t kMaxLayers = 1024;
inline constexpr std::int32_t kMaxHeads = 1024;
inline constexpr std::int32_t kMaxHeadDim = 512;
inline constexpr std::int32_t kMaxPageTokens = 1024;
inline constexpr std::int32_t kMaxHidden = 1 << 17;        // 131072
inline constexpr std::int32_t kMaxIntermediate = 1 << 19;  // 524288
inline constexpr std::int32_t kMaxVocab = 1 << 22;         // 4M
inline constexpr std::int32_t kMaxPositions = 1 << 24;     // 16M tokens
inline constexpr std::size_t kMaxIdentityString = 4096;    // bytes of each identity string

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

  // OK, or InvalidArgument naming the first field that is out of range: sizes in [1, kMax...]
  // (hidden, intermediate, vocab and max_positions may be 0 when only the KV shape is known), a
  // known KV dtype of 16 bits, a non-empty identity.model, identity strings no longer than
  // kMaxIdentityString, 0 <= tp_rank < tp_size. The weights digest is not required here (the
  // runner fills it when it loads weights); Cache::create and PagePool::create require it.
  Status validate() const;

  // SHA-256 over an unambiguous (length-prefixed, fixed-width) encoding of the KV shape, the model
  // shape, page size and identity. Equal digests mean interchangeable KV.
  Digest identity_digest() const;
};

// OK, or InvalidArgument when identity.weights is empty: what a cache needs to tell one set of
// weights from another.
Status require_weights_digest(const ModelIdentity& identity);

// Presets: "llama-3.1-8b" (32 layers, 32/8 heads, head dim 128, bf16) and "tiny" (a small model
// for the CPU backend and tests). Unknown names give InvalidArgument listing the known ones.
// A preset names no weights (identity.weights is empty): set it from the weights you load.
Result<ModelSpec> model_preset(std::string_view name);
std::vector<std::string_view> model_preset_names();

}  // namespace tierkv

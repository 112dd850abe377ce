// Llama weights from a Hugging Face safetensors checkpoint into the runner's layout.
#pragma once

#include "engine/llama.h"
#include "model/safetensors.h"

namespace tierkv {

// Checks every tensor's presence, shape and dtype (all problems reported at once), then copies
// the weights to the backend's device: q/k/v projections concatenated row-wise into one QKV
// matrix, gate/up into one, lm_head tied to the embedding when the checkpoint has none. The
// checkpoint is read through its memory map and may be closed once this returns. The weights'
// digest (LlamaWeights::digest, an XXH3-128 of every tensor's bytes in load order) is computed
// from the bytes as they are read; InvalidArgument when spec.identity.weights is set and differs
// from it (the spec names other weights than the checkpoint holds).
Result<LlamaWeights> load_llama_weights(Backend& backend, Stream& stream, const ModelSpec& spec,
                                        const SafetensorsSet& checkpoint);

// The inverse, for tests and tools: writes `weights` (device memory of the backend `stream`
// belongs to) as a single-file Hugging Face Llama checkpoint at `path`.
Status save_llama_weights(Stream& stream, const LlamaWeights& weights, const std::string& path);

}  // namespace tierkv

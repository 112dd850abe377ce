// The reference Llama runner as the warm-prefill executor's PrefillModel: a chunk runs as one
// prefill step of a Sequence made of the chunk's pages, with the executor's hooks per layer.
//
// Ownership: borrows the runner, which must outlive it. Thread safety: as the runner (one thread).
#pragma once

#include "engine/llama.h"
#include "tierkv/warm_prefill.h"

namespace tierkv {

class RunnerPrefillModel final : public PrefillModel {
 public:
  explicit RunnerPrefillModel(LlamaRunner& runner) : runner_(runner) {}

  const ModelSpec& spec() const override { return runner_.spec(); }
  std::int32_t max_chunk_tokens() const override { return runner_.max_step_tokens(); }
  Status prefill(const PrefillChunk& chunk, const LayerHooks& hooks, Stream& stream,
                 std::int32_t* next_token) override {
    Sequence seq;
    seq.pages.assign(chunk.pages.begin(), chunk.pages.end());
    seq.len = chunk.start;
    if (chunk.last) return runner_.prefill_chunk_next(seq, chunk.tokens, stream, next_token, &hooks);
    return runner_.prefill_chunk(seq, chunk.tokens, stream, nullptr, &hooks);
  }

 private:
  LlamaRunner& runner_;
};

}  // namespace tierkv

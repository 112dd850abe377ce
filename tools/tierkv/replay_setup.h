// The machine side of `tierkv replay`: which model, where its weights come from, the cost
// profile the planner reads, and the memory a run will hold (checked before anything is
// allocated).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/memory_check.h"
#include "engine/llama.h"
#include "replay_options.h"
#include "tierkv/backend.h"
#include "tierkv/profile.h"

namespace tierkv::cli::replay {

// --model: "auto" is tiny on the CPU backend and llama-3.1-8b on CUDA.
Result<ModelSpec> choose_model(const std::string& flag, BackendKind backend);

using WeightsSource = std::function<Result<LlamaWeights>(Backend&, Stream&)>;
// Random weights from `seed`, or the safetensors checkpoint in `dir` (read again by each engine).
WeightsSource weights_source(const ModelSpec& model, const std::string& dir, std::uint64_t seed);

// The planner's profile: --profile, else the default path for this device and model. No file at
// the default path is not an error: the result is empty and `note` says what that means; a file
// that cannot be used is an error when named by --profile, a note otherwise.
Result<std::shared_ptr<const CostProfile>> load_cost_profile(const ReplayOptions& o,
                                                             const DeviceInfo& device,
                                                             const ModelSpec& model,
                                                             std::string* note);

// What the largest policy run holds at once: weights, the page pool and the runner's activations
// on the device; the host tier, or the staging tier and the experiment tier, on the host.
bench::MemoryNeed replay_memory_need(const ModelSpec& model, const ReplayOptions& o,
                                     std::uint64_t staging_bytes);

}  // namespace tierkv::cli::replay

#include "replay_setup.h"

#include <algorithm>
#include <cstdlib>

#include "engine/llama_loader.h"
#include "model/safetensors.h"
#include "replay_policy.h"

namespace tierkv::cli::replay {

Result<ModelSpec> choose_model(const std::string& flag, BackendKind backend) {
  const std::string name =
      flag != "auto" ? flag : (backend == BackendKind::kCpu ? "tiny" : "llama-3.1-8b");
  auto m = model_preset(name);
  if (!m.ok()) return m.status().with_context("--model");
  return m;
}

WeightsSource weights_source(const ModelSpec& model, const std::string& dir, std::uint64_t seed) {
  if (dir.empty()) {
    return [model, seed](Backend& b, Stream& s) { return random_llama_weights(b, s, model, seed); };
  }
  return [model, dir](Backend& b, Stream& s) -> Result<LlamaWeights> {
    auto set = SafetensorsSet::open_dir(dir);
    if (!set.ok()) return set.status().with_context("--weights " + dir);
    return load_llama_weights(b, s, model, *set);
  };
}

Result<std::shared_ptr<const CostProfile>> load_cost_profile(const ReplayOptions& o,
                                                             const DeviceInfo& device,
                                                             const ModelSpec& model,
                                                             std::string* note) {
  const char* home = std::getenv("HOME");
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const std::string path = !o.profile.empty()
                               ? o.profile
                               : default_profile_path(device, model, home ? home : "", xdg ? xdg : "");
  auto p = load_profile(path, &device, &model);
  if (!p.ok()) {
    if (!o.profile.empty()) return p.status().with_context("--profile");
    *note = "no usable cost profile (" + p.status().message() +
            "): the planned policies load whatever hits, as warm does; `tierkv calibrate` "
            "measures this machine";
    return std::shared_ptr<const CostProfile>();
  }
  CostProfile profile = std::move(p).value();
  // The experiment tier's speed is the one it is given: the planner may know it exactly.
  if (profile.tier("memory-experiment") == nullptr) {
    TierCost t;
    t.name = "memory-experiment";
    t.read_gbps = o.tiers.slow_gbps;
    t.latency_us = o.tiers.slow_latency_us;
    t.p99_latency_us = o.tiers.slow_latency_us;
    t.experiment = true;
    profile.tiers.push_back(t);
  }
  *note = "cost profile: " + path + " (" + profile.device + ", measured " + profile.measured_at + ")";
  return std::shared_ptr<const CostProfile>(std::make_shared<CostProfile>(std::move(profile)));
}

bench::MemoryNeed replay_memory_need(const ModelSpec& m, const ReplayOptions& o,
                                     std::uint64_t staging_bytes) {
  const std::size_t e = dtype_size(m.kv_dtype), h = std::size_t(m.hidden);
  const std::size_t q = std::size_t(m.num_q_heads) * std::size_t(m.head_dim);
  const std::size_t kv = std::size_t(m.num_kv_heads) * std::size_t(m.head_dim);
  const std::size_t inter = std::size_t(m.intermediate), vocab = std::size_t(m.vocab);
  const std::size_t layer = 2 * h + (q + 2 * kv) * h + h * q + 3 * inter * h;
  const std::size_t weights = e * (2 * vocab * h + h + std::size_t(m.num_layers) * layer);
  const std::size_t pool = std::size_t(o.tiers.gpu_pages) * std::size_t(m.page_tokens) *
                           m.kv_bytes_per_token();
  const std::size_t step = std::size_t(std::max({2048, o.chunk_tokens, o.max_batch}));
  const std::size_t activations = e * step * (3 * h + (q + 2 * kv) + 2 * q + 3 * inter) +
                                  std::size_t(o.max_batch) * vocab * sizeof(float);
  // Policies run one at a time; the experiment tier is host memory, the disk tier is not.
  const std::size_t host =
      std::max<std::size_t>(o.tiers.host_bytes, staging_bytes + o.tiers.slow_bytes);
  return bench::MemoryNeed{pool + weights + activations, host};
}

}  // namespace tierkv::cli::replay

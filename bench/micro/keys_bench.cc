// Cost of prefix matching on one core: page keys for a prompt, probing them in a KeyMap, and both
// together (the figure with a target: a 128K-token prompt, 8192 pages of 16 tokens, keys plus
// probes in at most 1 ms). The argument is the prompt length in tokens; one iteration is one
// prompt, so the reported time is the time per prompt and items/s counts pages. BM_PageKeysOpenSsl
// is the peer: the same chain through OpenSSL's SHA-256. The hasher in use is in the context
// ("page_key_hasher").
//
//   taskset -c 0 build/bench/keys_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one command line)
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "core/key_map.h"
#include "core/keys.h"

namespace tierkv {
namespace {

constexpr std::int32_t kPageTokens = 16;
constexpr std::int32_t kVocab = 128256;  // Llama-3

struct Prompt {
  Digest identity{};
  std::vector<std::int32_t> tokens;
  std::vector<Key> keys;
  KeyMap<std::int32_t> map;
};

// A prompt of random token ids, its keys, and a map holding every key (value = page index).
Prompt make_prompt(std::int64_t n_tokens) {
  Prompt p;
  for (std::size_t i = 0; i < p.identity.size(); ++i)
    p.identity[i] = static_cast<std::uint8_t>(i);
  std::uint64_t x = 0x9e3779b97f4a7c15ull;
  p.tokens.resize(static_cast<std::size_t>(n_tokens));
  for (auto& t : p.tokens) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    t = static_cast<std::int32_t>(x % kVocab);
  }
  if (!compute_page_keys(p.identity, "tenant-0", p.tokens, kPageTokens, p.keys).ok()) {
    std::abort();
  }
  p.map = KeyMap<std::int32_t>(p.keys.size());
  for (std::size_t i = 0; i < p.keys.size(); ++i)
    p.map.insert(p.keys[i], static_cast<std::int32_t>(i));
  return p;
}

std::int64_t probe_all(const KeyMap<std::int32_t>& map, const std::vector<Key>& keys) {
  std::int64_t hits = 0;
  for (const Key& k : keys)
    hits += map.find(k) != nullptr;
  return hits;
}

void set_counters(benchmark::State& state, std::size_t pages) {
  const auto total =
      static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(pages);
  state.SetItemsProcessed(total);
  state.counters["pages"] = static_cast<double>(pages);
  state.counters["per_page"] = benchmark::Counter(
      static_cast<double>(total), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_PageKeys(benchmark::State& state) {
  Prompt p = make_prompt(state.range(0));
  std::vector<Key> keys;
  keys.reserve(p.keys.size());
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        compute_page_keys(p.identity, "tenant-0", p.tokens, kPageTokens, keys));
    benchmark::DoNotOptimize(keys.data());
  }
  set_counters(state, p.keys.size());
}

// The peer: the same chain (key[1..]) through OpenSSL's SHA-256, whatever this CPU has.
void BM_PageKeysOpenSsl(benchmark::State& state) {
  Prompt p = make_prompt(state.range(0));
  std::vector<Key> keys;
  keys.reserve(p.keys.size());
  const auto tokens = std::span<const std::int32_t>(p.tokens);
  for (auto _ : state) {
    keys.assign(1, p.keys[0]);
    for (std::size_t i = 1; i < p.keys.size(); ++i) {
      keys.push_back(next_page_key(PageKeyHasher::kOpenSsl, keys.back(),
                                   tokens.subspan(i * kPageTokens, kPageTokens)));
    }
    benchmark::DoNotOptimize(keys.data());
  }
  set_counters(state, p.keys.size());
}

void BM_Probe(benchmark::State& state) {
  Prompt p = make_prompt(state.range(0));
  for (auto _ : state)
    benchmark::DoNotOptimize(probe_all(p.map, p.keys));
  set_counters(state, p.keys.size());
}

void BM_KeysPlusProbe(benchmark::State& state) {
  Prompt p = make_prompt(state.range(0));
  std::vector<Key> keys;
  keys.reserve(p.keys.size());
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        compute_page_keys(p.identity, "tenant-0", p.tokens, kPageTokens, keys));
    benchmark::DoNotOptimize(probe_all(p.map, keys));
  }
  set_counters(state, p.keys.size());
}

void prompt_sizes(benchmark::internal::Benchmark* b) {
  b->Arg(4096)->Arg(32768)->Arg(131072)->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_PageKeys)->Apply(prompt_sizes);
BENCHMARK(BM_PageKeysOpenSsl)->Apply(prompt_sizes);
BENCHMARK(BM_Probe)->Apply(prompt_sizes);
BENCHMARK(BM_KeysPlusProbe)->Apply(prompt_sizes);

}  // namespace
}  // namespace tierkv

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("page_key_hasher",
                              std::string(tierkv::page_key_hasher_name(tierkv::page_key_hasher())));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

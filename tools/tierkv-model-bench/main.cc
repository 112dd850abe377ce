// tierkv-model-bench: the reference runner's speed on a model-shaped workload. Prefill: one
// chunk of new tokens over a cached prefix (whose KV sits in the page pool already), timed per
// step and reported per layer. Decode: one step for a batch of sequences with KV of a given
// length. Weights are random (the arithmetic does not care), KV pages random, pages scattered.
// Times are device-event medians after a warm-up, one step per repetition (host work included:
// the step's index upload and planning happen before its first kernel).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "common/bench_io.h"
#include "common/measure.h"
#include "engine/llama.h"
#include "tierkv/page_pool.h"

namespace tierkv::model_bench {
namespace {

struct Options {
  std::string backend = "auto", model = "llama-3.1-8b", json;
  int layers = 0;  // 0: the model's
  std::vector<std::int32_t> chunks{256, 512, 1024, 2048}, prefixes{0, 4096, 16384},
      batches{1, 2, 4, 8, 16, 32, 64};
  std::int32_t decode_kv = 2048;
  int reps = 10, warmup = 2;
  bool quiet = false;
};

struct Context {
  Backend& backend;
  Stream& stream;
  PagePool& pool;
  LlamaRunner& runner;
  const Options& opts;
  std::mt19937 rng{7};
};

std::vector<std::int32_t> tokens(Context& c, std::size_t n) {
  std::vector<std::int32_t> t(n);
  for (auto& x : t)
    x = std::int32_t(c.rng() % std::uint32_t(c.runner.spec().vocab));
  return t;
}

// Pages for `len` tokens, scattered through the pool.
Result<Sequence> sequence(Context& c, std::int32_t len) {
  const std::int32_t p = c.runner.spec().page_tokens;
  TIERKV_ASSIGN_OR_RETURN(auto pages, c.pool.allocate((len + p - 1) / p));
  std::shuffle(pages.begin(), pages.end(), c.rng);
  Sequence s;
  s.pages = std::move(pages);
  return s;
}

// Median µs of `step`, which queues one forward step and resets what it changed.
Result<double> time_step(Context& c, const std::function<Status()>& step) {
  TIERKV_ASSIGN_OR_RETURN(
      const bench::Timing t,
      bench::time_events(c.backend, c.stream, c.opts.warmup, c.opts.reps, step));
  return t.median_ms * 1e3;
}

Result<double> prefill_us(Context& c, std::int32_t prefix, std::int32_t chunk) {
  TIERKV_ASSIGN_OR_RETURN(Sequence s, sequence(c, prefix + chunk));
  const auto chunk_tokens = tokens(c, std::size_t(chunk));
  auto step = [&]() -> Status {
    s.len = prefix;  // the prefix's KV is in the pages (random values)
    return c.runner.prefill_chunk(s, chunk_tokens, c.stream, nullptr);
  };
  auto us = time_step(c, step);
  c.pool.release(s.pages).ignore();
  return us;
}

Result<double> decode_us(Context& c, std::int32_t batch, std::int32_t kv) {
  std::vector<Sequence> seqs;
  for (std::int32_t b = 0; b < batch; ++b) {
    auto s = sequence(c, kv + 1);
    if (!s.ok()) {
      for (auto& q : seqs)
        c.pool.release(q.pages).ignore();
      return s.status();
    }
    seqs.push_back(std::move(s).value());
  }
  std::vector<Sequence*> ptrs;
  for (auto& s : seqs)
    ptrs.push_back(&s);
  const auto next = tokens(c, std::size_t(batch));
  auto step = [&]() -> Status {
    for (auto& s : seqs)
      s.len = kv;
    return c.runner.decode(ptrs, next, c.stream, nullptr, nullptr);
  };
  auto us = time_step(c, step);
  for (auto& s : seqs)
    c.pool.release(s.pages).ignore();
  return us;
}

int run(const Options& o) {
  const BackendKind kind = o.backend == "cpu" ? BackendKind::kCpu
                           : o.backend == "cuda"
                               ? BackendKind::kCuda
                               : (cuda_device_count() > 0 ? BackendKind::kCuda : BackendKind::kCpu);
  auto model = model_preset(o.model);
  if (!model.ok())
    return std::fprintf(stderr, "tierkv-model-bench: %s\n", model.status().message().c_str()), 2;
  ModelSpec m = *model;
  if (o.layers > 0) m.num_layers = o.layers;
  const std::int32_t max_prefix = *std::max_element(o.prefixes.begin(), o.prefixes.end());
  const std::int32_t max_chunk = *std::max_element(o.chunks.begin(), o.chunks.end());
  const std::int32_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  const std::int64_t pages_needed =
      std::max<std::int64_t>((max_prefix + max_chunk) / m.page_tokens + 2,
                             std::int64_t(max_batch) * (o.decode_kv / m.page_tokens + 2));
  auto fail = [](const Status& s) {
    return std::fprintf(stderr, "tierkv-model-bench: %s\n", s.to_string().c_str()), 1;
  };
  auto backend = create_backend(kind);
  if (!backend.ok()) return fail(backend.status());
  auto stream = (*backend)->create_stream();
  if (!stream.ok()) return fail(stream.status());
  PagePoolOptions po;
  po.model = m;
  po.num_pages = std::int32_t(pages_needed);
  auto pool = PagePool::create(**backend, po);
  if (!pool.ok()) return fail(pool.status());
  const PagedKvView view = (*pool)->view();
  for (std::int32_t l = 0; l < m.num_layers; ++l) {  // random KV stands for the cached prefixes
    for (const void* base : {view.k_layers[std::size_t(l)], view.v_layers[std::size_t(l)]}) {
      const std::size_t elems = std::size_t(po.num_pages) * std::size_t(view.strides.page);
      if (Status s = (*backend)->fill_uniform(const_cast<void*>(base), elems, m.kv_dtype,
                                              100 + std::uint64_t(l), -1, 1, **stream);
          !s.ok())
        return fail(s);
    }
  }
  auto weights = random_llama_weights(**backend, **stream, m, 3);
  if (!weights.ok()) return fail(weights.status());
  RunnerOptions ro;
  ro.max_step_tokens = std::max(max_chunk, max_batch);
  ro.max_batch = max_batch;
  ro.max_pages_per_seq = std::int32_t(pages_needed);
  auto runner = LlamaRunner::create(**backend, std::move(weights).value(), view, ro);
  if (!runner.ok()) return fail(runner.status());

  Context c{**backend, **stream, **pool, **runner, o};
  const std::string card = (*backend)->info().name, date = bench::utc_date();
  std::ofstream json;
  if (!o.json.empty()) json.open(o.json);
  bench::Progress progress("tierkv-model-bench", o.quiet);
  progress.set_total(int(o.prefixes.size() * o.chunks.size() + o.batches.size()));
  auto emit = [&](nlohmann::json j) {
    j.update({{"impl", "tierkv"},
              {"card", card},
              {"date", date},
              {"model", m.name},
              {"layers", m.num_layers},
              {"dtype", std::string(dtype_name(m.kv_dtype))}});
    if (json.is_open()) json << j.dump() << '\n';
  };
  std::printf("tierkv-model-bench  card: %s  model: %s (%d layers timed per step)  date: %s\n",
              card.c_str(), m.name.c_str(), m.num_layers, date.c_str());
  std::printf("\nPrefill: one chunk over a cached prefix (µs per layer = step / layers)\n");
  std::printf("  chunk   prefix    step µs   µs/layer\n");
  for (std::int32_t prefix : o.prefixes) {
    for (std::int32_t chunk : o.chunks) {
      progress.step("prefill chunk " + std::to_string(chunk) + " over " + std::to_string(prefix));
      auto us = prefill_us(c, prefix, chunk);
      if (!us.ok()) return fail(us.status());
      const double per_layer = *us / m.num_layers;
      std::printf("%7d %8d %10.1f %10.1f\n", chunk, prefix, *us, per_layer);
      emit({{"bench", "prefill_layer"},
            {"chunk_tokens", chunk},
            {"prefix_tokens", prefix},
            {"step_us", *us},
            {"us", per_layer}});
    }
  }
  std::printf(
      "\nDecode: one step, KV %d tokens per sequence\n  batch    step µs   µs/layer   tokens/s\n",
      o.decode_kv);
  for (std::int32_t b : o.batches) {
    progress.step("decode batch " + std::to_string(b));
    auto us = decode_us(c, b, o.decode_kv);
    if (!us.ok()) return fail(us.status());
    std::printf("%7d %10.1f %10.1f %10.0f\n", b, *us, *us / m.num_layers, b * 1e6 / *us);
    emit({{"bench", "decode_layer"},
          {"batch", b},
          {"kv_tokens", o.decode_kv},
          {"step_us", *us},
          {"us", *us / m.num_layers}});
  }
  progress.finish();
  return 0;
}

}  // namespace
}  // namespace tierkv::model_bench

int main(int argc, char** argv) {
  tierkv::model_bench::Options o;
  CLI::App app{
      "tierkv-model-bench: the reference runner's prefill (per layer) and decode step times on "
      "random\n"
      "weights of a model preset, written as a table and as JSON Lines."};
  app.add_option("--backend", o.backend, "cpu, cuda or auto")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--model", o.model, "model preset")->capture_default_str();
  app.add_option("--layers", o.layers, "layers to run (0: the model's)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--chunks", o.chunks, "prefill chunk sizes")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--prefixes", o.prefixes, "cached prefix lengths")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--batches", o.batches, "decode batch sizes")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--decode-kv", o.decode_kv, "KV tokens per sequence in decode")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--reps", o.reps, "timed steps per case (median)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--warmup", o.warmup, "untimed steps first")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_option("--json", o.json, "write JSON Lines here");
  app.add_flag("--quiet", o.quiet, "no progress on stderr");
  CLI11_PARSE(app, argc, argv);
  return tierkv::model_bench::run(o);
}

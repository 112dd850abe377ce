// tierkv-model-bench: the reference runner's speed on a model-shaped workload. Prefill: one
// chunk of new tokens over a cached prefix (whose KV sits in the page pool already), timed per
// step and reported per layer. Decode: one step for a batch of sequences with KV of a given
// length. Weights are random (the arithmetic does not care), KV pages random, pages scattered.
// Times are device-event medians after a warm-up, one step per repetition (host work included:
// the step's index upload and planning happen before its first kernel).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <climits>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "common/bench_io.h"
#include "common/measure.h"
#include "common/memory_check.h"
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

constexpr std::string_view kTool = "tierkv-model-bench";

// Pages the runs need at once: the longest prefill, or every sequence of the largest decode batch;
// at least one allocation run of the pool.
std::int64_t pages_needed(const Options& o, const ModelSpec& m) {
  const std::int32_t max_prefix = *std::max_element(o.prefixes.begin(), o.prefixes.end());
  const std::int32_t max_chunk = *std::max_element(o.chunks.begin(), o.chunks.end());
  const std::int32_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  return std::max({(std::int64_t(max_prefix) + max_chunk) / m.page_tokens + 2,
                   std::int64_t(max_batch) * (o.decode_kv / m.page_tokens + 2),
                   std::int64_t(PagePoolOptions{}.pages_per_run)});
}

// What the run allocates, at least: the page pool, the random weights (as random_llama_weights
// makes them: embeddings and an untied LM head) and the runner's activations for its largest
// step. All of it is device memory. Products of flag values stay far inside 64 bits (the flags'
// ranges bound them).
bench::MemoryNeed memory_need(const ModelSpec& m, const RunnerOptions& ro, std::int64_t pages) {
  const std::size_t e = dtype_size(m.kv_dtype), h = std::size_t(m.hidden);
  const std::size_t q = std::size_t(m.num_q_heads) * std::size_t(m.head_dim);
  const std::size_t kv = std::size_t(m.num_kv_heads) * std::size_t(m.head_dim);
  const std::size_t inter = std::size_t(m.intermediate), vocab = std::size_t(m.vocab);
  const std::size_t layer = 2 * h + (q + 2 * kv) * h + h * q + 3 * inter * h;
  const std::size_t weights = e * (2 * vocab * h + h + std::size_t(m.num_layers) * layer);
  const std::size_t pool = std::size_t(pages) * std::size_t(m.page_tokens) * m.kv_bytes_per_token();
  const std::size_t n = std::size_t(ro.max_step_tokens);
  const std::size_t activations = e * n * (3 * h + (q + 2 * kv) + 2 * q + 3 * inter) +
                                  std::size_t(ro.max_batch) * vocab * sizeof(float);
  return bench::MemoryNeed{pool + weights + activations, 0};
}

int run(const Options& o) {
  using bench::kExitFailure;
  using bench::kExitUsage;
  using bench::report_error;
  auto model = model_preset(o.model);
  if (!model.ok()) return report_error(kTool, model.status().with_context("--model"), kExitUsage);
  ModelSpec m = *model;
  if (o.layers > 0) m.num_layers = o.layers;
  // Everything that can refuse the command line comes before the first measurement.
  auto json_file = bench::OutputFile::open(o.json, "--json");
  if (!json_file.ok()) return report_error(kTool, json_file.status(), kExitUsage);
  auto kind = bench::backend_from_flag(o.backend);
  if (!kind.ok()) return report_error(kTool, kind.status().with_context("--backend"), kExitUsage);
  auto backend = create_backend(*kind);
  if (!backend.ok()) {
    return report_error(kTool,
                        backend.status().with_context(
                            "cannot use the " + std::string(backend_kind_name(*kind)) + " backend"),
                        kExitUsage);
  }
  const std::int64_t pages = pages_needed(o, m);
  RunnerOptions ro;
  ro.max_step_tokens = std::max(*std::max_element(o.chunks.begin(), o.chunks.end()),
                                *std::max_element(o.batches.begin(), o.batches.end()));
  ro.max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  ro.max_pages_per_seq = std::int32_t(std::min<std::int64_t>(pages, INT32_MAX));
  if (pages > INT32_MAX) {
    return report_error(kTool,
                        invalid_argument(std::to_string(pages) +
                                         " KV pages exceed a page pool's 2^31 - 1; choose smaller "
                                         "--prefixes, --chunks, --batches or --decode-kv"),
                        kExitUsage);
  }
  if (const Status s = bench::check_memory(
          **backend, memory_need(m, ro, pages),
          m.name + " with " + std::to_string(pages) + " KV pages (weights, KV and activations)",
          "Choose fewer --layers, or smaller --prefixes, --chunks, --batches or --decode-kv.");
      !s.ok())
    return report_error(kTool, s, kExitUsage);

  auto fail = [](const Status& s) { return report_error(kTool, s, kExitFailure); };
  auto stream = (*backend)->create_stream();
  if (!stream.ok()) return fail(stream.status());
  PagePoolOptions po;
  po.model = m;
  po.num_pages = std::int32_t(pages);
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
  auto runner = LlamaRunner::create(**backend, std::move(weights).value(), view, ro);
  if (!runner.ok()) return fail(runner.status());

  Context c{**backend, **stream, **pool, **runner, o};
  const std::string card = (*backend)->info().name, date = bench::utc_date();
  std::vector<std::string> json_lines;
  bench::Progress progress("tierkv-model-bench", o.quiet);
  progress.set_total(int(o.prefixes.size() * o.chunks.size() + o.batches.size()));
  auto emit = [&](nlohmann::json j) {
    j.update({{"impl", "tierkv"},
              {"card", card},
              {"backend", std::string(backend_kind_name(*kind))},
              {"date", date},
              {"model", m.name},
              {"layers", m.num_layers},
              {"dtype", std::string(dtype_name(m.kv_dtype))}});
    json_lines.push_back(j.dump());
  };
  std::printf(
      "tierkv-model-bench  card: %s  backend: %s  model: %s (%d layers timed per step)  date: %s\n",
      card.c_str(), std::string(backend_kind_name(*kind)).c_str(), m.name.c_str(), m.num_layers,
      date.c_str());
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
  if (const Status s = json_file->commit_lines(json_lines); !s.ok()) return fail(s);
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return tierkv::bench::parse_error_exit(app, e);
  }
  return tierkv::model_bench::run(o);
}

#include "engine/calibrate.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <thread>

#include "core/sha256.h"
#include "engine/llama.h"
#include "tierkv/page_pool.h"
#include "transfer/transfer_engine.h"

namespace tierkv {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5))];
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

void say(const CalibrateOptions& o, const std::string& line) {
  if (o.progress) o.progress(line);
}

// What the prefill measurements run on: the model with random weights over a pool of random KV.
struct Bench {
  std::unique_ptr<PagePool> pool;
  std::unique_ptr<LlamaRunner> runner;
  Sequence seq;
  std::vector<std::int32_t> tokens;
};

Result<Bench> make_bench(Backend& b, Stream& s, const ModelSpec& model, std::int32_t max_new,
                         std::int32_t max_prefix) {
  Bench bench;
  const std::int32_t page = model.page_tokens;
  const std::int32_t pages = (max_prefix + max_new + page - 1) / page + 1;
  PagePoolOptions po;
  po.model = model;
  po.num_pages = pages;
  po.pages_per_run = 1;
  TIERKV_ASSIGN_OR_RETURN(bench.pool, PagePool::create(b, po));
  // Random KV in the pages, so the prefix is made of numbers (no NaN, no denormals).
  const PagedKvView v = bench.pool->view();
  const std::size_t elems = std::size_t(pages) * std::size_t(v.strides.page);
  for (std::int32_t l = 0; l < model.num_layers; ++l) {
    for (const auto& arrays : {v.k_layers, v.v_layers}) {
      TIERKV_RETURN_IF_ERROR(b.fill_uniform(const_cast<void*>(arrays[std::size_t(l)]), elems,
                                            model.kv_dtype, 100 + std::uint64_t(l), -1, 1, s));
    }
  }
  ModelSpec shape = model;  // only the shape matters here: weights of its own
  shape.identity.weights.clear();
  TIERKV_ASSIGN_OR_RETURN(LlamaWeights w, random_llama_weights(b, s, shape, 1));
  RunnerOptions ro;
  ro.max_step_tokens = max_new;
  ro.max_batch = 1;
  ro.max_pages_per_seq = pages;
  TIERKV_ASSIGN_OR_RETURN(bench.runner, LlamaRunner::create(b, std::move(w), v, ro));
  TIERKV_ASSIGN_OR_RETURN(bench.seq.pages, bench.pool->allocate(pages));
  std::mt19937 rng(5);
  bench.tokens.resize(std::size_t(max_new));
  for (auto& t : bench.tokens)
    t = std::int32_t(rng() % std::uint32_t(std::max(1, model.vocab)));
  TIERKV_RETURN_IF_ERROR(s.synchronize());
  return bench;
}

// Median ms of one prefill chunk of `n` tokens over `prefix`, `reps` times after a warm-up.
Result<double> time_chunk(Backend& b, Stream& s, Bench& bench, std::int32_t n,
                          std::int32_t prefix, std::int32_t reps) {
  TIERKV_ASSIGN_OR_RETURN(auto start, b.create_event());
  TIERKV_ASSIGN_OR_RETURN(auto end, b.create_event());
  const auto chunk = std::span(bench.tokens).first(std::size_t(n));
  std::vector<double> ms;
  for (std::int32_t r = -1; r < reps; ++r) {
    bench.seq.len = prefix;
    TIERKV_RETURN_IF_ERROR(s.record(*start));
    TIERKV_RETURN_IF_ERROR(bench.runner->prefill_chunk(bench.seq, chunk, s, nullptr));
    TIERKV_RETURN_IF_ERROR(s.record(*end));
    TIERKV_RETURN_IF_ERROR(end->synchronize());
    TIERKV_ASSIGN_OR_RETURN(const double t, b.elapsed_ms(*start, *end));
    if (r >= 0) ms.push_back(t);
  }
  return median(ms);
}

Status measure_prefill(Backend& b, Stream& s, const CalibrateOptions& o, Bench& bench,
                       const std::vector<std::int32_t>& news,
                       const std::vector<std::int32_t>& prefixes, CostProfile& p) {
  p.prefill.new_tokens = news;
  p.prefill.prefix_tokens = prefixes;
  p.prefill.us.clear();
  for (std::int32_t n : news) {
    for (std::int32_t prefix : prefixes) {
      TIERKV_ASSIGN_OR_RETURN(const double ms, time_chunk(b, s, bench, n, prefix, o.reps));
      const double layer_us = ms * 1e3 / o.model.num_layers;
      p.prefill.us.push_back(layer_us);
      say(o, "prefill " + std::to_string(n) + " new over " + std::to_string(prefix) + ": " +
                 std::to_string(layer_us) + " us per layer");
    }
  }
  return Status::Ok();
}

// The largest prefill chunk measured, alone and beside host->device copies that outlast it.
Status measure_slowdown(Backend& b, Stream& s, const CalibrateOptions& o, Bench& bench,
                        std::int32_t n, CostProfile& p) {
  TIERKV_ASSIGN_OR_RETURN(const double alone, time_chunk(b, s, bench, n, 0, o.reps));
  const bool cuda = b.kind() == BackendKind::kCuda;
  const std::size_t piece = cuda ? std::size_t{256} << 20 : std::size_t{16} << 20;
  const double gbps = std::max(1.0, p.host_to_device_copy_engine.gbps(double(piece)));
  const std::size_t copies =
      std::max<std::size_t>(2, std::size_t(alone * 1e-3 * gbps * 1e9 * 2 / double(piece)) + 1);
  TIERKV_ASSIGN_OR_RETURN(Buffer host, b.allocate(MemoryKind::kPinnedHost, piece));
  TIERKV_ASSIGN_OR_RETURN(Buffer dev, b.allocate(MemoryKind::kDevice, piece));
  TIERKV_ASSIGN_OR_RETURN(auto side, b.create_stream());
  const CopyRun run{dev.data(), host.data(), piece};
  std::vector<double> beside;
  for (std::int32_t r = 0; r < o.reps; ++r) {
    for (std::size_t c = 0; c < copies; ++c)
      TIERKV_RETURN_IF_ERROR(b.copy_runs({&run, 1}, CopyPath::kCopyEngine, 1, *side));
    TIERKV_ASSIGN_OR_RETURN(const double t, time_chunk(b, s, bench, n, 0, 1));
    beside.push_back(t);
    TIERKV_RETURN_IF_ERROR(side->synchronize());
  }
  p.copy_engine_compute_slowdown = std::max(0.0, median(beside) / alone - 1.0);
  say(o, "prefill of " + std::to_string(n) + " tokens: " + std::to_string(alone) + " ms alone, " +
             std::to_string(median(beside)) + " ms beside a load");

  // The other way round: the same copies timed alone and while prefill chunks run beside them
  // for their whole duration (the GEMMs' memory traffic competes with the copies' writes).
  TIERKV_ASSIGN_OR_RETURN(auto start, b.create_event());
  TIERKV_ASSIGN_OR_RETURN(auto end, b.create_event());
  const auto chunk = std::span(bench.tokens).first(std::size_t(n));
  const auto time_copies = [&](std::int32_t chunks_beside) -> Result<double> {
    for (std::int32_t k = 0; k < chunks_beside; ++k) {
      bench.seq.len = 0;
      TIERKV_RETURN_IF_ERROR(bench.runner->prefill_chunk(bench.seq, chunk, s, nullptr));
    }
    TIERKV_RETURN_IF_ERROR(side->record(*start));
    for (std::size_t c = 0; c < copies; ++c)
      TIERKV_RETURN_IF_ERROR(b.copy_runs({&run, 1}, CopyPath::kCopyEngine, 1, *side));
    TIERKV_RETURN_IF_ERROR(side->record(*end));
    TIERKV_RETURN_IF_ERROR(end->synchronize());
    TIERKV_RETURN_IF_ERROR(s.synchronize());
    return b.elapsed_ms(*start, *end);
  };
  TIERKV_RETURN_IF_ERROR(time_copies(0).status());  // warm-up
  std::vector<double> load_alone, load_beside;
  for (std::int32_t r = 0; r < o.reps; ++r) {
    TIERKV_ASSIGN_OR_RETURN(const double a, time_copies(0));
    load_alone.push_back(a);
    // Enough chunks to outlast the copies (they are queued first, so they start together).
    const auto chunks = std::int32_t(std::ceil(a / std::max(alone, 1e-3))) + 1;
    TIERKV_ASSIGN_OR_RETURN(const double t, time_copies(chunks));
    load_beside.push_back(t);
  }
  p.load_slowdown_beside_compute = std::max(0.0, median(load_beside) / median(load_alone) - 1.0);
  say(o, "load of " + std::to_string(copies) + " x " + std::to_string(piece >> 20) + " MiB: " +
             std::to_string(median(load_alone)) + " ms alone, " + std::to_string(median(load_beside)) +
             " ms beside prefill");
  return Status::Ok();
}

// Reads of records of one shape, timed: each read's microseconds, and the wall time of them all.
struct TimedReads {
  std::vector<double> us;
  double wall_us = 0;
};

// Writes `count` records of `layers` layers, reads them back on `readers` threads at once (each
// into its own buffer, records handed out in order, as the cache's promotion reads a prefix),
// erases them. `buffers` holds one buffer per reader, each at least a record's payload.
Result<TimedReads> time_reads(Store& store, RecordId shape, std::uint32_t layers,
                              std::int32_t count,
                              std::span<const std::span<std::uint8_t>> buffers) {
  shape.num_layers = layers;
  const std::size_t bytes = std::size_t(shape.payload_bytes());
  std::vector<RecordId> ids;
  const std::string tier = store.capabilities().name;
  for (std::int32_t c = 0; c < count; ++c) {
    RecordId r = shape;
    const std::string name = "calibrate-" + std::to_string(layers) + "-" + std::to_string(c);
    const Digest d = sha256(name.data(), name.size());
    std::memcpy(r.chunk_key.bytes.data(), d.data(), d.size());
    TIERKV_RETURN_IF_ERROR(
        store.write(r, buffers[0].first(bytes)).with_context("calibrate: writing to " + tier));
    ids.push_back(r);
  }
  TimedReads t;
  t.us.assign(ids.size(), 0.0);
  std::vector<Status> failed(buffers.size());
  std::atomic<std::size_t> next{0};
  const auto reader = [&](std::size_t w) {
    for (std::size_t i; (i = next.fetch_add(1)) < ids.size();) {
      const auto a = std::chrono::steady_clock::now();
      const Status s = store.read(ids[i], buffers[w].first(bytes));
      if (!s.ok()) {
        failed[w] = s.with_context("calibrate: reading from " + tier);
        return;
      }
      t.us[i] =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
    }
  };
  const auto start = std::chrono::steady_clock::now();
  {
    std::vector<std::jthread> threads;
    for (std::size_t w = 1; w < buffers.size(); ++w)
      threads.emplace_back(reader, w);
    reader(0);
  }
  t.wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  for (const RecordId& r : ids)
    store.erase(r).ignore();
  for (Status& s : failed)
    if (!s.ok()) return s;
  return t;
}

}  // namespace

Result<TierCost> measure_tier(const CalibrateOptions& o, Store& store) {
  if (o.tier_chunks < 1 || o.tier_readers < 1 || o.tier_readers > 64)
    return invalid_argument("calibrate: tier_chunks must be positive and tier_readers in [1, 64]");
  RecordId shape;
  shape.identity = sha256("tierkv.calibrate", 16);
  shape.tokens = std::uint32_t(o.chunk_tokens);
  shape.num_layers = std::uint32_t(o.model.num_layers);
  shape.layer_bytes = std::uint64_t(o.chunk_tokens) * o.model.kv_bytes_per_token_layer();
  const std::size_t bytes = std::size_t(shape.payload_bytes());
  // One buffer per reader. Host slots are 4096-byte aligned, and O_DIRECT stores need that of the
  // payload too.
  const std::size_t stride = (bytes + 4095) / 4096 * 4096;
  const auto readers = std::size_t(o.tier_readers);
  std::vector<std::uint8_t> storage(stride * readers + 4096);
  const auto base = reinterpret_cast<std::uintptr_t>(storage.data());
  std::uint8_t* aligned = storage.data() + ((4096 - base % 4096) % 4096);
  std::vector<std::span<std::uint8_t>> buffers;
  for (std::size_t w = 0; w < readers; ++w)
    buffers.emplace_back(aligned + w * stride, bytes);
  std::mt19937_64 rng(9);
  for (std::size_t i = 0; i + 8 <= bytes; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(buffers[0].data() + i, &v, 8);
  }
  // Whole chunks as a promotion reads them (tier_readers at once) for the bandwidth; whole chunks
  // and single layers one at a time for what a read costs beyond its bytes.
  TIERKV_ASSIGN_OR_RETURN(
      const TimedReads whole,
      time_reads(store, shape, shape.num_layers, std::max(o.tier_chunks, o.tier_readers), buffers));
  const auto first = std::span(buffers).first(1);
  TimedReads alone = whole;
  if (readers > 1) {
    TIERKV_ASSIGN_OR_RETURN(alone,
                            time_reads(store, shape, shape.num_layers, o.tier_chunks, first));
  }
  TIERKV_ASSIGN_OR_RETURN(const TimedReads one_layer,
                          time_reads(store, shape, 1, o.tier_chunks, first));
  TierCost t;
  t.name = store.capabilities().name;
  t.experiment = store.capabilities().experiment;
  t.readers = o.tier_readers;
  t.read_gbps = double(bytes) * double(whole.us.size()) / std::max(whole.wall_us, 1e-3) / 1e3;
  // A read of n layers costs latency + n * per_layer: two medians, two unknowns.
  const double alone_us = median(alone.us), layer_us = median(one_layer.us);
  const double layers = double(shape.num_layers);
  t.latency_us = layers > 1 ? std::max(0.0, layer_us - (alone_us - layer_us) / (layers - 1)) : 0.0;
  t.p99_latency_us = t.latency_us + std::max(0.0, quantile(alone.us, 0.99) - alone_us);
  say(o, "tier " + t.name + ": " + std::to_string(t.read_gbps) + " GB/s with " +
             std::to_string(t.readers) + " readers, " + std::to_string(t.latency_us) +
             " us per read, tail " + std::to_string(t.p99_latency_us) + " us");
  return t;
}

namespace {

std::vector<std::int32_t> clamp_axis(std::vector<std::int32_t> v, std::int32_t lo, std::int32_t hi) {
  for (auto& x : v)
    x = std::clamp(x, lo, hi);
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

Result<CostProfile> calibrate(Backend& backend, const CalibrateOptions& o) {
  TIERKV_RETURN_IF_ERROR(o.model.validate());
  if (o.model.hidden <= 0 || o.model.vocab <= 0 || o.model.max_positions <= 0)
    return invalid_argument("calibrate: the model needs its full shape (a preset has it)");
  if (o.reps < 1 || o.tier_chunks < 1 || o.chunk_tokens < 1)
    return invalid_argument("calibrate: reps, tier_chunks and chunk_tokens must be positive");
  if (o.new_tokens.empty() || o.prefix_tokens.empty())
    return invalid_argument("calibrate: the prefill grid needs new and prefix token counts");
  CostProfile p;
  p.device = backend.info().name;
  p.backend = std::string(backend_kind_name(backend.kind()));
  p.model_shape = model_shape_name(o.model);
  p.measured_at = today();
  p.num_layers = o.model.num_layers;

  say(o, "transfer paths ...");
  TransferOptions to;
  to.calibrate = true;
  TIERKV_ASSIGN_OR_RETURN(auto engine, TransferEngine::create(backend, to));
  p.host_to_device_copy_engine = engine->costs().copy_engine;
  p.host_to_device_sm_kernel = engine->costs().sm_kernel;
  // The links are symmetric on the machines measured (55 / 55 GB/s on the H100 test machine): the
  // other direction takes the same curves.
  p.device_to_host_copy_engine = p.host_to_device_copy_engine;
  p.device_to_host_sm_kernel = p.host_to_device_sm_kernel;
  p.sm_kernel_compute_slowdown = engine->costs().sm_kernel_compute_slowdown;
  engine.reset();

  const auto news = clamp_axis(o.new_tokens, 1, std::min(o.model.max_positions / 2, 8192));
  const auto prefixes = clamp_axis(o.prefix_tokens, 0, o.model.max_positions - news.back());
  TIERKV_ASSIGN_OR_RETURN(auto stream, backend.create_stream());
  {
    TIERKV_ASSIGN_OR_RETURN(Bench bench,
                            make_bench(backend, *stream, o.model, news.back(), prefixes.back()));
    say(o, "prefill grid ...");
    TIERKV_RETURN_IF_ERROR(measure_prefill(backend, *stream, o, bench, news, prefixes, p));
    // The heaviest chunk on a device (where the slowdown is a matter of SMs and memory traffic);
    // the lightest on the CPU backend, whose reference kernels take seconds for the heaviest.
    const std::int32_t n = backend.kind() == BackendKind::kCuda ? news.back() : news.front();
    TIERKV_RETURN_IF_ERROR(measure_slowdown(backend, *stream, o, bench, n, p));
  }
  for (const auto& tier : o.tiers) {
    if (tier == nullptr) continue;
    TIERKV_ASSIGN_OR_RETURN(TierCost t, measure_tier(o, *tier));
    p.tiers.push_back(std::move(t));
  }
  return p;
}

std::vector<HideRow> hide_analysis(const CostProfile& p, const ModelSpec& model,
                                   std::span<const std::int32_t> prefixes,
                                   std::span<const std::int32_t> chunk_sizes) {
  const double tb = double(model.kv_bytes_per_token_layer());
  const double run = 256 * tb / 2;  // a 256-token chunk's K (or V) of one layer
  std::vector<HideRow> rows;
  for (std::int32_t prefix : prefixes) {
    HideRow r;
    r.prefix_tokens = prefix;
    r.load_us = p.host_to_device_copy_engine.us(prefix * tb, run);
    for (std::int32_t n : chunk_sizes) {
      const double c = p.prefill.layer_us(n, prefix);
      r.compute_us.push_back(c);
      if (r.hides_at < 0 && c >= r.load_us) r.hides_at = n;
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string format_hide_analysis(const std::vector<HideRow>& rows,
                                 std::span<const std::int32_t> chunk_sizes) {
  std::string out;
  char cell[64];
  std::snprintf(cell, sizeof cell, "%8s %10s", "prefix", "load");
  out += cell;
  for (std::int32_t n : chunk_sizes) {
    std::snprintf(cell, sizeof cell, " %9d", n);
    out += cell;
  }
  out += "   hides at\n";
  for (const HideRow& r : rows) {
    std::snprintf(cell, sizeof cell, "%8d %10.1f", r.prefix_tokens, r.load_us);
    out += cell;
    for (double c : r.compute_us) {
      std::snprintf(cell, sizeof cell, " %9.1f", c);
      out += cell;
    }
    out += r.hides_at > 0 ? "   " + std::to_string(r.hides_at) + "\n" : std::string("   none\n");
  }
  return out;
}

}  // namespace tierkv

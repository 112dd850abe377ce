// `tierkv calibrate`: measures this machine for the warm-prefill planner and writes the profile
// file the planner and the cache read (tierkv/profile.h): the host->device paths, one prefill layer
// on a grid of new x cached tokens for the model's shape, the slowdown of prefill beside a load, and
// the lower tiers named on the command line (the experiment tier, a disk directory, a Redis server).
// On a machine without a GPU it measures the CPU backend with the tiny model and says so.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/bench_io.h"
#include "engine/calibrate.h"
#include "subcommands.h"
#include "tierkv/cache.h"
#include "tierkv/disk_store.h"
#include "tierkv/redis_store.h"
#include "tiers/memory/memory_store.h"

namespace tierkv::cli {
namespace {

struct CalibrateFlags {
  std::string backend = "auto";
  std::string model;  // default: tiny (cpu), llama-3.1-8b (cuda)
  std::string profile;
  std::vector<std::int32_t> new_tokens, prefix_tokens;
  std::int32_t reps = 3;
  std::int32_t chunk_tokens = 256;
  std::int32_t tier_chunks = 8;
  std::int32_t tier_readers = WriteDownOptions{}.promote_threads;
  double experiment_gbps = 0;
  double experiment_latency_us = 50;
  std::string disk_dir;
  std::string redis;
};

Result<std::shared_ptr<Store>> open_redis(const std::string& where) {
  const auto colon = where.rfind(':');
  if (colon == std::string::npos) return invalid_argument("--redis wants host:port, got " + where);
  RedisStoreOptions ro;
  ro.server.host = where.substr(0, colon);
  ro.server.port = std::atoi(where.c_str() + colon + 1);
  TIERKV_ASSIGN_OR_RETURN(auto store, open_redis_store(ro));
  return std::shared_ptr<Store>(std::move(store));
}

int run(const CalibrateFlags& f) {
  const char* tool = "tierkv calibrate";
  BackendKind kind = BackendKind::kCpu;
  if (f.backend == "cuda" || (f.backend == "auto" && cuda_device_count() > 0)) kind = BackendKind::kCuda;
  auto backend = create_backend(kind);
  if (!backend.ok()) return bench::report_error(tool, backend.status(), bench::kExitUsage);
  const bool cpu = kind == BackendKind::kCpu;
  CalibrateOptions o;
  auto model = model_preset(!f.model.empty() ? f.model : cpu ? "tiny" : "llama-3.1-8b");
  if (!model.ok()) return bench::report_error(tool, model.status(), bench::kExitUsage);
  o.model = *model;
  o.new_tokens = !f.new_tokens.empty() ? f.new_tokens
                 : cpu                 ? std::vector<std::int32_t>{16, 64, 256}
                                       : std::vector<std::int32_t>{128, 512, 2048};
  o.prefix_tokens = !f.prefix_tokens.empty() ? f.prefix_tokens
                    : cpu                    ? std::vector<std::int32_t>{0, 512}
                                             : std::vector<std::int32_t>{0, 4096, 16384};
  o.reps = f.reps;
  o.chunk_tokens = f.chunk_tokens;
  o.tier_chunks = f.tier_chunks;
  o.tier_readers = f.tier_readers;
  if (f.experiment_gbps > 0) {
    MemoryStoreOptions mo;
    mo.bandwidth_gbps = f.experiment_gbps;
    mo.latency_us = f.experiment_latency_us;
    auto store = MemoryStore::create(mo);
    if (!store.ok()) return bench::report_error(tool, store.status(), bench::kExitUsage);
    o.tiers.push_back(std::move(store).value());
  }
  if (!f.disk_dir.empty()) {
    DiskStoreOptions d;
    d.directory = f.disk_dir;
    auto store = open_disk_store(d);
    if (!store.ok()) return bench::report_error(tool, store.status(), bench::kExitUsage);
    o.tiers.push_back(std::move(store).value());
  }
  if (!f.redis.empty()) {
    auto store = open_redis(f.redis);
    if (!store.ok()) return bench::report_error(tool, store.status(), bench::kExitUsage);
    o.tiers.push_back(std::move(store).value());
  }
  const char* home = std::getenv("HOME");
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const std::string path = !f.profile.empty()
                               ? f.profile
                               : default_profile_path((*backend)->info(), o.model,
                                                      home ? home : "", xdg ? xdg : "");
  std::printf("tierkv calibrate: %s backend (%s), model %s%s\n", cpu ? "CPU" : "CUDA",
              (*backend)->info().name.c_str(), o.model.name.c_str(),
              cpu ? " -- no GPU visible: the tiny model on the CPU backend" : "");
  o.progress = [](std::string_view line) {
    std::printf("  %.*s\n", int(line.size()), line.data());
    std::fflush(stdout);
  };
  auto profile = calibrate(**backend, o);
  if (!profile.ok()) return bench::report_error(tool, profile.status(), bench::kExitFailure);
  if (Status s = save_profile(*profile, path); !s.ok())
    return bench::report_error(tool, s, bench::kExitFailure);
  const CostProfile& p = *profile;
  std::printf("host->device: copy engines %.1f GB/s at 1 MiB runs (fixed %.1f us), SM kernel %.1f "
              "GB/s; prefill beside a load: %.1f%% slower\n",
              p.host_to_device_copy_engine.gbps(1 << 20), p.host_to_device_copy_engine.fixed_us,
              p.host_to_device_sm_kernel.gbps(1 << 20), 100 * p.copy_engine_compute_slowdown);
  std::printf("prefill per layer (us), new tokens x cached tokens:\n%8s", "");
  for (std::int32_t c : p.prefill.prefix_tokens)
    std::printf(" %10d", c);
  std::printf("\n");
  for (std::size_t i = 0; i < p.prefill.new_tokens.size(); ++i) {
    std::printf("%8d", p.prefill.new_tokens[i]);
    for (std::size_t k = 0; k < p.prefill.prefix_tokens.size(); ++k)
      std::printf(" %10.1f", p.prefill.us[i * p.prefill.prefix_tokens.size() + k]);
    std::printf("\n");
  }
  for (const TierCost& t : p.tiers) {
    std::printf("tier %s%s: %.2f GB/s, %.0f us per read, tail %.0f us\n", t.name.c_str(),
                t.experiment ? " (experiment tier)" : "", t.read_gbps, t.latency_us,
                t.p99_latency_us);
  }
  std::printf("profile written to %s\n", path.c_str());
  return 0;
}

}  // namespace

Runner define_calibrate(CLI::App& app) {
  auto f = std::make_shared<CalibrateFlags>();
  app.add_option("--backend", f->backend, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--model", f->model, "model shape (default: tiny on the CPU, llama-3.1-8b on CUDA)");
  app.add_option("--profile", f->profile,
                 "where to write the profile (default: $XDG_CACHE_HOME/tierkv/ or ~/.cache/tierkv/)");
  app.add_option("--new-tokens", f->new_tokens,
                 "prefill grid: new tokens per chunk [16,64,256 on the CPU; 128,512,2048]")
      ->delimiter(',');
  app.add_option("--prefix-tokens", f->prefix_tokens,
                 "prefill grid: cached tokens before them [0,512 on the CPU; 0,4096,16384]")
      ->delimiter(',');
  app.add_option("--reps", f->reps, "timed runs per point")->check(CLI::Range(1, 100));
  app.add_option("--chunk-tokens", f->chunk_tokens, "the cache's chunk size (tier records)")
      ->check(CLI::Range(16, 65536));
  app.add_option("--tier-chunks", f->tier_chunks, "chunks written and read per tier")
      ->check(CLI::Range(1, 4096));
  app.add_option("--tier-readers", f->tier_readers,
                 "tier reads in flight at once (the cache's promotion threads, default " +
                     std::to_string(f->tier_readers) + ")")
      ->check(CLI::Range(1, 64));
  app.add_option("--experiment-gbps", f->experiment_gbps,
                 "measure the experiment tier (host memory served at this many GB/s)");
  app.add_option("--experiment-latency-us", f->experiment_latency_us,
                 "the experiment tier's latency per operation");
  app.add_option("--disk-dir", f->disk_dir, "measure the disk tier in this directory");
  app.add_option("--redis", f->redis, "measure a Redis server at host:port");
  return [f]() -> int { return run(*f); };
}

}  // namespace tierkv::cli

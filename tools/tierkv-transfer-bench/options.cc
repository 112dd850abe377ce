#include "options.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>

#include "common/bench_io.h"
#include "layout.h"
#include "peers.h"

namespace tierkv::transfer_bench {
namespace {

const std::vector<std::string> kSections = {"pages", "bidir", "gemm"};

template <typename T>
void sort_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

void add_flags(CLI::App& app, Options& opts, std::string& backend) {
  app.add_option("--backend", backend, "cpu, cuda, or auto (cuda when a GPU is visible)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--device", opts.device, "CUDA device index")
      ->capture_default_str()
      ->check(CLI::Range(0, 1023));
  app.add_option("--total-mib", opts.total_mib,
                 "MiB moved per case, each direction [cuda: 256, cpu: 16]")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--pool-mib", opts.pool_mib,
                 "MiB of the device page pool the pages are scattered over; at least twice "
                 "--total-mib [cuda: 1024, cpu: 64]")
      ->check(CLI::Range(2, 1 << 18));
  app.add_option("--page-tokens", opts.page_tokens,
                 "tokens per page, comma separated; a page is one layer's K (or V): tokens x 8 "
                 "KV heads x 128 x 2 B [16,32,64]")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096));
  app.add_option("--sm-blocks", opts.sm_blocks,
                 "block counts of the SM copy kernel, comma separated [1,8,16,132]")
      ->delimiter(',')
      ->check(CLI::Range(1, 65535));
  opts.sections = kSections;
  app.add_option("--sections", opts.sections,
                 "sections to run, comma separated: pages (each direction alone), bidir (both "
                 "at once), gemm (a GEMM beside a load; CUDA only). The one-large-copy ceiling "
                 "is always measured")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember(kSections));
  app.add_option("--warmup", opts.warmup, "untimed runs before each case [cuda: 3, cpu: 1]")
      ->check(CLI::Range(0, 1000));
  app.add_option("--reps", opts.reps, "timed runs per case, median reported [cuda: 20, cpu: 3]")
      ->check(CLI::Range(1, 100000));
  app.add_option("--gemm-reps", opts.gemm_reps,
                 "GEMMs timed back to back, alone and beside each load [200]")
      ->check(CLI::Range(1, 100000));
  app.add_option("--gemm-load-mib", opts.gemm_load_mib,
                 "MiB per load iteration beside the GEMM; the load repeats until the GEMMs end; "
                 "at most --total-mib [32]")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--seed", opts.seed, "seed of the random bytes and page positions")
      ->capture_default_str();
  app.add_option("--json", opts.json_path, "write every figure as JSON Lines to this file");
  app.add_flag("--quiet", opts.quiet, "no progress line on stderr");
}

}  // namespace

bool Options::has_section(const std::string& s) const {
  return std::find(sections.begin(), sections.end(), s) != sections.end();
}

int parse_options(int argc, char** argv, Options& opts) {
  CLI::App app{
      "tierkv-transfer-bench: KV pages between pinned host memory and a device page pool, through\n"
      "every copy path (one cudaMemcpyAsync per page, tierkv's copy-engine batch, tierkv's SM\n"
      "kernel), against one large copy measured in the same run; both directions at once; and a\n"
      "bf16 prefill GEMM (2048 x 4096 x 14336) slowed by a load beside it. Device events,\n"
      "warm-up, medians; every timed copy's bytes are checked afterwards."};
  std::string backend = "auto";
  add_flags(app, opts, backend);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return bench::parse_error_exit(app, e);
  }
  if (backend == "auto") {
    opts.backend = cuda_device_count() > 0 ? BackendKind::kCuda : BackendKind::kCpu;
  } else {
    opts.backend = *parse_backend_kind(backend);
  }
  return -1;
}

Status finish_options(const DeviceInfo& device, Options& opts) {
  const bool gpu = device.backend == BackendKind::kCuda;
  if (opts.total_mib == 0) opts.total_mib = gpu ? 256 : 16;
  if (opts.pool_mib == 0)
    opts.pool_mib = std::max<std::size_t>(gpu ? 1024 : 64, 2 * opts.total_mib);
  if (opts.page_tokens.empty()) opts.page_tokens = {16, 32, 64};
  if (opts.sm_blocks.empty()) opts.sm_blocks = {1, 8, 16, 132};
  if (opts.warmup < 0) opts.warmup = gpu ? 3 : 1;
  if (opts.reps == 0) opts.reps = gpu ? 20 : 3;
  if (opts.gemm_reps == 0) opts.gemm_reps = 200;
  if (opts.gemm_load_mib == 0) opts.gemm_load_mib = std::min<std::size_t>(32, opts.total_mib);
  sort_unique(opts.page_tokens);
  sort_unique(opts.sm_blocks);

  if (opts.pool_mib < 2 * opts.total_mib) {
    return invalid_argument(
        "--pool-mib " + std::to_string(opts.pool_mib) + " must be at least twice --total-mib " +
        std::to_string(opts.total_mib) + " (loads and saves use disjoint slots)");
  }
  if (opts.gemm_load_mib > opts.total_mib) {
    return invalid_argument("--gemm-load-mib " + std::to_string(opts.gemm_load_mib) +
                            " exceeds --total-mib " + std::to_string(opts.total_mib));
  }
  for (int t : opts.page_tokens) {
    const std::size_t page = std::size_t(t) * kKOrVBytesPerToken;
    if (opts.total_bytes() % page != 0) {
      return invalid_argument("--page-tokens " + std::to_string(t) + ": a page of " +
                              std::to_string(page) + " B does not divide --total-mib " +
                              std::to_string(opts.total_mib) + " MiB");
    }
  }
  return Status::Ok();
}

bench::MemoryNeed memory_need(const Options& opts, BackendKind backend) {
  bench::MemoryNeed need;
  need.device = opts.pool_bytes();
  need.host = 2 * opts.total_bytes() + opts.pool_bytes();
  if (backend == BackendKind::kCuda && opts.has_section("gemm")) {
    const GemmShape g;
    const std::size_t elems =
        std::size_t(g.m) * g.k + std::size_t(g.n) * g.k + std::size_t(g.m) * g.n;
    need.device += 2 * elems + (std::size_t{32} << 20);  // bf16 A, B, C and cuBLASLt's workspace
  }
  return need;
}

}  // namespace tierkv::transfer_bench
